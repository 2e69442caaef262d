//! `keelson demo-app`, `keelson local-agent` and `keelson down`.

use super::context::{Context, state_dir};
use super::error::name;
use super::{CliError, DemoAppArgs, DownArgs, Exit, LocalAgentArgs};
use crate::demo::{DemoConfig, run as run_demo};
use crate::spec::AppName;

/// Runs the demo app until SIGTERM.
pub async fn demo_app(args: &DemoAppArgs) -> Result<Exit, CliError> {
    let config = DemoConfig {
        port: args.port,
        fail_health: args.fail_health,
        healthy_after: args.healthy_after,
        error_rate: args.error_rate,
        latency: args.latency,
        crash_after: args.crash_after,
    };
    run_demo(config).await.map_err(|source| CliError::Demo {
        port: args.port,
        source,
    })?;
    Ok(Exit::Success)
}

/// Runs the local agent in the foreground.
pub async fn local_agent(args: &LocalAgentArgs) -> Result<Exit, CliError> {
    let metrics = match args.metrics_address.as_str() {
        "off" => None,
        a => Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
            CliError::argument(
                format!("`{a}` is not an address to serve metrics on"),
                "write it as host:port, e.g. 127.0.0.1:9464, or `off`",
            )
        })?),
    };
    crate::provider::local::agent::run(&args.state_dir, metrics).await?;
    Ok(Exit::Success)
}

/// Stops local clusters and says what stopped.
pub async fn down(args: &DownArgs) -> Result<Exit, CliError> {
    let ctx = Context::new(
        args.repo.clone(),
        state_dir(&args.repo, args.state_dir.as_ref()),
    );
    let app = args
        .app
        .as_ref()
        .map(|a| name("application", a, AppName::new))
        .transpose()?;
    let stopped = ctx.local().down(app).await?;
    if stopped.is_empty() {
        println!("Nothing is running on the local target.");
    } else {
        println!("Stopped:");
        for s in &stopped {
            println!("  {s}");
        }
    }
    Ok(Exit::Success)
}
