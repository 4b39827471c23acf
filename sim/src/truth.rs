//! Ground truth: what really happened to every flow record the simulated exporters produced.
//!
//! A record is identified as the job identifies its output: `(flow id, end_ns, open)` (a
//! connection yields open slices and a final record, all with one flow id). The truth names
//! both ends (the local workload as the exporter saw it, the remote workload that really held
//! the remote address, or port, when the connection started), says what kind of address the
//! remote end was, what happened to the record in transit, and which of the simulated hazards
//! touched it, so that the scorer can count outcomes by kind and by hazard.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What kind of address the remote end of a record was (as the fleet really was, not as any
/// exporter reported it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    /// A pod with an address of its own (one workload on the whole IP).
    Pod,
    /// A load balancer's address (known only from the address manager).
    LoadBalancer,
    /// A node's address, shared by the host and its hostNetwork workloads (one per port).
    HostNetwork,
    /// A shared NAT address: several workloads, each on its own ports (per-(IP, port)
    /// assignments on the gateway's exporter).
    Nat,
    /// A pod address shared by containers of one network namespace (an app and its sidecar,
    /// each listening on its own port).
    SharedNetns,
    /// An address outside the fleet.
    External,
    /// An address of the fleet that nobody held (a connection to it timed out).
    Vacant,
}

impl EndKind {
    /// Every kind, in report order.
    pub const ALL: [EndKind; 7] = [
        EndKind::Pod,
        EndKind::LoadBalancer,
        EndKind::HostNetwork,
        EndKind::Nat,
        EndKind::SharedNetns,
        EndKind::External,
        EndKind::Vacant,
    ];

    /// The name used in reports and truth files (`pod`, `load_balancer`, ...).
    pub fn name(self) -> &'static str {
        match self {
            EndKind::Pod => "pod",
            EndKind::LoadBalancer => "load_balancer",
            EndKind::HostNetwork => "host_network",
            EndKind::Nat => "nat",
            EndKind::SharedNetns => "shared_netns",
            EndKind::External => "external",
            EndKind::Vacant => "vacant",
        }
    }
}

/// A simulated hazard that touched a record (see [`Conditions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The remote end is known only from the address manager (a load balancer), and between
    /// the assignment that vouches for it and the window of the flow's start the assignment
    /// feed lost a batch, was silent, or was delivered late.
    IpamFault,
    /// The record's own exporter restarted while the connection was open, or the connection
    /// began while that exporter was down (then its start is unobserved).
    ExporterRestart,
    /// The exporter of the remote end was not running when the connection started (no
    /// heartbeats, and no record of the other end).
    RemoteExporterDown,
    /// The connection predates its exporter's first batch (`start_unobserved`).
    Preexisting,
    /// Reported under an exporter id that two hosts share (a cloned image).
    DuplicatedId,
    /// The connection never established (`connect_error` set).
    FailedConnect,
}

impl Condition {
    /// Every condition, in report order.
    pub const ALL: [Condition; 6] = [
        Condition::IpamFault,
        Condition::ExporterRestart,
        Condition::RemoteExporterDown,
        Condition::Preexisting,
        Condition::DuplicatedId,
        Condition::FailedConnect,
    ];

    /// The name used in reports and truth files (`ipam_fault`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Condition::IpamFault => "ipam_fault",
            Condition::ExporterRestart => "exporter_restart",
            Condition::RemoteExporterDown => "remote_exporter_down",
            Condition::Preexisting => "preexisting",
            Condition::DuplicatedId => "duplicated_id",
            Condition::FailedConnect => "failed_connect",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of [`Condition`]s of a record (a small bit set; a list of names in truth files).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "Vec<Condition>", from = "Vec<Condition>")]
pub struct Conditions(u8);

impl Conditions {
    /// No condition.
    pub const NONE: Conditions = Conditions(0);

    /// Whether `c` is in the set.
    pub fn has(self, c: Condition) -> bool {
        self.0 & c.bit() != 0
    }

    /// The set with `c` added when `on`.
    #[must_use]
    pub fn with(self, c: Condition, on: bool) -> Self {
        if on {
            Conditions(self.0 | c.bit())
        } else {
            self
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The conditions in the set, in report order.
    pub fn iter(self) -> impl Iterator<Item = Condition> {
        Condition::ALL.into_iter().filter(move |&c| self.has(c))
    }
}

impl fmt::Debug for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Condition::name)).finish()
    }
}

impl From<Conditions> for Vec<Condition> {
    fn from(c: Conditions) -> Self {
        c.iter().collect()
    }
}

impl From<Vec<Condition>> for Conditions {
    fn from(list: Vec<Condition>) -> Self {
        list.into_iter().fold(Conditions::NONE, |set, c| set.with(c, true))
    }
}

/// What happened to a flow record on its way to the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Its batch was delivered.
    Delivered,
    /// Its batch was lost in transit.
    Lost,
    /// The exporter wrote an invalid address into it (the job must reject it).
    Corrupted,
}

/// The truth about one flow record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthFlow {
    /// Flow id as the job computes it (the same for every record of one connection).
    pub id: u64,
    /// The record's `end_ns` as published (exporter clock): the close, or the window end of an
    /// open slice.
    pub end_ns: u64,
    /// Whether the record is an open slice (`open = true` on the wire).
    pub open: bool,
    /// The incarnation of the exporter that published it.
    pub incarnation: u64,
    /// The workload that really was on the remote end (the holder of the remote address, or
    /// of the remote (address, port) on a shared address) when the connection started; `None`
    /// when nobody was (an external or vacant address, a refused port of a shared address).
    pub remote: Option<Arc<str>>,
    /// What kind of address the remote end was.
    pub remote_kind: EndKind,
    /// The workload on the local end (as the exporter named it, which is right).
    pub local: Arc<str>,
    /// What happened to the record in transit.
    pub fate: Fate,
    /// The hazards that touched it.
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
}

impl TruthFlow {
    /// The record's identity, as the job's output carries it: `(flow_id, end_ns, open)`.
    pub fn key(&self) -> RecordKey {
        RecordKey { id: self.id, end_ns: self.end_ns, open: self.open }
    }

    /// Whether the remote address is outside the fleet.
    pub fn is_external(&self) -> bool {
        self.remote_kind == EndKind::External
    }
}

/// The identity of one output record: `(flow_id, end_ns, open)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// Flow id.
    pub id: u64,
    /// End (close, or window end of a slice), ns on the exporter's clock.
    pub end_ns: u64,
    /// Open slice or final record.
    pub open: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_round_trip_as_names() {
        let c = Conditions::NONE.with(Condition::Preexisting, true).with(Condition::IpamFault, true);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"["ipam_fault","preexisting"]"#);
        assert_eq!(serde_json::from_str::<Conditions>(&json).unwrap(), c);
        assert!(!c.has(Condition::FailedConnect));
        assert_eq!(Conditions::NONE.with(Condition::DuplicatedId, false), Conditions::NONE);
        assert_eq!(format!("{c:?}"), r#"{"ipam_fault", "preexisting"}"#);
    }

    #[test]
    fn names_match_serde() {
        for k in EndKind::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.name()));
        }
        for c in Condition::ALL {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.name()));
        }
    }
}
