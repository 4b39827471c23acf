//! Turning one batch interval's flow events into an `ExporterBatch`.
//!
//! The wire schema's promise: a batch for `[from, to)` holds every flow that ended before `to`
//! (or an earlier batch does), and nothing that ends after `to`. So the window's end is taken
//! *before* the ring buffer is drained for the last time; any flow that closed after it is
//! carried into the next batch. Connections still open at `to` are reported as slices
//! (`open = true`, ending at `to`, counters so far), so long-lived flows are seen while they
//! live; every slice and the final record share the flow id (same 5-tuple, direction, start).

use std::net::IpAddr;

use flowmap_schema::{self as wire, ExporterBatch, Flow, Ownership, SCHEMA_VERSION};
use serde::Serialize;

use super::local::{Attributor, Source};
use crate::events::{Direction, FlowEvent};

/// One flow as the stdout and file sinks print it (one JSON object per line).
#[derive(Clone, Debug, Serialize)]
pub struct FlowLine {
    /// Always `flow`.
    pub kind: &'static str,
    /// Exporter id.
    pub exporter: String,
    /// Batch sequence number.
    pub seq: u64,
    /// Local address.
    pub local_ip: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote_ip: IpAddr,
    /// Remote port.
    pub remote_port: u16,
    /// `client`, `server` or `unknown`.
    pub direction: &'static str,
    /// Established (or first handshake state), ns since the epoch.
    pub start_ns: u64,
    /// Closed, or the window end for an open slice.
    pub end_ns: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Segments sent.
    pub segments_sent: u64,
    /// Segments received.
    pub segments_received: u64,
    /// Retransmitted segments.
    pub retransmits: u32,
    /// Smoothed RTT, microseconds.
    pub srtt_us: u32,
    /// Local workload, when attributed.
    pub local_workload: Option<String>,
    /// How it was attributed: `port`, `ip`, `cgroup`, `host`.
    pub attributed_by: Option<&'static str>,
    /// Still open (a slice).
    pub open: bool,
    /// Closed before it was established (refused, timed out).
    pub never_established: bool,
    /// The socket error at close (111 refused, 110 timed out), if any.
    pub error: Option<i32>,
    /// The socket's cgroup id.
    pub cgroup_id: u64,
}

/// A built batch: the wire form, and the same flows as lines.
#[derive(Debug)]
pub struct Built {
    /// The batch.
    pub batch: ExporterBatch,
    /// Its flows, for the JSON sinks.
    pub lines: Vec<FlowLine>,
}

/// Numbers batches and keeps the window contiguous.
#[derive(Debug)]
pub struct Batcher {
    exporter_id: String,
    seq: u64,
    from: u64,
    carry: Vec<FlowEvent>,
    lines: bool,
}

impl Batcher {
    /// Batches of `exporter_id`, the first window starting at `from` (ns since the epoch);
    /// `lines`: also produce the JSON-line form (only the stdout and file sinks need it).
    pub fn new(exporter_id: String, from: u64, lines: bool) -> Self {
        Batcher { exporter_id, seq: 0, from, carry: Vec::new(), lines }
    }

    /// Builds the batch for `[from, to)` from the flows closed since the last batch and the
    /// connections open now; flows closed at or after `to` wait for the next batch.
    pub fn build(
        &mut self,
        to: u64,
        closed: Vec<FlowEvent>,
        open: &[FlowEvent],
        attributor: &mut Attributor,
        host_addresses: &[IpAddr],
    ) -> Built {
        let to = to.max(self.from + 1);
        let mut flows = Vec::new();
        let mut lines = Vec::new();
        let mut keep = Vec::new();
        let pending = std::mem::take(&mut self.carry);
        for ev in pending.into_iter().chain(closed) {
            let end = ev.closed.map_or(to, |t| t.0);
            if end >= to {
                keep.push(ev);
                continue;
            }
            self.push(&ev, end, false, attributor, &mut flows, &mut lines);
        }
        self.carry = keep;
        for ev in open.iter().filter(|e| e.established.is_some()) {
            self.push(ev, to - 1, true, attributor, &mut flows, &mut lines);
        }
        let heartbeats = attributor
            .heartbeats(host_addresses)
            .into_iter()
            .map(|(ip, workload)| Ownership {
                ip: wire::ip_to_bytes(ip),
                workload,
                from_ns: self.from,
                to_ns: to,
                port: 0,
            })
            .collect();
        let batch = ExporterBatch {
            schema_version: SCHEMA_VERSION,
            exporter_id: self.exporter_id.clone(),
            seq: self.seq,
            window_from_ns: self.from,
            window_to_ns: to,
            flows,
            heartbeats,
            assignments: Vec::new(),
            incarnation: 0,
        };
        self.seq += 1;
        self.from = to;
        Built { batch, lines }
    }

    fn push(
        &self,
        ev: &FlowEvent,
        end: u64,
        open: bool,
        attributor: &mut Attributor,
        flows: &mut Vec<Flow>,
        lines: &mut Vec<FlowLine>,
    ) {
        // A connection older than the probe has no start: its close (or now) stands in, which
        // is safe for attribution (the remote end cannot change owner under a live connection).
        let start = ev.start().map_or(end, |t| t.0).min(end);
        let local = attributor.local(ev);
        let direction = match ev.direction {
            Direction::Client => wire::Direction::Client,
            Direction::Server => wire::Direction::Server,
            Direction::Unknown => wire::Direction::Unspecified,
        };
        flows.push(Flow {
            local_ip: wire::ip_to_bytes(ev.local.ip()),
            local_port: u32::from(ev.local.port()),
            remote_ip: wire::ip_to_bytes(ev.remote.ip()),
            remote_port: u32::from(ev.remote.port()),
            direction: direction as i32,
            start_ns: start,
            end_ns: end,
            bytes_sent: ev.bytes_sent,
            bytes_received: ev.bytes_received,
            segments_sent: u64::from(ev.segs_out),
            segments_received: u64::from(ev.segs_in),
            retransmits: ev.total_retrans,
            srtt_us: ev.srtt_us,
            local_workload: local.as_ref().map(|(w, _)| w.clone()).unwrap_or_default(),
            open,
            ..Default::default()
        });
        let Some(f) = flows.last().filter(|_| self.lines) else { return };
        lines.push(FlowLine {
            kind: "flow",
            exporter: self.exporter_id.clone(),
            seq: self.seq,
            local_ip: ev.local.ip(),
            local_port: ev.local.port(),
            remote_ip: ev.remote.ip(),
            remote_port: ev.remote.port(),
            direction: match ev.direction {
                Direction::Client => "client",
                Direction::Server => "server",
                Direction::Unknown => "unknown",
            },
            start_ns: f.start_ns,
            end_ns: f.end_ns,
            bytes_sent: f.bytes_sent,
            bytes_received: f.bytes_received,
            segments_sent: f.segments_sent,
            segments_received: f.segments_received,
            retransmits: f.retransmits,
            srtt_us: f.srtt_us,
            attributed_by: local.as_ref().map(|(_, s)| match s {
                Source::Port => "port",
                Source::Ip => "ip",
                Source::Cgroup => "cgroup",
                Source::Host => "host",
            }),
            local_workload: local.map(|(w, _)| w),
            open,
            never_established: ev.never_established(),
            error: ev.error,
            cgroup_id: ev.cgroup_id,
        });
    }
}
