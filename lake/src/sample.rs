//! Deterministic sample rows, and a model of the job's delivery loop that drives the writers the
//! way the job does: for the example (`examples/write_sample.rs`), the kill-and-restart tests and
//! the benchmark; also a reference for wiring the writers into the job.
//!
//! The input is a numbered list of *messages* (think Kafka offsets). Message `i` yields rows at
//! dataflow times `base + (i + j % spread) * step` for its rows `j`, so one message's rows span
//! `spread` steps and may cross cells; a time holds rows of several messages. The model pushes a
//! message's rows, advances the writers to the next message's first time (the input frontier),
//! and *commits* (to a file, atomically) every message whose rows are all before the delivered
//! frontier (the least of the frontier and the writers' [`TableWriter::undelivered`]). A
//! restarted model resumes at the committed message and re-emits every row of every later
//! message, exactly as the job does after a kill.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use flowmap_schema::{Direction, Evidence, Reason, Scope, WorkloadSource};

use crate::edges::EdgeRow;
use crate::error::LakeError;
use crate::flows::{FlowRow, Verification};
use crate::layout::NANOS_PER_SEC;
use crate::stats::WriterStats;
use crate::store::Lake;
use crate::writer::TableWriter;

/// Workloads of the sample fleet.
pub const WORKLOADS: &[&str] = &["frontend", "checkout", "payments", "ledger", "search", "batch"];

/// The shape of a sample input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleInput {
    /// Dataflow time of message 0's first rows, ns since the Unix epoch.
    pub base_ns: u64,
    /// Messages.
    pub messages: u64,
    /// Flow rows per message.
    pub rows_per_message: u32,
    /// Dataflow time between messages, ns.
    pub step_ns: u64,
    /// Steps one message's rows span (at least 1).
    pub spread: u32,
}

/// A deterministic 64-bit mix (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl SampleInput {
    /// The dataflow time of row `j` of message `i`.
    pub fn time(&self, i: u64, j: u32) -> u64 {
        self.base_ns + (i + u64::from(j % self.spread.max(1))) * self.step_ns
    }

    /// The first dataflow time of message `i` (the input frontier once every earlier message is in).
    pub fn first_time(&self, i: u64) -> u64 {
        self.base_ns + i * self.step_ns
    }

    /// The last dataflow time of message `i`.
    pub fn last_time(&self, i: u64) -> u64 {
        let last_offset = u64::from(self.spread.max(1).min(self.rows_per_message.max(1)) - 1);
        self.first_time(i) + last_offset * self.step_ns
    }

    /// The flow rows of message `i`, with their dataflow times.
    pub fn flows(&self, i: u64) -> Vec<(u64, FlowRow)> {
        (0..self.rows_per_message).map(|j| (self.time(i, j), self.flow(i, j))).collect()
    }

    /// The edge rows of message `i` (one per message), with their dataflow times.
    pub fn edges(&self, i: u64) -> Vec<(u64, EdgeRow)> {
        let time = self.time(i, 0);
        let h = mix(i ^ 0xed6e);
        let client = WORKLOADS[(h % 6) as usize];
        let server = WORKLOADS[((h >> 8) % 6) as usize];
        let server = if server == client { "payments" } else { server };
        let bucket = 60 * NANOS_PER_SEC;
        vec![(
            time,
            EdgeRow {
                bucket_start_ns: (time - (h >> 16) % (120 * NANOS_PER_SEC)) / bucket * bucket,
                bucket_s: 60,
                client: client.to_string(),
                server: if h.is_multiple_of(11) { "external:203.0.113.0/24".to_string() } else { server.to_string() },
                server_port: [443, 5432, 8080][((h >> 24) % 3) as usize],
                protocol: "tcp".to_string(),
                emitted_at_ns: time,
                connections: 1 + (h >> 32) % 5,
                bytes_client_to_server: (h >> 20) % 100_000,
                bytes_server_to_client: (h >> 28) % 1_000_000,
                segments: 10 + (h >> 36) % 100,
                retransmits: (h >> 40) % 3,
                failed_connects: u64::from(h.is_multiple_of(13)),
                verified: (h >> 44) % 3,
                disagreements: 0,
                one_sided: (h >> 46) % 2,
                rtt_p50_us: (!h.is_multiple_of(7)).then_some(100.0 + ((h >> 48) % 900) as f64),
                rtt_p90_us: (!h.is_multiple_of(7)).then_some(1_000.0 + ((h >> 50) % 900) as f64),
                rtt_p99_us: (!h.is_multiple_of(7)).then_some(2_000.0 + ((h >> 52) % 900) as f64 + 0.5),
                rtt_sketch: h.is_multiple_of(3).then(|| h.to_le_bytes().to_vec()),
            },
        )]
    }

    fn flow(&self, i: u64, j: u32) -> FlowRow {
        let h = mix((i << 20) ^ u64::from(j));
        let time = self.time(i, j);
        // Flows start up to 2 minutes before the time they come out at, so some fall in the
        // previous hour's partition; they last up to 10 s.
        let start_ns = time.saturating_sub((h >> 8) % (120 * NANOS_PER_SEC));
        let local = WORKLOADS[(h % 6) as usize];
        let remote = WORKLOADS[((h >> 4) % 6) as usize];
        let attributed = !h.is_multiple_of(10);
        let direction = if h.is_multiple_of(2) { Direction::Client } else { Direction::Server };
        let ip = |x: u64| IpAddr::V4(Ipv4Addr::new(10, 0, (x >> 8) as u8, x as u8));
        FlowRow {
            flow_id: h,
            exporter: format!("host-{}", i % 17),
            incarnation: mix(i % 17),
            local_ip: ip(h >> 12),
            local_port: if direction == Direction::Client { 32_768 + ((h >> 20) % 28_000) as u16 } else { 443 },
            remote_ip: if h.is_multiple_of(23) { "2001:db8::7".parse().unwrap_or(ip(1)) } else { ip(h >> 28) },
            remote_port: if direction == Direction::Client { 443 } else { 32_768 + ((h >> 36) % 28_000) as u16 },
            direction,
            start_ns,
            end_ns: start_ns + (h >> 40) % (10 * NANOS_PER_SEC),
            open: h.is_multiple_of(9),
            start_unobserved: h.is_multiple_of(31),
            connect_error: if h.is_multiple_of(29) { 111 } else { 0 },
            bytes_sent: (h >> 16) % 50_000,
            bytes_received: (h >> 24) % 500_000,
            segments_sent: (h >> 32) % 100,
            segments_received: (h >> 38) % 200,
            retransmits: ((h >> 44) % 4) as u32,
            srtt_us: ((h >> 46) % 5_000) as u32,
            local_workload: (!h.is_multiple_of(13)).then(|| local.to_string()),
            local_scope: if h.is_multiple_of(5) { Scope::Port } else { Scope::Ip },
            local_source: [WorkloadSource::HostIdentity, WorkloadSource::IpAssignment, WorkloadSource::CgroupRule]
                [((h >> 50) % 3) as usize],
            remote_workload: attributed.then(|| remote.to_string()),
            evidence: attributed
                .then_some([Evidence::Heartbeat, Evidence::Flow, Evidence::Peer][((h >> 52) % 3) as usize]),
            reason: (!attributed).then_some([Reason::NoOwner, Reason::External][((h >> 54) % 2) as usize]),
            counted: direction == Direction::Client || h.is_multiple_of(3),
            verification: [Verification::Agree, Verification::OneSided, Verification::PeerOnly, Verification::Disagree]
                [((h >> 56) % 4) as usize],
        }
    }
}

/// What one run of the job model did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRun {
    /// The message it resumed at.
    pub resumed_at: u64,
    /// The messages committed when it ended.
    pub committed: u64,
    /// Flow rows pushed.
    pub flow_rows: u64,
    /// Edge rows pushed.
    pub edge_rows: u64,
    /// The flows writer's counters at the end.
    pub flows: WriterStats,
    /// The edges writer's counters at the end.
    pub edges: WriterStats,
}

/// Something the model reports as it goes (after each message).
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Messages processed.
    pub processed: u64,
    /// Messages committed.
    pub committed: u64,
    /// Data files written so far (both tables).
    pub files: u64,
}

/// Why the model stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The lake failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The commit file could not be read or written.
    #[error("commit file {path}: {source}")]
    Commit {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the model over `input` as writer `writer` of `writers` (this writer takes the messages
/// `i` with `i % writers == writer`), committing to `commit_file` (a local file holding the next
/// message to process; absent: 0), then finishes both writers.
///
/// # Errors
/// [`JobError`]: the lake failed (nothing past the delivered frontier was committed), or the
/// commit file could not be used.
pub fn run_job(
    lake: &Lake,
    input: &SampleInput,
    writer: u32,
    writers: u32,
    commit_file: &Path,
    mut progress: impl FnMut(Progress),
) -> Result<JobRun, JobError> {
    let commit_err = |source| JobError::Commit { path: commit_file.display().to_string(), source };
    let resumed_at = match std::fs::read_to_string(commit_file) {
        Ok(s) => s.trim().parse::<u64>().map_err(|e| commit_err(std::io::Error::other(e)))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(commit_err(e)),
    };
    let mut flows = lake.writer::<FlowRow>(writer, writers)?;
    let mut edges = lake.writer::<EdgeRow>(writer, writers)?;
    let mine = |i: u64| i % u64::from(writers.max(1)) == u64::from(writer);
    let mut run = JobRun { resumed_at, committed: resumed_at, ..JobRun::default() };
    for i in resumed_at..input.messages {
        if mine(i) {
            push_grouped(&mut flows, input.flows(i))?;
            push_grouped(&mut edges, input.edges(i))?;
            run.flow_rows += u64::from(input.rows_per_message);
            run.edge_rows += 1;
        }
        let frontier = input.first_time(i + 1);
        flows.advance(Some(frontier))?;
        edges.advance(Some(frontier))?;
        let delivered = [flows.undelivered()?, edges.undelivered()?, Some(frontier)].into_iter().flatten().min();
        let before = run.committed;
        while run.committed <= i && delivered.is_some_and(|d| input.last_time(run.committed) < d) {
            run.committed += 1;
        }
        if run.committed != before {
            commit(commit_file, run.committed).map_err(commit_err)?;
        }
        let files = flows.stats().files_written + edges.stats().files_written;
        progress(Progress { processed: i + 1, committed: run.committed, files });
    }
    run.flows = flows.finish()?;
    run.edges = edges.finish()?;
    run.committed = input.messages;
    commit(commit_file, run.committed).map_err(commit_err)?;
    Ok(run)
}

fn push_grouped<R: crate::LakeRow>(w: &mut TableWriter<R>, rows: Vec<(u64, R)>) -> Result<(), LakeError> {
    let mut by_time: std::collections::BTreeMap<u64, Vec<R>> = std::collections::BTreeMap::new();
    for (t, r) in rows {
        by_time.entry(t).or_default().push(r);
    }
    for (t, rows) in by_time {
        w.push(t, rows)?;
    }
    Ok(())
}

/// Writes the commit file atomically (a temporary file renamed over it).
fn commit(path: &Path, next: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{next}\n"))?;
    std::fs::rename(&tmp, path)
}
