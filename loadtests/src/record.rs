//! What the generator saw, kept for the progress line and the correctness check:
//! live counters, every order answered 201, and the outcome of every replay.
//!
//! The users run on goose's tasks; they share one [`Recorder`]. The lists are behind a
//! synchronous (`parking_lot`) mutex, not a tokio one: each critical section is a push,
//! never held across an `.await`.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use uuid::Uuid;

/// One line of an order, as sent and as the 201 answered it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// An order the stack answered 201 (not a replay).
#[derive(Clone, Debug)]
pub struct PlacedOrder {
    /// The order id of the 201's body.
    pub id: Uuid,
    /// The `user_id` of the 201's body.
    pub user_id: Uuid,
    /// The Idempotency-Key it was placed under.
    pub key: String,
    /// The lines as the 201's body lists them.
    pub lines: Vec<Line>,
    /// The lines as the request sent them.
    pub sent: Vec<Line>,
    /// True when the 201 carried `Idempotent-Replayed: true` (never, for a fresh key).
    pub replayed_header: bool,
}

/// The answer to a replay of an order that was answered 201.
#[derive(Clone, Debug)]
pub struct ReplayOutcome {
    /// The Idempotency-Key replayed.
    pub key: String,
    /// The order id of the first answer.
    pub expected: Uuid,
    /// The status of the replay's answer (0: no answer).
    pub status: u16,
    /// The order id in the replay's body, when it had one.
    pub got: Option<Uuid>,
    /// Whether the answer carried `Idempotent-Replayed: true`.
    pub replayed_header: bool,
}

/// Live counters (all since the process started).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent (answered or not).
    pub requests: AtomicU64,
    /// Orders placed (201 to a fresh key).
    pub placed: AtomicU64,
    /// 409 `insufficient-stock`.
    pub out_of_stock: AtomicU64,
    /// 429 answers.
    pub rate_limited: AtomicU64,
    /// Failures: transport errors, timeouts and any other status that is not 2xx.
    pub errors: AtomicU64,
    /// Replays sent.
    pub replays: AtomicU64,
    /// Users logged in.
    pub logins: AtomicU64,
}

/// A consistent copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub requests: u64,
    pub placed: u64,
    pub out_of_stock: u64,
    pub rate_limited: u64,
    pub errors: u64,
    pub replays: u64,
    pub logins: u64,
}

/// Everything the generator records.
#[derive(Debug, Default)]
pub struct Recorder {
    pub counters: Counters,
    placed: Mutex<Vec<PlacedOrder>>,
    replays: Mutex<Vec<ReplayOutcome>>,
}

impl Recorder {
    /// Counts one request sent.
    pub fn request(&self) -> u64 {
        self.counters.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts one answer by its status (`None`: no answer).
    pub fn status(&self, status: Option<u16>) {
        let counter = match status {
            Some(200..=299) => return,
            Some(409) => return, // classified by the caller (stock, or an error)
            Some(429) => &self.counters.rate_limited,
            _ => &self.counters.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an order answered 201.
    pub fn placed(&self, order: PlacedOrder) {
        self.counters.placed.fetch_add(1, Ordering::Relaxed);
        self.placed.lock().push(order);
    }

    /// Records the outcome of a replay.
    pub fn replayed(&self, outcome: ReplayOutcome) {
        self.replays.lock().push(outcome);
    }

    /// A copy of the counters.
    pub fn values(&self) -> CounterValues {
        let c = &self.counters;
        CounterValues {
            requests: c.requests.load(Ordering::Relaxed),
            placed: c.placed.load(Ordering::Relaxed),
            out_of_stock: c.out_of_stock.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            replays: c.replays.load(Ordering::Relaxed),
            logins: c.logins.load(Ordering::Relaxed),
        }
    }

    /// Every order answered 201 so far.
    pub fn placed_orders(&self) -> Vec<PlacedOrder> {
        self.placed.lock().clone()
    }

    /// Every replay outcome so far.
    pub fn replay_outcomes(&self) -> Vec<ReplayOutcome> {
        self.replays.lock().clone()
    }
}
