//! The output record of a flow record, in its two forms: the Protobuf
//! `flowmap.v1.AttributedFlow` (Kafka; `schema/proto/flowmap/v1/attributed.proto`) and JSON lines
//! ([`OutputRecord`]: files and stdout). Both carry the same fields.
//!
//! Records are rebuilt from the exporter's own encoded flow message (kept in the
//! [`VerdictPiece`]) and the verdict, so the flow is exactly as the exporter reported it: the
//! addresses are the exporter's bytes (an IPv4-mapped IPv6 address stays 16 bytes on the wire),
//! and the JSON form prints them as the exporter's family did (`::ffff:10.0.0.1` for a mapped
//! one). `remote_workload` is set exactly when the remote end was attributed, and then
//! `evidence` says on what; otherwise `reason` says why not. A record is one flow record: an open
//! slice (`open`) or a connection's final record; `flow_id` is the connection's, and every record
//! of one connection carries the same verdict.

use flowmap_operators::records::{FlowRow, Verdict, VerdictPiece};
use flowmap_operators::EvidenceKind;
use flowmap_schema as wire;
use serde::{Deserialize, Serialize};

/// One output record, as a JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Stable flow id (the connection's).
    pub flow_id: u64,
    /// The exporter that reported the flow.
    pub exporter: String,
    /// The exporter's incarnation (0: not stated).
    #[serde(default)]
    pub incarnation: u64,
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
    /// Established, ns since the epoch (exporter clock); first seen when `start_unobserved`.
    pub start_ns: u64,
    /// Closed, or the window end for an open slice, ns since the epoch (exporter clock).
    pub end_ns: u64,
    /// A slice of a connection still open (counters so far); false for the final record.
    #[serde(default)]
    pub open: bool,
    /// The exporter did not see the connection established.
    #[serde(default)]
    pub start_unobserved: bool,
    /// Socket error of a connection that never established (0: it did).
    #[serde(default)]
    pub connect_error: u32,
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
    /// What the local workload vouches for: `ip`, `port`, or `unspecified` (read as `port`).
    #[serde(default)]
    pub local_scope: String,
    /// How the exporter knew the local workload.
    #[serde(default)]
    pub local_source: String,
    /// The remote workload, when attributed.
    pub remote_workload: Option<String>,
    /// `heartbeat`, `flow`, `assignment` or `peer`, when attributed.
    pub evidence: Option<String>,
    /// Why the remote end is unattributed, when it is.
    pub reason: Option<String>,
}

/// The wire form of an evidence kind.
pub fn wire_evidence(e: EvidenceKind) -> wire::Evidence {
    match e {
        EvidenceKind::Heartbeat => wire::Evidence::Heartbeat,
        EvidenceKind::Flow => wire::Evidence::Flow,
        EvidenceKind::Assignment => wire::Evidence::Assignment,
        EvidenceKind::Peer => wire::Evidence::Peer,
    }
}

/// The wire form of a reason.
pub fn wire_reason(r: flowmap_operators::Reason) -> wire::Reason {
    use flowmap_operators::Reason as R;
    match r {
        R::NoOwner => wire::Reason::NoOwner,
        R::Conflict => wire::Reason::Conflict,
        R::NearBoundary => wire::Reason::NearBoundary,
        R::External => wire::Reason::External,
        R::EvidenceExpired => wire::Reason::EvidenceExpired,
        R::SharedIp => wire::Reason::SharedIp,
        R::SourceGap => wire::Reason::SourceGap,
    }
}

/// The Protobuf output record of one row of a verdict piece.
pub fn to_wire(piece: &VerdictPiece, row: &FlowRow, verdict: &Verdict) -> wire::AttributedFlow {
    let flows = &piece.flows;
    let f = wire::view::parse_flow(flows.message(row)).unwrap_or_default();
    let reporter = flows.reporter(row);
    let (remote_workload, evidence, reason) = match verdict {
        Verdict::Attributed { name, evidence } => {
            (piece.names.get(*name).to_string(), wire_evidence(*evidence), wire::Reason::Unspecified)
        }
        Verdict::Unattributed(reason) => (String::new(), wire::Evidence::Unspecified, wire_reason(*reason)),
    };
    wire::AttributedFlow {
        schema_version: wire::SCHEMA_VERSION,
        flow_id: row.id,
        exporter_id: reporter.map(|r| r.exporter.clone()).unwrap_or_default(),
        local_ip: f.local_ip.to_vec(),
        local_port: f.local_port,
        remote_ip: f.remote_ip.to_vec(),
        remote_port: f.remote_port,
        direction: f.direction,
        start_ns: f.start_ns,
        end_ns: f.end_ns,
        bytes_sent: f.bytes_sent,
        bytes_received: f.bytes_received,
        segments_sent: f.segments_sent,
        segments_received: f.segments_received,
        retransmits: f.retransmits,
        srtt_us: f.srtt_us,
        local_workload: f.local_workload.to_string(),
        remote_workload,
        evidence: evidence as i32,
        reason: reason as i32,
        open: f.open,
        incarnation: reporter.map_or(0, |r| r.incarnation),
        local_scope: f.local_scope,
        local_source: f.local_source,
        start_unobserved: f.start_unobserved,
        connect_error: f.connect_error,
    }
}

/// Every output record of a verdict piece, in Protobuf form.
pub fn records(piece: &VerdictPiece) -> impl Iterator<Item = wire::AttributedFlow> + '_ {
    piece.iter().map(move |(row, verdict)| to_wire(piece, row, verdict))
}

fn reason_name(reason: i32) -> Option<String> {
    let name = match wire::Reason::try_from(reason).ok()? {
        wire::Reason::Unspecified => return None,
        wire::Reason::NoOwner => "no_owner",
        wire::Reason::Conflict => "conflict",
        wire::Reason::NearBoundary => "near_boundary",
        wire::Reason::External => "external",
        wire::Reason::EvidenceExpired => "evidence_expired",
        wire::Reason::SharedIp => "shared_ip",
        wire::Reason::SourceGap => "source_gap",
    };
    Some(name.to_string())
}

fn evidence_name(evidence: i32) -> Option<String> {
    let name = match wire::Evidence::try_from(evidence) {
        Ok(wire::Evidence::Heartbeat) => "heartbeat",
        Ok(wire::Evidence::Flow) => "flow",
        Ok(wire::Evidence::Assignment) => "assignment",
        Ok(wire::Evidence::Peer) => "peer",
        Ok(wire::Evidence::Unspecified) => return None,
        Err(_) => "unknown",
    };
    Some(name.to_string())
}

fn scope_name(scope: i32) -> &'static str {
    match wire::Scope::try_from(scope) {
        Ok(wire::Scope::Ip) => "ip",
        Ok(wire::Scope::Port) => "port",
        Ok(wire::Scope::Unspecified) => "unspecified",
        Err(_) => "unknown",
    }
}

fn source_name(source: i32) -> &'static str {
    match wire::WorkloadSource::try_from(source) {
        Ok(wire::WorkloadSource::HostIdentity) => "host_identity",
        Ok(wire::WorkloadSource::IpAssignment) => "ip_assignment",
        Ok(wire::WorkloadSource::PortAssignment) => "port_assignment",
        Ok(wire::WorkloadSource::CgroupRule) => "cgroup_rule",
        Ok(wire::WorkloadSource::Unspecified) => "unspecified",
        Err(_) => "unknown",
    }
}

/// An address as the exporter reported it: IPv4 for 4 bytes, IPv6 (mapped ones included) for
/// 16, `invalid` otherwise (such records are refused before they get here).
fn address(bytes: &[u8]) -> String {
    match bytes.len() {
        4 | 16 => wire::ip_from_bytes(bytes).map_or_else(|| "invalid".to_string(), |a| a.to_string()),
        _ => "invalid".to_string(),
    }
}

impl From<&wire::AttributedFlow> for OutputRecord {
    /// The JSON form of a Protobuf record (unknown enum values read as `unknown`).
    fn from(w: &wire::AttributedFlow) -> Self {
        let attributed = !w.remote_workload.is_empty();
        OutputRecord {
            flow_id: w.flow_id,
            exporter: w.exporter_id.clone(),
            incarnation: w.incarnation,
            local_ip: address(&w.local_ip),
            local_port: w.local_port as u16,
            remote_ip: address(&w.remote_ip),
            remote_port: w.remote_port as u16,
            direction: match wire::Direction::try_from(w.direction) {
                Ok(wire::Direction::Client) => "client",
                Ok(wire::Direction::Server) => "server",
                _ => "unknown",
            }
            .to_string(),
            start_ns: w.start_ns,
            end_ns: w.end_ns,
            open: w.open,
            start_unobserved: w.start_unobserved,
            connect_error: w.connect_error,
            bytes_sent: w.bytes_sent,
            bytes_received: w.bytes_received,
            segments_sent: w.segments_sent,
            segments_received: w.segments_received,
            retransmits: w.retransmits,
            srtt_us: w.srtt_us,
            local_workload: (!w.local_workload.is_empty()).then(|| w.local_workload.clone()),
            local_scope: scope_name(w.local_scope).to_string(),
            local_source: source_name(w.local_source).to_string(),
            remote_workload: attributed.then(|| w.remote_workload.clone()),
            evidence: if attributed { evidence_name(w.evidence) } else { None },
            reason: if attributed { None } else { reason_name(w.reason).or_else(|| Some("unknown".to_string())) },
        }
    }
}

impl OutputRecord {
    /// The key a record is identified by: (flow id, end, open).
    pub fn key(&self) -> (u64, u64, bool) {
        (self.flow_id, self.end_ns, self.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowmap_operators::records::{FlowPiece, Names, Reporter};
    use flowmap_operators::{Ip, Reason};
    use prost::Message;

    fn piece(local: Vec<u8>, verdict: impl FnOnce(&mut Names) -> Verdict) -> VerdictPiece {
        let flow = wire::Flow {
            local_ip: local,
            local_port: 4000,
            remote_ip: wire::ip_to_bytes("fd00::7".parse().unwrap()),
            remote_port: 443,
            direction: wire::Direction::Client as i32,
            start_ns: 5,
            end_ns: 9,
            bytes_sent: 1,
            bytes_received: 2,
            segments_sent: 3,
            segments_received: 4,
            retransmits: 5,
            srtt_us: 6,
            local_workload: "a".into(),
            open: true,
            local_scope: wire::Scope::Ip as i32,
            local_source: wire::WorkloadSource::CgroupRule as i32,
            start_unobserved: true,
            connection_id: 77,
            connect_error: 0,
        };
        let bytes = flow.encode_to_vec();
        let row = FlowRow {
            remote: Ip::from_wire(&flow.remote_ip).unwrap(),
            start: 5,
            batch_at: 0,
            id: 42,
            msg_off: 0,
            msg_len: bytes.len() as u32,
            remote_port: 443,
            exporter: 0,
            flags: 0,
            direction: 1,
        };
        let mut names = Names::default();
        let v = verdict(&mut names);
        VerdictPiece {
            flows: FlowPiece {
                worker: 0,
                exporters: vec![Reporter { exporter: "host-1".into(), incarnation: 9 }],
                bytes,
                rows: vec![row],
            },
            verdicts: vec![v],
            names,
            ..Default::default()
        }
    }

    /// The Kafka form and the JSON form say the same thing, and carry the flow as reported.
    #[test]
    fn wire_and_json_agree() {
        let verdicts: [fn(&mut Names) -> Verdict; 3] = [
            |n| Verdict::Attributed { name: n.push("b"), evidence: EvidenceKind::Peer },
            |_| Verdict::Unattributed(Reason::SharedIp),
            |_| Verdict::Unattributed(Reason::SourceGap),
        ];
        for verdict in verdicts {
            let p = piece(vec![10, 0, 0, 1], verdict);
            let w = records(&p).next().unwrap();
            let back = wire::decode_attributed(&wire::encode_attributed(&w)).unwrap();
            assert_eq!(back, w);
            let json = OutputRecord::from(&back);
            assert_eq!((json.flow_id, json.exporter.as_str(), json.incarnation), (42, "host-1", 9));
            assert_eq!((json.open, json.start_unobserved, json.local_scope.as_str()), (true, true, "ip"));
            assert_eq!(json.local_source, "cgroup_rule");
            assert_eq!(json.remote_workload.is_some(), json.reason.is_none());
        }
    }

    /// Regression (issue "Nothing lost", 6): an IPv4-mapped address the exporter sent as 16
    /// bytes came out as 4; the output carries the exporter's bytes.
    #[test]
    fn regression_mapped_addresses_stay_as_reported() {
        let mapped = wire::ip_to_bytes("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped.len(), 16);
        let p = piece(mapped.clone(), |_| Verdict::Unattributed(Reason::NoOwner));
        let w = records(&p).next().unwrap();
        assert_eq!(w.local_ip, mapped);
        assert_eq!(OutputRecord::from(&w).local_ip, "::ffff:10.0.0.1");
        let p = piece(vec![10, 0, 0, 1], |_| Verdict::Unattributed(Reason::NoOwner));
        assert_eq!(OutputRecord::from(&records(&p).next().unwrap()).local_ip, "10.0.0.1");
    }
}
