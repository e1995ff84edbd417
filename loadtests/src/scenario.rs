//! The virtual user: goose's scenario `shopper`, one transaction per action.
//!
//! A user logs in once (its `on_start` transaction) and keeps its token until shortly
//! before it expires; then it browses the catalog, views products, places orders of
//! 1..=LOADTEST_MAX_LINES lines under a fresh Idempotency-Key (or, with
//! LOADTEST_REPLAY_PROBABILITY, replays one of its earlier orders: same key, same body)
//! and lists its own orders, in the proportions of LOADTEST_WEIGHTS. Products are drawn
//! with a Zipf skew, so a few hot products take most orders and their row locks contend.
//!
//! 409 `insufficient-stock` and 429 are expected answers under load: goose counts them
//! as successes (they are reported in their own columns), everything else that is not
//! 2xx is an error. Every 201 and every replay is recorded for the correctness check.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use goose::{metrics::GooseRequestMetric, prelude::*};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::{
    cli::{Action, LoadArgs, Weights},
    record::{Line, PlacedOrder, Recorder, ReplayOutcome},
    zipf::Zipf,
};

/// Earlier orders a user keeps to replay.
const HISTORY: usize = 32;
/// Most login attempts in a row answered 429 before the transaction fails.
const LOGIN_ATTEMPTS: usize = 10;
/// A token is renewed this long before it expires (or at half its life, if shorter).
const TOKEN_MARGIN: Duration = Duration::from_secs(30);
/// After a 429, a user pauses for the Retry-After, but never longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Logins in flight at most, all users together: the gateway hashes at most
/// AUTH_MAX_CONCURRENT_HASHES (4) passwords at once and sheds the rest with 503, so a
/// burst of users starting together would otherwise mostly be refused.
const LOGINS_AT_ONCE: usize = 4;

/// What every user shares: the products, the random plan, the recorder, the tokens.
#[derive(Debug)]
pub struct Shared {
    /// Product ids, hottest first (the Zipf ranks).
    pub products: Vec<Uuid>,
    zipf: Zipf,
    accounts: u32,
    seed: u64,
    replay_probability: f64,
    max_lines: usize,
    max_quantity: u32,
    page_size: u32,
    /// Stop after this many requests (LOADTEST_REQUESTS).
    request_limit: Option<u64>,
    /// Unique per process, so keys never collide with an earlier process's.
    run_id: String,
    /// Goose runs started by this process (capacity mode runs one per step): part of
    /// every key and of every user's seed, so that no step repeats another's.
    runs: AtomicU64,
    /// What was seen, for the report and the check.
    pub recorder: Recorder,
    /// Tokens by virtual user, kept across the steps of capacity mode.
    tokens: Mutex<HashMap<usize, Token>>,
    /// Bounds the logins in flight ([`LOGINS_AT_ONCE`]).
    logins: tokio::sync::Semaphore,
}

impl Shared {
    /// The plan of `args` over `products` (hottest first).
    pub fn new(args: &LoadArgs, products: Vec<Uuid>) -> Self {
        Self {
            zipf: Zipf::new(products.len(), args.zipf_exponent),
            products,
            accounts: args.accounts,
            seed: args.seed,
            replay_probability: args.replay_probability,
            max_lines: args.max_lines,
            max_quantity: args.max_quantity,
            page_size: args.page_size,
            request_limit: args.requests,
            run_id: Uuid::new_v4().simple().to_string()[..12].to_owned(),
            runs: AtomicU64::new(0),
            recorder: Recorder::default(),
            tokens: Mutex::default(),
            logins: tokio::sync::Semaphore::new(LOGINS_AT_ONCE),
        }
    }

    /// Marks the start of a goose run (before its users start).
    pub fn start_run(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    /// The number of the current goose run (1 for the first).
    fn run_number(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Counts a request about to be sent; false when LOADTEST_REQUESTS is used up (the
    /// load test is then being stopped, and the request is not sent).
    fn admit(&self) -> bool {
        let sent = self.recorder.request();
        match self.request_limit {
            Some(limit) if sent >= limit => {
                goose::trigger_killswitch("LOADTEST_REQUESTS reached");
                sent == limit
            }
            _ => true,
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    bearer: String,
    renew_at: Instant,
}

/// An order answered 201, kept to be replayed.
#[derive(Clone, Debug)]
struct Sent {
    key: String,
    body: serde_json::Value,
    order_id: Uuid,
}

/// Per-user state (goose session data).
#[derive(Clone, Debug)]
struct Session {
    rng: StdRng,
    token: Option<Token>,
    history: VecDeque<Sent>,
    orders_sent: u64,
}

/// The `shopper` scenario with the transactions of `weights`.
pub fn scenario(
    shared: &Arc<Shared>,
    weights: Weights,
    think_time: Duration,
) -> Result<Scenario, GooseError> {
    let mut scenario = Scenario::new("shopper");
    if !think_time.is_zero() {
        scenario = scenario.set_wait_time(think_time / 2, think_time * 3 / 2)?;
    }
    let login = transaction(shared, |user, shared| {
        Box::pin(async move { bearer(user, &shared).await.map(|_| ()) })
    });
    scenario = scenario.register_transaction(login.set_name("login").set_on_start());
    for action in Action::ALL {
        let weight = weights.of(action);
        if weight == 0 {
            continue;
        }
        let run = transaction(shared, move |user, shared| {
            Box::pin(async move {
                match action {
                    Action::Browse => browse(user, &shared).await,
                    Action::Product => product(user, &shared).await,
                    Action::Order => order(user, &shared).await,
                    Action::MyOrders => my_orders(user, &shared).await,
                }
            })
        });
        scenario = scenario.register_transaction(run.set_name(action.name()).set_weight(weight)?);
    }
    Ok(scenario)
}

/// A goose transaction running `step` with the shared state.
fn transaction<F>(shared: &Arc<Shared>, step: F) -> Transaction
where
    F: for<'u> Fn(&'u mut GooseUser, Arc<Shared>) -> BoxedStep<'u> + Send + Sync + 'static,
{
    let shared = Arc::clone(shared);
    let function: TransactionFunction =
        Arc::new(move |user: &mut GooseUser| step(user, Arc::clone(&shared)));
    Transaction::new(function)
}

/// The future of one transaction, borrowing its user.
type BoxedStep<'u> = std::pin::Pin<Box<dyn Future<Output = TransactionResult> + Send + 'u>>;

/// The user's session, created on first use (its random stream is seeded by
/// LOADTEST_SEED, the user's index and the run's number, so a run is reproducible).
fn session<'u>(user: &'u mut GooseUser, shared: &Shared) -> &'u mut Session {
    if user.get_session_data::<Session>().is_none() {
        let index = user.weighted_users_index as u64;
        let stream = (shared.run_number() << 32 | index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let rng = StdRng::seed_from_u64(shared.seed ^ stream);
        user.set_session_data(Session {
            rng,
            token: None,
            history: VecDeque::with_capacity(HISTORY),
            orders_sent: 0,
        });
    }
    user.get_session_data_unchecked_mut::<Session>()
}

/// The user's bearer token: the one it holds, the one its index held in an earlier
/// capacity step, or a new login (pausing on 429 as the answer says).
async fn bearer(user: &mut GooseUser, shared: &Shared) -> Result<String, Box<TransactionError>> {
    let index = user.weighted_users_index;
    let now = Instant::now();
    if let Some(token) = session(user, shared).token.as_ref()
        && token.renew_at > now
    {
        return Ok(token.bearer.clone());
    }
    let cached = shared
        .tokens
        .lock()
        .get(&index)
        .filter(|t| t.renew_at > now)
        .cloned();
    if let Some(token) = cached {
        session(user, shared).token = Some(token.clone());
        return Ok(token.bearer);
    }

    let account = (index as u32 % shared.accounts) + 1;
    // Held across the login's awaits: a semaphore permit, not a lock guard.
    let _permit = shared
        .logins
        .acquire()
        .await
        .map_err(|_| "the login semaphore is closed")?;
    let body = json!({
        "email": format!("user{account}@shop.test"),
        "password": format!("password{account}"),
    });
    for _ in 0..LOGIN_ATTEMPTS {
        if !shared.admit() {
            return Err("the request limit is reached".into());
        }
        let builder = user
            .get_request_builder(&GooseMethod::Post, "/v1/auth/token")?
            .json(&body);
        let request = GooseRequest::builder()
            .method(GooseMethod::Post)
            .path("/v1/auth/token")
            .name("login")
            .set_request_builder(builder)
            .build();
        let mut goose = user.request(request).await?;
        let response = match goose.response {
            Ok(response) => response,
            Err(error) => {
                shared.recorder.status(None);
                return Err(format!("login as user{account}: {error}").into());
            }
        };
        let status = response.status().as_u16();
        shared.recorder.status(Some(status));
        match status {
            200 => {
                #[derive(Deserialize)]
                struct Issued {
                    access_token: String,
                    expires_in: u64,
                }
                let issued: Issued = response
                    .json()
                    .await
                    .map_err(|e| format!("login answer: {e}"))?;
                let life = Duration::from_secs(issued.expires_in);
                let token = Token {
                    bearer: issued.access_token,
                    renew_at: Instant::now() + life.saturating_sub(TOKEN_MARGIN.min(life / 2)),
                };
                shared.tokens.lock().insert(index, token.clone());
                session(user, shared).token = Some(token.clone());
                shared
                    .recorder
                    .counters
                    .logins
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(token.bearer);
            }
            429 => {
                user.set_success(&mut goose.request)?;
                // Logins are limited per IP (RATE_LIMIT_LOGIN): wait as long as told.
                let wait = retry_after(&response).unwrap_or(Duration::from_secs(1));
                drain(response).await;
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
            }
            503 => {
                // Shed (an error in the tables): back off as told, then try again.
                let wait = retry_after(&response).unwrap_or(MAX_BACKOFF);
                drain(response).await;
                tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
            }
            _ => {
                drain(response).await;
                return Err(format!("login as user{account}: status {status}").into());
            }
        }
    }
    Err(format!("login as user{account}: still 429 after {LOGIN_ATTEMPTS} attempts").into())
}

/// Forgets the user's token (after a 401), so the next action logs in again.
fn forget_token(user: &mut GooseUser, shared: &Shared) {
    session(user, shared).token = None;
    shared.tokens.lock().remove(&user.weighted_users_index);
}

/// The Retry-After of a response, in seconds.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Reads the rest of a body so that its connection goes back to the pool.
async fn drain(response: reqwest::Response) {
    let _ = response.bytes().await;
}

/// A GET with the user's token, named `name` in the reports.
async fn get(user: &mut GooseUser, shared: &Shared, path: &str, name: &str) -> TransactionResult {
    let token = bearer(user, shared).await?;
    if !shared.admit() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Ok(());
    }
    let builder = user
        .get_request_builder(&GooseMethod::Get, path)?
        .bearer_auth(token);
    let request = GooseRequest::builder()
        .path(path)
        .name(name)
        .set_request_builder(builder)
        .build();
    let mut goose = user.request(request).await?;
    let response = match goose.response {
        Ok(response) => response,
        Err(_) => {
            shared.recorder.status(None);
            return Ok(()); // goose recorded the failure
        }
    };
    let status = response.status().as_u16();
    shared.recorder.status(Some(status));
    match status {
        401 => forget_token(user, shared),
        429 => {
            user.set_success(&mut goose.request)?;
            let wait = retry_after(&response).unwrap_or(MAX_BACKOFF);
            drain(response).await;
            tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
            return Ok(());
        }
        _ => {}
    }
    drain(response).await;
    Ok(())
}

/// `browse`: one catalog page.
async fn browse(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
    let path = format!("/v1/products?limit={}", shared.page_size);
    get(user, shared, &path, "browse").await
}

/// `product`: one product, Zipf-skewed.
async fn product(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
    let rank = shared.zipf.sample(&mut session(user, shared).rng);
    let path = format!("/v1/products/{}", shared.products[rank]);
    get(user, shared, &path, "product").await
}

/// `my_orders`: the user's latest orders.
async fn my_orders(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
    get(user, shared, "/v1/orders?limit=10", "my_orders").await
}

/// The parts of an order's JSON the check needs.
#[derive(Deserialize)]
struct OrderBody {
    id: Uuid,
    user_id: Uuid,
    items: Vec<Line>,
}

/// The parts of a problem's JSON the report needs.
#[derive(Deserialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: String,
}

/// `order`: a new order, or (LOADTEST_REPLAY_PROBABILITY) a replay of an earlier one.
async fn order(user: &mut GooseUser, shared: &Shared) -> TransactionResult {
    let index = user.weighted_users_index;
    let session = session(user, shared);
    let replay =
        if !session.history.is_empty() && session.rng.random_bool(shared.replay_probability) {
            let pick = session.rng.random_range(0..session.history.len());
            Some(session.history[pick].clone())
        } else {
            None
        };
    if let Some(earlier) = replay {
        return replay_order(user, shared, earlier).await;
    }

    session.orders_sent += 1;
    let key = format!(
        "lt-{}-{}-{index}-{}",
        shared.run_id,
        shared.run_number(),
        session.orders_sent
    );
    let count = session.rng.random_range(1..=shared.max_lines);
    let ranks = shared.zipf.sample_distinct(&mut session.rng, count);
    let lines: Vec<Line> = ranks
        .into_iter()
        .map(|rank| Line {
            product_id: shared.products[rank],
            quantity: i64::from(session.rng.random_range(1..=shared.max_quantity)),
        })
        .collect();
    let body = json!({ "items": &lines });

    let Posted::Answered(mut request, response) =
        post_order(user, shared, &key, &body, "order").await?
    else {
        return Ok(());
    };
    let status = response.status().as_u16();
    shared.recorder.status(Some(status));
    match status {
        201 => {
            let replayed_header = is_replayed(&response);
            let placed: OrderBody = match response.json().await {
                Ok(placed) => placed,
                Err(e) => {
                    shared.recorder.status(None);
                    return user.set_failure(
                        &format!("201 with an unreadable order: {e}"),
                        &mut request,
                        None,
                        None,
                    );
                }
            };
            let session = self::session(user, shared);
            if session.history.len() == HISTORY {
                session.history.pop_front();
            }
            session.history.push_back(Sent {
                key: key.clone(),
                body,
                order_id: placed.id,
            });
            shared.recorder.placed(PlacedOrder {
                id: placed.id,
                user_id: placed.user_id,
                key,
                lines: placed.items,
                sent: lines,
                replayed_header,
            });
        }
        409 => {
            let problem: Option<Problem> = response.json().await.ok();
            if problem.is_some_and(|p| p.kind.ends_with("/insufficient-stock")) {
                shared
                    .recorder
                    .counters
                    .out_of_stock
                    .fetch_add(1, Ordering::Relaxed);
                user.set_success(&mut request)?;
            } else {
                // `request-in-progress` cannot happen to a fresh key: an error.
                shared
                    .recorder
                    .counters
                    .errors
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        429 => {
            user.set_success(&mut request)?;
            let wait = retry_after(&response).unwrap_or(MAX_BACKOFF);
            drain(response).await;
            tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
        }
        401 => {
            drain(response).await;
            forget_token(user, shared);
        }
        _ => drain(response).await,
    }
    Ok(())
}

/// Replays `earlier` (its key and body); the answer must be the same order.
async fn replay_order(user: &mut GooseUser, shared: &Shared, earlier: Sent) -> TransactionResult {
    shared
        .recorder
        .counters
        .replays
        .fetch_add(1, Ordering::Relaxed);
    let mut outcome = ReplayOutcome {
        key: earlier.key.clone(),
        expected: earlier.order_id,
        status: 0,
        got: None,
        replayed_header: false,
    };
    let (mut request, response) =
        match post_order(user, shared, &earlier.key, &earlier.body, "replay").await {
            Ok(Posted::Answered(request, response)) => (request, response),
            Ok(Posted::NotSent) => return Ok(()),
            Ok(Posted::NoAnswer) => {
                shared.recorder.replayed(outcome);
                return Ok(());
            }
            Err(error) => {
                shared.recorder.replayed(outcome);
                return Err(error);
            }
        };
    outcome.status = response.status().as_u16();
    outcome.replayed_header = is_replayed(&response);
    shared.recorder.status(Some(outcome.status));
    match outcome.status {
        409 => {
            // Only answered 201s are replayed: nothing may still be in progress.
            shared
                .recorder
                .counters
                .errors
                .fetch_add(1, Ordering::Relaxed);
            drain(response).await;
        }
        200..=299 => {
            #[derive(Deserialize)]
            struct Id {
                id: Uuid,
            }
            outcome.got = response.json::<Id>().await.ok().map(|body| body.id);
        }
        429 => {
            user.set_success(&mut request)?;
            drain(response).await;
        }
        401 => {
            drain(response).await;
            forget_token(user, shared);
        }
        _ => drain(response).await,
    }
    shared.recorder.replayed(outcome);
    Ok(())
}

/// What became of a `POST /v1/orders`.
enum Posted {
    /// An answer, with goose's record of the request (to re-classify it).
    Answered(Box<GooseRequestMetric>, reqwest::Response),
    /// Not sent: the request limit is reached.
    NotSent,
    /// Sent, but no answer came (goose recorded the failure).
    NoAnswer,
}

/// `POST /v1/orders` with `key` and `body`, named `name` in the reports.
async fn post_order(
    user: &mut GooseUser,
    shared: &Shared,
    key: &str,
    body: &serde_json::Value,
    name: &str,
) -> Result<Posted, Box<TransactionError>> {
    let token = bearer(user, shared).await?;
    if !shared.admit() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Ok(Posted::NotSent);
    }
    let builder = user
        .get_request_builder(&GooseMethod::Post, "/v1/orders")?
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body);
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path("/v1/orders")
        .name(name)
        .set_request_builder(builder)
        .build();
    let goose = user.request(request).await?;
    match goose.response {
        Ok(response) => Ok(Posted::Answered(Box::new(goose.request), response)),
        Err(_) => {
            shared.recorder.status(None);
            Ok(Posted::NoAnswer)
        }
    }
}

/// Whether a response carries `Idempotent-Replayed: true`.
fn is_replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}
