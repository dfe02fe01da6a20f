//! The integration tests, one binary so the MongoDB driver and librdkafka are linked once.
//! Each module is one area; `common` is the harness (servers, processes, load, faults).
//! Tests that inject faults into servers take [`common::exclusive`] so no two of them run
//! at once on the shared machine.

mod common;

mod amounts;
mod bad_input;
mod change_stream;
mod chaos;
mod checkpoint_admin;
mod checkpoint_store;
mod cli;
mod corpus;
mod credentials;
mod effects;
mod failover;
mod first_run;
mod handlers;
mod harness;
mod history;
mod images;
mod instances;
mod kafka_delivery;
mod kafka_roundtrip;
mod kafka_sink;
mod leases;
mod memory_decode;
mod memory_events;
mod module_graph;
mod namespace;
mod no_majority;
mod oplog_wrap;
mod oversize;
mod pipeline;
mod process;
mod replay;
mod roles;
mod schemas;
mod setup;
mod shutdown;
mod snapshot;
mod stalls;
