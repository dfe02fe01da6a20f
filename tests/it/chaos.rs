//! The chaos run in its CI length (30 s: every kind of fault at least once): changeflow killed, the primary stepped down,
//! killed, frozen or partitioned at random moments under load, then every payment's and user's history checked
//! (see `tests/it/common/chaos.rs`; the 90 s run: `cargo bench --bench chaos`).

use crate::common::replica_set::Elections;

#[tokio::test]
async fn thirty_seconds_of_kills_failovers_and_stalls_lose_nothing() {
    let _faults = crate::common::exclusive().await;
    let report = crate::common::chaos::run(30, 20261130, Elections::FAST).await;
    for line in report.lines() {
        eprintln!("chaos: {line}");
    }
    assert!(
        report.resumes.len() == 5 && report.resumes.values().all(|v| !v.is_empty()),
        "not every kind of fault was injected: {:?}",
        report.resumes
    );
}
