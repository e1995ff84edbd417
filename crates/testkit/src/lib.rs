//! Helpers shared by every crate's tests, so that no test re-implements them: wait for
//! a condition with a bounded total time ([`eventually`]), find a binary cargo built,
//! pick a port, wait for a listener, never leak a child process (and stop one as
//! SIGTERM would), name the database `#[sqlx::test]` made, and run a private
//! `redis-server` that a fault test may kill and restart. A dev-dependency only.

use std::{
    fmt,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How often [`eventually`] and [`eventually_ok`] try again: often enough that a test
/// does not wait long after its condition holds, rarely enough not to load what it polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Waits until `condition` holds, trying it every 50 ms; panics naming `what` if it
/// does not hold within `limit`.
///
/// `limit` bounds the total time, a try still in flight included (a probe that hangs
/// fails the test instead of hanging it). Time is tokio's clock, so a test with a
/// paused clock waits virtual time. `condition` may borrow mutably (an async closure).
pub async fn eventually(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    eventually_ok(limit, what, async || {
        if condition().await {
            Ok(())
        } else {
            Err(StillFalse)
        }
    })
    .await;
}

/// [`eventually`] for a probe that says why it is not there yet: waits until `probe`
/// returns `Ok`, trying it every 50 ms, and returns that value; if it does not within
/// `limit`, panics naming `what` and the probe's last `Err` (what was still missing).
pub async fn eventually_ok<T, E: fmt::Debug>(
    limit: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let mut last = None;
    let polled = tokio::time::timeout(limit, async {
        loop {
            match probe().await {
                Ok(value) => return value,
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    })
    .await;
    match (polled, last) {
        (Ok(value), _) => value,
        (Err(_), Some(last)) => panic!("not within {limit:?}: {what} (last try: {last:?})"),
        (Err(_), None) => panic!("not within {limit:?}: {what} (the first try never finished)"),
    }
}

/// The `Err` of [`eventually`]'s probe: its condition was false.
struct StillFalse;

impl fmt::Debug for StillFalse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("still false")
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// Waits (up to 30 s) until something listens on `port`.
pub fn wait_for_port(port: u16) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port} after 30 s");
}

/// A child process killed when dropped, so no test leaks one.
#[derive(Debug)]
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("the child is still owned").id()
    }

    /// Sends SIGTERM to the child, as an orchestrator stopping it would.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Whether the child has exited (without waiting for it).
    pub fn has_exited(&mut self) -> bool {
        let child = self.0.as_mut().expect("the child is still owned");
        child.try_wait().expect("the child's status").is_some()
    }

    /// Waits (polling, without blocking the runtime: the test's own servers may be
    /// needed meanwhile) up to `limit` for the child to exit and returns its status;
    /// the guard then owns nothing. Panics naming the process if it is still running,
    /// and the guard kills it when dropped.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.pid();
        let child = self.0.as_mut().expect("the child is still owned");
        let status = eventually_ok(limit, &format!("process {pid} exits"), async || {
            child
                .try_wait()
                .expect("the child's status")
                .ok_or("still running")
        })
        .await;
        self.0 = None;
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Path of a binary built by cargo next to the running test binary
/// (`target/<profile>/<name>`).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --bins`, or run `cargo nextest run --workspace`)",
        path.display()
    );
    path
}

/// The URL of the per-test database that `#[sqlx::test]` created.
pub fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

/// `REDIS_URL`, or the local Redis.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Runs `orders seed <args>` (the sibling `orders` binary) against `database`; panics if
/// it fails.
pub fn seed_orders(database: &str, args: &[&str]) {
    let status = Command::new(sibling_binary("orders"))
        .arg("seed")
        .args(args)
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .expect("orders seed runs");
    assert!(status.success(), "orders seed failed");
}

/// A private `redis-server` on a free port, nothing saved to disk, killed when dropped:
/// for fault tests, which kill it mid-traffic and start it again on the same port
/// (the shared Redis at [`redis_url`] must never be stopped).
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    process: Option<ChildGuard>,
}

impl PrivateRedis {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            process: None,
        };
        redis.restart().await;
        redis
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL (`redis://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the outage under test. Does nothing if it is not running.
    pub fn kill(&mut self) {
        // Dropping the guard kills the process and reaps it, so the port is free again.
        self.process = None;
    }

    /// Starts it (again) on the same port, empty, and waits (up to 10 s) until it
    /// answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed and starts");
        let mut process = ChildGuard::new(child);
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            &format!("the private redis-server on port {port} answers PING"),
            async || {
                assert!(!process.has_exited(), "redis-server on port {port} exited");
                answers_ping(port).await
            },
        )
        .await;
        self.process = Some(process);
    }
}

/// Whether a Redis on 127.0.0.1:`port` answers `PING` with `+PONG`.
async fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
}
