//! Test harness: where the real servers are, unique names so tests run in parallel, and
//! waiting with a deadline. A missing server fails the test with how to start it.
#![allow(dead_code)] // not every helper is used by every configuration of the suite

pub mod app;
pub mod broker;
pub mod chaos;
pub mod corpus;
pub mod load;
pub mod own_mongod;
pub mod proxy;
pub mod records;
pub mod replica_set;
pub mod schemas;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mongodb::Client;
use mongodb::bson::doc;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// How long a test waits for something that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(30);

const HOW_TO_START: &str = "start the local services with `cargo xtask up` (or run the \
    whole suite with `cargo xtask test`), or point MONGODB_URI / KAFKA_BROKERS at running servers";

/// MongoDB replica set under test: `MONGODB_URI`, else the local `cargo xtask up` one.
pub fn mongodb_uri() -> String {
    env_or("MONGODB_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0")
}

/// Kafka bootstrap brokers under test: `KAFKA_BROKERS`, else the local tansu.
pub fn kafka_brokers() -> String {
    env_or("KAFKA_BROKERS", "127.0.0.1:9092")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A name no other test (or earlier run) uses: `prefix_<pid>_<n>_<time>`, under the
/// 63-byte limit MongoDB puts on database names.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000_000_000)
        .unwrap_or(0);
    let name = format!("t_{prefix}_{}_{n}_{micros}", std::process::id());
    assert!(name.len() <= 63, "test name prefix too long: {name}");
    name
}

/// The oldest entry of the oplog `client` reads, read directly.
pub async fn oldest_oplog_entry(client: &Client) -> mongodb::bson::Timestamp {
    client
        .database("local")
        .collection::<mongodb::bson::Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .await
        .expect("reading local.oplog.rs")
        .expect("the oplog has entries")
        .get_timestamp("ts")
        .expect("ts")
}

/// A client for the replica set, checked to be reachable and to be a replica set.
pub async fn mongo() -> Client {
    let uri = mongodb_uri();
    let client = match Client::with_uri_str(&uri).await {
        Ok(c) => c,
        Err(e) => panic!("MONGODB_URI={uri} is not usable: {e}; {HOW_TO_START}"),
    };
    let hello = tokio::time::timeout(
        Duration::from_secs(15),
        client.database("admin").run_command(doc! {"hello": 1}),
    )
    .await;
    match hello {
        Ok(Ok(reply)) => assert!(
            reply.contains_key("setName") || reply.get_str("msg") == Ok("isdbgrid"),
            "MongoDB at {uri} is a standalone server; change streams need a replica set; \
             {HOW_TO_START}"
        ),
        Ok(Err(e)) => panic!("MongoDB replica set not reachable at {uri}: {e}; {HOW_TO_START}"),
        Err(_) => panic!("MongoDB replica set at {uri} did not answer in 15 s; {HOW_TO_START}"),
    }
    client
}

/// The version the shared server reports (`buildInfo`), e.g. "6.0.27".
pub async fn server_version() -> String {
    let info = mongo()
        .await
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .expect("buildInfo");
    info.get_str("version").unwrap_or("unknown").to_owned()
}

/// Sends `signal` (e.g. `libc::SIGTERM`, `libc::SIGSTOP`) to `child`.
pub fn signal(child: &std::process::Child, signal: i32) {
    let pid = i32::try_from(child.id()).unwrap_or_else(|_| panic!("pid out of range"));
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// Polls `check` until it yields a value, panicking with `what` after `deadline`.
pub async fn wait_until<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits `future`, panicking with `what` when it takes longer than `deadline`.
pub async fn within<T>(deadline: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Creates a topic on the broker under test (the broker does not auto-create topics).
pub async fn create_topic(name: &str, partitions: i32) {
    let brokers = kafka_brokers();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap_or_else(|e| panic!("cannot create a Kafka admin client for {brokers}: {e}"));
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let results = match tokio::time::timeout(
        Duration::from_secs(30),
        admin.create_topics([&topic], &options),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("Kafka broker at {brokers} refused CreateTopics: {e}; {HOW_TO_START}"),
        Err(_) => panic!("Kafka broker at {brokers} did not answer in 30 s; {HOW_TO_START}"),
    };
    for result in results {
        if let Err((topic, code)) = result {
            panic!("creating topic {topic} on {brokers} failed: {code}");
        }
    }
}

/// A server binary: the path in `env_var` (set by `cargo xtask test`), else `cached` under
/// the cache `cargo xtask up` fills; panics with `needed_for` and how to get it.
pub fn cached_binary(env_var: &str, cached: &str, needed_for: &str) -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(bin) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        return PathBuf::from(bin);
    }
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let cache = nonempty("CHANGEFLOW_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("changeflow")))
        .unwrap_or_else(|| {
            PathBuf::from(nonempty("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/changeflow")
        });
    let bin = cache.join(cached);
    assert!(
        bin.is_file(),
        "{needed_for}: none at {bin:?} and {env_var} is not set; run `cargo xtask up` (it puts \
         the servers into the cache) or `cargo xtask test`, or set {env_var}"
    );
    bin
}

/// The change stream of `target` as changeflow opens it with its default options.
pub async fn open_stream(
    client: &Client,
    target: &changeflow::config::WatchedDatabase,
    start: &changeflow::source::StartAt,
) -> mongodb::change_stream::ChangeStream<changeflow::source::RawChange> {
    let options = changeflow::config::Config::default().engine;
    changeflow::source::open(client, target, &options, start)
        .await
        .unwrap_or_else(|e| panic!("opening the change stream of {}: {e}", target.database))
}

/// Held by a test that starts its own servers and injects faults (kills, stalls, step-downs,
/// an oplog that wraps): no two of them run at once, so neither one's timing is the
/// other's load. The other tests run beside them.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    FAULTS.lock().await
}
