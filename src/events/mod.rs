//! What changeflow publishes: typed events, and namespace events (drops, renames), as
//! CloudEvents 1.0 with a JSON Schema per event type and version. Pure: building an
//! event's envelope and data needs no broker.

pub mod catalog;
pub mod cloudevent;
pub mod data;
pub mod examples;
pub mod memory_data;
pub mod namespace_data;
pub mod parse;
pub mod types;
