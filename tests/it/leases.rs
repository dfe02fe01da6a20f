//! Leases and fencing against the replica set: one owner at a time, expiry by the server's
//! clock, takeover raising the term, and a deposed owner's checkpoint writes refused.

use std::time::Duration;

use crate::common::{mongo, unique_name};
use changeflow::source::position::token_from_hex;
use changeflow::state::checkpoints::{Checkpoint, CheckpointStore, Resume, StoreError};
use changeflow::state::leases::{Leases, Owner};

fn owner(name: &str) -> Owner {
    Owner {
        host: "test".into(),
        pid: 1,
        run_id: name.into(),
    }
}

fn checkpoint(stream: &str, hex: &str) -> Checkpoint {
    Checkpoint {
        stream: stream.into(),
        token: token_from_hex(hex).expect("token"),
        cluster_time: None,
        wall_time: None,
        events_since_start: 0,
    }
}

#[tokio::test]
async fn one_owner_at_a_time_takeover_raises_the_term_and_fences_the_deposed_owner() {
    let db = mongo().await.database(&unique_name("leases"));
    let leases = Leases::new(&db);
    let store = CheckpointStore::new(&db);
    let (a, b) = (owner("a"), owner("b"));
    let ttl = Duration::from_millis(1_500);

    let held_a = leases.acquire("s", &a, ttl).await.unwrap().expect("free");
    assert_eq!(held_a.term, 1);
    assert_eq!(
        leases.acquire("s", &b, ttl).await.unwrap(),
        None,
        "held by a"
    );
    assert!(leases.renew("s", &a, held_a, ttl).await.unwrap());
    store
        .stamp("s", held_a.term)
        .await
        .expect("no checkpoint yet");
    store
        .save_fenced(
            &checkpoint("s", "8269206B7A000000012B022C0100296E5A1004"),
            held_a.term,
        )
        .await
        .expect("a writes");

    // a stops renewing (paused): by the server's clock the lease expires and b takes it.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let held_b = leases
        .acquire("s", &b, ttl)
        .await
        .unwrap()
        .expect("expired");
    assert_eq!(held_b.term, 2, "a takeover raises the term");
    store.stamp("s", held_b.term).await.expect("b is newer");
    assert!(
        !leases.renew("s", &a, held_a, ttl).await.unwrap(),
        "a's lease is gone"
    );
    match store
        .save_fenced(
            &checkpoint("s", "8269206B7A000000022B022C0100296E5A1004"),
            held_a.term,
        )
        .await
    {
        Err(StoreError::Fenced { term, .. }) => assert_eq!(term, 1),
        other => panic!("a's write must be fenced: {other:?}"),
    }
    assert!(matches!(
        store.stamp("s", held_a.term).await,
        Err(StoreError::Fenced { .. })
    ));
    store
        .save_fenced(
            &checkpoint("s", "8269206B7A000000032B022C0100296E5A1004"),
            held_b.term,
        )
        .await
        .expect("b writes");
    let stored = store.load_stored("s").await.unwrap().expect("stored");
    assert_eq!(
        stored.resume,
        Resume::After(token_from_hex("8269206B7A000000032B022C0100296E5A1004").unwrap()),
        "the deposed owner moved nothing"
    );

    // A graceful stop releases at once: no waiting for the expiry.
    assert!(leases.release("s", &b, held_b).await.unwrap());
    let again = leases
        .acquire("s", &a, ttl)
        .await
        .unwrap()
        .expect("released");
    assert_eq!(again.term, 3);
    let all = leases.all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].owner.run_id.as_str(), all[0].term), ("a", 3));
    assert!(all[0].expires_at > all[0].acquired_at);
}

/// `checkpoint set --time` of `stream` to a fixed time, as an operator would.
async fn set_time(config: &changeflow::config::Config, stream: &str) {
    let set = [
        &crate::common::app::set_time_args(stream, "1796447834.1")[..],
        &["--yes"],
    ]
    .concat();
    let out = crate::common::app::run_cli(config, &set).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[tokio::test]
async fn an_operators_set_or_reset_fences_a_holder_deposed_before_it() {
    let db_name = unique_name("leases_admin");
    let db = mongo().await.database(&db_name);
    let leases = Leases::new(&db);
    let store = CheckpointStore::new(&db);
    let config = crate::common::app::config(&db_name);
    let s = db_name.as_str();
    let a = owner("a");
    let ttl = Duration::from_millis(500);
    let held = leases.acquire(s, &a, ttl).await.unwrap().expect("free");
    let token = "8269206B7A000000012B022C0100296E5A1004";
    store
        .save_fenced(&checkpoint(s, token), held.term)
        .await
        .expect("a writes");
    // a is paused past its TTL; nobody takes the stream; an operator resets it.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let out =
        crate::common::app::run_cli(&config, &["checkpoint", "reset", "--stream", s, "--yes"])
            .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(store.load_stored(s).await.unwrap(), None, "reset");
    // a wakes: its write must not put its position back.
    let late = "8269206B7A000000022B022C0100296E5A1004";
    assert!(
        matches!(
            store.save_fenced(&checkpoint(s, late), held.term).await,
            Err(StoreError::Fenced { .. })
        ),
        "the deposed holder's write is refused"
    );
    assert_eq!(store.load_stored(s).await.unwrap(), None, "still reset");
    let listed = crate::common::app::run_cli(&config, &["checkpoint", "show", "--json"]).await;
    assert_eq!(
        listed.code,
        Some(0),
        "a reset is no malformed checkpoint: {}",
        listed.stderr
    );

    // A set right after fences above the reset; the next holder still passes both at once.
    set_time(&config, s).await;
    let next = leases
        .acquire(s, &a, ttl)
        .await
        .unwrap()
        .expect("own, expired");
    store
        .stamp(s, next.term)
        .await
        .expect("the next holder stamps");
    store
        .save_fenced(&checkpoint(s, token), next.term)
        .await
        .expect("the next holder writes");

    // The same for `set --time`.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    set_time(&config, s).await;
    assert!(matches!(
        store.save_fenced(&checkpoint(s, late), next.term).await,
        Err(StoreError::Fenced { .. })
    ));
    let stored = store.load_stored(s).await.unwrap().expect("a position");
    assert!(
        matches!(stored.resume, Resume::AtTime(_)),
        "the operator's time stays: {stored:?}"
    );
}

#[tokio::test]
async fn a_set_on_a_stream_never_held_leaves_a_term_the_first_holder_passes() {
    let db_name = unique_name("leases_new");
    let db = mongo().await.database(&db_name);
    let leases = Leases::new(&db);
    let config = crate::common::app::config(&db_name);
    let s = db_name.as_str();
    set_time(&config, s).await;
    let fence = leases.term(s).await.unwrap().expect("the fence's term");
    let first = leases
        .acquire(s, &owner("a"), Duration::from_secs(2))
        .await
        .unwrap()
        .expect("free");
    assert_eq!(first.term, fence + 1);
    assert!(!first.taken_over, "nobody held it: no takeover");
    CheckpointStore::new(&db)
        .stamp(s, first.term)
        .await
        .expect("the first holder stamps");
}
