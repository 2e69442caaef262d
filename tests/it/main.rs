//! Integration tests: one binary, a module per area (fewer binaries link faster).

mod analysis;
mod apply_e2e;
mod controls;
mod daemon;
mod dashboard;
mod ec2;
mod git_http;
mod git_ssh;
mod github_stub;
mod kube_protocol;
mod kube_stub;
mod kubernetes;
mod local_target;
mod moto;
mod notify;
mod pg;
mod plan_scenarios;
mod pr_comment;
mod properties;
mod proxy_protocol;
mod rollback;
mod schemas;
mod security;
mod store;
mod support;
mod validate_cli;
