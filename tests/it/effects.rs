//! Exactly-once effects that keep up: a backlog drained with thousands of events in flight
//! on a few hot counter documents (payments and agent memory), repeated SIGKILLs during a
//! drain on a server with the default transaction lifetime, and an election mid-drain.
//! Every case ends with counters equal to the outcomes exactly.
//!
//! The deadlines here are liveness bounds, generous next to what the writers need (a few
//! seconds): the design these tests replaced took minutes, livelocked in write conflicts
//! or blocked behind a killed process's open transaction for its whole lifetime.

use std::time::{Duration, Instant};

use crate::common::app::{
    Process, config, memory_config, memory_stats_by_user, outcomes_and_counters, payment,
};
use crate::common::own_mongod::{Options, OwnMongod, PASSWORD_IN_URI};
use crate::common::{DEADLINE, mongo, unique_name, wait_until};
use changeflow::cmd::demo::memory;
use changeflow::cmd::setup;
use changeflow::config::Config;
use mongodb::Database;
use mongodb::bson::{Document, doc};

/// Products the payments are spread over: few documents, each hot.
const PRODUCTS: usize = 7;

/// Starts `config`'s run once so its stream has a checkpoint, then stops it: what is
/// written next is a backlog for the following run.
async fn checkpoint_then_stop(config: &Config) {
    let mut process = Process::spawn(config);
    process.wait_healthy().await;
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(DEADLINE).await;
    assert!(status.success(), "{}", process.log());
}

/// Inserts `n` PENDING payments over [`PRODUCTS`] products.
async fn write_backlog(db: &Database, n: usize) {
    let docs: Vec<Document> = (0..n)
        .map(|i| payment(&format!("p-{i:05}"), i % PRODUCTS, "PENDING"))
        .collect();
    for chunk in docs.chunks(1000) {
        db.collection::<Document>("payments")
            .insert_many(chunk.to_vec())
            .await
            .unwrap();
    }
}

/// Waits until every one of `n` payments is settled and the counters equal the outcomes
/// exactly; returns how long that took. Panics with both and `process`'s log after
/// `deadline`.
async fn wait_exact(db: &Database, n: i64, deadline: Duration, process: &Process) -> Duration {
    let started = Instant::now();
    loop {
        let (outcomes, counters) = outcomes_and_counters(db).await;
        let settled: i64 = outcomes.values().map(|(s, f)| s + f).sum();
        if settled == n && counters == outcomes {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "after {deadline:?}: {settled} of {n} settled; outcomes {outcomes:?}, counters \
             {counters:?}\n--- log ---\n{}",
            tail(&process.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of a log (a drain logs a lot).
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[tokio::test]
async fn a_backlog_of_payments_is_settled_and_counted_with_thousands_in_flight() {
    let _faults = crate::common::exclusive().await;
    let db_name = unique_name("backlog");
    let client = mongo().await;
    let db = client.database(&db_name);
    let mut config = config(&db_name);
    config.provider.policy = "ratio:0.5".parse().unwrap();
    checkpoint_then_stop(&config).await;
    let n = 5_000;
    write_backlog(&db, n).await;

    // Defaults otherwise: up to 10 000 events read ahead, so thousands of outcomes reach
    // the counters of 7 products at once.
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let took = wait_exact(&db, n as i64, Duration::from_secs(120), &process).await;
    eprintln!("{n} payments settled and counted exactly {took:?} after the start");
    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(DEADLINE).await.success());
    db.drop().await.unwrap();
}

#[tokio::test]
async fn a_memory_backlog_is_counted_exactly_soon_after_sigkills_mid_drain() {
    let _faults = crate::common::exclusive().await;
    // memory_stats use the same exactly-once writer; each user's events form one lane, so
    // what blocked them was a killed run's open transaction on a user's document, held for
    // the server's default 60 s. (Threads expire by TTL: the monitor runs every second.)
    let server = OwnMongod::start_with(Options {
        fast_ttl: true,
        ..Options::default()
    })
    .await;
    let client = server.client().await;
    let db_name = unique_name("memkills");
    let db = client.database(&db_name);
    let mut config = memory_config(&db_name);
    config.mongodb.uri = server.uri_with(PASSWORD_IN_URI);
    setup::run(&client, &config).await.unwrap();
    checkpoint_then_stop(&config).await;
    let workload = memory::Workload {
        users: 3,
        threads_per_user: 20,
        turns_per_thread: 20,
        ..memory::Workload::default()
    };
    let expected = memory::run(&db, &config.memory, workload, "b", |_| {})
        .await
        .unwrap();
    let effects: i64 = expected.values().flat_map(|fields| fields.values()).sum();
    let total = |stats: &memory::Expected| -> i64 { stats.values().flat_map(|f| f.values()).sum() };

    let mut kills = 0;
    for _ in 0..3 {
        let mut process = Process::spawn(&config);
        process.wait_healthy().await;
        let before = total(&memory_stats_by_user(&db).await);
        wait_until(DEADLINE, "memory_stats moving", || async {
            let now = total(&memory_stats_by_user(&db).await);
            (now > before || now == effects).then_some(())
        })
        .await;
        process.signal(libc::SIGKILL);
        process.wait_exit(DEADLINE).await;
        if total(&memory_stats_by_user(&db).await) < effects {
            kills += 1;
        }
    }
    assert!(
        kills >= 1,
        "no kill landed mid-drain: the test tested nothing"
    );
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let started = Instant::now();
    loop {
        let now = memory_stats_by_user(&db).await;
        if now == expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "memory_stats differ 45 s after the restart\nexpected {expected:#?}\ngot {now:#?}\n{}",
            tail(&process.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    eprintln!(
        "memory backlog ({effects} counted effects, {kills} kills mid-drain): exact {took:?} after the last restart"
    );
    assert!(
        took < Duration::from_secs(20),
        "exact memory_stats took {took:?} after the restart: a killed run's open transaction \
         was waited out"
    );
    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(DEADLINE).await.success());
}

/// A configuration for `db_name` on `server` (its own mongod, default transaction lifetime).
fn own_config(server: &OwnMongod, db_name: &str) -> Config {
    let mut config = config(db_name);
    config.mongodb.uri = server.uri_with(PASSWORD_IN_URI);
    config.provider.policy = "ratio:0.5".parse().unwrap();
    config
}

#[tokio::test]
async fn five_sigkills_during_a_drain_leave_exact_counts_soon_after_the_last_restart() {
    let _faults = crate::common::exclusive().await;
    // The server's default transactionLifetimeLimitSeconds (60 s): a transaction a killed
    // run left open holds its documents that long unless the next run ends it.
    let server = OwnMongod::start().await;
    let client = server.client().await;
    let db_name = unique_name("kills");
    let db = client.database(&db_name);
    let config = own_config(&server, &db_name);
    checkpoint_then_stop(&config).await;
    // Enough for the drain to outlast the kills.
    let n = 40_000;
    write_backlog(&db, n).await;

    let mut kills = 0;
    let mut killed_mid_drain = 0;
    let mut last_mid_drain = false;
    while kills < 5 {
        let mut process = Process::spawn(&config);
        process.wait_healthy().await;
        // Let the counters move, then kill in the middle of their transactions.
        let before = counted(&db).await;
        wait_until(DEADLINE, "the counters moving", || async {
            let now = counted(&db).await;
            (now > before || now == n as i64).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        process.signal(libc::SIGKILL);
        process.wait_exit(DEADLINE).await;
        kills += 1;
        last_mid_drain = counted(&db).await < n as i64;
        if last_mid_drain {
            killed_mid_drain += 1;
        }
    }
    assert!(
        killed_mid_drain >= 1,
        "every kill came after the drain: the test did not test a crash mid-drain"
    );
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let took = wait_exact(&db, n as i64, Duration::from_secs(45), &process).await;
    eprintln!(
        "{kills} SIGKILLs ({killed_mid_drain} mid-drain): exact counts {took:?} after the last \
         restart became healthy"
    );
    // With counting left to do, the last run's writer ends the killed runs' sessions
    // before its first commit.
    if last_mid_drain {
        assert!(
            process
                .log()
                .contains("ended the sessions of earlier or other runs"),
            "the last run did not end the killed runs' sessions\n{}",
            tail(&process.log())
        );
    }
    assert!(
        took < Duration::from_secs(20),
        "exact counts took {took:?} after the last restart: a killed run's open transaction \
         was waited out instead of ended\n{}",
        tail(&process.log())
    );
    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(DEADLINE).await.success());
}

/// Outcomes counted so far, over every product.
async fn counted(db: &Database) -> i64 {
    let (_, counters) = outcomes_and_counters(db).await;
    counters.values().map(|(s, f)| s + f).sum()
}

#[tokio::test]
async fn an_election_during_a_drain_leaves_exact_counts() {
    let _faults = crate::common::exclusive().await;
    let server = OwnMongod::start().await;
    let client = server.client().await;
    let db_name = unique_name("elect");
    let db = client.database(&db_name);
    let config = own_config(&server, &db_name);
    checkpoint_then_stop(&config).await;
    let n = 5_000;
    write_backlog(&db, n).await;

    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let before = counted(&db).await;
    wait_until(DEADLINE, "the counters moving", || async {
        (counted(&db).await > before).then_some(())
    })
    .await;
    // The only member steps down: no primary for a few seconds, every write in flight
    // fails (the status updates, the counters' transactions, the checkpoints), then the
    // member is elected again and the failed writes come back at once.
    let pending = counted(&db).await;
    let stepped = client
        .database("admin")
        .run_command(doc! {"replSetStepDown": 5, "force": true})
        .await;
    eprintln!("replSetStepDown: {stepped:?}");
    // The fault landed while the drain was under way: the server stepped down (it answers
    // ok only once it has), and outcomes were still to be counted.
    assert!(stepped.is_ok(), "the step-down was refused: {stepped:?}");
    assert!(
        pending < n as i64,
        "the drain had finished before the step-down ({pending} of {n}): the test tested nothing"
    );
    let took = wait_exact(&db, n as i64, Duration::from_secs(90), &process).await;
    eprintln!("exact counts {took:?} after the step-down");
    // The driver often retries a failed write itself once it sees the new primary (it
    // checks every 2 s), so the run may log nothing of it; shown for the record.
    let noticed = ["retrying", "reopening", "no writable primary"]
        .iter()
        .filter(|line| process.log().contains(*line))
        .count();
    eprintln!("the run logged {noticed} kinds of disturbance");
    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(DEADLINE).await.success());
}
