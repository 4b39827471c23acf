//! The output record of an attributed flow: as JSON lines (one object per flow, files and
//! stdout), and as the Protobuf `flowmap.v1.AttributedFlow` (Kafka; see
//! `schema/proto/flowmap/v1/attributed.proto`). Both carry the same fields.
//!
//! Addresses are strings, counters plain integers; `remote_workload` is set exactly when
//! the remote end was attributed, and then `evidence` says on what; otherwise `reason` says why
//! not. `flow_id` is stable across runs and replays, for deduplication.

use flowmap_operators::{AttributedFlow, Attribution, Direction, EvidenceKind, Reason};
use flowmap_schema as wire;
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

/// The Protobuf form of an attributed flow.
pub fn to_wire(a: &AttributedFlow) -> wire::AttributedFlow {
    let f = &a.flow;
    let (remote_workload, evidence, reason) = match &a.remote {
        Attribution::Workload { workload, evidence } => {
            let e = match evidence {
                EvidenceKind::Heartbeat => wire::Evidence::Heartbeat,
                EvidenceKind::Flow => wire::Evidence::Flow,
                EvidenceKind::Assignment => wire::Evidence::Assignment,
            };
            (workload.to_string(), e, wire::Reason::Unspecified)
        }
        Attribution::Unattributed(reason) => {
            let r = match reason {
                Reason::NoOwner => wire::Reason::NoOwner,
                Reason::Conflict => wire::Reason::Conflict,
                Reason::NearBoundary => wire::Reason::NearBoundary,
                Reason::External => wire::Reason::External,
                Reason::EvidenceExpired => wire::Reason::EvidenceExpired,
            };
            (String::new(), wire::Evidence::Unspecified, r)
        }
    };
    wire::AttributedFlow {
        schema_version: wire::SCHEMA_VERSION,
        flow_id: f.id,
        exporter_id: f.exporter.to_string(),
        local_ip: wire::ip_to_bytes(f.local_ip.to_addr()),
        local_port: u32::from(f.local_port),
        remote_ip: wire::ip_to_bytes(f.remote_ip.to_addr()),
        remote_port: u32::from(f.remote_port),
        direction: match f.direction {
            Direction::Client => wire::Direction::Client,
            Direction::Server => wire::Direction::Server,
            Direction::Unknown => wire::Direction::Unspecified,
        } as i32,
        start_ns: f.start,
        end_ns: f.end,
        bytes_sent: f.counters.bytes_sent,
        bytes_received: f.counters.bytes_received,
        segments_sent: f.counters.segments_sent,
        segments_received: f.counters.segments_received,
        retransmits: f.counters.retransmits,
        srtt_us: f.counters.srtt_us,
        local_workload: f.local_workload.as_ref().map(|w| w.to_string()).unwrap_or_default(),
        remote_workload,
        evidence: evidence as i32,
        reason: reason as i32,
        ..Default::default()
    }
}

fn name_of_reason(reason: i32) -> Option<String> {
    let name = match wire::Reason::try_from(reason).ok()? {
        wire::Reason::Unspecified => return None,
        wire::Reason::NoOwner => Reason::NoOwner.name(),
        wire::Reason::Conflict => Reason::Conflict.name(),
        wire::Reason::NearBoundary => Reason::NearBoundary.name(),
        wire::Reason::External => Reason::External.name(),
        wire::Reason::EvidenceExpired => Reason::EvidenceExpired.name(),
        wire::Reason::SharedIp => "shared_ip",
        wire::Reason::SourceGap => "source_gap",
    };
    Some(name.to_string())
}

impl From<&wire::AttributedFlow> for OutputRecord {
    /// The JSON form of a record read from Kafka (unknown enum values read as `unknown`).
    fn from(w: &wire::AttributedFlow) -> Self {
        let ip = |b: &[u8]| wire::ip_from_bytes(b).map_or_else(|| "invalid".to_string(), |a| a.to_string());
        let attributed = !w.remote_workload.is_empty();
        let evidence = match wire::Evidence::try_from(w.evidence) {
            Ok(wire::Evidence::Heartbeat) => Some(EvidenceKind::Heartbeat.name().to_string()),
            Ok(wire::Evidence::Flow) => Some(EvidenceKind::Flow.name().to_string()),
            Ok(wire::Evidence::Assignment) => Some(EvidenceKind::Assignment.name().to_string()),
            Ok(wire::Evidence::Peer) => Some("peer".to_string()),
            Ok(wire::Evidence::Unspecified) => None,
            Err(_) => Some("unknown".to_string()),
        };
        OutputRecord {
            flow_id: w.flow_id,
            exporter: w.exporter_id.clone(),
            local_ip: ip(&w.local_ip),
            local_port: w.local_port as u16,
            remote_ip: ip(&w.remote_ip),
            remote_port: w.remote_port as u16,
            direction: match wire::Direction::try_from(w.direction) {
                Ok(wire::Direction::Client) => "client",
                Ok(wire::Direction::Server) => "server",
                _ => "unknown",
            }
            .to_string(),
            start_ns: w.start_ns,
            end_ns: w.end_ns,
            bytes_sent: w.bytes_sent,
            bytes_received: w.bytes_received,
            segments_sent: w.segments_sent,
            segments_received: w.segments_received,
            retransmits: w.retransmits,
            srtt_us: w.srtt_us,
            local_workload: (!w.local_workload.is_empty()).then(|| w.local_workload.clone()),
            remote_workload: attributed.then(|| w.remote_workload.clone()),
            evidence: if attributed { evidence } else { None },
            reason: if attributed { None } else { name_of_reason(w.reason).or_else(|| Some("unknown".to_string())) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowmap_operators::{Counters, FlowRecord, Ip, Workload};

    fn flow(remote: Attribution) -> AttributedFlow {
        let flow = FlowRecord {
            id: 42,
            exporter: Workload::new("host-1"),
            local_ip: Ip::v4([10, 0, 0, 1]),
            local_port: 4000,
            remote_ip: Ip::from_addr("fd00::7".parse().unwrap()),
            remote_port: 443,
            direction: Direction::Client,
            start: 5,
            end: 9,
            counters: Counters {
                bytes_sent: 1,
                bytes_received: 2,
                segments_sent: 3,
                segments_received: 4,
                retransmits: 5,
                srtt_us: 6,
            },
            local_workload: Some(Workload::new("a")),
            open: false,
        };
        AttributedFlow { flow, remote }
    }

    /// The Kafka form and the JSON form say the same thing.
    #[test]
    fn wire_and_json_agree() {
        for remote in [
            Attribution::Workload { workload: Workload::new("b"), evidence: EvidenceKind::Flow },
            Attribution::Unattributed(Reason::NearBoundary),
            Attribution::Unattributed(Reason::External),
        ] {
            let a = flow(remote);
            let bytes = wire::encode_attributed(&to_wire(&a));
            let back = wire::decode_attributed(&bytes).unwrap();
            assert_eq!(OutputRecord::from(&back), OutputRecord::from(&a));
        }
    }
}
