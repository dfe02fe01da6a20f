//! Raw change events turned into what consumers see.

pub mod extjson;
