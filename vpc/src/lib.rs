//! AWS VPC Flow Logs as a flowmap input: flow log files in object storage (S3, or a local
//! directory), announced by S3 "object created" notifications on an SQS queue (or listed, for a
//! backfill), read in bounded *mouthfuls*, parsed, and handed to a [`Sink`] that attributes and
//! delivers them. Queue messages are deleted only after the sink reports everything derived from
//! them delivered (at-least-once), and objects already processed (bucket, key, ETag) are
//! skipped, across restarts.
//!
//! Why VPC flow logs: they cover what host exporters cannot (hosts without an exporter, load
//! balancers, NAT gateways, packets rejected before any socket), and they name only addresses,
//! so every row needs both ends attributed, to the workloads that held them over the row's whole
//! aggregation interval. This crate reads; the job attributes (`flowmap_schema::vpc` is the
//! output schema).
//!
//! # Using it (the lead's entry points)
//! - Parse one file: [`parse::text::open`] (any `Read`, gzip or not) or
//!   [`parse::ParquetReader::open`]; both iterate `Result<Record, ParseError>`.
//! - Read one queue message body: [`event::parse_notification`].
//! - Ingest: implement [`Sink`], load [`config::Settings`], and call [`ingest::run_queue`] (or
//!   [`ingest::run_backfill`]) on a thread of your own: it blocks, runs its own tokio runtime,
//!   calls the sink from one thread, and returns a [`Summary`] when stopped
//!   ([`ingest::Stop`]) or idle.
//! - Turn a record into the output message: [`output::to_proto`], then fill both ends'
//!   attribution ([`Record::end_address`] says which address stands for each end).
//!
//! # Layout
//! - [`record`]: [`Record`], one typed row.
//! - [`parse`]: the text and Parquet readers, mapping fields by header name.
//! - [`event`]: S3 event notification bodies.
//! - [`config`]: settings (`configs/vpc.toml`).
//! - [`sink`]: [`Sink`], [`Batch`], [`Sealed`], dead letters.
//! - [`tracker`]: the pure bookkeeping of messages, files and mouthfuls.
//! - [`state`]: the processed-objects file.
//! - [`store`]: object stores and the SQS client, built from the settings.
//! - [`ingest`]: the ingestion loop (queue and backfill), [`Summary`].
//! - [`backfill`]: listing a prefix for a time range.
//! - [`jsonl`]: a JSON-lines file sink (the example ingester, tests).
//! - [`output`]: records to `flowmap_schema::VpcFlowRecord`.
//! - [`mod@write`]: writing flow log files (text gzip, Parquet) for the simulator, tests, benchmarks.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backfill;
pub mod config;
pub mod event;
pub mod ingest;
pub mod jsonl;
pub mod output;
pub mod parse;
mod process;
mod progress;
pub mod record;
pub mod sink;
pub mod state;
pub mod store;
pub mod summary;
pub mod tracker;
pub mod write;

pub use record::{Action, AddressField, End, FlowDirection, LogStatus, Record, TrafficType};
pub use sink::{
    Batch, DeadLetter, DeadSource, FileInfo, FileOutcome, FileStatus, MouthfulId, ObjectId, Sealed, Sink, SinkError,
};
pub use summary::Summary;
