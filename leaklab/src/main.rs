//! `leaklab`: runs the leak lab and prints its table. See `docs/leaks.md`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shop_leaklab::{LabConfig, Pitfall, report};

/// Every leak pitfall, leaky and fixed, side by side, judged by the services' own leak detector.
#[derive(Debug, Parser)]
#[command(name = "leaklab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the leaky and the fixed variant of each pitfall; exit 0 iff every leaky one
    /// is detected and no fixed one is.
    Run {
        /// Only this pitfall (1 to 5).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        pitfall: Option<u8>,
        /// Size of the workload before the observation window.
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// The lab's scratch database (created and migrated if missing).
        #[arg(long, env = "LEAKLAB_DATABASE_URL", default_value = shop_leaklab::db::DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
    },
}

fn main() -> ExitCode {
    let Command::Run {
        pitfall,
        iterations,
        database_url,
    } = Cli::parse().command;
    let config = LabConfig {
        iterations,
        database_url,
        ..LabConfig::default()
    };
    let pitfalls: Vec<Pitfall> = match pitfall.and_then(Pitfall::from_number) {
        Some(one) => vec![one],
        None => Pitfall::ALL.to_vec(),
    };

    let mut reports = Vec::new();
    let mut failed = false;
    for pitfall in pitfalls {
        match shop_leaklab::run_pitfall(pitfall, &config) {
            Ok(pair) => reports.extend(pair),
            Err(error) => {
                eprintln!("leaklab: pitfall {pitfall} could not run: {error:#}");
                failed = true;
            }
        }
    }
    let all_as_expected = reports.iter().all(|r| r.as_expected());
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{}", report::table(&reports));
    let _ = writeln!(
        stdout,
        "\n{}",
        if all_as_expected && !failed {
            "every leaky variant was detected, no fixed one was"
        } else {
            "MISMATCH: see the rows marked NO above"
        }
    );
    if all_as_expected && !failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
