//! A Kafka-protocol broker a test owns and can take away and bring back: tansu on a free
//! port with memory storage, reached only through a proxy of its own. Taking it away resets
//! every connection and refuses new ones, as a dead broker's host does; bringing it back
//! lets traffic through to the same broker, its topics and records intact, as a restarted
//! broker with durable storage would. (The prebuilt tansu has memory storage only, and
//! tansu 0.6's sqlite engine panics on the first batch after a producer epoch bump.)

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::app::free_port;
use super::proxy::{Mode, Proxy};

/// The tansu binary: `TANSU_BIN` (set by `cargo xtask test`), else the prebuilt one
/// `cargo xtask up` puts into the cache.
pub fn tansu_bin() -> PathBuf {
    super::cached_binary(
        "TANSU_BIN",
        "tansu-0.6.0-prebuilt/tansu",
        "this test runs a broker of its own and needs the tansu binary",
    )
}

/// A tansu broker owned by one test, behind its own proxy.
pub struct OwnBroker {
    dir: tempfile::TempDir,
    proxy: Proxy,
    child: Child,
}

impl OwnBroker {
    /// Starts a broker on a free port, its log in a new temporary directory, and waits
    /// until it answers through its proxy.
    pub async fn start() -> OwnBroker {
        let bin = tansu_bin();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let port = free_port();
        let proxy = Proxy::start(format!("127.0.0.1:{port}")).await;
        let log = std::fs::File::create(dir.path().join("tansu.log"))
            .unwrap_or_else(|e| panic!("tansu log: {e}"));
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
            ])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", proxy.port()),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin:?}: {e}"));
        let mut broker = OwnBroker { dir, proxy, child };
        let until = Instant::now() + super::DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("tansu exited ({status}); log:\n{}", broker.log());
            }
            assert!(
                Instant::now() < until,
                "tansu did not listen in time:\n{}",
                broker.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        broker
    }

    /// `host:port` to bootstrap from (the proxy's).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port())
    }

    /// The proxy every client reaches the broker through (to stall or cut it).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Takes the broker away: every connection is reset and new ones are refused.
    pub fn stop(&mut self) {
        self.proxy.set(Mode::Reset);
    }

    /// Brings the broker back with everything it held.
    pub async fn resume(&mut self) {
        self.proxy.set(Mode::Pass);
    }

    /// Sends `signal` to the broker (SIGSTOP: it keeps its connections and answers
    /// nothing; SIGCONT: it goes on).
    pub fn signal(&self, signal: i32) {
        super::signal(&self.child, signal);
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        // A stopped process is killed only once continued.
        super::signal(&self.child, libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
