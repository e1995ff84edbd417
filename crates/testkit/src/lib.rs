//! Helpers for tests that run shop's binaries as real processes (the gateway's
//! integration tests, the load generator's smoke test): find a binary cargo built,
//! pick a port, wait for a listener, never leak a child process, and name the database
//! `#[sqlx::test]` made. A dev-dependency only.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sqlx::PgPool;

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
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("the child is still owned").id()
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
