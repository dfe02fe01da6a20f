//! Bad input never stops the stream: a burst of malformed payments (wrong types, `_id`s of
//! every kind, 1 MB strings, a ~15 MB document, a ~15 MB bad value) mixed with valid ones (a ~15 MB one among
//! them), written past the validator, ends with every valid payment settled and counted,
//! every invalid one dead-lettered with its reason and document key, and later changes on
//! both streams handled.

use std::time::Duration;

use crate::common::app::{Process, memory_config, outcomes_and_counters, payment};
use crate::common::corpus;
use crate::common::{DEADLINE, mongo, unique_name, wait_until};
use changeflow::cmd::setup;
use changeflow::decode::{Decoded, Domains};
use changeflow::state::dead_letters;
use mongodb::bson::{Bson, DateTime, Decimal128, Document, doc, oid::ObjectId};

/// About `mb` megabytes of text.
fn blob(mb: usize) -> String {
    "x".repeat(mb * 1_000_000)
}

/// The malformed payments of the burst: each is refused by the decoder.
fn malformed() -> Vec<Document> {
    let amount: Decimal128 = "10.00".parse().unwrap();
    let product = doc! {"code": "product-0", "name": "Product 0"};
    let base = |id: Bson| doc! {"_id": id, "amount": amount, "status": "PENDING", "product": product.clone()};
    let mut docs = Vec::new();
    let mut with = |i: usize, field: &str, value: Bson| {
        let mut d = base(Bson::String(format!("bad-{i:02}")));
        d.insert(field, value);
        docs.push(d);
    };
    with(0, "amount", Bson::String("abc".into()));
    with(1, "amount", Bson::Array(vec![Bson::Int32(1)]));
    with(2, "status", Bson::String("PAID".into()));
    with(3, "status", Bson::Int32(7));
    with(4, "status", Bson::Null);
    with(5, "product", Bson::String("kettle".into()));
    with(6, "product", Bson::Document(doc! {"code": "", "name": "x"}));
    with(7, "product", Bson::Document(doc! {"code": 12, "name": "x"}));
    with(8, "product", Bson::Document(doc! {"name": "no code"}));
    with(9, "status", Bson::String(blob(1)));
    with(10, "amount", Bson::String(blob(1)));
    let mut missing = base(Bson::String("bad-11".into()));
    missing.remove("amount");
    docs.push(missing);
    let mut no_product = base(Bson::String("bad-12".into()));
    no_product.remove("product");
    docs.push(no_product);
    // A ~15 MB document, invalid as well.
    let mut huge = base(Bson::String("bad-13".into()));
    huge.insert("amount", "not a number");
    huge.insert("note", blob(15));
    docs.push(huge);
    // A ~15 MB bad value. Before, the reason quoted it whole: reason and change together
    // made a 30 MB dead letter the server refused on every retry, and the stream waited on
    // it for ever (valid payments PENDING, later ones never settled, /healthz ok).
    let mut huge_value = base(Bson::String("bad-14".into()));
    huge_value.insert("status", blob(15));
    docs.push(huge_value);
    // `_id`s the payment type does not take.
    for id in [
        Bson::ObjectId(ObjectId::new()),
        Bson::Int32(42),
        Bson::Int64(43),
        Bson::Double(1.5),
        Bson::Boolean(true),
        Bson::Document(doc! {"a": 1}),
        Bson::DateTime(DateTime::now()),
    ] {
        docs.push(base(id));
    }
    docs
}

/// The valid payments of the burst, a ~15 MB one and one with a 1 MB name among them.
fn valid() -> Vec<Document> {
    let mut docs: Vec<Document> = (0..40)
        .map(|i| payment(&format!("ok-{i:02}"), i % 3, "PENDING"))
        .collect();
    let mut huge = payment("ok-huge", 0, "PENDING");
    huge.insert("note", blob(15));
    docs.push(huge);
    let mut long_name = payment("ok-long-name", 1, "PENDING");
    long_name.insert("product", doc! {"code": "product-1", "name": blob(1)});
    docs.push(long_name);
    docs
}

#[tokio::test]
async fn a_burst_of_malformed_and_huge_payments_is_handled_or_dead_lettered_and_the_streams_go_on()
{
    let db_name = unique_name("burst");
    let client = mongo().await;
    let db = client.database(&db_name);
    let config = memory_config(&db_name);
    setup::run(&client, &config).await.unwrap();
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;

    let bad = malformed();
    let good = valid();
    // Interleaved, in one burst, past the validator.
    let mut burst = Vec::new();
    let (mut b, mut g) = (bad.iter(), good.iter());
    loop {
        match (g.next(), b.next()) {
            (None, None) => break,
            (x, y) => burst.extend(x.into_iter().chain(y).cloned()),
        }
    }
    let payments = db.collection::<Document>("payments");
    for chunk in burst.chunks(8) {
        payments
            .insert_many(chunk.to_vec())
            .bypass_document_validation(true)
            .ordered(false)
            .await
            .unwrap();
    }
    // Later changes, on both streams' collections.
    payments
        .insert_one(payment("later", 2, "PENDING"))
        .await
        .unwrap();
    db.collection::<Document>("semantic_memory")
        .insert_one(doc! {
            "memory_id": "m-later", "user_id": "u-later", "type": "fact", "content": "x",
            "source_episode_id": null, "strength": 0.5,
            "last_accessed_at": DateTime::now(), "created_at": DateTime::now(),
        })
        .await
        .unwrap();

    let valid_ids: Vec<Bson> = good
        .iter()
        .map(|d| d.get("_id").cloned().unwrap())
        .chain([Bson::String("later".into())])
        .collect();
    let invalid_ids: Vec<Bson> = bad.iter().map(|d| d.get("_id").cloned().unwrap()).collect();
    let letters = db.collection::<Document>(dead_letters::COLLECTION);
    let deadline = Duration::from_secs(90);
    let outcome = tokio::time::timeout(deadline, async {
        loop {
            let pending = payments
                .count_documents(doc! {"_id": {"$in": &valid_ids}, "status": "PENDING"})
                .await
                .unwrap_or(u64::MAX);
            let lettered = letters
                .count_documents(
                    doc! {"stage": "decode", "document_key._id": {"$in": &invalid_ids}},
                )
                .await
                .unwrap_or(0);
            let memory = db
                .collection::<Document>("memory_stats")
                .count_documents(doc! {"_id": "u-later"})
                .await
                .unwrap_or(0);
            let (mut outcomes, counters) = outcomes_and_counters(&db).await;
            // Malformed payments are never settled: no outcome to count.
            outcomes.retain(|_, (s, f)| *s + *f > 0);
            let counted = counters == outcomes;
            if pending == 0 && lettered == invalid_ids.len() as u64 && memory == 1 && counted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if outcome.is_err() {
        let pending = payments
            .count_documents(doc! {"_id": {"$in": &valid_ids}, "status": "PENDING"})
            .await
            .unwrap();
        let lettered = letters
            .count_documents(doc! {"stage": "decode"})
            .await
            .unwrap();
        panic!(
            "after {deadline:?}: {pending} valid payments PENDING, {lettered} of {} dead \
             letters, counters {:?}\n--- log ---\n{}",
            invalid_ids.len(),
            outcomes_and_counters(&db).await,
            process
                .log()
                .lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // Every dead letter says why, briefly (a 1 MB bad value is not repeated in full).
    let reasons: Vec<String> = letters
        .distinct("reason", doc! {"stage": "decode"})
        .await
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        reasons.iter().all(|r| !r.is_empty() && r.len() < 1_000),
        "reasons: {:?}",
        reasons.iter().map(|r| r.len()).collect::<Vec<_>>()
    );
    // Every dead letter names its document; the huge one is kept truncated.
    let huge = letters
        .find_one(doc! {"document_key._id": "bad-13"})
        .await
        .unwrap()
        .expect("the huge payment's dead letter");
    assert!(
        huge.get_str("reason").is_ok_and(|r| !r.is_empty()),
        "{huge:?}"
    );
    assert!(huge.get_i64("size").is_ok_and(|s| s > 15_000_000));
    let stored = mongodb::bson::to_vec(&huge).unwrap().len();
    if huge.get_bool("truncated") == Ok(true) {
        assert!(
            stored < 1_000_000,
            "a truncated dead letter is small: {stored} bytes"
        );
    }
    wait_until(DEADLINE, "/healthz ok", || async {
        let r = reqwest::get(format!("{}/healthz", process.base_url))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(DEADLINE).await;
    assert!(status.success(), "{}", process.log());
}

/// Generated cases of `collection` (deterministic seed): valid, one field off, arbitrary.
fn generated(collection: corpus::Collection, count: usize) -> Vec<corpus::Case> {
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = corpus::case(collection);
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("a generated case")
                .current()
        })
        .collect()
}

#[tokio::test]
async fn hundreds_of_generated_documents_in_bursts_are_all_handled_or_dead_lettered() {
    let db_name = unique_name("corpus");
    let client = mongo().await;
    let db = client.database(&db_name);
    let config = memory_config(&db_name);
    setup::run(&client, &config).await.unwrap();
    let domains = Domains::new(&db_name, "payments").with_memory(
        changeflow::decode::MemoryDomain::from_config(&config.memory),
    );
    let mut process = Process::spawn(&config);
    process.wait_healthy().await;

    // Each generated document is valid or not by construction; an arbitrary one as the
    // decoder says offline (the live run must agree). Duplicate `_id`s are left out.
    let mut cases = Vec::new();
    for collection in [
        corpus::Collection::Payments,
        corpus::Collection::ShortTerm,
        corpus::Collection::Episodic,
        corpus::Collection::Semantic,
    ] {
        let count = if collection == corpus::Collection::Payments {
            240
        } else {
            40
        };
        cases.extend(generated(collection, count));
    }
    let mut ids = std::collections::HashSet::new();
    let mut invalid = 0;
    let mut inserted = 0;
    let mut skipped = 0;
    let mut valid_payments = Vec::new();
    // In bursts of 40, each followed by a plain valid payment.
    for (n, case) in cases.into_iter().enumerate() {
        let key = format!("{}:{:?}", case.collection.name(), case.doc.get("_id"));
        if !ids.insert(key) {
            continue;
        }
        let event = corpus::insert_event(&db_name, case.collection.name(), &case.doc, n as u64);
        let raw = mongodb::bson::RawDocumentBuf::from_document(&event).unwrap();
        let decodes = matches!(domains.decode(raw).0, Decoded::Event(_));
        let valid = match case.expect {
            corpus::Expect::Valid => true,
            corpus::Expect::Invalid(_) => false,
            corpus::Expect::Arbitrary => decodes,
        };
        let written = db
            .collection::<Document>(case.collection.name())
            .insert_one(case.doc.clone())
            .bypass_document_validation(true)
            .await;
        match written {
            Ok(_) => inserted += 1,
            // The server refused the document itself (a unique index seeing a second one
            // without its id, an index over two arrays): never a change, nothing to expect.
            Err(e)
                if matches!(
                    *e.kind,
                    mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(_))
                ) =>
            {
                skipped += 1;
                continue;
            }
            Err(e) => panic!("inserting {:?}: {e}", case.doc.get("_id")),
        }
        if !valid {
            invalid += 1;
        } else if case.collection == corpus::Collection::Payments {
            valid_payments.push(case.doc.get("_id").cloned().unwrap());
        }
        if inserted % 40 == 0 {
            let id = format!("plain-{inserted}");
            db.collection::<Document>("payments")
                .insert_one(payment(&id, inserted % 3, "PENDING"))
                .await
                .unwrap();
            valid_payments.push(Bson::String(id));
        }
    }
    eprintln!(
        "{inserted} generated documents written ({invalid} invalid, {skipped} refused by the \
         server), {} valid payments",
        valid_payments.len()
    );

    let payments = db.collection::<Document>("payments");
    let letters = db.collection::<Document>(dead_letters::COLLECTION);
    // The dead letters of the inserts (an arbitrary document may also be expired by TTL
    // later: its delete has a dead letter of its own).
    let inserts = doc! {"stage": "decode", "event.operationType": "insert"};
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let pending = payments
                .count_documents(doc! {"_id": {"$in": &valid_payments}, "status": "PENDING"})
                .await
                .unwrap_or(u64::MAX);
            let lettered = letters.count_documents(inserts.clone()).await.unwrap_or(0);
            let (mut outcomes, counters) = outcomes_and_counters(&db).await;
            outcomes.retain(|code, _| counters.contains_key(code) || !code.is_empty());
            let counted = counters
                .iter()
                .all(|(code, c)| outcomes.get(code) == Some(c));
            if pending == 0 && lettered == invalid && counted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let lettered = letters.count_documents(inserts).await.unwrap();
    assert!(
        outcome.is_ok(),
        "after 120 s: {} valid payments PENDING, {lettered} of {invalid} dead letters\n{}",
        payments
            .count_documents(doc! {"_id": {"$in": &valid_payments}, "status": "PENDING"})
            .await
            .unwrap(),
        process
            .log()
            .lines()
            .rev()
            .take(40)
            .map(|l| &l[..l.len().min(300)])
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every dead letter has its reason and document key.
    let without = letters
        .count_documents(doc! {"stage": "decode", "$or": [
            {"reason": {"$in": ["", null]}}, {"document_key": {"$exists": false}}
        ]})
        .await
        .unwrap();
    assert_eq!(
        without, 0,
        "dead letters without a reason or a document key"
    );
    // Every counted product equals its outcomes exactly.
    let (outcomes, counters) = outcomes_and_counters(&db).await;
    for (code, c) in &counters {
        assert_eq!(outcomes.get(code), Some(c), "product {code}");
    }
    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(DEADLINE).await.success());
}
