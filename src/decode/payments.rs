//! Payment events: decode rules from raw change events of the `payments` collection.
//!
//! | change | event |
//! |---|---|
//! | insert, status PENDING / CONFIRMED / FAILED | `Requested` / `Confirmed` / `Failed` |
//! | update that sets `status` to CONFIRMED / FAILED | `Confirmed` / `Failed` |
//! | any other update, and every replace | `Updated` |
//! | delete | `Deleted` |
//!
//! The transition of an update is read from the change's own `updatedFields`, never from
//! the looked-up full document, which may already hold later changes. The payment's other
//! fields come from that full document (`fullDocument: updateLookup`).

use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{RawBsonRef, RawDocument};

use crate::domain::money::Amount;

use super::{DecodeError, Envelope, Fields, type_name};
use crate::domain::payments::*;

/// Decodes one raw change of the payments collection. `Ok(None)` for changes that are not
/// about a payment document (drop, rename, invalidate…): the caller handles those.
pub fn decode(event: &RawDocument) -> Result<Option<PaymentEvent>, DecodeError> {
    from_envelope(&Envelope::read(event)?)
}

/// [`decode`] of an event whose envelope was already read.
pub(crate) fn from_envelope(envelope: &Envelope<'_>) -> Result<Option<PaymentEvent>, DecodeError> {
    let operation = envelope.operation()?;
    if !matches!(operation, "insert" | "update" | "replace" | "delete") {
        return Ok(None);
    }
    let meta = envelope.meta()?;
    if operation == "delete" {
        let key = envelope.section("documentKey", envelope.document_key)?;
        let payment_id = payment_id(&key, key.lookup("_id")?)?;
        return Ok(Some(PaymentEvent::Deleted(PaymentDeleted {
            meta,
            payment_id,
        })));
    }
    let full = match envelope.full_document {
        None | Some(RawBsonRef::Null) => return Err(DecodeError::NoFullDocument),
        other => envelope.section("fullDocument", other)?,
    };
    let mut payment = payment(&full, "fullDocument.product")?;
    let transition = match operation {
        "insert" => Some(payment.status),
        "update" => status_set_by_update(envelope)?,
        _ => None, // replace: without a pre-image the transition is unknown
    };
    if let Some(status) = transition {
        payment.status = status;
    }
    let snapshot = PaymentSnapshot { meta, payment };
    Ok(Some(match transition {
        Some(PaymentStatus::Pending) if operation == "insert" => PaymentEvent::Requested(snapshot),
        Some(PaymentStatus::Confirmed) => PaymentEvent::Confirmed(snapshot),
        Some(PaymentStatus::Failed) => PaymentEvent::Failed(snapshot),
        _ => PaymentEvent::Updated(snapshot),
    }))
}

/// The status an update's `updatedFields` sets, if it sets one.
fn status_set_by_update(envelope: &Envelope<'_>) -> Result<Option<PaymentStatus>, DecodeError> {
    let description = envelope.section("updateDescription", envelope.update_description)?;
    let updated = Fields::new(
        description.document("updatedFields")?,
        "updateDescription.updatedFields",
    );
    match updated.str("status") {
        Ok(status) => status
            .parse()
            .map(Some)
            .map_err(|reason| DecodeError::Invalid {
                field: updated.path("status"),
                reason,
            }),
        Err(DecodeError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A payment document as stored (for reading the collection, e.g. by the HTTP API).
pub(crate) fn payment_from_document(doc: &RawDocument) -> Result<Payment, DecodeError> {
    payment(&Fields::new(doc, ""), "product")
}

/// `product_path` is the dotted path of `doc`'s product (static: no formatting per event).
fn payment(doc: &Fields<'_>, product_path: &str) -> Result<Payment, DecodeError> {
    let [id, amount_value, status, product] = doc.pick(["_id", "amount", "status", "product"])?;
    let product = Fields::new(doc.document_of("product", product)?, product_path);
    let [code, name] = product.pick(["code", "name"])?;
    let status = doc.str_of("status", status)?;
    Ok(Payment {
        id: payment_id(doc, id)?,
        amount: amount(doc, amount_value)?,
        status: status.parse().map_err(|reason| DecodeError::Invalid {
            field: doc.path("status"),
            reason,
        })?,
        product: Product {
            code: product.non_empty_str_of("code", code)?.to_owned(),
            name: product.str_of("name", name)?.to_owned(),
        },
    })
}

/// `_id` as text: a non-empty string, or a BSON UUID (binary subtype 4) rendered hyphenated.
fn payment_id(doc: &Fields<'_>, value: Option<RawBsonRef<'_>>) -> Result<String, DecodeError> {
    match doc.required("_id", value)? {
        RawBsonRef::String(s) if !s.trim().is_empty() => Ok(s.to_owned()),
        RawBsonRef::String(_) => Err(DecodeError::Invalid {
            field: doc.path("_id"),
            reason: "is empty".into(),
        }),
        RawBsonRef::Binary(b) if b.subtype == BinarySubtype::Uuid && b.bytes.len() == 16 => {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(b.bytes);
            Ok(mongodb::bson::Uuid::from_bytes(bytes).to_string())
        }
        other => Err(DecodeError::WrongType {
            field: doc.path("_id"),
            expected: "a UUID string or BSON UUID",
            found: type_name(other.element_type()).to_owned(),
        }),
    }
}

/// The amount, exactly: a Decimal128 digit for digit (34 significant digits, its whole
/// exponent range), an int32/int64, or a finite double taken at its shortest decimal form.
/// NaN, infinities and negative amounts are refused.
fn amount(doc: &Fields<'_>, value: Option<RawBsonRef<'_>>) -> Result<Amount, DecodeError> {
    // The path is only spelled out on the error path: this runs for every payment change.
    let invalid = |reason: String| DecodeError::Invalid {
        field: doc.path("amount"),
        reason,
    };
    let value = match doc.required("amount", value)? {
        RawBsonRef::Decimal128(d) => {
            Amount::from_decimal128(d).map_err(|e| invalid(format!("the decimal {d} {e}")))?
        }
        RawBsonRef::Int32(i) => Amount::from_i64(i64::from(i)),
        RawBsonRef::Int64(i) => Amount::from_i64(i),
        RawBsonRef::Double(f) => {
            Amount::from_f64(f).map_err(|e| invalid(format!("the double {f} {e}")))?
        }
        other => {
            return Err(DecodeError::WrongType {
                field: doc.path("amount"),
                expected: "a decimal or a number",
                found: type_name(other.element_type()).to_owned(),
            });
        }
    };
    if value.is_negative() {
        return Err(invalid(format!("{value} is negative")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::change_meta;
    use crate::domain::EventKind;
    use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
    use std::path::Path;

    /// A change event recorded from a real replica set (canonical Extended JSON).
    fn fixture(name: &str) -> RawDocumentBuf {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/payments")
            .join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let Bson::Document(doc) = Bson::try_from(json).unwrap() else {
            panic!("{name} is not a document");
        };
        RawDocumentBuf::from_document(&doc).unwrap()
    }

    fn decoded(name: &str) -> PaymentEvent {
        decode(&fixture(name)).unwrap().expect("a payment event")
    }

    fn edited(name: &str, edit: impl FnOnce(&mut Document)) -> RawDocumentBuf {
        let mut doc = fixture(name).to_document().unwrap();
        edit(&mut doc);
        RawDocumentBuf::from_document(&doc).unwrap()
    }

    const KETTLE: &str = "d3b07384-d9a0-4c3b-8f1e-1b2c3d4e5f60";

    #[test]
    fn insert_of_a_pending_payment_is_requested() {
        let event = decoded("insert_pending");
        let PaymentEvent::Requested(s) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(s.payment.id, "5f0c7a52-93b1-4c1e-9a43-0c8f8f0b2a11");
        assert_eq!(s.payment.amount, "49.80".parse().unwrap());
        assert_eq!(s.payment.amount.to_string(), "49.80", "scale is kept");
        assert_eq!(s.payment.status, PaymentStatus::Pending);
        assert_eq!(s.payment.product.code, KETTLE);
        assert_eq!(s.payment.product.name, "Pour-over kettle");
        assert_eq!(s.meta.database, "fixture_rec");
        assert_eq!(s.meta.collection, "payments");
        assert!(s.meta.wall_time.is_some());
        assert!(s.meta.cluster_time.time > 0);
    }

    /// `update_confirmed` with its own `updatedFields.status` set to `status`.
    fn update_setting(status: &str) -> RawDocumentBuf {
        edited("update_confirmed", |d| {
            d.get_document_mut("updateDescription")
                .unwrap()
                .get_document_mut("updatedFields")
                .unwrap()
                .insert("status", status);
        })
    }

    #[test]
    fn status_updates_become_confirmed_and_failed() {
        assert_eq!(
            decoded("update_confirmed").kind(),
            EventKind::PaymentConfirmed
        );
        let failed = decode(&update_setting("FAILED")).unwrap().unwrap();
        assert_eq!(failed.kind(), EventKind::PaymentFailed);
        let PaymentEvent::Requested(s) = decoded("insert_int_amount") else {
            panic!("requested")
        };
        assert_eq!(
            s.payment.amount,
            Amount::from_i64(120),
            "int64 amounts are exact"
        );
    }

    #[test]
    fn the_transition_comes_from_the_change_not_the_looked_up_document() {
        // The looked-up document says CONFIRMED, but this update only touched `note`.
        assert_eq!(
            decoded("update_other_field").kind(),
            EventKind::PaymentUpdated
        );
        // The lookup saw CONFIRMED, but this change set FAILED: the event is Failed.
        let PaymentEvent::Failed(s) = decode(&update_setting("FAILED")).unwrap().unwrap() else {
            panic!("failed")
        };
        assert_eq!(s.payment.status, PaymentStatus::Failed);
    }

    #[test]
    fn an_update_whose_document_was_deleted_before_the_lookup_has_no_payment() {
        // Recorded for real: the payment was replaced and deleted before the server looked
        // up the document for this status update, so `fullDocument` is null.
        assert_eq!(
            decode(&fixture("update_failed")).unwrap_err(),
            DecodeError::NoFullDocument
        );
    }

    #[test]
    fn replace_is_updated_and_delete_carries_the_id() {
        assert_eq!(decoded("replace").kind(), EventKind::PaymentUpdated);
        let PaymentEvent::Deleted(d) = decoded("delete") else {
            panic!("delete")
        };
        assert_eq!(d.payment_id, "7e9a1c30-5b6d-4f2e-8a1b-2c3d4e5f6a7b");
    }

    #[test]
    fn event_ids_are_stable_and_unique_per_change() {
        let names = [
            "insert_pending",
            "update_confirmed",
            "update_other_field",
            "insert_int_amount",
            "update_failed",
            "replace",
            "delete",
        ];
        let id_of = |n: &&str| change_meta(&fixture(n)).unwrap().event_id;
        let ids: Vec<_> = names.iter().map(id_of).collect();
        let again: Vec<_> = names.iter().map(id_of).collect();
        assert_eq!(ids, again);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn bad_documents_are_refused_with_the_field_and_reason() {
        let cases = [
            (
                "bad_missing_product_code",
                "missing field `fullDocument.product.code`",
            ),
            (
                "bad_amount_string",
                "field `fullDocument.amount` is a string, expected a decimal or a number",
            ),
            (
                "bad_unknown_status",
                "field `fullDocument.status`: unknown status `REFUNDED`",
            ),
            (
                "bad_product_not_document",
                "field `fullDocument.product` is a string, expected a document",
            ),
        ];
        for (name, expected) in cases {
            let err = decode(&fixture(name)).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{name}: {err}");
        }
    }

    #[test]
    fn other_bad_shapes_are_refused() {
        let negative = edited("insert_pending", |d| {
            d.get_document_mut("fullDocument")
                .unwrap()
                .insert("amount", -5_i32);
        });
        assert!(
            decode(&negative)
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
        let object_id = edited("insert_pending", |d| {
            d.get_document_mut("fullDocument")
                .unwrap()
                .insert("_id", mongodb::bson::oid::ObjectId::new());
        });
        assert!(
            decode(&object_id)
                .unwrap_err()
                .to_string()
                .contains("`fullDocument._id`")
        );
        let err = decode(&update_setting("SETTLED")).unwrap_err().to_string();
        assert!(
            err.contains("updateDescription.updatedFields.status"),
            "{err}"
        );
        let no_lookup = edited("update_confirmed", |d| {
            d.insert("fullDocument", Bson::Null);
        });
        assert_eq!(decode(&no_lookup).unwrap_err(), DecodeError::NoFullDocument);
    }

    #[test]
    fn doubles_and_uuids_are_accepted_exactly() {
        let raw = edited("insert_pending", |d| {
            let full = d.get_document_mut("fullDocument").unwrap();
            full.insert("amount", 19.99_f64);
            full.insert(
                "_id",
                mongodb::bson::Uuid::parse_str("5f0c7a52-93b1-4c1e-9a43-0c8f8f0b2a11").unwrap(),
            );
        });
        let PaymentEvent::Requested(s) = decode(&raw).unwrap().unwrap() else {
            panic!("requested")
        };
        assert_eq!(s.payment.amount.to_string(), "19.99");
        assert_eq!(s.payment.id, "5f0c7a52-93b1-4c1e-9a43-0c8f8f0b2a11");
    }

    #[test]
    fn non_document_changes_are_not_payment_events() {
        let raw = RawDocumentBuf::from_document(&doc! {"operationType": "drop"}).unwrap();
        assert_eq!(decode(&raw).unwrap(), None);
    }

    /// `insert_pending` with its amount replaced by `amount`.
    fn with_amount(amount: Bson) -> RawDocumentBuf {
        edited("insert_pending", |d| {
            d.get_document_mut("fullDocument")
                .unwrap()
                .insert("amount", amount);
        })
    }

    #[test]
    fn decimal128_amounts_keep_all_34_digits_and_their_exponent() {
        for text in [
            "1.000000000000000000000000000000001",
            "9999999999999999999999999999999999",
            "79228162514264337593543950336",
            "0.0000000000000000000000000000000000001",
            "1E+6144",
            "1.000000000000000000000000000000000E+6144",
            "1E-6176",
            "49.80",
            "1.0",
            "1.00",
            "0E-10",
        ] {
            let d: mongodb::bson::Decimal128 = text.parse().unwrap();
            let PaymentEvent::Requested(s) =
                decode(&with_amount(Bson::Decimal128(d))).unwrap().unwrap()
            else {
                panic!("requested")
            };
            assert_eq!(s.payment.amount.to_string(), d.to_string(), "{text}");
        }
    }

    #[test]
    fn amounts_that_are_not_numbers_or_negative_are_refused_with_the_reason() {
        for (amount, reason) in [
            (
                Bson::Decimal128("NaN".parse().unwrap()),
                "NaN, not a number",
            ),
            (
                Bson::Decimal128("-Infinity".parse().unwrap()),
                "-Infinity, not a number",
            ),
            (Bson::Double(f64::INFINITY), "Infinity, not a number"),
            (
                Bson::Decimal128("-0.000000000000000000000000000000001".parse().unwrap()),
                "-1E-33 is negative",
            ),
        ] {
            match decode(&with_amount(amount.clone())) {
                Err(DecodeError::Invalid { field, reason: r }) => {
                    assert_eq!(field, "fullDocument.amount");
                    assert!(r.contains(reason), "{amount}: {r}");
                }
                other => panic!("{amount}: {other:?}"),
            }
        }
    }
}
