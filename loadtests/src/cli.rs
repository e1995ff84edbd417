//! The command line: `loadtest [run]` or `loadtest capacity`, every option also an
//! environment variable (`LOADTEST_*`, plus the stack's own `DATABASE_URL`, `REDIS_URL`
//! and `EVENTS_STREAM` for the correctness check).
//!
//! The defaults drive a stack started natively on this machine (README.md, "Without
//! Docker") for about a minute. Durations take humantime syntax (`500ms`, `5s`, `1m`).

use std::{fmt, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `loadtest`: load order placement through the gateway, report latency and throughput,
/// then prove that nothing went wrong (stock, orders, outbox, events stream).
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What to do; `run` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One load test of LOADTEST_DURATION (or LOADTEST_REQUESTS requests), then the
    /// correctness check (the default).
    Run,
    /// Step the number of users up until order p99 or the error rate crosses its
    /// threshold; report the highest sustainable rate, then p99 at half that rate.
    Capacity(CapacityArgs),
}

/// The shape of the load: who, how many, how long, doing what.
#[derive(Clone, Debug, Args)]
pub struct LoadArgs {
    /// Base URL of the gateway. Load is only ever sent here.
    #[arg(long, env = "LOADTEST_TARGET", default_value = "http://127.0.0.1:8080")]
    pub target: String,

    /// Concurrent virtual users; each has at most one request in flight.
    #[arg(long, env = "LOADTEST_USERS", default_value_t = 16)]
    pub users: usize,

    /// Time over which the users are started (0s: all at once).
    #[arg(long, env = "LOADTEST_RAMP_UP", default_value = "5s", value_parser = humantime::parse_duration)]
    pub ramp_up: Duration,

    /// How long the load runs, ramp-up included (ignored when LOADTEST_REQUESTS is set).
    #[arg(long, env = "LOADTEST_DURATION", default_value = "50s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Stop after this many requests (logins included) instead of after a duration.
    #[arg(long, env = "LOADTEST_REQUESTS")]
    pub requests: Option<u64>,

    /// Mean pause of a user between two requests (uniform in [T/2, 3T/2]); 0s: none.
    #[arg(long, env = "LOADTEST_THINK_TIME", default_value = "0s", value_parser = humantime::parse_duration)]
    pub think_time: Duration,

    /// Seeded accounts to log in as (`user{i}@shop.test` / `password{i}`, i = 1..N, as
    /// `orders seed --users N` creates them); virtual user k uses account k mod N + 1.
    #[arg(long, env = "LOADTEST_ACCOUNTS", default_value_t = 10)]
    pub accounts: u32,

    /// Products to order from: the first N of the catalog, ranked for the Zipf skew.
    #[arg(long, env = "LOADTEST_PRODUCTS", default_value_t = 100)]
    pub products: usize,

    /// Seed of every random choice (products, quantities, lines, replays).
    #[arg(long, env = "LOADTEST_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Relative weights of the actions: `browse` (a catalog page), `product` (one
    /// product), `order` (place or replay an order), `my_orders` (the user's orders).
    /// A weight of 0 leaves the action out.
    #[arg(
        long,
        env = "LOADTEST_WEIGHTS",
        default_value = "browse=2,product=3,order=4,my_orders=1"
    )]
    pub weights: Weights,

    /// Probability that an `order` action replays one of the user's earlier orders
    /// (same Idempotency-Key and body) instead of placing a new one.
    #[arg(long, env = "LOADTEST_REPLAY_PROBABILITY", default_value_t = 0.05)]
    pub replay_probability: f64,

    /// Exponent of the Zipf distribution of product choice (0: uniform; 1: the k-th
    /// product is chosen 1/k as often as the first).
    #[arg(long, env = "LOADTEST_ZIPF_EXPONENT", default_value_t = 1.0)]
    pub zipf_exponent: f64,

    /// Most lines in one order (each order has 1..=N distinct products).
    #[arg(long, env = "LOADTEST_MAX_LINES", default_value_t = 3)]
    pub max_lines: usize,

    /// Largest quantity of one line (each line orders 1..=N units).
    #[arg(long, env = "LOADTEST_MAX_QUANTITY", default_value_t = 2)]
    pub max_quantity: u32,

    /// Products per catalog page in the `browse` action (1..=100).
    #[arg(long, env = "LOADTEST_PAGE_SIZE", default_value_t = 20)]
    pub page_size: u32,

    /// Client-side timeout of one request.
    #[arg(long, env = "LOADTEST_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

/// The correctness check after the load.
#[derive(Clone, Args)]
pub struct CheckArgs {
    /// Run the correctness check (needs DATABASE_URL and REDIS_URL of the stack).
    #[arg(long, env = "LOADTEST_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    pub check: bool,

    /// Postgres of the stack under test (read only: snapshots and checks).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/shop",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Redis of the stack under test (the events stream is read, never written).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// The stream the outbox relay publishes order events to (orders' EVENTS_STREAM).
    #[arg(long, env = "EVENTS_STREAM", default_value = "shop:events:orders")]
    pub events_stream: String,

    /// How long to wait, after the load, for the outbox relay to publish every event.
    #[arg(long, env = "LOADTEST_DRAIN_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// The stream payments publishes payment events to (payments' EVENTS_STREAM).
    #[arg(
        long,
        env = "PAYMENT_EVENTS_STREAM",
        default_value = "shop:events:payments"
    )]
    pub payment_events_stream: String,

    /// How long to wait, after the outbox drained, for every order of the run to be
    /// settled (`paid` or `cancelled`) by payments and orders' consumer.
    #[arg(long, env = "LOADTEST_SETTLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,

    /// Dead-lettered entries the run may leave (a run that injects poison sets it).
    #[arg(long, env = "LOADTEST_ALLOWED_DEAD_LETTERS", default_value_t = 0)]
    pub allowed_dead_letters: usize,
}

impl fmt::Debug for CheckArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URLs may carry passwords.
        f.debug_struct("CheckArgs")
            .field("check", &self.check)
            .field("events_stream", &self.events_stream)
            .field("drain_timeout", &self.drain_timeout)
            .field("payment_events_stream", &self.payment_events_stream)
            .field("settle_timeout", &self.settle_timeout)
            .finish_non_exhaustive()
    }
}

/// Where the results go.
#[derive(Clone, Debug, Args)]
pub struct OutputArgs {
    /// HTML report with charts (goose's); empty: none.
    #[arg(long, env = "LOADTEST_REPORT", default_value = "loadtest-report.html")]
    pub report: String,

    /// How often a progress line is printed while the load runs.
    #[arg(long, env = "LOADTEST_PROGRESS_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub progress_interval: Duration,

    /// Log format on stderr: `pretty` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Options of `loadtest capacity`.
#[derive(Clone, Debug, Args)]
pub struct CapacityArgs {
    /// Users of the first step.
    #[arg(long, env = "LOADTEST_CAPACITY_START_USERS", default_value_t = 2)]
    pub start_users: usize,

    /// Users of each next step: the previous step's times this factor (at least +1).
    #[arg(long, env = "LOADTEST_CAPACITY_FACTOR", default_value_t = 2.0)]
    pub factor: f64,

    /// No step has more users than this.
    #[arg(long, env = "LOADTEST_CAPACITY_MAX_USERS", default_value_t = 256)]
    pub max_users: usize,

    /// How long each step runs (its users all start at once).
    #[arg(long, env = "LOADTEST_CAPACITY_STEP_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub step_duration: Duration,

    /// A step whose order-placement p99 exceeds this is not sustainable.
    #[arg(long, env = "LOADTEST_CAPACITY_MAX_P99", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,

    /// A step whose share of failed requests (errors, not 409 or 429) exceeds this is
    /// not sustainable.
    #[arg(long, env = "LOADTEST_CAPACITY_MAX_ERROR_RATE", default_value_t = 0.01)]
    pub max_error_rate: f64,
}

/// The actions of a virtual user, in the order their weights are given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `GET /v1/products?limit=N`.
    Browse,
    /// `GET /v1/products/{id}`.
    Product,
    /// `POST /v1/orders` (new, or a replay of an earlier one).
    Order,
    /// `GET /v1/orders`.
    MyOrders,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 4] = [
        Action::Browse,
        Action::Product,
        Action::Order,
        Action::MyOrders,
    ];

    /// The action's name in LOADTEST_WEIGHTS and in the reports.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Browse => "browse",
            Action::Product => "product",
            Action::Order => "order",
            Action::MyOrders => "my_orders",
        }
    }
}

/// The relative weight of each [`Action`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights([usize; 4]);

impl Weights {
    /// The weight of `action`.
    pub fn of(&self, action: Action) -> usize {
        self.0[action as usize]
    }
}

impl FromStr for Weights {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = [0usize; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not name=weight"))?;
            let action = Action::ALL
                .into_iter()
                .find(|a| a.name() == name.trim())
                .ok_or_else(|| {
                    format!("unknown action `{name}` (browse, product, order, my_orders)")
                })?;
            weights[action as usize] = value
                .trim()
                .parse()
                .map_err(|_| format!("weight of `{name}` is not a whole number: `{value}`"))?;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err("at least one action needs a weight above 0".into());
        }
        Ok(Self(weights))
    }
}

impl LoadArgs {
    /// Refuses values that cannot describe a load.
    pub fn validate(&self) -> Result<(), String> {
        if self.users == 0 {
            return Err("LOADTEST_USERS must be at least 1".into());
        }
        if self.accounts == 0 {
            return Err("LOADTEST_ACCOUNTS must be at least 1".into());
        }
        if self.products == 0 {
            return Err("LOADTEST_PRODUCTS must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.replay_probability) {
            return Err("LOADTEST_REPLAY_PROBABILITY must be between 0 and 1".into());
        }
        if !(self.zipf_exponent >= 0.0 && self.zipf_exponent.is_finite()) {
            return Err("LOADTEST_ZIPF_EXPONENT must be 0 or more".into());
        }
        if !(1..=100).contains(&self.max_lines) {
            return Err("LOADTEST_MAX_LINES must be between 1 and 100".into());
        }
        if !(1..=1000).contains(&self.max_quantity) {
            return Err("LOADTEST_MAX_QUANTITY must be between 1 and 1000".into());
        }
        if !(1..=100).contains(&self.page_size) {
            return Err("LOADTEST_PAGE_SIZE must be between 1 and 100".into());
        }
        if self.requests.is_none() && self.duration < Duration::from_secs(1) {
            return Err("LOADTEST_DURATION must be at least 1s".into());
        }
        if !self.target.starts_with("http://") && !self.target.starts_with("https://") {
            return Err("LOADTEST_TARGET must be an http:// or https:// URL".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_parse_and_validate() {
        let cli = Cli::try_parse_from(["loadtest"]).unwrap();
        cli.load.validate().unwrap();
        assert_eq!(cli.load.weights.of(Action::Order), 4);
        assert!(cli.command.is_none());
    }

    #[test]
    fn weights_name_each_action_and_default_the_others_to_zero() {
        let w: Weights = "order=1, product = 5".parse().unwrap();
        assert_eq!(w.of(Action::Order), 1);
        assert_eq!(w.of(Action::Product), 5);
        assert_eq!(w.of(Action::Browse), 0);
        assert!("order=0".parse::<Weights>().is_err());
        assert!("checkout=1".parse::<Weights>().is_err());
        assert!("order".parse::<Weights>().is_err());
    }

    #[test]
    fn capacity_takes_its_own_options() {
        let cli = Cli::try_parse_from(["loadtest", "capacity", "--max-users", "8"]).unwrap();
        match cli.command {
            Some(Command::Capacity(args)) => assert_eq!(args.max_users, 8),
            other => panic!("{other:?}"),
        }
    }
}
