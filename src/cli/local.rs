//! `keelson demo-app`, `keelson local-agent` and `keelson down`.

use std::process::ExitCode;

use super::{CliError, DemoAppArgs, DownArgs, LocalAgentArgs};
use crate::demo::{DemoConfig, run as run_demo};
use crate::provider::local::LocalProvider;
use crate::spec::AppName;

/// Runs the demo app until SIGTERM.
pub async fn demo_app(args: &DemoAppArgs) -> Result<ExitCode, CliError> {
    let config = DemoConfig {
        port: args.port,
        fail_health: args.fail_health,
        healthy_after: args.healthy_after,
        error_rate: args.error_rate,
        latency: args.latency,
        crash_after: args.crash_after,
    };
    run_demo(config).await.map_err(|e| {
        CliError::Usage(format!("demo-app cannot serve on port {}: {e}", args.port))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the local agent in the foreground.
pub async fn local_agent(args: &LocalAgentArgs) -> Result<ExitCode, CliError> {
    crate::provider::local::agent::run(&args.state_dir)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// Stops local clusters and says what stopped.
pub async fn down(args: &DownArgs) -> Result<ExitCode, CliError> {
    let state = super::plan::state_dir(&args.repo, args.state_dir.as_ref());
    let exe = std::env::current_exe().unwrap_or_else(|_| "keelson".into());
    let app = args
        .app
        .as_ref()
        .map(|a| {
            AppName::new(a.clone())
                .map_err(|_| CliError::Usage(format!("`{a}` is not a valid application name")))
        })
        .transpose()?;
    let stopped = LocalProvider::new(&state, exe)
        .down(app)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if stopped.is_empty() {
        println!("Nothing is running on the local target.");
    } else {
        println!("Stopped:");
        for s in &stopped {
            println!("  {s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
