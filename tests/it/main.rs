//! Integration tests: one binary, a module per area (fewer binaries link faster).

mod plan_scenarios;
mod local_target;
mod properties;
mod schemas;
mod support;
mod validate_cli;
