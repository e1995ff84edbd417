//! Helpers shared by every crate's tests, so that no test re-implements them: wait for
//! a condition with a bounded total time ([`eventually`]), find a binary cargo built,
//! pick a port, wait for a listener, never leak a child process (and stop one as
//! SIGTERM would), name the database `#[sqlx::test]` made, run a private
//! `redis-server` that a fault test may kill and restart, and put a TCP proxy that a
//! fault test may cut between a service and its dependency. A dev-dependency only.

use std::{
    fmt,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

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
///
/// [`PrivateRedis::start_persistent`] keeps its data across a kill instead (an append-only
/// file written at every command): a crash, not a wipe, for tests that check that
/// nothing is lost.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    process: Option<ChildGuard>,
    /// The append-only file's directory, when persistent (removed when dropped).
    data_dir: Option<PathBuf>,
}

impl PrivateRedis {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            process: None,
            data_dir: None,
        };
        redis.restart().await;
        redis
    }

    /// Starts one whose data survives [`PrivateRedis::kill`]: every write is appended
    /// to a file (`appendfsync always`) that a restart loads again.
    pub async fn start_persistent() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "shop-redis-{port}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for redis' append-only file");
        let mut redis = Self {
            port,
            process: None,
            data_dir: Some(dir),
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

    /// Starts it (again) on the same port, empty unless persistent, and waits (up to
    /// 10 s) until it answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""]);
        match &self.data_dir {
            Some(dir) => command.arg("--dir").arg(dir).args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
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

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TCP proxy on a free local port to `target`, which a fault test cuts
/// ([`TcpProxy::cut`]: every open connection is closed and new ones are refused, as
/// when the dependency goes down) and restores on the same port. Point a service at
/// [`TcpProxy::port`] instead of the dependency. Its tasks live in its own `JoinSet`:
/// dropping the proxy stops them.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    target: SocketAddr,
    server: JoinSet<()>,
}

impl TcpProxy {
    /// Starts forwarding 127.0.0.1:<free port> to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let mut proxy = Self {
            port: free_port(),
            target,
            server: JoinSet::new(),
        };
        proxy.restore().await;
        proxy
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The outage: closes every open connection and stops listening (connections are
    /// refused) until [`TcpProxy::restore`].
    pub async fn cut(&mut self) {
        self.server.abort_all();
        while self.server.join_next().await.is_some() {}
    }

    /// Listens again on the same port (does nothing if it is listening).
    pub async fn restore(&mut self) {
        if !self.server.is_empty() {
            return;
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy's port is free again");
        let target = self.target;
        #[expect(
            clippy::disallowed_methods,
            reason = "test support: the proxy owns its JoinSet, so cutting or dropping it aborts every task"
        )]
        self.server.spawn(forward(listener, target));
    }
}

/// The accept loop: each connection is piped both ways to `target`. The connections'
/// tasks belong to this loop's `JoinSet`, so aborting the loop closes them all.
async fn forward(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "test support: owned by the accept loop's JoinSet, aborted with it"
        )]
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        while connections.try_join_next().is_some() {}
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
