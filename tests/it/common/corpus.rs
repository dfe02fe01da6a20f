//! Generated documents for the payment and memory collections: every BSON type in every
//! field, `_id`s of every allowed type, deep nesting, strings with NUL, and documents that
//! are valid but for one field. Each generated document says whether the decoder must
//! take it (`Valid`), must refuse it naming a field (`Invalid`), or may do either
//! (`Arbitrary`: only "no panic, a short reason" is asked of it).

use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{
    Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, Regex, Timestamp, doc,
    oid::ObjectId,
};
use proptest::prelude::*;

/// The watched collections documents are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `payments`.
    Payments,
    /// `short_term_memory`.
    ShortTerm,
    /// `episodic_memory`.
    Episodic,
    /// `semantic_memory`.
    Semantic,
}

impl Collection {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Payments => "payments",
            Collection::ShortTerm => "short_term_memory",
            Collection::Episodic => "episodic_memory",
            Collection::Semantic => "semantic_memory",
        }
    }
}

/// What the decoder must do with a generated document.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Decode it to an event.
    Valid,
    /// Refuse it, naming this field (a dotted path under the document).
    Invalid(String),
    /// Anything but panic.
    Arbitrary,
}

/// A generated document for a collection, and what the decoder must do with it.
#[derive(Debug, Clone)]
pub struct Case {
    /// Where it goes.
    pub collection: Collection,
    /// The document (its `_id` included).
    pub doc: Document,
    /// What the decoder must do.
    pub expect: Expect,
}

/// Strings with NUL, control characters, non-ASCII text and lengths up to 300.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,24}",
        "\\PC{0,40}",
        proptest::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
        "[a-z]{0,8}\u{0}[a-z]{0,8}",
        (0usize..300).prop_map(|n| "é".repeat(n)),
    ]
}

/// A non-empty text without NUL (what an id or a key may be).
fn id_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,24}"
}

/// A value of any BSON type, nested up to `depth` levels.
pub fn any_bson(depth: u32) -> BoxedStrategy<Bson> {
    let leaf = prop_oneof![
        any::<f64>().prop_map(Bson::Double),
        Just(Bson::Double(f64::NAN)),
        Just(Bson::Double(f64::INFINITY)),
        text().prop_map(Bson::String),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|bytes| Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes
        })),
        proptest::array::uniform16(any::<u8>()).prop_map(|b| Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: b.to_vec()
        })),
        Just(Bson::ObjectId(ObjectId::new())),
        any::<bool>().prop_map(Bson::Boolean),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        Just(Bson::Null),
        Just(Bson::Undefined),
        ("[a-z]{0,6}", "[imsx]{0,3}").prop_map(|(p, o)| Bson::RegularExpression(Regex {
            pattern: p,
            options: o
        })),
        "[a-z ]{0,12}".prop_map(Bson::JavaScriptCode),
        "[a-z ]{0,12}".prop_map(
            |code| Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code,
                scope: doc! {"x": 1}
            })
        ),
        any::<i32>().prop_map(Bson::Int32),
        (any::<u32>(), any::<u32>())
            .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        any::<i64>().prop_map(Bson::Int64),
        proptest::array::uniform16(any::<u8>())
            .prop_map(|b| Bson::Decimal128(Decimal128::from_bytes(b))),
        Just(Bson::MinKey),
        Just(Bson::MaxKey),
        "[a-z]{0,8}".prop_map(Bson::Symbol),
    ];
    leaf.prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Bson::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Bson::Document(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A value nested `levels` deep (documents in arrays in documents…).
pub fn deeply_nested(levels: usize) -> Bson {
    let mut value = Bson::String("bottom".into());
    for level in 0..levels {
        value = if level % 2 == 0 {
            Bson::Document(doc! {"n": value})
        } else {
            Bson::Array(vec![value])
        };
    }
    value
}

/// An `_id` of every type MongoDB allows (all but arrays, regular expressions and
/// undefined).
pub fn any_id() -> BoxedStrategy<Bson> {
    any_bson(2)
        .prop_filter("an allowed _id", |v| {
            !matches!(
                v,
                Bson::Array(_) | Bson::RegularExpression(_) | Bson::Undefined
            )
        })
        .boxed()
}

/// A valid payment's `_id`: a UUID string or a BSON UUID.
fn payment_id() -> impl Strategy<Value = Bson> {
    prop_oneof![
        Just(()).prop_map(|()| Bson::String(mongodb::bson::Uuid::new().to_string())),
        Just(()).prop_map(|()| Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: mongodb::bson::Uuid::new().bytes().to_vec(),
        })),
    ]
}

/// A valid payment.
pub fn valid_payment() -> impl Strategy<Value = Document> {
    (
        payment_id(),
        prop_oneof![
            (1i64..1_000_000, 0i32..6).prop_map(|(n, scale)| {
                let text = format!("{n}E-{scale}");
                Bson::Decimal128(text.parse().expect("a decimal"))
            }),
            (1i32..100_000).prop_map(Bson::Int32),
            (1i64..100_000).prop_map(Bson::Int64),
        ],
        prop_oneof![Just("PENDING"), Just("CONFIRMED"), Just("FAILED")],
        id_text(),
        text(),
        proptest::option::of(any_bson(2)),
    )
        .prop_map(|(id, amount, status, code, name, extra)| {
            let mut d = doc! {
                "_id": id, "amount": amount, "status": status,
                "product": {"code": code, "name": name},
                "created_at": DateTime::now(),
            };
            if let Some(extra) = extra {
                d.insert("note", extra);
            }
            d
        })
}

fn date() -> impl Strategy<Value = DateTime> {
    (1_600_000_000_000i64..1_900_000_000_000).prop_map(DateTime::from_millis)
}

/// A valid `short_term_memory` thread.
pub fn valid_thread() -> impl Strategy<Value = Document> {
    (id_text(), id_text(), proptest::collection::vec((text(), 0i32..500), 0..4), date())
        .prop_map(|(thread, user, turns, at)| {
            let messages: Vec<Bson> = turns
                .into_iter()
                .map(|(content, tokens)| {
                    Bson::Document(doc! {
                        "role": "user", "content": content, "timestamp": at,
                        "token_count": tokens,
                    })
                })
                .collect();
            doc! {
                "_id": ObjectId::new(), "thread_id": thread, "user_id": user,
                "messages": messages, "summary": null, "summary_updated_at": null,
                // A day from now: the TTL monitor leaves it alone while a test runs.
                "created_at": at,
                "expires_at": DateTime::from_millis(DateTime::now().timestamp_millis() + 86_400_000),
            }
        })
}

/// A valid `episodic_memory` episode.
pub fn valid_episode() -> impl Strategy<Value = Document> {
    (
        id_text(),
        id_text(),
        text(),
        prop_oneof![Just("succeeded"), Just("failed"), Just("abandoned")],
        proptest::collection::vec("[a-z]{1,8}", 0..4),
        date(),
    )
        .prop_map(|(episode, user, summary, outcome, tags, at)| {
            doc! {
                "_id": ObjectId::new(), "episode_id": episode, "thread_id": "t", "user_id": user,
                "summary": summary,
                "tool_calls": [{"tool": "search", "inputs": {"q": "x"}, "output": "y",
                                "success": true, "called_at": at}],
                "outcome": outcome, "tags": tags, "started_at": at, "ended_at": at,
            }
        })
}

/// A valid `semantic_memory` memory.
pub fn valid_memory() -> impl Strategy<Value = Document> {
    (
        id_text(),
        id_text(),
        prop_oneof![Just("preference"), Just("fact"), Just("instruction")],
        text(),
        0.0f64..=1.0,
        proptest::option::of(proptest::collection::vec(any::<f64>(), 0..8)),
        date(),
    )
        .prop_map(|(memory, user, kind, content, strength, embedding, at)| {
            let mut d = doc! {
                "_id": ObjectId::new(), "memory_id": memory, "user_id": user, "type": kind,
                "content": content, "source_episode_id": null, "strength": strength,
                "last_accessed_at": at, "created_at": at,
            };
            if let Some(values) = embedding {
                d.insert("embedding", values);
            }
            d
        })
}

/// A valid document of `collection`.
pub fn valid(collection: Collection) -> BoxedStrategy<Document> {
    match collection {
        Collection::Payments => valid_payment().boxed(),
        Collection::ShortTerm => valid_thread().boxed(),
        Collection::Episodic => valid_episode().boxed(),
        Collection::Semantic => valid_memory().boxed(),
    }
}

/// Fields of `collection` the decoder requires as text, and whose every non-text value it
/// must refuse, naming the field.
pub fn text_fields(collection: Collection) -> &'static [&'static str] {
    match collection {
        Collection::Payments => &["status", "product.code"],
        Collection::ShortTerm => &["thread_id", "user_id"],
        Collection::Episodic => &["episode_id", "user_id", "outcome"],
        Collection::Semantic => &["memory_id", "user_id", "type"],
    }
}

/// A value that is anything but a string.
fn not_text() -> BoxedStrategy<Bson> {
    any_bson(2)
        .prop_filter("not a string", |v| {
            !matches!(v, Bson::String(_) | Bson::Symbol(_))
        })
        .boxed()
}

/// Sets the dotted `path` of `doc` to `value`.
fn set_path(doc: &mut Document, path: &str, value: Bson) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((head, rest)) => {
            if let Ok(inner) = doc.get_document_mut(head) {
                set_path(inner, rest, value);
            }
        }
    }
}

/// A valid document of `collection` but for one text field, set to a non-text value.
pub fn one_field_off(collection: Collection) -> BoxedStrategy<Case> {
    (
        valid(collection),
        proptest::sample::select(text_fields(collection)),
        not_text(),
    )
        .prop_map(move |(mut doc, field, value)| {
            set_path(&mut doc, field, value);
            Case {
                collection,
                doc,
                expect: Expect::Invalid(field.to_owned()),
            }
        })
        .boxed()
}

/// A document of any shape: a valid one with fields added, removed or replaced by any
/// value, or one made of random fields; its `_id` of any allowed type.
pub fn arbitrary(collection: Collection) -> BoxedStrategy<Case> {
    let random = proptest::collection::btree_map("[a-z_]{1,10}", any_bson(3), 0..8)
        .prop_map(|m| m.into_iter().collect::<Document>());
    let mangled = (
        valid(collection),
        proptest::collection::vec(("[a-z_.]{1,12}", proptest::option::of(any_bson(3))), 1..4),
    )
        .prop_map(|(mut doc, edits)| {
            for (field, value) in edits {
                let key = field.split('.').next().unwrap_or("x").to_owned();
                match value {
                    Some(v) => {
                        doc.insert(key, v);
                    }
                    None => {
                        doc.remove(&key);
                    }
                }
            }
            doc
        });
    (prop_oneof![random, mangled], any_id())
        .prop_map(move |(mut doc, id)| {
            doc.insert("_id", id);
            Case {
                collection,
                doc,
                expect: Expect::Arbitrary,
            }
        })
        .boxed()
}

/// Any case for `collection`: valid, one field off, or arbitrary.
pub fn case(collection: Collection) -> BoxedStrategy<Case> {
    prop_oneof![
        valid(collection).prop_map(move |doc| Case {
            collection,
            doc,
            expect: Expect::Valid
        }),
        one_field_off(collection),
        arbitrary(collection),
    ]
    .boxed()
}

/// An insert change event of `doc` in `database`.`collection`, as the server sends it.
pub fn insert_event(database: &str, collection: &str, doc: &Document, n: u64) -> Document {
    let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
    doc! {
        "_id": {"_data": format!("82{n:016X}2B022C0100296E5A1004")},
        "operationType": "insert",
        "clusterTime": Timestamp { time: 1_795_297_121, increment: (n % 1_000_000) as u32 },
        "wallTime": DateTime::from_millis(1_795_297_121_185),
        "fullDocument": doc.clone(),
        "ns": {"db": database, "coll": collection},
        "documentKey": {"_id": id},
    }
}
