//! The values inside memory documents: episodes, messages, embeddings, numbers and dates,
//! each checked with an error that names its field.

use mongodb::bson::{DateTime, RawArray, RawBsonRef, RawDocument};

use super::Decoder;
use crate::decode::{DecodeError, Fields, type_name};
use crate::domain::memory::*;

impl Decoder<'_> {
    pub(super) fn episode<'d>(&self, doc: &Fields<'d>) -> Result<Episode, DecodeError> {
        let [
            thread_id,
            outcome,
            tags,
            tool_calls,
            started_at,
            ended_at,
            summary,
        ] = doc.pick([
            "thread_id",
            "outcome",
            "tags",
            "tool_calls",
            "started_at",
            "ended_at",
            "summary",
        ])?;
        let tags = match tags {
            None | Some(RawBsonRef::Null) => Vec::new(),
            Some(RawBsonRef::Array(a)) => {
                let tags_path = doc.path("tags");
                let tags_doc = Fields::new(array_doc(a)?, &tags_path);
                let mut out = Vec::new();
                for (i, value) in a.into_iter().enumerate() {
                    let value = value.map_err(|_| malformed(&tags_doc))?;
                    out.push(tags_doc.str_of(&i.to_string(), Some(value))?.to_owned());
                }
                out
            }
            Some(other) => return Err(doc.wrong_type("tags", "an array", other)),
        };
        let (calls, failed) = match tool_calls {
            None | Some(RawBsonRef::Null) => (0, 0),
            Some(RawBsonRef::Array(a)) => {
                let calls_path = doc.path("tool_calls");
                let calls_doc = Fields::new(array_doc(a)?, &calls_path);
                let mut failed = 0;
                for (i, call) in documents(a).into_iter().enumerate() {
                    let index = i.to_string();
                    let call_path = calls_doc.path(&index);
                    let call = Fields::new(call, &call_path);
                    match call.lookup("success")? {
                        Some(RawBsonRef::Boolean(true)) => {}
                        Some(RawBsonRef::Boolean(false)) => failed += 1,
                        other => {
                            return Err(match other {
                                Some(v) => call.wrong_type("success", "a boolean", v),
                                None => DecodeError::missing(call.path("success")),
                            });
                        }
                    }
                }
                (count(a), failed)
            }
            Some(other) => return Err(doc.wrong_type("tool_calls", "an array", other)),
        };
        Ok(Episode {
            thread_id: optional_str(doc, "thread_id", thread_id)?,
            outcome: outcome_of(doc, outcome)?,
            tags,
            tool_calls: calls,
            failed_tool_calls: failed,
            started_at: date_of(doc, "started_at", started_at)?,
            ended_at: date_of(doc, "ended_at", ended_at)?,
            summary: Content::new(doc.str_of("summary", summary)?, self.privacy.episodic),
        })
    }

    pub(super) fn messages<'d>(
        &self,
        doc: &Fields<'d>,
        key: &str,
        value: Option<RawBsonRef<'d>>,
    ) -> Result<Vec<Message>, DecodeError> {
        let array = match doc.required(key, value)? {
            RawBsonRef::Array(a) => a,
            other => return Err(doc.wrong_type(key, "an array", other)),
        };
        self.message_list(array, &doc.path(key), 0)
    }

    /// The messages of `array` (whose dotted path is `path`), from index `from` on.
    pub(super) fn message_list(
        &self,
        array: &RawArray,
        path: &str,
        from: usize,
    ) -> Result<Vec<Message>, DecodeError> {
        let items = Fields::new(array_doc(array)?, path);
        let mut messages = Vec::new();
        for (i, value) in array.into_iter().enumerate().skip(from) {
            let value = value.map_err(|_| malformed(&items))?;
            messages.push(self.message(&items, &i.to_string(), Some(value))?);
        }
        Ok(messages)
    }

    pub(super) fn message<'d>(
        &self,
        doc: &Fields<'d>,
        key: &str,
        value: Option<RawBsonRef<'d>>,
    ) -> Result<Message, DecodeError> {
        let path = doc.path(key);
        let message = Fields::new(doc.document_of(key, value)?, &path);
        let [role, content, timestamp, token_count] =
            message.pick(["role", "content", "timestamp", "token_count"])?;
        Ok(Message {
            role: message.non_empty_str_of("role", role)?.to_owned(),
            content: Content::new(message.str_of("content", content)?, self.privacy.short_term),
            timestamp: date_of(&message, "timestamp", timestamp)?,
            token_count: match message.required("token_count", token_count)? {
                RawBsonRef::Int32(n) if n >= 0 => i64::from(n),
                RawBsonRef::Int64(n) if n >= 0 => n,
                RawBsonRef::Int32(_) | RawBsonRef::Int64(_) => {
                    return Err(DecodeError::invalid(
                        message.path("token_count"),
                        "is negative",
                    ));
                }
                other => return Err(message.wrong_type("token_count", "an integer", other)),
            },
        })
    }

    pub(super) fn embedding<'d>(
        &self,
        doc: &Fields<'d>,
        value: Option<RawBsonRef<'d>>,
    ) -> Result<Option<Embedding>, DecodeError> {
        let array = match value {
            None | Some(RawBsonRef::Null) => return Ok(None),
            Some(RawBsonRef::Array(a)) => a,
            Some(other) => return Err(doc.wrong_type("embedding", "an array", other)),
        };
        let mut values = Vec::new();
        let mut dimensions = 0;
        for (i, element) in array.into_iter().enumerate() {
            let element = element
                .map_err(|_| DecodeError::invalid(doc.path("embedding"), "malformed BSON"))?;
            let number = number_of(element).ok_or_else(|| DecodeError::WrongType {
                field: format!("{}.{i}", doc.path("embedding")),
                expected: "a number",
                found: type_name(element.element_type()).to_owned(),
            })?;
            if self.privacy.include_embeddings {
                values.push(number);
            }
            dimensions += 1;
        }
        Ok(Some(Embedding {
            dimensions,
            values: self.privacy.include_embeddings.then_some(values),
        }))
    }
}

pub(super) fn malformed(doc: &Fields<'_>) -> DecodeError {
    DecodeError::invalid(doc.path("(element)"), "malformed BSON")
}

/// An array's elements as a document keyed "0", "1"… (its BSON encoding is one).
pub(super) fn array_doc(array: &RawArray) -> Result<&RawDocument, DecodeError> {
    RawDocument::from_bytes(array.as_bytes())
        .map_err(|_| DecodeError::invalid("(array)", "malformed BSON"))
}

pub(super) fn documents(array: &RawArray) -> Vec<&RawDocument> {
    array
        .into_iter()
        .filter_map(|v| match v {
            Ok(RawBsonRef::Document(d)) => Some(d),
            _ => None,
        })
        .collect()
}

pub(super) fn count(array: &RawArray) -> u32 {
    len_u32(array.into_iter().count())
}

pub(super) fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn number_of(value: RawBsonRef<'_>) -> Option<f64> {
    match value {
        RawBsonRef::Double(f) => Some(f),
        RawBsonRef::Int32(i) => Some(f64::from(i)),
        RawBsonRef::Int64(i) => Some(i as f64),
        RawBsonRef::Decimal128(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

pub(super) fn strength_of(
    doc: &Fields<'_>,
    key: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<f64, DecodeError> {
    let value = doc.required(key, value)?;
    let number = number_of(value).ok_or_else(|| doc.wrong_type(key, "a number", value))?;
    if !(0.0..=1.0).contains(&number) {
        return Err(DecodeError::invalid(
            doc.path(key),
            format!("{number} is outside 0..=1"),
        ));
    }
    Ok(number)
}

pub(super) fn date_of(
    doc: &Fields<'_>,
    key: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<DateTime, DecodeError> {
    match doc.required(key, value)? {
        RawBsonRef::DateTime(d) => Ok(d),
        other => Err(doc.wrong_type(key, "a date", other)),
    }
}

/// A field that may be absent or null.
pub(super) fn optional<'a, T>(
    doc: &Fields<'a>,
    value: Option<RawBsonRef<'a>>,
    read: impl Fn(&Fields<'a>, Option<RawBsonRef<'a>>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    match value {
        None | Some(RawBsonRef::Null) => Ok(None),
        value => read(doc, value).map(Some),
    }
}

pub(super) fn optional_date(
    doc: &Fields<'_>,
    key: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<Option<DateTime>, DecodeError> {
    optional(doc, value, |doc, v| date_of(doc, key, v))
}

pub(super) fn optional_str(
    doc: &Fields<'_>,
    key: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<Option<String>, DecodeError> {
    optional(doc, value, |doc, v| doc.str_of(key, v).map(str::to_owned))
}

pub(super) fn outcome_of(
    doc: &Fields<'_>,
    value: Option<RawBsonRef<'_>>,
) -> Result<Outcome, DecodeError> {
    match doc.str_of("outcome", value)? {
        "succeeded" => Ok(Outcome::Succeeded),
        "failed" => Ok(Outcome::Failed),
        "abandoned" => Ok(Outcome::Abandoned),
        other => Err(DecodeError::invalid(
            doc.path("outcome"),
            format!(
                "unknown outcome `{}` (expected succeeded, failed or abandoned)",
                crate::domain::excerpt(other)
            ),
        )),
    }
}

pub(super) fn memory_type_of(
    doc: &Fields<'_>,
    value: Option<RawBsonRef<'_>>,
) -> Result<MemoryType, DecodeError> {
    match doc.str_of("type", value)? {
        "preference" => Ok(MemoryType::Preference),
        "fact" => Ok(MemoryType::Fact),
        "instruction" => Ok(MemoryType::Instruction),
        other => Err(DecodeError::invalid(
            doc.path("type"),
            format!(
                "unknown memory type `{}` (expected preference, fact or instruction)",
                crate::domain::excerpt(other)
            ),
        )),
    }
}
