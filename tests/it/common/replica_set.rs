//! A replica set of several members a test owns, started from the same `mongod` binary as
//! the shared server, for faults the shared one must never see: a primary stepped down or
//! killed, members stopped so that the primary's writes roll back, a majority lost.
//! Elections are sped up ([`Elections::FAST`]: `electionTimeoutMillis` 2 s instead of 10 s)
//! so CI spends its time on the checks, not on waiting; the chaos bench can run with the
//! server's defaults.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::Client;
use mongodb::bson::{Document, doc};

use super::app::free_port;
use super::own_mongod::mongod_bin;
use super::proxy::{Mode, Proxy};

/// How quickly the set notices a lost primary and elects another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Elections {
    /// `electionTimeoutMillis`.
    pub timeout_ms: i32,
    /// `heartbeatIntervalMillis`.
    pub heartbeat_ms: i32,
}

impl Elections {
    /// What the tests use: a lost primary is replaced within about 2 s.
    pub const FAST: Elections = Elections {
        timeout_ms: 2000,
        heartbeat_ms: 500,
    };
    /// The server's defaults, as production runs: about 10 s.
    pub const SERVER_DEFAULT: Elections = Elections {
        timeout_ms: 10_000,
        heartbeat_ms: 2000,
    };

    /// The election timeout.
    pub fn timeout(self) -> Duration {
        Duration::from_millis(self.timeout_ms as u64)
    }
}

/// How long the set may take to elect a primary after a fault.
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(60);

struct Member {
    port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running replica set of `n` members on free ports, without access control.
pub struct ReplicaSet {
    name: String,
    members: Vec<Member>,
    /// Where the set is proxied: one proxy per member, whose address is the member's host
    /// in the set's configuration, so the other members and every client reach it only
    /// through the proxy.
    proxies: Vec<Proxy>,
    /// The proxies' own runtime: a test blocking its thread must not stall replication.
    _proxy_runtime: ProxyRuntime,
    _dir: tempfile::TempDir,
}

/// A runtime dropped without waiting (dropping one inside async code would panic).
struct ProxyRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// How the set is laid out.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Every member holds data.
    Plain,
    /// The last member is an arbiter.
    Arbiter,
    /// Every member holds data and is reached through its own proxy.
    Proxied,
}

impl ReplicaSet {
    /// Starts `n` members, initiates the set (member 0 preferred as the first primary) and
    /// waits until it takes majority writes.
    pub async fn start(n: usize) -> ReplicaSet {
        ReplicaSet::start_shaped(n, Shape::Plain, Elections::FAST).await
    }

    /// Starts `n` members, each behind a proxy that is its address in the set: cutting a
    /// member's proxy cuts it off from the others and from every client, as a network
    /// partition does (see [`ReplicaSet::partition`]).
    pub async fn start_proxied(n: usize, elections: Elections) -> ReplicaSet {
        ReplicaSet::start_shaped(n, Shape::Proxied, elections).await
    }

    /// Starts a primary, a secondary and an arbiter (member 2). With the secondary down
    /// the primary stays primary and takes `w:1` writes, but no majority acknowledges
    /// anything: the shape in which majority writes wait and nothing else does.
    pub async fn start_with_arbiter() -> ReplicaSet {
        ReplicaSet::start_shaped(3, Shape::Arbiter, Elections::FAST).await
    }

    async fn start_shaped(n: usize, shape: Shape, elections: Elections) -> ReplicaSet {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let name = format!("rsf{}", std::process::id());
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let data = dir.path().join(format!("m{i}"));
                std::fs::create_dir_all(&data).expect("data dir");
                Member {
                    port: free_port(),
                    log: dir.path().join(format!("m{i}.log")),
                    data,
                    child: None,
                }
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let mut proxies = Vec::new();
        if shape == Shape::Proxied {
            for m in &members {
                let upstream = format!("127.0.0.1:{}", m.port);
                let proxy = runtime.spawn(Proxy::start(upstream));
                proxies.push(proxy.await.expect("proxy started"));
            }
        }
        let mut set = ReplicaSet {
            name,
            members,
            proxies,
            _proxy_runtime: ProxyRuntime(Some(runtime)),
            _dir: dir,
        };
        for i in 0..n {
            set.launch(i);
        }
        for i in 0..n {
            set.wait_answers(i).await;
        }
        let members: Vec<Document> = set
            .members
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let mut member = doc! {"_id": i as i32, "host": set.host(i),
                "priority": if i == 0 { 2 } else { 1 }};
                if shape == Shape::Arbiter && i == n - 1 {
                    member.insert("arbiterOnly", true);
                    member.insert("priority", 0);
                }
                member
            })
            .collect();
        set.admin(0)
            .await
            .run_command(doc! {"replSetInitiate": {
                "_id": &set.name,
                "members": members,
                "settings": {
                    "electionTimeoutMillis": elections.timeout_ms,
                    "heartbeatIntervalMillis": elections.heartbeat_ms,
                },
            }})
            .await
            .expect("replSetInitiate");
        set.wait_majority_writes().await;
        set
    }

    fn launch(&mut self, i: usize) {
        let member = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("log file");
        let child = Command::new(mongod_bin())
            .args(["--replSet", &self.name, "--bind_ip", "127.0.0.1", "--port"])
            .arg(member.port.to_string())
            .arg("--dbpath")
            .arg(&member.data)
            .args(["--wiredTigerCacheSizeGB", "0.25"])
            .args(["--setParameter", "enableTestCommands=1"])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting mongod: {e}"));
        member.child = Some(child);
    }

    /// Member `i`'s address in the set: its proxy's where it has one.
    fn host(&self, i: usize) -> String {
        let port = match self.proxies.get(i) {
            Some(proxy) => proxy.port(),
            None => self.members[i].port,
        };
        format!("127.0.0.1:{port}")
    }

    /// Cuts member `i` off from everyone (`Mode::Hold`: a partition; `Mode::Blackhole`;
    /// `Mode::Reset`) or joins it again (`Mode::Pass`). Only on a proxied set.
    pub fn partition(&self, i: usize, mode: Mode) {
        self.proxies
            .get(i)
            .expect("a proxied set (ReplicaSet::start_proxied)")
            .set(mode);
    }

    /// Its connection string (every member, the set's name).
    pub fn uri(&self) -> String {
        let hosts: Vec<String> = (0..self.members.len()).map(|i| self.host(i)).collect();
        format!("mongodb://{}/?replicaSet={}", hosts.join(","), self.name)
    }

    /// A client for the set.
    pub async fn client(&self) -> Client {
        Client::with_uri_str(self.uri()).await.expect("client")
    }

    /// A client for member `i` alone.
    pub async fn direct(&self, i: usize) -> Client {
        Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=2000",
            self.members[i].port
        ))
        .await
        .expect("direct client")
    }

    /// The `admin` database of member `i` alone.
    async fn admin(&self, i: usize) -> mongodb::Database {
        self.direct(i).await.database("admin")
    }

    async fn wait_answers(&self, i: usize) {
        let admin = self.admin(i).await;
        let until = Instant::now() + Duration::from_secs(60);
        while admin.run_command(doc! {"ping": 1}).await.is_err() {
            assert!(Instant::now() < until, "member {i} did not answer in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which member is primary now, if one is.
    pub async fn primary(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let hello = self.admin(i).await.run_command(doc! {"hello": 1}).await;
            if hello.is_ok_and(|h| h.get_bool("isWritablePrimary") == Ok(true)) {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a primary takes majority writes; returns it and how long it took.
    pub async fn wait_majority_writes(&self) -> (usize, Duration) {
        let started = Instant::now();
        let client = self.client().await;
        let probe = client
            .database("failover_probe")
            .collection::<Document>("probe");
        loop {
            let written = tokio::time::timeout(
                Duration::from_secs(5),
                probe
                    .insert_one(doc! {"at": mongodb::bson::DateTime::now()})
                    .write_concern(mongodb::options::WriteConcern::majority()),
            )
            .await;
            if matches!(written, Ok(Ok(_)))
                && let Some(primary) = self.primary().await
            {
                return (primary, started.elapsed());
            }
            assert!(
                started.elapsed() < ELECTION_DEADLINE,
                "no primary took majority writes within {ELECTION_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Asks the primary to step down (and not stand again for 10 s), once there is one.
    pub async fn step_down(&self) -> usize {
        let (primary, _) = self.wait_majority_writes().await;
        let result = self
            .admin(primary)
            .await
            .run_command(doc! {"replSetStepDown": 10, "secondaryCatchUpPeriodSecs": 5})
            .await;
        // The server closes connections as it steps down: an error is expected.
        if let Err(e) = result {
            let text = e.to_string();
            assert!(
                !text.contains("NotWritablePrimary") && !text.contains("ExceededTimeLimit"),
                "replSetStepDown failed: {text}"
            );
        }
        primary
    }

    /// The election term, as the primary sees it: it grows with every election.
    pub async fn term(&self) -> i64 {
        let (primary, _) = self.wait_majority_writes().await;
        let status = self
            .admin(primary)
            .await
            .run_command(doc! {"replSetGetStatus": 1})
            .await
            .expect("replSetGetStatus");
        status.get_i64("term").expect("a term")
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs member `i`: it holds its connections open and answers nothing.
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONTs member `i`.
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, signal: i32) {
        super::signal(
            self.members[i].child.as_ref().expect("member running"),
            signal,
        );
    }

    /// The members other than `i`.
    pub fn others(&self, i: usize) -> Vec<usize> {
        (0..self.members.len()).filter(|&j| j != i).collect()
    }

    /// Starts member `i` again on its data.
    pub async fn restart(&mut self, i: usize) {
        self.launch(i);
        self.wait_answers(i).await;
    }

    /// Waits until member `i` reports SECONDARY (after a restart; a rollback happens on the
    /// way there).
    pub async fn wait_secondary(&self, i: usize) {
        let admin = self.admin(i).await;
        let until = Instant::now() + ELECTION_DEADLINE;
        loop {
            let hello = admin.run_command(doc! {"hello": 1}).await;
            if hello.is_ok_and(|h| h.get_bool("secondary") == Ok(true)) {
                return;
            }
            assert!(
                Instant::now() < until,
                "member {i} did not become SECONDARY"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The log of member `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }
}

impl Drop for ReplicaSet {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            // A stopped process ignores SIGKILL's cleanup until continued.
            if self.members[i].child.is_some() {
                self.signal(i, libc::SIGCONT);
            }
            self.kill(i);
        }
    }
}
