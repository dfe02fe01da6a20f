//! A Kafka-protocol broker a test owns and can stop and start again: tansu on a free port
//! with sqlite storage, so its topics survive the restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::app::free_port;

/// The tansu binary: `TANSU_BIN` (set by `cargo xtask test`), else the one `cargo xtask up`
/// builds into the cache.
pub fn tansu_bin() -> PathBuf {
    super::cached_binary(
        "TANSU_BIN",
        "tansu-0.6.0/bin/tansu",
        "this test stops and restarts its own broker and needs the tansu binary",
    )
}

/// A tansu broker owned by one test.
pub struct OwnBroker {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// The port clients are told to use (a proxy's), when not `port`.
    advertised: Option<u16>,
    child: Option<Child>,
}

impl OwnBroker {
    /// Starts a broker on a free port, its data in a new temporary directory.
    pub async fn start() -> OwnBroker {
        OwnBroker::start_on(free_port(), None).await
    }

    /// Starts a broker on `port` that tells clients to connect to `advertised` (a proxy in
    /// front of it) when given.
    pub async fn start_on(port: u16, advertised: Option<u16>) -> OwnBroker {
        let mut broker = OwnBroker {
            bin: tansu_bin(),
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
            port,
            advertised,
            child: None,
        };
        broker.resume().await;
        broker
    }

    /// `host:port` to bootstrap from.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and data, and waits until it answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let url = format!("tcp://{}", self.address());
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap_or_else(|e| panic!("tansu log: {e}"));
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            // Behind a proxy: memory storage (tansu 0.6's sqlite engine panics on the
            // first batch after a producer epoch bump, which a stalled request causes).
            .args([
                "--storage-engine",
                if self.advertised.is_some() {
                    "memory://tansu/"
                } else {
                    "sqlite://tansu.db"
                },
            ])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.bin));
        self.child = Some(child);
        let until = Instant::now() + super::DEADLINE;
        while std::net::TcpStream::connect(self.address()).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("tansu exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < until,
                "tansu did not listen in time:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` to the broker (SIGSTOP: it keeps its connections and answers
    /// nothing; SIGCONT: it goes on).
    pub fn signal(&self, signal: i32) {
        super::signal(self.child.as_ref().expect("the broker is running"), signal);
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process is killed only once continued.
            super::signal(child, libc::SIGCONT);
        }
        self.stop();
    }
}
