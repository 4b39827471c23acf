//! The output record of an attributed flow, as JSON lines (one object per flow).
//!
//! Addresses are strings, counters plain integers; `remote_workload` is set exactly when
//! the remote end was attributed, and then `evidence` says on what; otherwise `reason` says why
//! not. `flow_id` is stable across runs and replays, for deduplication.

use flowmap_operators::{AttributedFlow, Attribution, Direction};
use serde::{Deserialize, Serialize};

/// One attributed flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Stable flow id.
    pub flow_id: u64,
    /// The exporter that reported the flow.
    pub exporter: String,
    /// Local address.
    pub local_ip: String,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote_ip: String,
    /// Remote port.
    pub remote_port: u16,
    /// `client`, `server` or `unknown`: which side the local end was.
    pub direction: String,
    /// Established, ns since the epoch (exporter clock).
    pub start_ns: u64,
    /// Closed, ns since the epoch (exporter clock).
    pub end_ns: u64,
    /// Payload bytes sent by the local end.
    pub bytes_sent: u64,
    /// Payload bytes received by the local end.
    pub bytes_received: u64,
    /// Segments sent.
    pub segments_sent: u64,
    /// Segments received.
    pub segments_received: u64,
    /// Retransmitted segments.
    pub retransmits: u32,
    /// Smoothed RTT, microseconds.
    pub srtt_us: u32,
    /// The local workload, as the exporter attributed it.
    pub local_workload: Option<String>,
    /// The remote workload, when attributed.
    pub remote_workload: Option<String>,
    /// `heartbeat`, `flow` or `assignment`, when attributed.
    pub evidence: Option<String>,
    /// Why the remote end is unattributed, when it is.
    pub reason: Option<String>,
}

impl From<&AttributedFlow> for OutputRecord {
    fn from(a: &AttributedFlow) -> Self {
        let f = &a.flow;
        let (remote_workload, evidence, reason) = match &a.remote {
            Attribution::Workload { workload, evidence } => {
                (Some(workload.to_string()), Some(evidence.name().to_string()), None)
            }
            Attribution::Unattributed(reason) => (None, None, Some(reason.name().to_string())),
        };
        OutputRecord {
            flow_id: f.id,
            exporter: f.exporter.to_string(),
            local_ip: f.local_ip.to_string(),
            local_port: f.local_port,
            remote_ip: f.remote_ip.to_string(),
            remote_port: f.remote_port,
            direction: match f.direction {
                Direction::Client => "client",
                Direction::Server => "server",
                Direction::Unknown => "unknown",
            }
            .to_string(),
            start_ns: f.start,
            end_ns: f.end,
            bytes_sent: f.counters.bytes_sent,
            bytes_received: f.counters.bytes_received,
            segments_sent: f.counters.segments_sent,
            segments_received: f.counters.segments_received,
            retransmits: f.counters.retransmits,
            srtt_us: f.counters.srtt_us,
            local_workload: f.local_workload.as_ref().map(|w| w.to_string()),
            remote_workload,
            evidence,
            reason,
        }
    }
}

impl OutputRecord {
    /// The scorer's view.
    pub fn verdict(&self) -> flowmap_sim::Verdict {
        flowmap_sim::Verdict { id: self.flow_id, remote: self.remote_workload.clone(), reason: self.reason.clone() }
    }
}
