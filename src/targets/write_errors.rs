//! Reading the driver's errors for the handlers' writes: which ones a retry cannot fix.

use mongodb::error::{Error as DriverError, ErrorKind, TRANSIENT_TRANSACTION_ERROR, WriteFailure};

/// Server error codes no retry can fix (the write itself is wrong for the document):
/// BadValue, TypeMismatch, Overflow, DollarPrefixedFieldName, ImmutableField,
/// DocumentValidationFailure, BSONObjectTooLarge, DocumentTooLarge.
const PERMANENT_CODES: [i32; 8] = [2, 14, 15, 52, 66, 121, 10334, 17419];

/// The server's error code, if the error carries one.
pub fn code(e: &DriverError) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|w| w.code),
        _ => None,
    }
}

/// Whether the server refused the write itself, so that trying it again cannot succeed;
/// elections, conflicts and the network pass, and everything unknown is tried again.
pub(crate) fn is_permanent(e: &DriverError) -> bool {
    !e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        && code(e).is_some_and(|c| PERMANENT_CODES.contains(&c))
}

/// WriteConflict (112): another transaction holds a document.
pub(crate) fn is_write_conflict(e: &DriverError) -> bool {
    code(e) == Some(112)
}
