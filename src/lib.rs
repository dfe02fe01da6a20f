//! changeflow: MongoDB change streams turned into typed domain events, routed to
//! in-process handlers and Kafka, with persisted resume tokens and replay.
//!
//! The pipeline and the rules that keep it correct are described in the README. Modules
//! depend on each other in one direction, lowest first: `config`, `observe`, `domain`,
//! `source`, `decode`, `state`, `events`, `pipeline`, `targets`, `http`, `cmd`.

#![warn(missing_docs)]

pub mod cmd;
pub mod config;
pub mod decode;
pub mod domain;
pub mod events;
pub mod http;
pub mod observe;
pub mod pipeline;
pub mod source;
pub mod state;
pub mod targets;
