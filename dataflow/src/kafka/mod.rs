//! The job on Kafka: input partitions as lanes, a committing feed, an acknowledged sink.
//!
//! ```text
//! input topics ─ KafkaFeed (per worker: its lanes) ─ dataflow ─ KafkaSink ─ output topic
//!      ▲                                                            │
//!      └──── commit offsets ◄── delivered frontier (probe) ◄────────┘
//! ```
//! Delivery is at-least-once: offsets are committed only once everything derived from them is
//! acknowledged by the broker, and a restarted job resumes from the committed offsets (after
//! re-reading a rebuild window for the ownership state). Output records carry a stable flow id
//! for consumers to deduplicate on.
//!
//! # Layout
//! - [`lanes`]: numbering input partitions and splitting them between workers.
//! - [`commit`]: what may be committed, and the rebuild offset.
//! - [`feed`]: [`KafkaFeed`], the consumer side.
//! - [`sink`]: [`KafkaSink`], the producer side.
//! - [`reader`]: reading a whole topic (scoring, capture).

pub mod commit;
pub mod feed;
pub mod lanes;
pub mod reader;
pub mod sink;

pub use feed::{FeedCounters, KafkaFeed, KafkaFeedConfig};
pub use lanes::{lanes_of, number_lanes, LaneId};
pub use sink::KafkaSink;
