//! Several instances on one stream: exactly one reads it (the lease holder), another takes
//! over within the lease's TTL when it dies (at once when it is restarted on the dead one's
//! host), and a paused holder that wakes up after losing
//! its lease moves no checkpoint and applies nothing twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::app::{Process, config, payment, wait_settled_and_counted};
use crate::common::records::{consume_until, header};
use crate::common::{DEADLINE, kafka_brokers, mongo, unique_name, wait_until};
use mongodb::bson::{Document, doc};

/// The pid of the lease holder of `stream`, by the leases collection.
async fn holder(db: &mongodb::Database, stream: &str) -> Option<(i64, i64)> {
    let lease = db
        .collection::<Document>("changeflow_leases")
        .find_one(doc! {"_id": stream})
        .await
        .ok()??;
    let pid = lease.get_document("owner").ok()?.get_i64("pid").ok()?;
    Some((pid, lease.get_i64("term").ok()?))
}

/// Waits up to `seconds` for `process` to hold `stream`'s lease; its (pid, term).
async fn taken_by(
    db: &mongodb::Database,
    stream: &str,
    process: &Process,
    seconds: u64,
    what: &str,
) -> (i64, i64) {
    wait_until(Duration::from_secs(seconds), what, || async {
        holder(db, stream)
            .await
            .filter(|(pid, _)| *pid == i64::from(process.pid()))
    })
    .await
}

async fn insert(db: &mongodb::Database, prefix: &str, n: usize) {
    let docs: Vec<Document> = (0..n)
        .map(|i| payment(&format!("{prefix}-{i}"), i % 3, "PENDING"))
        .collect();
    db.collection::<Document>("payments")
        .insert_many(docs)
        .await
        .expect("payments");
}

#[tokio::test]
async fn one_of_two_instances_reads_and_the_other_takes_over_when_it_dies() {
    let db_name = unique_name("twoinst");
    let db = mongo().await.database(&db_name);
    let config = config(&db_name);
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    // As on two hosts: the survivor cannot see that the holder's process is gone, so it
    // waits for the lease to expire.
    let mut first = Process::spawn_on_host(&config, "host-a");
    first.wait_healthy().await;
    let mut second = Process::spawn_on_host(&config, "host-b");
    second.wait_healthy().await;
    let (pid, term) = holder(&db, &db_name).await.expect("a lease");
    assert_eq!(
        pid,
        i64::from(first.pid()),
        "the first instance holds the stream"
    );

    insert(&db, "before", 100).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "before the kill").await;
    // Each payment: requested, then one outcome. Both instances alive: no record twice.
    let mut seen = 0;
    let records = consume_until(
        &kafka_brokers(),
        &topic,
        DEADLINE,
        Duration::from_secs(2),
        |_| {
            seen += 1;
            seen >= 200
        },
    )
    .await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *copies
            .entry(header(r, "ce_id").unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    assert_eq!(copies.len(), 200, "requested and settled, per payment");
    assert!(
        copies.values().all(|n| *n == 1),
        "one reader: no record twice"
    );

    let killed = Instant::now();
    first.signal(libc::SIGKILL);
    first.wait_exit(DEADLINE).await;
    let taken = taken_by(&db, &db_name, &second, 30, "the standby to take the lease").await;
    let takeover = killed.elapsed();
    eprintln!(
        "takeover after SIGKILL: {:.2} s (ttl {} ms + renew {} ms); term {term} -> {}",
        takeover.as_secs_f64(),
        config.lease.ttl_ms,
        config.lease.renew_ms,
        taken.1
    );
    assert!(taken.1 > term, "a takeover raises the term");
    let bound = Duration::from_millis(config.lease.ttl_ms + config.lease.renew_ms);
    // Generous slack for a loaded machine; the figure is printed above.
    assert!(
        takeover < bound + Duration::from_secs(5),
        "took {takeover:?}"
    );

    insert(&db, "after", 100).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "after the takeover").await;
    second.stop_cleanly().await;
}

#[tokio::test]
async fn a_crashed_instance_restarted_on_its_host_resumes_without_waiting_for_its_lease() {
    let db_name = unique_name("restart");
    let db = mongo().await.database(&db_name);
    let mut config = config(&db_name);
    // Long enough that waiting for the dead lease would show.
    config.lease.ttl_ms = 30_000;
    let mut first = Process::spawn(&config);
    first.wait_healthy().await;
    let (pid, term) = holder(&db, &db_name).await.expect("a lease");
    assert_eq!(pid, i64::from(first.pid()));
    insert(&db, "before", 50).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "before the kill").await;

    first.signal(libc::SIGKILL);
    first.wait_exit(DEADLINE).await;
    let restarted = Instant::now();
    let mut second = Process::spawn(&config);
    let taken = taken_by(
        &db,
        &db_name,
        &second,
        60,
        "the restarted instance to take the lease",
    )
    .await;
    let resumed = restarted.elapsed();
    eprintln!(
        "restart on the same host after SIGKILL: lease taken {:.2} s after the start (ttl {} ms); term {term} -> {}",
        resumed.as_secs_f64(),
        config.lease.ttl_ms,
        taken.1
    );
    assert!(taken.1 > term, "a takeover raises the term");
    assert!(
        resumed < Duration::from_millis(config.lease.ttl_ms / 2),
        "the restart waited {resumed:?}, as for the dead lease's expiry\n{}",
        second.log()
    );
    insert(&db, "after", 50).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "after the restart").await;
    second.stop_cleanly().await;
}

#[tokio::test]
async fn a_holder_paused_past_its_lease_moves_no_checkpoint_when_it_wakes() {
    let db_name = unique_name("paused");
    let db = mongo().await.database(&db_name);
    let config = config(&db_name);
    let mut first = Process::spawn(&config);
    first.wait_healthy().await;
    let mut second = Process::spawn(&config);
    second.wait_healthy().await;
    insert(&db, "before", 50).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "before the pause").await;

    first.signal(libc::SIGSTOP);
    let (_, term) = taken_by(&db, &db_name, &second, 30, "the standby to take over").await;
    insert(&db, "during", 50).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "while the holder is paused").await;

    let checkpoints = db.collection::<Document>("changeflow_checkpoints");
    let stored = || async {
        let c = checkpoints
            .find_one(doc! {})
            .await
            .expect("checkpoint")
            .expect("a checkpoint");
        (
            c.get_i64("term").unwrap_or(0),
            c.get_datetime("updated_at").ok().copied(),
        )
    };
    first.signal(libc::SIGCONT);
    // The woken instance must notice within a renew interval and write nothing: the
    // checkpoint keeps the successor's term, and its time never goes back.
    let woke = Instant::now();
    let mut last = stored().await;
    while woke.elapsed() < Duration::from_secs(3) {
        let now = stored().await;
        assert_eq!(now.0, term, "the checkpoint keeps the successor's term");
        assert!(now.1 >= last.1, "the checkpoint never moves back");
        last = now;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = first.log();
    assert!(
        log.contains("lease not renewed for a whole TTL") || log.contains("lease lost"),
        "the woken holder says it lost the lease:\n{log}"
    );
    insert(&db, "after", 50).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "after the wake-up").await;
    // On Kafka: each of the 150 payments' request and outcome; whatever the woken holder
    // sent before it noticed is a repeat with the original ce_id, within the read-ahead
    // bound.
    let topic = config.kafka.topic(&config.kafka.topics.payments);
    let mut distinct = std::collections::HashSet::new();
    let records = consume_until(
        &kafka_brokers(),
        &topic,
        DEADLINE,
        Duration::from_secs(2),
        |r| {
            distinct.insert(header(r, "ce_id").unwrap_or("?").to_owned());
            distinct.len() >= 300
        },
    )
    .await;
    let repeats = records.len() - distinct.len();
    eprintln!(
        "paused holder: {} records, {repeats} repeats",
        records.len()
    );
    assert_eq!(distinct.len(), 300, "requested and settled, per payment");
    assert!(
        repeats <= config.engine.max_in_flight_events,
        "{repeats} repeats"
    );
    for process in [&mut first, &mut second] {
        process.stop_cleanly().await;
    }
}

/// The pid of each live lease holder among `streams`, with how many it holds (by the
/// server's clock: a released or expired lease still names its last owner).
async fn live_holders(db: &mongodb::Database, streams: &[String]) -> HashMap<i64, usize> {
    use futures::TryStreamExt;
    let leases: Vec<Document> = db
        .collection::<Document>("changeflow_leases")
        .find(doc! {"_id": {"$in": streams}, "$expr": {"$gt": ["$expires_at", "$$NOW"]}})
        .await
        .expect("leases")
        .try_collect()
        .await
        .expect("leases");
    let mut held = HashMap::new();
    for lease in leases {
        let pid = lease
            .get_document("owner")
            .and_then(|o| o.get_i64("pid"))
            .expect("an owner pid");
        *held.entry(pid).or_default() += 1;
    }
    held
}

/// Waits until every one of `streams` is held live by one of `pids`, each holding one or
/// two of them (4 streams over 2 or 3 instances), and returns the holdings.
async fn wait_spread(
    db: &mongodb::Database,
    streams: &[String],
    pids: &[u32],
    what: &str,
) -> HashMap<i64, usize> {
    let share = streams.len().div_ceil(pids.len());
    let floor = streams.len() / pids.len();
    wait_until(Duration::from_secs(60), what, || async {
        let held = live_holders(db, streams).await;
        let spread = held.values().sum::<usize>() == streams.len()
            && held.len() == pids.len()
            && pids.iter().all(|pid| {
                held.get(&i64::from(*pid))
                    .is_some_and(|n| (floor..=share).contains(n))
            });
        spread.then_some(held)
    })
    .await
}

#[tokio::test]
async fn three_instances_spread_four_streams_and_a_leaving_ones_streams_move() {
    let db_name = unique_name("spread");
    let client = mongo().await;
    let db = client.database(&db_name);
    let mut config = config(&db_name);
    // Four watched databases; the payments are in the first.
    let streams: Vec<String> = (0..4)
        .map(|i| match i {
            0 => db_name.clone(),
            i => format!("{db_name}_{i}"),
        })
        .collect();
    config.watch = streams
        .iter()
        .map(|s| changeflow::config::WatchedDatabase {
            database: s.clone(),
            collections: vec!["payments".to_owned()],
        })
        .collect();
    let started = Instant::now();
    let mut instances = vec![Process::spawn(&config)];
    instances[0].wait_healthy().await;
    let alone = wait_spread(
        &db,
        &streams,
        &[instances[0].pid()],
        "one instance to hold all",
    )
    .await;
    eprintln!("alone: {alone:?}");
    // Each joining instance gets its share: the others hand streams over.
    for joined in 1..3 {
        instances.push(Process::spawn(&config));
        instances[joined].wait_healthy().await;
        let pids: Vec<u32> = instances.iter().map(Process::pid).collect();
        let held = wait_spread(
            &db,
            &streams,
            &pids,
            "the streams to spread to the newcomer",
        )
        .await;
        eprintln!(
            "{} instances after {:.1} s: {held:?}",
            pids.len(),
            started.elapsed().as_secs_f64()
        );
    }
    insert(&db, "spread", 100).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "spread over three").await;

    // Stop the instance holding the payments' stream: its streams move to the other two.
    let (payments_holder, _) = holder(&db, &db_name).await.expect("a lease");
    let leaving = instances
        .iter()
        .position(|p| i64::from(p.pid()) == payments_holder)
        .expect("the holder is one of the three");
    let mut left = instances.remove(leaving);
    let stopped = Instant::now();
    left.signal(libc::SIGTERM);
    assert!(left.wait_exit(DEADLINE).await.success(), "{}", left.log());
    let pids: Vec<u32> = instances.iter().map(Process::pid).collect();
    let held = wait_spread(
        &db,
        &streams,
        &pids,
        "the leaving instance's streams to move",
    )
    .await;
    eprintln!(
        "one left (graceful): its streams moved in {:.2} s: {held:?}",
        stopped.elapsed().as_secs_f64()
    );
    insert(&db, "moved", 100).await;
    wait_settled_and_counted(&db, Duration::from_secs(60), "after one left").await;
    for process in &mut instances {
        process.stop_cleanly().await;
    }
}
