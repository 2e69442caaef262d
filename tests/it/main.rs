//! Integration tests: one binary, a module per area (fewer binaries link faster).

mod support;
mod validate_cli;
mod schemas;
mod properties;
