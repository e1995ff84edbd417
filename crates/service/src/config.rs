//! The configuration pieces every service flattens into its own `Config`: one set of
//! names and one duration format (humantime: `500ms`, `5s`, `30m`) everywhere.
//!
//! | piece | variables |
//! |---|---|
//! | [`DatabaseConfig`] | `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS`, `DATABASE_MIN_CONNECTIONS`, `DATABASE_ACQUIRE_TIMEOUT`, `DATABASE_IDLE_TIMEOUT`, `DATABASE_MAX_LIFETIME`, `DATABASE_STATEMENT_TIMEOUT` |
//! | [`RedisConfig`] | `REDIS_URL`, `REDIS_POOL_SIZE`, `REDIS_TIMEOUT` |
//! | [`ServerConfig`] | `HEADER_READ_TIMEOUT`, `SHUTDOWN_DRAIN_TIMEOUT`, `SHUTDOWN_JOBS_TIMEOUT`, `METRICS_SAMPLE_INTERVAL` |
//!
//! Names a service used before this crate existed (`DB_MAX_CONNECTIONS`,
//! `SHUTDOWN_TIMEOUT_MS`, ...) keep working for one release through [`LegacyEnv`]: an old
//! variable set while its new name is not becomes the new setting, and a warning names
//! the variable to use instead (docs/operations.md, "Configuration").
//!
//! Every flag's long name is its variable's name in lower case with dashes
//! (`DATABASE_URL` → `--database-url`); [`LegacyEnv`] relies on that.

use std::{ffi::OsString, fmt, time::Duration};

use clap::Args;

/// Postgres: where, how many connections, and how long anything may wait.
#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// Postgres connection URL. Secret: never logged.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/shop",
        hide_env_values = true
    )]
    pub url: String,

    /// Largest number of connections in the pool.
    #[arg(
        id = "database_max_connections",
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,

    /// Connections the pool keeps open even when idle.
    #[arg(
        id = "database_min_connections",
        long = "database-min-connections",
        env = "DATABASE_MIN_CONNECTIONS",
        default_value_t = 0
    )]
    pub min_connections: u32,

    /// How long a caller may wait for a pool connection before it gets 503 (pitfall 5).
    #[arg(
        id = "database_acquire_timeout",
        long = "database-acquire-timeout",
        env = "DATABASE_ACQUIRE_TIMEOUT",
        default_value = "500ms",
        value_parser = humantime::parse_duration
    )]
    pub acquire_timeout: Duration,

    /// Idle connections above the minimum are closed after this long.
    #[arg(
        id = "database_idle_timeout",
        long = "database-idle-timeout",
        env = "DATABASE_IDLE_TIMEOUT",
        default_value = "5m",
        value_parser = humantime::parse_duration
    )]
    pub idle_timeout: Duration,

    /// Connections are recycled after this long.
    #[arg(
        id = "database_max_lifetime",
        long = "database-max-lifetime",
        env = "DATABASE_MAX_LIFETIME",
        default_value = "30m",
        value_parser = humantime::parse_duration
    )]
    pub max_lifetime: Duration,

    /// Server-side `statement_timeout`: the backstop that stops a query nobody waits for.
    #[arg(
        id = "database_statement_timeout",
        long = "database-statement-timeout",
        env = "DATABASE_STATEMENT_TIMEOUT",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub statement_timeout: Duration,
}

/// Redis: where, how many pooled connections, and the timeout of each wait and command.
#[derive(Clone, Args)]
pub struct RedisConfig {
    /// Redis connection URL. Secret: never logged.
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub url: String,

    /// Largest number of connections in each Redis pool of the service.
    #[arg(
        id = "redis_pool_size",
        long = "redis-pool-size",
        env = "REDIS_POOL_SIZE",
        default_value_t = 16
    )]
    pub pool_size: usize,

    /// Timeout for getting a Redis connection and for each Redis command.
    #[arg(
        id = "redis_timeout",
        long = "redis-timeout",
        env = "REDIS_TIMEOUT",
        default_value = "250ms",
        value_parser = humantime::parse_duration
    )]
    pub timeout: Duration,
}

/// The HTTP server and the process's stop: slow clients, draining, jobs, sampling.
#[derive(Clone, Debug, Args)]
pub struct ServerConfig {
    /// Time a client has to send its request headers (slowloris).
    #[arg(
        id = "header_read_timeout",
        long = "header-read-timeout",
        env = "HEADER_READ_TIMEOUT",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub header_read_timeout: Duration,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(
        id = "shutdown_drain_timeout",
        long = "shutdown-drain-timeout",
        env = "SHUTDOWN_DRAIN_TIMEOUT",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_drain_timeout: Duration,

    /// How long background jobs may take to stop after the requests have drained.
    #[arg(
        id = "shutdown_jobs_timeout",
        long = "shutdown-jobs-timeout",
        env = "SHUTDOWN_JOBS_TIMEOUT",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_jobs_timeout: Duration,

    /// How often runtime, job and pool gauges are sampled.
    #[arg(
        id = "metrics_sample_interval",
        long = "metrics-sample-interval",
        env = "METRICS_SAMPLE_INTERVAL",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub metrics_sample_interval: Duration,
}

/// Hides the password of `scheme://user:password@host/...` for logs and `Debug`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How an old variable's value becomes the new setting's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Same format.
    Same,
    /// An integer of milliseconds, now a humantime duration (`250` → `250ms`).
    Millis,
    /// An integer of seconds, now a humantime duration (`900` → `900s`).
    Secs,
}

/// One renamed variable: `old` still works for one release, with a warning.
#[derive(Clone, Copy, Debug)]
pub struct Rename {
    pub old: &'static str,
    pub new: &'static str,
    pub unit: Unit,
}

impl Rename {
    pub const fn new(old: &'static str, new: &'static str, unit: Unit) -> Self {
        Self { old, new, unit }
    }
}

/// The command line with the old variables a service still honours turned into the new
/// settings' flags, and the warnings to log once telemetry is up.
#[derive(Debug)]
pub struct LegacyEnv {
    args: Vec<OsString>,
    warnings: Vec<String>,
}

impl LegacyEnv {
    /// Reads the process's arguments and environment.
    pub fn from_env(renames: &[Rename]) -> Self {
        Self::from_parts(
            std::env::args_os(),
            |name| std::env::var(name).ok(),
            renames,
        )
    }

    /// [`LegacyEnv::from_env`] with the arguments and the environment given (tests).
    pub fn from_parts(
        args: impl IntoIterator<Item = OsString>,
        env: impl Fn(&str) -> Option<String>,
        renames: &[Rename],
    ) -> Self {
        let mut args = args.into_iter();
        let mut out: Vec<OsString> = args.next().into_iter().collect();
        let mut warnings = Vec::new();
        for rename in renames {
            let Some(value) = env(rename.old) else {
                continue;
            };
            if env(rename.new).is_some() {
                warnings.push(format!(
                    "{} is ignored: {} is set and replaces it",
                    rename.old, rename.new
                ));
                continue;
            }
            let value = match rename.unit {
                Unit::Same => value,
                Unit::Millis => format!("{}ms", value.trim()),
                Unit::Secs => format!("{}s", value.trim()),
            };
            let flag = format!("--{}", rename.new.to_ascii_lowercase().replace('_', "-"));
            warnings.push(format!(
                "{} is deprecated and will be removed in the next release: use {}={}",
                rename.old, rename.new, value
            ));
            // Right after the program name: the settings belong to the top-level command,
            // not to a subcommand given after them.
            out.push(format!("{flag}={value}").into());
        }
        out.extend(args);
        Self {
            args: out,
            warnings,
        }
    }

    /// The arguments to parse (`Cli::parse_from(legacy.args())`).
    pub fn args(&self) -> Vec<OsString> {
        self.args.clone()
    }

    /// Logs one warning per old variable in use. Call after telemetry is installed.
    pub fn warn(&self) {
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
    }

    /// The warnings (tests).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENAMES: &[Rename] = &[
        Rename::new("DB_MAX_CONNECTIONS", "DATABASE_MAX_CONNECTIONS", Unit::Same),
        Rename::new(
            "SHUTDOWN_TIMEOUT_MS",
            "SHUTDOWN_DRAIN_TIMEOUT",
            Unit::Millis,
        ),
    ];

    fn legacy(env: &[(&str, &str)], args: &[&str]) -> LegacyEnv {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        LegacyEnv::from_parts(
            args.iter().map(OsString::from),
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            RENAMES,
        )
    }

    #[test]
    fn an_old_variable_becomes_the_new_flag_before_any_subcommand_with_a_warning() {
        let l = legacy(
            &[("DB_MAX_CONNECTIONS", "8"), ("SHUTDOWN_TIMEOUT_MS", "2500")],
            &["orders", "seed", "--products", "5"],
        );
        assert_eq!(
            l.args(),
            [
                "orders",
                "--database-max-connections=8",
                "--shutdown-drain-timeout=2500ms",
                "seed",
                "--products",
                "5"
            ]
            .map(OsString::from)
        );
        assert_eq!(l.warnings().len(), 2);
        assert!(l.warnings()[0].contains("use DATABASE_MAX_CONNECTIONS=8"));
    }

    #[test]
    fn the_new_name_wins_over_the_old_one() {
        let l = legacy(
            &[
                ("DB_MAX_CONNECTIONS", "8"),
                ("DATABASE_MAX_CONNECTIONS", "4"),
            ],
            &["orders"],
        );
        assert_eq!(l.args(), [OsString::from("orders")]);
        assert!(l.warnings()[0].contains("ignored"));
    }

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(
            redact("postgres://shop:s3cret@db:5432/shop"),
            "postgres://shop:***@db:5432/shop"
        );
        assert_eq!(redact("redis://:hunter2@cache"), "redis://:***@cache");
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
    }
}
