//! Integration tests: one binary, a module per area (fewer binaries link faster).

mod apply_e2e;
mod daemon;
mod local_target;
mod plan_scenarios;
mod properties;
mod schemas;
mod support;
mod validate_cli;
