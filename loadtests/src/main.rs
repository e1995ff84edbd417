//! `loadtest`: see `loadtest --help` and loadtests/README.md.

use std::process::ExitCode;

use clap::Parser;
use shop_loadtest::cli::Cli;

/// Exit 0: the load ran and the check passed; 1: the check found violations; 2: the
/// load could not run (bad options, target or database unreachable, ...).
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    shop_loadtest::init_logs(cli.output.log_format);
    match shop_loadtest::run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::from(2)
        }
    }
}
