//! changeflow: MongoDB change streams turned into typed domain events, routed to
//! in-process handlers and Kafka, with persisted resume tokens and replay.
//!
//! The pipeline and the rules that keep it correct are described in the README.

pub mod app;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connect;
pub mod dead_letter;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod error_text;
pub mod extjson;
pub mod gaps;
pub mod handlers;
pub mod health;
pub mod http;
pub mod metrics;
pub mod namespace_log;
pub mod oplog;
pub mod position;
pub mod publish;
pub mod redact;
pub mod replay;
pub mod retry;
pub mod setup;
pub mod shutdown;
pub mod source;
pub mod status;
pub mod tail;
pub mod telemetry;
