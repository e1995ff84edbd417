//! `gateway [serve]` and `gateway healthcheck`. Everything lives in the library.

use clap::Parser as _;
use shop_gateway::{Application, Cli, Command};
use shop_lifecycle::Lifecycle;

// mimalloc: glibc malloc's arena locks and consolidation took about a fifth of a proxied
// request's CPU (bench/gateway/run.sh; docs/gateway.md, "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Old variable names (SHUTDOWN_TIMEOUT_MS, ...) still work for one release.
    let legacy = shop_service::LegacyEnv::from_env(shop_gateway::config::LEGACY_ENV);
    let cli = Cli::parse_from(legacy.args());
    if let Some(Command::Healthcheck) = cli.command {
        std::process::exit(i32::from(
            shop_service::healthcheck::probe(cli.config.addr)
                .await
                .is_err(),
        ));
    }
    let telemetry = shop_telemetry::init("gateway")?;
    legacy.warn();
    shop_telemetry::metrics::install();
    let lifecycle = Lifecycle::new();
    let app = Application::build(cli.config, lifecycle.clone()).await?;
    // SIGTERM or Ctrl-C cancels the lifecycle's token: the server stops accepting,
    // drains, and `run_until_stopped` returns after every task has stopped.
    let token = lifecycle.token();
    lifecycle.spawn_task("shutdown_signal", async move {
        tokio::select! {
            () = shop_lifecycle::shutdown_signal() => token.cancel(),
            () = token.cancelled() => {}
        }
    });
    let result = app.run_until_stopped().await;
    // Last: the spans of the final requests and the shutdown's own log lines leave now.
    telemetry.shutdown();
    result
}
