//! A lean one-pass walk over a BSON document for the decoder's hot path. The bson crate's
//! iterator checks every key as UTF-8 and builds every value; the decoder wants a handful of
//! keys per document. Here keys are compared as bytes, and only the wanted values are
//! converted. Bounds are checked at every step: a malformed document is an error, never a
//! panic.

use mongodb::bson::raw::RawBinaryRef;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{DateTime, Decimal128, RawBsonRef, RawDocument, Timestamp, oid::ObjectId};

/// The document's bytes do not follow the BSON spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The values of `keys` in `doc`, found in one pass: for each key the first element with it,
/// `None` when there is none.
pub(crate) fn pick<'a, const N: usize>(
    doc: &'a RawDocument,
    keys: [&str; N],
) -> Result<[Option<RawBsonRef<'a>>; N], Malformed> {
    let bytes = doc.as_bytes();
    // A RawDocument's length prefix matches its bytes and it ends with the null terminator.
    let body = bytes
        .get(4..bytes.len().saturating_sub(1))
        .ok_or(Malformed)?;
    let mut values = [None; N];
    let mut at = 0;
    while at < body.len() {
        let kind = body[at];
        let rest = &body[at + 1..];
        let key_len = rest.iter().position(|b| *b == 0).ok_or(Malformed)?;
        let key = &rest[..key_len];
        let rest = &rest[key_len + 1..];
        let size = value_size(kind, rest)?;
        let value = &rest[..size];
        if let Some(i) = keys.iter().position(|k| k.as_bytes() == key)
            && values[i].is_none()
        {
            values[i] = Some(convert(doc, kind, keys[i], value)?);
        }
        at += 1 + key_len + 1 + size;
    }
    Ok(values)
}

fn le_i32(bytes: &[u8]) -> Result<i32, Malformed> {
    let four = bytes.get(..4).ok_or(Malformed)?;
    Ok(i32::from_le_bytes([four[0], four[1], four[2], four[3]]))
}

fn le_u64(bytes: &[u8]) -> Result<u64, Malformed> {
    let eight: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(Malformed)?;
    Ok(u64::from_le_bytes(eight))
}

/// Length of a length-prefixed string value (prefix, bytes, null), checked.
fn string_size(rest: &[u8]) -> Result<usize, Malformed> {
    let len = usize::try_from(le_i32(rest)?).map_err(|_| Malformed)?;
    if len == 0 || rest.get(4 + len - 1) != Some(&0) {
        return Err(Malformed);
    }
    Ok(4 + len)
}

/// Length of an embedded document (or array, or code with scope), checked.
fn document_size(rest: &[u8], minimum: usize) -> Result<usize, Malformed> {
    let len = usize::try_from(le_i32(rest)?).map_err(|_| Malformed)?;
    if len < minimum || rest.get(len - 1) != Some(&0) {
        return Err(Malformed);
    }
    Ok(len)
}

fn cstring_size(rest: &[u8]) -> Result<usize, Malformed> {
    Ok(rest.iter().position(|b| *b == 0).ok_or(Malformed)? + 1)
}

/// How many bytes the value of an element of type `kind` takes at the start of `rest`.
fn value_size(kind: u8, rest: &[u8]) -> Result<usize, Malformed> {
    let size = match kind {
        0x06 | 0x0A | 0x7F | 0xFF => 0, // undefined, null, max key, min key
        0x08 => 1,                      // boolean
        0x10 => 4,                      // int32
        0x01 | 0x09 | 0x11 | 0x12 => 8, // double, date, timestamp, int64
        0x07 => 12,                     // ObjectId
        0x13 => 16,                     // Decimal128
        0x02 | 0x0D | 0x0E => string_size(rest)?,
        0x03 | 0x04 => document_size(rest, 5)?,
        0x05 => {
            let len = usize::try_from(le_i32(rest)?).map_err(|_| Malformed)?;
            4 + 1 + len
        }
        0x0B => {
            let pattern = cstring_size(rest)?;
            pattern + cstring_size(rest.get(pattern..).ok_or(Malformed)?)?
        }
        0x0C => string_size(rest)? + 12,
        0x0F => document_size(rest, 14)?,
        _ => return Err(Malformed),
    };
    if size > rest.len() {
        return Err(Malformed);
    }
    Ok(size)
}

/// The value of the element `key` of type `kind` whose bytes are `value`.
fn convert<'a>(
    doc: &'a RawDocument,
    kind: u8,
    key: &str,
    value: &'a [u8],
) -> Result<RawBsonRef<'a>, Malformed> {
    Ok(match kind {
        0x01 => RawBsonRef::Double(f64::from_bits(le_u64(value)?)),
        0x02 => RawBsonRef::String(
            std::str::from_utf8(value.get(4..value.len() - 1).ok_or(Malformed)?)
                .map_err(|_| Malformed)?,
        ),
        0x03 => RawBsonRef::Document(RawDocument::from_bytes(value).map_err(|_| Malformed)?),
        0x05 if value.get(4) != Some(&0x02) => RawBsonRef::Binary(RawBinaryRef {
            subtype: BinarySubtype::from(value[4]),
            bytes: &value[5..],
        }),
        0x07 => RawBsonRef::ObjectId(ObjectId::from_bytes(
            value.try_into().map_err(|_| Malformed)?,
        )),
        0x08 => match value {
            [0] => RawBsonRef::Boolean(false),
            [1] => RawBsonRef::Boolean(true),
            _ => return Err(Malformed),
        },
        0x09 => RawBsonRef::DateTime(DateTime::from_millis(le_u64(value)? as i64)),
        0x0A => RawBsonRef::Null,
        0x10 => RawBsonRef::Int32(le_i32(value)?),
        0x11 => {
            let bits = le_u64(value)?;
            RawBsonRef::Timestamp(Timestamp {
                time: (bits >> 32) as u32,
                increment: bits as u32,
            })
        }
        0x12 => RawBsonRef::Int64(le_u64(value)? as i64),
        0x13 => RawBsonRef::Decimal128(Decimal128::from_bytes(
            value.try_into().map_err(|_| Malformed)?,
        )),
        // Arrays and the rare types: the bson crate's own lookup (this key's first element).
        _ => doc.get(key).ok().flatten().ok_or(Malformed)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{Binary, Bson, Document, RawDocumentBuf, Regex, doc};

    fn every_type() -> RawDocumentBuf {
        let doc = doc! {
            "double": 1.5,
            "string": "héllo",
            "empty": "",
            "document": {"a": 1, "b": {"c": "d"}},
            "array": [1, "two", {"three": 3}],
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
            "old": Binary { subtype: BinarySubtype::BinaryOld, bytes: vec![9, 9] },
            "oid": ObjectId::from_bytes([3; 12]),
            "yes": true,
            "no": false,
            "date": DateTime::from_millis(1_700_000_000_123),
            "null": Bson::Null,
            "regex": Regex { pattern: "^a".into(), options: "i".into() },
            "code": Bson::JavaScriptCode("x()".into()),
            "int32": -7_i32,
            "timestamp": Timestamp { time: 1_700_000_000, increment: 42 },
            "int64": -9_000_000_000_i64,
            "decimal": "12.50".parse::<Decimal128>().expect("decimal"),
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
            "double": 2.5, // a duplicate: the first counts
        };
        RawDocumentBuf::from_document(&doc).expect("serialises")
    }

    #[test]
    fn agrees_with_the_bson_crate_on_every_type() {
        let raw = every_type();
        let keys = [
            "double",
            "string",
            "empty",
            "document",
            "array",
            "binary",
            "uuid",
            "old",
            "oid",
            "yes",
            "no",
            "date",
            "null",
            "regex",
            "code",
            "int32",
            "timestamp",
            "int64",
            "decimal",
            "min",
            "max",
            "absent",
        ];
        let picked = pick(&raw, keys).expect("well-formed");
        for (key, value) in keys.iter().zip(picked) {
            assert_eq!(value, raw.get(key).expect("bson reads it"), "key {key}");
        }
    }

    #[test]
    fn agrees_with_the_bson_crate_on_the_recorded_change_events() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/payments");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("fixtures") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let Ok(Bson::Document(doc)) = Bson::try_from(json) else {
                panic!("{path:?} is not a document");
            };
            check_recursively(&RawDocumentBuf::from_document(&doc).expect("raw"));
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} fixtures found in {dir:?}");
    }

    fn check_recursively(raw: &RawDocument) {
        let doc = Document::try_from(raw).expect("valid");
        for key in doc.keys() {
            let [value] = pick(raw, [key.as_str()]).expect("well-formed");
            assert_eq!(value, raw.get(key).expect("bson reads it"), "key {key}");
            if let Some(RawBsonRef::Document(inner)) = value {
                check_recursively(inner);
            }
        }
    }

    #[test]
    fn damaged_documents_are_errors_not_panics() {
        let good = every_type();
        let bytes = good.as_bytes();
        let mut errors = 0;
        // Every single-byte corruption that still passes the length and terminator check.
        for i in 4..bytes.len() - 1 {
            for replacement in [0x00, 0x01, 0x02, 0x03, 0x05, 0x0B, 0x7F, 0xFF, 0x80] {
                let mut damaged = bytes.to_vec();
                damaged[i] = replacement;
                if let Ok(doc) = RawDocument::from_bytes(&damaged)
                    && pick(doc, ["double", "string", "document", "int64", "max"]).is_err()
                {
                    errors += 1;
                }
            }
        }
        assert!(errors > 0, "no corruption was detected at all");
    }
}
