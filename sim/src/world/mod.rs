//! The simulated fleet in true time: hosts with their node addresses, pods (some sharing their
//! address with a sidecar), hostNetwork workloads on the node addresses, load balancers and
//! shared NAT addresses whose ports change hands, and the connections between them. This is the
//! ground truth; what the job sees is derived from it in [`crate::publish`], through skewed
//! clocks, restarting exporters and a faulty transport.
//!
//! # Layout
//! - [`fleet`]: hosts, services, pods and their address pools, load balancers, NAT ports.
//! - [`traffic`]: the connections, with the destination mix of the scenario.
//! - [`owners`]: who held an address, or an (address, port), at a given time.
//!
//! # Address and port plan
//! Nodes 10.1.0.0/16; pods 10.2.0.0/16 and fd00:2::/32; load balancers 10.200.0.0/24; NAT
//! addresses 10.201.0.0/24; outside the fleet 198.51.100.0/24 and 2001:db8::/32. A service's
//! app listens on [`APP_PORT`] + its index, a sidecar on [`SIDECAR_PORT`], the hostNetwork
//! workloads of a node on [`HOST_NETWORK_PORT`] + their index, NAT workloads on
//! [`NAT_PORT`] + their port index; clients connect from ephemeral ports (32768 up).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use flowmap_schema::{Scope, WorkloadSource};

use crate::rng::Rng;
use crate::scenario::Checked;
use crate::truth::EndKind;

pub mod fleet;
pub mod owners;
pub mod traffic;

pub use owners::OwnerIndex;

/// Start of simulated time: 2026-01-01T00:00:00Z, in ns since the epoch.
pub const T0: u64 = 1_767_225_600_000_000_000;
/// One millisecond in ns.
pub const MS: u64 = 1_000_000;
/// One second in ns.
pub const SEC: u64 = 1_000_000_000;

/// A service's app listens on this port plus the service index.
pub const APP_PORT: u16 = 8000;
/// A port nothing listens on: this plus the service index (refused connections go there).
pub const CLOSED_PORT: u16 = 7000;
/// Every sidecar listens on this port.
pub const SIDECAR_PORT: u16 = 15000;
/// The hostNetwork workloads of a node listen on this port plus their index.
pub const HOST_NETWORK_PORT: u16 = 9100;
/// NAT workloads listen on this port plus their port index.
pub const NAT_PORT: u16 = 30000;
/// Load balancers and external servers listen on this port.
pub const TLS_PORT: u16 = 443;

/// A host: one node address, one exporter, one clock.
#[derive(Clone, Debug)]
pub struct Host {
    /// Host name (also its exporter's id, unless the exporter id is duplicated).
    pub name: Arc<str>,
    /// Clock error: the host reports `true time + skew`, ns.
    pub skew: i64,
    /// The node's address, shared by the host's own processes and its hostNetwork workloads.
    pub ip: IpAddr,
}

/// A service: a set of pods (replicas) with one app port and the services it calls.
#[derive(Clone, Debug)]
pub struct Service {
    /// Whether its pods have IPv6 addresses.
    pub ipv6: bool,
    /// The services it calls (same address family).
    pub deps: Vec<usize>,
}

/// A hostNetwork workload: it uses the node's address and listens on its own port, for the
/// whole run.
#[derive(Clone, Debug)]
pub struct HostService {
    /// Workload name.
    pub name: Arc<str>,
    /// Host index.
    pub host: usize,
    /// Listening port.
    pub port: u16,
}

/// A pod: one workload instance (and maybe a sidecar) with one address for its whole life.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Workload name of the app (unique).
    pub name: Arc<str>,
    /// Service index.
    pub service: usize,
    /// Host index.
    pub host: usize,
    /// Address.
    pub ip: IpAddr,
    /// Start, true time.
    pub start: u64,
    /// End, true time.
    pub end: u64,
    /// The sidecar sharing the pod's network namespace (and so its address), if any.
    pub sidecar: Option<Arc<str>>,
}

impl Pod {
    /// The port the app listens on.
    pub fn app_port(&self) -> u16 {
        APP_PORT + self.service as u16
    }
}

/// A load balancer's tenure of an address.
#[derive(Clone, Debug)]
pub struct LbTenure {
    /// Workload name.
    pub name: Arc<str>,
    /// Address.
    pub ip: IpAddr,
    /// Start.
    pub start: u64,
    /// End.
    pub end: u64,
}

/// A workload's tenure of one port of a shared NAT address.
#[derive(Clone, Debug)]
pub struct NatTenure {
    /// Workload name.
    pub name: Arc<str>,
    /// The NAT address.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
    /// The gateway host whose exporter holds the per-(IP, port) assignment.
    pub host: usize,
    /// Start.
    pub start: u64,
    /// End.
    pub end: u64,
}

/// One end of a connection: who was really there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// A pod's app (pod index).
    App(usize),
    /// A pod's sidecar (pod index).
    Sidecar(usize),
    /// A hostNetwork workload (index into [`World::host_services`]).
    HostNet(usize),
    /// A NAT port tenure (index into [`World::nats`]).
    Nat(usize),
    /// A load balancer tenure (index).
    Lb(usize),
    /// Outside the fleet.
    External,
    /// Nobody: a fleet address (or port of it) that nobody held.
    Nobody,
}

/// How a connection attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Established, then closed.
    Established,
    /// Refused: the address answered, nothing listened on the port.
    Refused,
    /// Timed out: nothing answered.
    TimedOut,
}

impl Outcome {
    /// The socket error the exporter reports (`connect_error`): 0, 111 or 110.
    pub fn errno(self) -> u32 {
        match self {
            Outcome::Established => 0,
            Outcome::Refused => 111,
            Outcome::TimedOut => 110,
        }
    }
}

/// One TCP connection (attempt), in true time.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Who connected: an app, a sidecar or a hostNetwork workload.
    pub client: End,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The client's (ephemeral) port.
    pub client_port: u16,
    /// Who was on the server's (address, port) ([`End::Nobody`] when nobody was).
    pub server: End,
    /// What kind of address the server's was.
    pub server_kind: EndKind,
    /// Server address.
    pub server_ip: IpAddr,
    /// Server port.
    pub server_port: u16,
    /// Established (or failed, for a failed attempt).
    pub start: u64,
    /// Closed (equal to `start` for a failed attempt).
    pub end: u64,
    /// Bytes client to server.
    pub bytes_up: u64,
    /// Bytes server to client.
    pub bytes_down: u64,
    /// Established, refused or timed out.
    pub outcome: Outcome,
}

/// The whole true fleet.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Hosts.
    pub hosts: Vec<Host>,
    /// Services.
    pub services: Vec<Service>,
    /// hostNetwork workloads, `host_network_services` per host, host by host.
    pub host_services: Vec<HostService>,
    /// Pods, in start order.
    pub pods: Vec<Pod>,
    /// Load-balancer tenures.
    pub lbs: Vec<LbTenure>,
    /// NAT port tenures.
    pub nats: Vec<NatTenure>,
    /// Connections, client by client.
    pub connections: Vec<Connection>,
}

impl World {
    /// The workload name of an end (`None` for [`End::External`] and [`End::Nobody`]).
    pub fn name(&self, end: End) -> Option<&Arc<str>> {
        match end {
            End::App(p) => Some(&self.pods[p].name),
            End::Sidecar(p) => self.pods[p].sidecar.as_ref(),
            End::HostNet(i) => Some(&self.host_services[i].name),
            End::Nat(i) => Some(&self.nats[i].name),
            End::Lb(i) => Some(&self.lbs[i].name),
            End::External | End::Nobody => None,
        }
    }

    /// The host whose exporter reports this end's side of its connections (none for load
    /// balancers and ends outside the fleet).
    pub fn host_of(&self, end: End) -> Option<usize> {
        match end {
            End::App(p) | End::Sidecar(p) => Some(self.pods[p].host),
            End::HostNet(i) => Some(self.host_services[i].host),
            End::Nat(i) => Some(self.nats[i].host),
            End::Lb(_) | End::External | End::Nobody => None,
        }
    }

    /// What kind of address this end is on ([`EndKind::Vacant`] for [`End::Nobody`]).
    pub fn kind(&self, end: End) -> EndKind {
        match end {
            End::App(p) if self.pods[p].sidecar.is_none() => EndKind::Pod,
            End::App(_) | End::Sidecar(_) => EndKind::SharedNetns,
            End::HostNet(_) => EndKind::HostNetwork,
            End::Nat(_) => EndKind::Nat,
            End::Lb(_) => EndKind::LoadBalancer,
            End::External => EndKind::External,
            End::Nobody => EndKind::Vacant,
        }
    }

    /// What the exporter states about this end as a flow's local workload, like the real one:
    /// the whole IP (`SCOPE_IP`, from a per-IP assignment) for a pod alone on its address;
    /// only the connection's port (`SCOPE_PORT`) on a shared address, known from a cgroup rule
    /// (containers of a shared network namespace, hostNetwork workloads) or a per-(IP, port)
    /// assignment (NAT). `None` for ends without an exporter.
    pub fn local_scope(&self, end: End) -> Option<(Scope, WorkloadSource)> {
        match end {
            End::App(p) if self.pods[p].sidecar.is_none() => Some((Scope::Ip, WorkloadSource::IpAssignment)),
            End::App(_) | End::Sidecar(_) | End::HostNet(_) => Some((Scope::Port, WorkloadSource::CgroupRule)),
            End::Nat(_) => Some((Scope::Port, WorkloadSource::PortAssignment)),
            End::Lb(_) | End::External | End::Nobody => None,
        }
    }
}

/// Generates the fleet of a checked scenario.
pub fn generate(s: &Checked) -> World {
    let mut rng = Rng::new(s.seed);
    let horizon = T0 + s.duration_s * SEC;
    let mut world = fleet::build(s, &mut rng, horizon);
    world.connections = traffic::generate(s, &mut rng, &world, horizon);
    world
}

pub(crate) fn v4(base: [u8; 2], i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(base[0], base[1], (i >> 8) as u8, (i & 0xff) as u8))
}

pub(crate) fn v6(prefix: u16, i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, prefix, 0, 0, 0, 0, (i >> 16) as u16, (i & 0xffff) as u16))
}

#[cfg(test)]
mod tests;
