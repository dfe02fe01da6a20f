//! The chaos run: the payment flow and the memory workload under steady load on a
//! 3-member set for a number of seconds while, one after another at random moments,
//! changeflow is SIGKILLed and restarted, the primary steps down, the primary is
//! SIGKILLed (and restarted a little later), the primary freezes for 4 s (SIGSTOP: a
//! stalled server), or the network cuts the primary off for 4 s (every member sits behind
//! its own proxy, which is its address in the set, so holding the primary's proxy
//! partitions it from the other members and from every client). Then every entity is checked: each payment
//! settled and counted, `memory_stats` exact, each payment's Kafka history `requested`
//! then one outcome, ids unique per change, repeats within the bound. `tests/it/chaos.rs`
//! runs 30 s in CI; `cargo bench --bench chaos -- --seconds 90` the full one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use changeflow::cmd::demo::memory;
use changeflow::cmd::setup;

use super::app::{Process, memory_config, wait_settled_and_counted};
use super::load::{
    Histories, Load, RECOVERY, add, kafka_holds_every_change, memory_exact, memory_load,
    time_to_first_handled,
};
use super::proxy::Mode;
use super::replica_set::{Elections, ReplicaSet};
use super::{create_topic, unique_name};

/// The kinds of fault the run injects.
const KINDS: [&str; 5] = [
    "changeflow SIGKILL",
    "primary step-down",
    "primary SIGKILL",
    "primary SIGSTOP 4 s",
    "primary partitioned",
];

/// What a chaos run saw.
#[derive(Debug)]
pub struct Report {
    /// Kafka histories of the payments.
    pub histories: Histories,
    /// The repeat bound: `engine.max_in_flight_events` per changeflow kill and failover.
    pub repeat_bound: usize,
    /// Per fault kind, the times from the fault to the first payment after it handled.
    pub resumes: BTreeMap<&'static str, Vec<Duration>>,
    /// Peak RSS of changeflow, sampled after each fault.
    pub peak_rss_mib: f64,
    /// Memory workload runs checked.
    pub memory_runs: usize,
    /// Elections during the run (the term's growth): the faults' own, and any by which
    /// the preferred member took the primary back.
    pub elections: i64,
}

impl Report {
    /// The report as the lines a person reads.
    pub fn lines(&self) -> Vec<String> {
        let h = &self.histories;
        let mut lines = vec![
            format!(
                "payments {}: {} records on Kafka, {} repeats (bound {}), lost 0 (every \
                 payment requested then one outcome; counters exact)",
                h.payments, h.records, h.repeats, self.repeat_bound
            ),
            format!(
                "memory workload runs {}: memory_stats exact",
                self.memory_runs
            ),
        ];
        for kind in KINDS {
            let mut times = self.resumes.get(kind).cloned().unwrap_or_default();
            times.sort();
            let p50 = times.get(times.len() / 2).copied().unwrap_or_default();
            let max = times.last().copied().unwrap_or_default();
            lines.push(format!(
                "{kind:<24} injected {:>3}  resume p50 {:>6.2} s  max {:>6.2} s",
                times.len(),
                p50.as_secs_f64(),
                max.as_secs_f64()
            ));
        }
        lines.push(format!("elections {}", self.elections));
        lines.push(format!("peak RSS {:.1} MiB", self.peak_rss_mib));
        lines
    }
}

/// A small deterministic generator: the run's faults vary by seed, not by luck.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Runs the chaos for about `seconds`, and for at least one fault of each kind (faults
/// stop then; the checks follow), on a set that elects as `elections` says. A partition
/// lasts the election timeout plus 2 s, so that it moves the primary.
pub async fn run(seconds: u64, seed: u64, elections: Elections) -> Report {
    let mut set = ReplicaSet::start_proxied(3, elections).await;
    let first_term = set.term().await;
    let client = set.client().await;
    let name = unique_name("chaos");
    let mut config = memory_config(&name);
    config.mongodb.uri = set.uri();
    config.engine.max_in_flight_events = 500;
    create_topic(&config.kafka.topic(&config.kafka.topics.payments), 3).await;
    setup::run(&client, &config)
        .await
        .unwrap_or_else(|e| panic!("setup: {e}"));
    let db = client.database(&name);
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;
    let mut load = Load::start(
        db.collection("payments"),
        process.base_url.clone(),
        "chaos".into(),
    );
    let mut rng = Rng(seed);
    let mut resumes: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    let mut expected_memory = memory::Expected::new();
    let mut memory_runs = 0;
    let mut peak_rss: f64 = process.rss_mib();
    let mut down: Option<(usize, Instant)> = None;
    let mut kills = 0;
    let started = Instant::now();
    let mut fault_number = 0;
    let first_kind = rng.below(KINDS.len() as u64) as usize;
    // At least one fault of each kind, however slow the machine.
    while started.elapsed() < Duration::from_secs(seconds) || fault_number < KINDS.len() {
        // A slice of memory workload between faults (it writes through elections too).
        let id = format!("m{fault_number}");
        add(&mut expected_memory, memory_load(&db, &config, &id).await);
        memory_runs += 1;
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2500))).await;
        // A killed primary comes back before the next fault.
        if let Some((member, since)) = down
            && since.elapsed() > Duration::from_secs(3)
        {
            set.restart(member).await;
            down = None;
        }
        // Every kind in turn from a random first one; the moments are random.
        let kind = match KINDS[(first_kind + fault_number) % KINDS.len()] {
            // One member down at a time: a majority stays.
            "primary SIGKILL" | "primary SIGSTOP 4 s" | "primary partitioned" if down.is_some() => {
                "primary step-down"
            }
            kind => kind,
        };
        let at = Instant::now();
        match kind {
            "changeflow SIGKILL" => {
                process.signal(libc::SIGKILL);
                process.wait_exit(Duration::from_secs(10)).await;
                load.retarget(String::new());
                process = Process::spawn(&config);
                process.wait_healthy().await;
                load.retarget(process.base_url.clone());
                kills += 1;
            }
            "primary step-down" => {
                set.step_down().await;
            }
            "primary SIGSTOP 4 s" => {
                // A stalled server: connections stay open and nothing answers.
                let (primary, _) = set.wait_majority_writes().await;
                set.pause(primary);
                tokio::time::sleep(Duration::from_secs(4)).await;
                set.resume(primary);
            }
            "primary partitioned" => {
                // Nothing reaches it or leaves it, for long enough that the others elect
                // another; what waited is delivered after.
                let (primary, _) = set.wait_majority_writes().await;
                let term = set.term().await;
                set.partition(primary, Mode::Hold);
                tokio::time::sleep(elections.timeout() + Duration::from_secs(2)).await;
                set.partition(primary, Mode::Pass);
                let after = set.term().await;
                assert!(
                    after > term,
                    "the partition caused no election (term {term})"
                );
            }
            _ => {
                let (primary, _) = set.wait_majority_writes().await;
                set.kill(primary);
                down = Some((primary, Instant::now()));
            }
        }
        let first = time_to_first_handled(&db, at, &format!("chaos-probe-{fault_number}")).await;
        resumes.entry(kind).or_default().push(first);
        peak_rss = peak_rss.max(process.rss_mib());
        fault_number += 1;
    }
    if let Some((member, _)) = down {
        set.restart(member).await;
    }
    load.finish().await;
    wait_settled_and_counted(&db, RECOVERY, "chaos").await;
    memory_exact(&db, &expected_memory, "chaos").await;
    let histories = kafka_holds_every_change(&config, &db, "").await;
    let failovers: usize = resumes
        .iter()
        .filter(|(k, _)| **k != "changeflow SIGKILL")
        .map(|(_, v)| v.len())
        .sum();
    let repeat_bound = config.engine.max_in_flight_events * (kills + failovers);
    assert!(
        histories.repeats <= repeat_bound,
        "{} repeats, bound {repeat_bound}",
        histories.repeats
    );
    assert!(process.is_running(), "{}", process.log());
    let elections = set.term().await - first_term;
    Report {
        elections,
        histories,
        repeat_bound,
        resumes,
        peak_rss_mib: peak_rss,
        memory_runs,
    }
}
