//! The chaos run in its CI length (20 s): changeflow killed, the primary stepped down or
//! killed at random moments under load, then every payment's and user's history checked
//! (see `tests/common/chaos.rs`; the 90 s run: `cargo bench --bench chaos`).

mod common;

#[tokio::test]
async fn twenty_seconds_of_kills_and_failovers_lose_nothing() {
    let report = common::chaos::run(20, 20261130).await;
    for line in report.lines() {
        eprintln!("chaos: {line}");
    }
    assert!(
        report.resumes.values().map(Vec::len).sum::<usize>() >= 3,
        "fewer than 3 faults injected: the run tested little"
    );
}
