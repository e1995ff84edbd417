//! [`Server`]: bind, serve, drain, stop the jobs, close the pools. Every service starts
//! and stops through it, so each does it in the same order:
//!
//! 1. [`Server::bind`] binds the listen address (port 0 picks a free port, for tests);
//! 2. [`Server::run`] serves until `stop` resolves (a signal, or a test) or the
//!    lifecycle's token is cancelled, then stops accepting and lets in-flight requests
//!    finish within `SHUTDOWN_DRAIN_TIMEOUT`;
//! 3. it drops the router (the last handles on the service's state, so pooled upstream
//!    connections close and their tracked tasks end), stops every job within
//!    `SHUTDOWN_JOBS_TIMEOUT` naming any that missed it, then closes the pools.
//!
//! Telemetry is flushed by the binary's `main` after `run` returns: the last requests'
//! spans and the shutdown's own log lines leave then.
//!
//! The accept loop is written over hyper-util rather than `axum::serve` for two things
//! `axum::serve` does not offer: a header read timeout against slow clients (slowloris),
//! and connection tasks owned by the lifecycle supervisor, so that a shutdown waits for
//! them and names them if they miss the deadline. Each request carries the peer address
//! as axum's `ConnectInfo<SocketAddr>`.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, extract::ConnectInfo, http::Request};
use futures::future::BoxFuture;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use shop_lifecycle::{Lifecycle, ShutdownReport};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::config::ServerConfig;

/// Something closed once the jobs have stopped (a pool).
pub trait Close: Send + Sync {
    /// Closes it; waits for borrowed connections to come back where the pool can.
    fn close(&self) -> BoxFuture<'_, ()>;
}

impl Close for sqlx::PgPool {
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(sqlx::PgPool::close(self))
    }
}

impl Close for deadpool_redis::Pool {
    fn close(&self) -> BoxFuture<'_, ()> {
        deadpool_redis::Pool::close(self);
        Box::pin(std::future::ready(()))
    }
}

/// A bound, not yet serving, HTTP server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    name: &'static str,
}

impl Server {
    /// Binds `addr` for the service `name` (used in log lines).
    pub async fn bind(name: &'static str, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        Ok(Self { listener, name })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves `router` until `stop` resolves or `lifecycle`'s token is cancelled, then
    /// shuts down in the order of the module docs and returns the jobs' report.
    pub async fn run(
        self,
        router: Router,
        lifecycle: Lifecycle,
        config: &ServerConfig,
        stop: impl Future<Output = ()> + Send,
        pools: Vec<Box<dyn Close>>,
    ) -> anyhow::Result<ShutdownReport> {
        let Self { listener, name } = self;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "{name} listening");
        let graceful = GracefulShutdown::new();
        accept_until(&listener, &router, &lifecycle, config, &graceful, stop).await;

        drop(listener);
        let drain = config.shutdown_drain_timeout;
        tracing::info!(?drain, "stopped accepting; draining in-flight requests");
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?drain,
                "some connections were still busy at the drain deadline"
            );
        }
        drop(router);
        let report = lifecycle.shutdown(config.shutdown_jobs_timeout).await;
        for pool in &pools {
            pool.close().await;
        }
        if !report.is_clean() {
            tracing::warn!(unfinished = ?report.unfinished, "some jobs did not stop in time");
        }
        tracing::info!(
            clean = report.is_clean(),
            unfinished = ?report.unfinished,
            alive_tasks_before = report.alive_tasks_before,
            alive_tasks_after = report.alive_tasks_after,
            elapsed = ?report.elapsed,
            "{name} stopped"
        );
        Ok(report)
    }
}

/// The accept loop: one supervised task per connection, until `stop` or cancellation.
async fn accept_until(
    listener: &TcpListener,
    router: &Router,
    lifecycle: &Lifecycle,
    config: &ServerConfig,
    graceful: &GracefulShutdown,
    stop: impl Future<Output = ()> + Send,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let token = lifecycle.token();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            () = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Usually EMFILE: back off a little instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        drop(
            lifecycle.spawn_connection_task("http_connection", async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
            }),
        );
    }
}

/// The answer to an error of the load-shedding middleware (tower's
/// `GlobalConcurrencyLimitLayer` + `LoadShedLayer` behind axum's `HandleErrorLayer`, in
/// every service): beyond the in-flight cap a request is answered `overloaded()` at once
/// (503 + `Retry-After`) and counted in `counter`, instead of queueing (pitfall 5); any
/// other middleware error is `internal`.
pub fn shed_response<E: axum::response::IntoResponse>(
    error: tower::BoxError,
    counter: &'static str,
    overloaded: impl FnOnce() -> E,
    internal: impl FnOnce(anyhow::Error) -> E,
) -> axum::response::Response {
    if error.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!(counter).increment(1);
        overloaded().into_response()
    } else {
        internal(anyhow::anyhow!("unhandled middleware error: {error}")).into_response()
    }
}

/// One sample of what every service exports about itself: the runtime (alive tasks,
/// workers, queue depth) and the lifecycle's jobs.
pub fn record_runtime_metrics(lifecycle: &Lifecycle) {
    lifecycle.record_metrics();
    shop_telemetry::runtime::sample();
}

/// The body of a service's internal `GET /debug/jobs`: the supervised jobs by name with
/// their state, runs and last error, the tasks the lifecycle tracks, and the runtime's
/// alive tasks.
pub fn jobs_report(lifecycle: &Lifecycle) -> serde_json::Value {
    fn unix(t: std::time::SystemTime) -> f64 {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    }
    let jobs: Vec<serde_json::Value> = lifecycle
        .jobs()
        .into_iter()
        .map(|job| {
            serde_json::json!({
                "name": job.name,
                "state": job.state.as_str(),
                "started_at": unix(job.started_at),
                "finished_at": job.finished_at.map(unix),
                "runs": job.runs,
                "failures": job.failures,
                "last_success": job.last_success.map(unix),
                "last_error": job.last_error,
            })
        })
        .collect();
    serde_json::json!({
        "jobs": jobs,
        "tracked_tasks": lifecycle.tracked_tasks(),
        "alive_tasks": shop_lifecycle::alive_tasks(),
    })
}

/// The `/readyz` answer every service gives: Postgres and Redis probed at once (1 s
/// each), `503` while shutting down, while Postgres is down, or while Redis is down if
/// the service needs it (`redis_required`: payments reads its work from Redis; orders
/// keeps placing orders without it, their events wait in the outbox). The body names
/// each dependency `up` or `down`.
pub async fn readiness(
    db: &sqlx::PgPool,
    redis: &deadpool_redis::Pool,
    lifecycle: &Lifecycle,
    redis_required: bool,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    const CHECK: Duration = Duration::from_secs(1);
    let (postgres, redis) = tokio::join!(
        crate::pools::postgres_usable(db, CHECK),
        crate::pools::redis_usable(redis, CHECK),
    );
    let shutting_down = lifecycle.is_shutting_down();
    let ready = postgres && (redis || !redis_required) && !shutting_down;
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "up" } else { "down" };
    (
        status,
        axum::Json(serde_json::json!({
            "status": if ready { "ready" } else { "unready" },
            "postgres": word(postgres),
            "redis": word(redis),
            "shutting_down": shutting_down,
        })),
    )
}
