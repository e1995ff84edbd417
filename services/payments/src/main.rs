//! `payments`: see `payments --help`.

use clap::Parser;
use shop_payments::{
    Application,
    config::{Cli, Command},
};

// mimalloc, as every shop service (docs/gateway.md, "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A container probe runs every few seconds: no telemetry, no log line.
    if let Some(Command::Healthcheck) = cli.command {
        return shop_service::healthcheck::probe(cli.config.addr).await;
    }
    if let Some(Command::Provider(args)) = &cli.command {
        let body = shop_payments::provider_command::run(cli.config.addr, &args.action).await?;
        print_output(&body);
        return Ok(());
    }
    let telemetry = shop_telemetry::init("payments")?;
    shop_telemetry::metrics::install();
    let result = async {
        let app = Application::build(cli.config).await?;
        let report = app
            .run_until_stopped(shop_lifecycle::shutdown_signal())
            .await?;
        if !report.is_clean() {
            tracing::warn!(unfinished = ?report.unfinished, "some jobs did not stop in time");
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "payments failed");
    }
    telemetry.shutdown();
    result
}

/// A subcommand's answer (the provider's settings as one JSON line), on stdout.
#[allow(clippy::print_stdout)] // the command's output is its purpose
fn print_output(body: &str) {
    println!("{body}");
}
