//! Change events over MongoDB's 16 MB limit: a thread of nine 1 MB messages gets a tenth,
//! and with pre- and post-images on its update event is about 20 MB. Before, the server
//! refused the event on every reopen and the stream never moved again. Now it is split and
//! reassembled where the server can, and otherwise goes by `engine.oversize`; later events
//! flow in every case. A crash between two fragments restarts at the first.

use std::time::Duration;

use crate::common::app::{Process, memory_config};
use crate::common::proxy::{Mode, Proxy, shared_primary, through};
use crate::common::{DEADLINE, mongo, mongodb_uri, unique_name, wait_until};
use changeflow::cmd::setup;
use changeflow::config::{Config, OversizePolicy};
use changeflow::state::dead_letters;
use changeflow::targets::memory_stats::MEMORY_STATS;
use mongodb::Database;
use mongodb::bson::{DateTime, Document, doc};

const MIB: usize = 1024 * 1024;

fn message(content: String) -> Document {
    doc! {"role": "user", "content": content, "timestamp": DateTime::now(), "token_count": 1}
}

fn in_an_hour() -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + 3_600_000)
}

/// Inserts thread `thread` of `user` with nine 1 MB messages, then pushes a tenth: the
/// update event carries ~9 MB before, ~10 MB after and 1 MB of update description.
async fn grow_past_the_limit(db: &Database, thread: &str, user: &str) {
    let threads = db.collection::<Document>("short_term_memory");
    let messages: Vec<Document> = (0..9)
        .map(|i| message(char::from(b'a' + i).to_string().repeat(MIB)))
        .collect();
    threads
        .insert_one(doc! {
            "thread_id": thread, "user_id": user, "messages": messages,
            "summary": null, "summary_updated_at": null,
            "created_at": DateTime::now(), "expires_at": in_an_hour(),
        })
        .await
        .unwrap();
    threads
        .update_one(
            doc! {"thread_id": thread},
            doc! {"$push": {"messages": message("z".repeat(MIB))}},
        )
        .await
        .unwrap();
}

/// A small thread of `user`, written after the large one.
async fn small_thread(db: &Database, user: &str) {
    db.collection::<Document>("short_term_memory")
        .insert_one(doc! {
            "thread_id": format!("{user}-small"), "user_id": user,
            "messages": [message("hello".into())],
            "summary": null, "summary_updated_at": null,
            "created_at": DateTime::now(), "expires_at": in_an_hour(),
        })
        .await
        .unwrap();
}

/// `user`'s memory_stats once they count `threads` threads started.
async fn stats_of(db: &Database, user: &str, threads: i64) -> Document {
    let stats = db.collection::<Document>(MEMORY_STATS);
    wait_until(
        DEADLINE,
        &format!("{user}: {threads} thread(s)"),
        || async {
            stats
                .find_one(doc! {"_id": user, "threads_started": threads})
                .await
                .ok()
                .flatten()
        },
    )
    .await
}

/// A memory configuration whose oversized events go by `policy` (never split when
/// `split` is false).
async fn prepared(prefix: &str, split: bool, policy: OversizePolicy) -> (Config, Database) {
    let name = unique_name(prefix);
    let mut config = memory_config(&name);
    config.engine.split_large_events = split;
    config.engine.oversize = policy;
    let client = mongo().await;
    setup::run(&client, &config).await.unwrap();
    (config, client.database(&name))
}

async fn server_splits(db: &Database) -> bool {
    db.watch()
        .pipeline([doc! {"$changeStreamSplitLargeEvent": {}}])
        .await
        .is_ok()
}

/// The thread written after the large change is counted, the large change was read split
/// and counted once (one message appended), and nothing was dead-lettered.
async fn split_and_counted_once(db: &Database, run: &Process) {
    stats_of(db, "u-after", 1).await;
    let big = stats_of(db, "u-big", 1).await;
    assert_eq!(big.get_i64("messages_appended").unwrap(), 1, "{big}");
    let series = format!(
        "changeflow_oversized_events_total{{outcome=\"split\",stream=\"{}\"}}",
        db.name()
    );
    assert_eq!(run.metric(&series).await, 1.0, "{}", run.log());
    assert!(decode_dead_letters(db).await.is_empty());
}

async fn decode_dead_letters(db: &Database) -> Vec<Document> {
    crate::common::app::all_documents(db, dead_letters::COLLECTION)
        .await
        .into_iter()
        .filter(|d| d.get_str("stage") == Ok("decode"))
        .collect()
}

#[tokio::test]
async fn an_event_over_16_mb_is_split_reassembled_and_handled() {
    let (config, db) = prepared("oversize_split", true, OversizePolicy::Fail).await;
    let version = crate::common::server_version().await;
    assert!(
        server_splits(&db).await,
        "MongoDB {version} cannot split change events ($changeStreamSplitLargeEvent needs \
         6.0.9+); run the tests against the default server: `cargo xtask up` (6.0.27)"
    );
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;
    grow_past_the_limit(&db, "t-big", "u-big").await;
    small_thread(&db, "u-after").await;

    // The later event flows, and the large one was decoded whole: its messages counted.
    split_and_counted_once(&db, &run).await;
    assert!(
        !run.log().contains("BSONObjectTooLarge"),
        "the server refused an event:\n{}",
        run.log()
    );
}

#[tokio::test]
async fn without_the_split_an_oversized_event_is_dead_lettered_and_later_events_flow() {
    let (config, db) = prepared("oversize_dl", false, OversizePolicy::DeadLetter).await;
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;
    grow_past_the_limit(&db, "t-big", "u-big").await;
    small_thread(&db, "u-after").await;

    stats_of(&db, "u-after", 1).await;
    let letters = wait_until(DEADLINE, "the oversized event's dead letter", || async {
        Some(decode_dead_letters(&db).await).filter(|l| !l.is_empty())
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    let reason = letter.get_str("reason").unwrap();
    assert!(reason.contains("16 MB"), "{reason}");
    let size = letter.get_i64("size").unwrap();
    assert!(size > 16 * MIB as i64, "size {size}");
    assert!(letter.get_document("document_key").is_ok(), "{letter}");
    assert!(letter.get_timestamp("cluster_time").is_ok(), "{letter}");
    let series = format!(
        "changeflow_oversized_events_total{{outcome=\"dead_letter\",stream=\"{}\"}}",
        db.name()
    );
    assert_eq!(run.metric(&series).await, 1.0, "{}", run.log());
    // The insert before it (9 MB, under the limit) was decoded and counted.
    let big = stats_of(&db, "u-big", 1).await;
    assert_eq!(big.get_i64("messages_appended").unwrap_or(0), 0, "{big}");
}

#[tokio::test]
async fn without_the_split_the_fail_policy_stops_naming_the_change_and_keeps_the_checkpoint() {
    let (mut config, db) = prepared("oversize_fail", false, OversizePolicy::Fail).await;
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;
    grow_past_the_limit(&db, "t-big", "u-big").await;
    small_thread(&db, "u-after").await;

    let status = run.wait_exit(DEADLINE).await;
    assert!(!status.success(), "{status}");
    let log = run.log();
    let line = log
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    for part in [db.name(), "short_term_memory", "_id", "bytes", "16 MB"] {
        assert!(line.contains(part), "`{part}` missing from: {line}");
    }
    println!("{line}");
    let hint = log.lines().find(|l| l.starts_with("hint:")).unwrap_or("");
    println!("{hint}");
    assert!(
        hint.contains("engine.oversize") && hint.contains("checkpoint set"),
        "{hint}"
    );
    assert!(decode_dead_letters(&db).await.is_empty());

    // The checkpoint stayed before it: the same run with the dead-letter policy picks it
    // up, then the later thread.
    config.engine.oversize = OversizePolicy::DeadLetter;
    let mut again = Process::spawn(&config);
    again.wait_healthy().await;
    stats_of(&db, "u-after", 1).await;
    let letters = decode_dead_letters(&db).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    again.signal(libc::SIGTERM);
    assert!(again.wait_exit(Duration::from_secs(20)).await.success());
}

#[tokio::test]
async fn a_crash_between_two_fragments_restarts_at_the_first_and_handles_the_change_once() {
    let _faults = crate::common::exclusive().await;
    let (mut config, db) = prepared("oversize_crash", true, OversizePolicy::Fail).await;
    assert!(
        server_splits(&db).await,
        "this server cannot split change events"
    );
    let proxy = Proxy::start(shared_primary().await).await;
    config.mongodb.uri = through(&mongodb_uri(), proxy.port());
    let mut run = Process::spawn(&config);
    run.wait_healthy().await;
    // About 2 MB/s towards changeflow: the fragments of one change arrive seconds apart.
    proxy.set_latency(Duration::from_millis(30));
    grow_past_the_limit(&db, "t-big", "u-big").await;
    // The moment the first fragment is in, nothing more gets through, and changeflow dies.
    wait_until(Duration::from_secs(120), "the first fragment", || async {
        run.log().contains("read fragment 1 of").then_some(())
    })
    .await;
    proxy.set(Mode::Hold);
    // Time for any checkpoint the run would store there (every 100 ms) to be stored.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.signal(libc::SIGKILL);
    run.wait_exit(Duration::from_secs(10)).await;
    let log = run.log();
    let fragments: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("read fragment"))
        .collect();
    assert_eq!(
        fragments.len(),
        1,
        "killed after more than one fragment: {fragments:?}"
    );
    let stats = db.collection::<Document>(MEMORY_STATS);
    let before = stats.find_one(doc! {"_id": "u-big"}).await.unwrap();
    assert_eq!(
        before
            .as_ref()
            .and_then(|s| s.get_i64("messages_appended").ok())
            .unwrap_or(0),
        0,
        "the change was handled before its last fragment: {before:?}"
    );
    eprintln!("killed after: {}", fragments[0]);

    // The restart reads the change again from its first fragment: counted once.
    proxy.set(Mode::Pass);
    proxy.set_latency(Duration::ZERO);
    let again = Process::spawn(&config);
    small_thread(&db, "u-after").await;
    split_and_counted_once(&db, &again).await;
    assert!(
        again.log().contains("read fragment 1 of"),
        "the restart did not read the change from its first fragment:\n{}",
        again.log()
    );
}
