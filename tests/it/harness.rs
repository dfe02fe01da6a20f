//! The harness itself: unique names and deadline waits behave as the other tests rely on.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[test]
fn unique_names_do_not_repeat_and_fit_mongodb_limits() {
    let names: HashSet<String> = (0..1000)
        .map(|_| crate::common::unique_name("orders"))
        .collect();
    assert_eq!(names.len(), 1000);
    assert!(names.iter().all(|n| n.len() <= 63 && !n.contains('.')));
}

#[tokio::test]
async fn wait_until_returns_the_value_once_the_condition_holds() {
    let polls = AtomicU32::new(0);
    let value = crate::common::wait_until(Duration::from_secs(5), "the third poll", || async {
        let n = polls.fetch_add(1, Ordering::Relaxed) + 1;
        (n >= 3).then_some(n)
    })
    .await;
    assert_eq!(value, 3);
}

#[tokio::test]
#[should_panic(expected = "timed out after 200ms waiting for a condition that never holds")]
async fn wait_until_fails_loudly_at_the_deadline() {
    crate::common::wait_until(
        Duration::from_millis(200),
        "a condition that never holds",
        || async { None::<()> },
    )
    .await;
}
