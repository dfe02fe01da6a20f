//! A generated corpus through the decoders (no server): thousands of payment and memory
//! documents of every shape (see `crate::common::corpus`). A valid document decodes to an event;
//! one with a text field of another type is refused naming that field; anything else may be
//! refused, but never panics, and every reason stays short whatever the input's size.

use crate::common::corpus::{self, Collection, Expect};
use changeflow::config::{Config as ChangeflowConfig, MemoryConfig};
use changeflow::decode::{Decoded, Domains};
use mongodb::bson::{Bson, RawDocumentBuf, doc};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Longest reason a dead letter may carry.
const MAX_REASON: usize = 1_000;

fn domains() -> Domains {
    let memory = MemoryConfig {
        database: "db".to_owned(),
        include_embeddings: true,
        ..ChangeflowConfig::default().memory
    };
    Domains::new("db", "payments")
        .with_memory(changeflow::decode::MemoryDomain::from_config(&memory))
}

/// Decodes `doc` inserted in `collection`; panics (failing the case) when the decoder does
/// not do what `expect` asks.
fn check(collection: Collection, doc: &mongodb::bson::Document, expect: &Expect, n: u64) {
    let event = corpus::insert_event("db", collection.name(), doc, n);
    let raw = RawDocumentBuf::from_document(&event).expect("a generated event is BSON");
    let (decoded, _) = domains().decode(raw);
    if let Decoded::Invalid { error, .. } = &decoded {
        let reason = error.to_string();
        assert!(!reason.is_empty());
        assert!(
            reason.len() <= MAX_REASON,
            "a reason of {} bytes: {}…",
            reason.len(),
            &reason[..200]
        );
    }
    match (expect, &decoded) {
        (Expect::Valid, Decoded::Event(_)) | (Expect::Arbitrary, _) => {}
        (Expect::Valid, other) => {
            panic!("a valid {collection:?} was not decoded: {other:?}\n{doc}")
        }
        (Expect::Invalid(field), Decoded::Invalid { error, .. }) => {
            let reason = error.to_string();
            assert!(
                reason.contains(field),
                "`{reason}` does not name `{field}`\n{doc}"
            );
        }
        (Expect::Invalid(field), other) => {
            panic!("{collection:?} with a bad `{field}` was not refused: {other:?}\n{doc}")
        }
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn payments(case in corpus::case(Collection::Payments), n in any::<u64>()) {
        check(case.collection, &case.doc, &case.expect, n);
    }

    #[test]
    fn short_term_memory(case in corpus::case(Collection::ShortTerm), n in any::<u64>()) {
        check(case.collection, &case.doc, &case.expect, n);
    }

    #[test]
    fn episodic_memory(case in corpus::case(Collection::Episodic), n in any::<u64>()) {
        check(case.collection, &case.doc, &case.expect, n);
    }

    #[test]
    fn semantic_memory(case in corpus::case(Collection::Semantic), n in any::<u64>()) {
        check(case.collection, &case.doc, &case.expect, n);
    }
}

#[test]
fn deep_nesting_and_sizes_up_to_the_limit_decode_or_are_refused_briefly() {
    let valid = doc! {
        "_id": "5f0c7a52-93b1-4c1e-9a43-0c8f8f0b2a11", "amount": 5_i32, "status": "PENDING",
        "product": {"code": "p", "name": "n"},
    };
    // Nested as deep as MongoDB stores (100 levels), in a field the decoder ignores.
    let mut deep = valid.clone();
    deep.insert("note", corpus::deeply_nested(95));
    check(Collection::Payments, &deep, &Expect::Valid, 1);
    // Strings of 1 MB, 8 MB and just under 16 MB: in a field the payment keeps (valid), and
    // in one it refuses (the reason shows a short excerpt, not megabytes).
    for size in [1_000_000, 8_000_000, 16_000_000 - 1_000] {
        let mut name = valid.clone();
        name.insert("product", doc! {"code": "p", "name": "n".repeat(size)});
        check(Collection::Payments, &name, &Expect::Valid, 2);
        let mut status = valid.clone();
        status.insert("status", "S".repeat(size));
        check(
            Collection::Payments,
            &status,
            &Expect::Invalid("status".into()),
            3,
        );
        let mut memory = doc! {
            "memory_id": "m", "user_id": "u", "type": "T".repeat(size), "content": "c",
            "strength": 0.5, "created_at": mongodb::bson::DateTime::now(),
        };
        check(
            Collection::Semantic,
            &memory,
            &Expect::Invalid("type".into()),
            4,
        );
        memory.insert("type", "fact");
        memory.insert("embedding", vec![Bson::Double(0.5); size / 16]);
        check(Collection::Semantic, &memory, &Expect::Valid, 5);
    }
}
