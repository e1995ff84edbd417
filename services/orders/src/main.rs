//! `orders`: see `orders --help`.

use clap::Parser;
use shop_orders::{
    Application,
    config::{Cli, Command},
};

// mimalloc: glibc malloc's arena locks and consolidation took about a fifth of a proxied
// request's CPU (bench/gateway/run.sh; docs/gateway.md, "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Old variable names (DB_MAX_CONNECTIONS, ...) still work for one release.
    let legacy = shop_service::LegacyEnv::from_env(shop_orders::config::LEGACY_ENV);
    let cli = Cli::parse_from(legacy.args());
    // A container probe runs every few seconds: no telemetry, no log line (as the gateway).
    if let Some(Command::Healthcheck) = cli.command {
        return shop_service::healthcheck::probe(cli.config.addr).await;
    }
    let telemetry = shop_telemetry::init("orders")?;
    legacy.warn();
    shop_telemetry::metrics::install();
    let config = cli.config;
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(config).await?;
            let report = app
                .run_until_stopped(shop_lifecycle::shutdown_signal())
                .await?;
            if !report.is_clean() {
                tracing::warn!(unfinished = ?report.unfinished, "some jobs did not stop in time");
            }
            Ok(())
        }
        Command::Migrate => shop_orders::db::migrate(&config.database.url).await,
        Command::Seed(args) => shop_orders::seed::run(&config, &args).await,
        Command::Healthcheck => shop_service::healthcheck::probe(config.addr).await, // (above)
        Command::LeakDemo(args) => shop_orders::leak_demo_command::run(config.addr, &args.action)
            .await
            .map(|body| print_output(&body)),
    };
    telemetry.shutdown();
    result
}

/// A subcommand's answer (the `/admin/leak-demo` state as one JSON line), on stdout.
#[allow(clippy::print_stdout)] // the command's output is its purpose
fn print_output(body: &str) {
    println!("{body}");
}
