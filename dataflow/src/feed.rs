//! The input interface of the job: a [`Feed`] hands raw batches to the source operator, lane by
//! lane, and hears back what became of each (so a committing transport knows what it may
//! commit) and how far the output has been delivered.
//!
//! A *lane* is a transport partition: one exporter's batches stay in one lane, in order. Feeds:
//! in memory ([`crate::memory`]), captured topics on disk ([`crate::capture`]), Kafka
//! ([`crate::kafka`]).

use flowmap_operators::Time;

/// Whether a feed has more to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedStatus {
    /// More messages are ready now.
    Ready,
    /// Nothing right now; poll again later.
    Pending,
    /// Exhausted: nothing will ever come again.
    Done,
}

/// One lane (transport partition) a worker reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lane {
    /// Its id, unique within the job.
    pub id: u32,
    /// Exporters known up front to publish into it: each holds the lane's frontier back until
    /// its first batch.
    pub roster: Vec<String>,
}

/// One message handed to the source.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The lane it came from.
    pub lane: u32,
    /// Transport key (the exporter id, by convention).
    pub key: &'a str,
    /// The encoded batch.
    pub payload: &'a [u8],
    /// When the transport received it (the receiver clock for the "from the future" check).
    pub arrival: Time,
    /// Re-read after a restart only to rebuild ownership state: its flows were output before.
    pub rebuild: bool,
}

/// What the source made of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Used: everything derived from it is at times up to `until`.
    Used {
        /// Latest time of anything derived from it.
        until: Time,
    },
    /// Used, but some of its records were refused (counted): dead-letter it with `reason`.
    Partial {
        /// Latest time of anything derived from it.
        until: Time,
        /// Which records were refused, and why.
        reason: String,
    },
    /// Seen before: nothing derived.
    Duplicate,
    /// Refused as a whole (counted): dead-letter it with `reason`.
    Rejected {
        /// Why.
        reason: &'static str,
    },
}

/// Why an input could not be read or committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FeedError {
    /// The transport is not reachable or refused a request (a broker away, a bad address).
    #[error("{what}: {detail}")]
    Unavailable {
        /// What was attempted.
        what: String,
        /// The transport's error.
        detail: String,
    },
    /// The input is damaged (a capture file cut inside a message, a bad manifest).
    #[error("damaged input {what}: {detail}")]
    Damaged {
        /// Which input.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The input's settings are invalid.
    #[error("invalid input settings: {0}")]
    Config(String),
    /// Offsets could not be committed, or dead letters could not be delivered (the job stops
    /// without committing past them; a restart resumes from the last commit).
    #[error("{0}")]
    Commit(String),
    /// The run ended with input left unread (consumer lag above zero).
    #[error("the run ended with {unread} unread input messages ({detail})")]
    Unread {
        /// Messages left behind, summed over lanes.
        unread: u64,
        /// Per-lane detail.
        detail: String,
    },
}

/// A source of raw batches for one worker.
pub trait Feed: 'static {
    /// The lanes this worker reads.
    fn lanes(&self) -> Vec<Lane>;

    /// Hands up to `max` messages to `deliver`, which says what became of each.
    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus;

    /// True while some lane has not shown what it holds yet; the frontier may not move.
    fn settling(&self) -> bool {
        false
    }

    /// Whether wall-clock decisions (idle exporters) apply. Replays and in-memory feeds say
    /// no, which keeps them deterministic.
    fn live(&self) -> bool {
        false
    }

    /// Everything derived from input, at times before `frontier`, has been delivered to the
    /// output (so input offsets up to there can be committed). Called by the runner.
    ///
    /// # Errors
    /// A commit or a dead letter that failed for good.
    fn delivered(&mut self, _frontier: &[Time]) -> Result<(), FeedError> {
        Ok(())
    }

    /// The run is over and every output is delivered. Called once by the runner.
    ///
    /// # Errors
    /// A final commit that failed, or input left unread.
    fn finish(&mut self) -> Result<(), FeedError> {
        Ok(())
    }
}

/// A feed that may have failed to start (a broker away, a damaged capture): a failed one has
/// no lanes, ends at once, and hands its error to the runner, which stops the job with it.
pub enum Startup<F> {
    /// A working feed.
    Ready(F),
    /// Why it could not start (taken when reported).
    Failed(Option<FeedError>),
}

impl<F> From<Result<F, FeedError>> for Startup<F> {
    fn from(result: Result<F, FeedError>) -> Self {
        match result {
            Ok(f) => Startup::Ready(f),
            Err(e) => Startup::Failed(Some(e)),
        }
    }
}

impl<F: Feed> Startup<F> {
    fn error(e: &mut Option<FeedError>) -> FeedError {
        e.take().unwrap_or_else(|| FeedError::Unavailable {
            what: "the input".to_string(),
            detail: "failed to start".to_string(),
        })
    }
}

impl<F: Feed> Feed for Startup<F> {
    fn lanes(&self) -> Vec<Lane> {
        match self {
            Startup::Ready(f) => f.lanes(),
            Startup::Failed(_) => Vec::new(),
        }
    }
    fn poll(&mut self, max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus {
        match self {
            Startup::Ready(f) => f.poll(max, deliver),
            Startup::Failed(_) => FeedStatus::Done,
        }
    }
    fn settling(&self) -> bool {
        matches!(self, Startup::Ready(f) if f.settling())
    }
    fn live(&self) -> bool {
        matches!(self, Startup::Ready(f) if f.live())
    }
    fn delivered(&mut self, frontier: &[Time]) -> Result<(), FeedError> {
        match self {
            Startup::Ready(f) => f.delivered(frontier),
            Startup::Failed(e) => Err(Self::error(e)),
        }
    }
    fn finish(&mut self) -> Result<(), FeedError> {
        match self {
            Startup::Ready(f) => f.finish(),
            Startup::Failed(e) => Err(Self::error(e)),
        }
    }
}
