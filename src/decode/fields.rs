//! Typed access to a document's fields, and error text that names them.

use mongodb::bson::spec::ElementType;
use mongodb::bson::{RawBsonRef, RawDocument};

use super::{DecodeError, walk};

/// Typed access to one document's fields, with errors that name the full dotted path.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) doc: &'a RawDocument,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(doc: &'a RawDocument, prefix: &'a str) -> Fields<'a> {
        Fields { doc, prefix }
    }

    pub(crate) fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The values of `keys`, found in one pass over the document (a lookup per key would
    /// scan it again each time); `None` for a key the document lacks.
    pub(crate) fn pick<const N: usize>(
        &self,
        keys: [&str; N],
    ) -> Result<[Option<RawBsonRef<'a>>; N], DecodeError> {
        walk::pick(self.doc, keys)
            .map_err(|_| DecodeError::invalid(self.prefix_or_root(), "malformed BSON"))
    }

    pub(crate) fn prefix_or_root(&self) -> String {
        if self.prefix.is_empty() {
            "(document)".to_owned()
        } else {
            self.prefix.to_owned()
        }
    }

    pub(crate) fn lookup(&self, key: &str) -> Result<Option<RawBsonRef<'a>>, DecodeError> {
        let [value] = walk::pick(self.doc, [key])
            .map_err(|_| DecodeError::invalid(self.path(key), "malformed BSON"))?;
        Ok(value)
    }

    /// `value` (of `key`), which must be present.
    pub(crate) fn required(
        &self,
        key: &str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<RawBsonRef<'a>, DecodeError> {
        value.ok_or_else(|| DecodeError::missing(self.path(key)))
    }

    pub(crate) fn wrong_type(
        &self,
        key: &str,
        expected: &'static str,
        found: RawBsonRef<'_>,
    ) -> DecodeError {
        DecodeError::WrongType {
            field: self.path(key),
            expected,
            found: type_name(found.element_type()).to_owned(),
        }
    }

    /// `value` (of `key`) as a string.
    pub(crate) fn str_of(
        &self,
        key: &str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<&'a str, DecodeError> {
        match self.required(key, value)? {
            RawBsonRef::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// `value` (of `key`) as a string with more than white space.
    pub(crate) fn non_empty_str_of(
        &self,
        key: &str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<&'a str, DecodeError> {
        let value = self.str_of(key, value)?;
        if value.trim().is_empty() {
            return Err(DecodeError::invalid(self.path(key), "is empty"));
        }
        Ok(value)
    }

    /// `value` (of `key`) as a document.
    pub(crate) fn document_of(
        &self,
        key: &str,
        value: Option<RawBsonRef<'a>>,
    ) -> Result<&'a RawDocument, DecodeError> {
        match self.required(key, value)? {
            RawBsonRef::Document(d) => Ok(d),
            other => Err(self.wrong_type(key, "a document", other)),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<&'a str, DecodeError> {
        self.str_of(key, self.lookup(key)?)
    }

    pub(crate) fn non_empty_str(&self, key: &str) -> Result<&'a str, DecodeError> {
        self.non_empty_str_of(key, self.lookup(key)?)
    }

    pub(crate) fn document(&self, key: &str) -> Result<&'a RawDocument, DecodeError> {
        self.document_of(key, self.lookup(key)?)
    }
}

/// A readable name for a BSON type in error messages.
pub(crate) fn type_name(t: ElementType) -> &'static str {
    match t {
        ElementType::Double => "a double",
        ElementType::String => "a string",
        ElementType::EmbeddedDocument => "a document",
        ElementType::Array => "an array",
        ElementType::Binary => "binary data",
        ElementType::ObjectId => "an ObjectId",
        ElementType::Boolean => "a boolean",
        ElementType::DateTime => "a date",
        ElementType::Null => "null",
        ElementType::Int32 => "an int32",
        ElementType::Timestamp => "a timestamp",
        ElementType::Int64 => "an int64",
        ElementType::Decimal128 => "a decimal128",
        _ => "an unsupported BSON type",
    }
}
