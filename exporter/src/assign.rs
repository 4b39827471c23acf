//! Local workload assignments, written into the two kernel maps the flow
//! program consults.
//!
//! Why in the kernel: the program attributes a flow at the moment it reports
//! it (ESTABLISHED, each open-flow refresh, and CLOSE), so a flow that closes
//! between two userspace batches is still attributed even if the workload has
//! gone since. Lookup order: (local address, local port) first, then the
//! local address. A lookup that matches replaces the flow's id; one that
//! matches nothing keeps the id the flow already had, so removing an
//! assignment does not erase the attribution of flows that were live under it.
//!
//! IPv4 addresses (and IPv4-mapped IPv6 ones) are stored as `::ffff:a.b.c.d`,
//! so one assignment covers AF_INET and dual-stack AF_INET6 sockets alike.

use std::net::IpAddr;

use aya::maps::{HashMap, MapData, MapError};

use crate::abi::{RawWorkloadAddrKey, RawWorkloadPortKey};
use crate::events::encode_addr;

/// Errors writing assignments.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    /// 0 means "no workload" in the kernel record and cannot be assigned.
    #[error("workload id 0 is reserved for \"no workload\"")]
    ZeroId,
    /// The map rejected the operation (for example because it is full).
    #[error("{op} {target} in the kernel workload map failed")]
    Map {
        /// `assign` or `unassign`.
        op: &'static str,
        /// The address or address:port.
        target: String,
        /// What aya reported.
        #[source]
        source: MapError,
    },
}

/// Handle on the per-address and per-(address, port) workload maps.
pub struct Assignments {
    by_addr: HashMap<MapData, RawWorkloadAddrKey, u32>,
    by_port: HashMap<MapData, RawWorkloadPortKey, u32>,
}

impl std::fmt::Debug for Assignments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignments").finish_non_exhaustive()
    }
}

fn addr_key(addr: IpAddr) -> RawWorkloadAddrKey {
    RawWorkloadAddrKey { addr: encode_addr(addr) }
}

fn port_key(addr: IpAddr, port: u16) -> RawWorkloadPortKey {
    RawWorkloadPortKey { addr: encode_addr(addr), port, _pad: 0 }
}

/// `Ok(false)` for "was not there", errors otherwise.
fn removed(result: Result<(), MapError>) -> Result<bool, MapError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Assignments {
    pub(crate) fn new(
        by_addr: HashMap<MapData, RawWorkloadAddrKey, u32>,
        by_port: HashMap<MapData, RawWorkloadPortKey, u32>,
    ) -> Self {
        Self { by_addr, by_port }
    }

    /// Attribute flows whose local address is `addr` to `workload_id`
    /// (unless an (address, port) assignment covers them).
    pub fn assign_addr(&mut self, addr: IpAddr, workload_id: u32) -> Result<(), AssignError> {
        if workload_id == 0 {
            return Err(AssignError::ZeroId);
        }
        self.by_addr.insert(addr_key(addr), workload_id, 0).map_err(|source| AssignError::Map {
            op: "assign",
            target: addr.to_string(),
            source,
        })
    }

    /// Remove the assignment of `addr`; `Ok(false)` if there was none.
    pub fn unassign_addr(&mut self, addr: IpAddr) -> Result<bool, AssignError> {
        removed(self.by_addr.remove(&addr_key(addr))).map_err(|source| AssignError::Map {
            op: "unassign",
            target: addr.to_string(),
            source,
        })
    }

    /// Attribute flows whose local address and port are `addr`, `port` to
    /// `workload_id`; takes precedence over [`Self::assign_addr`].
    pub fn assign_port(&mut self, addr: IpAddr, port: u16, workload_id: u32) -> Result<(), AssignError> {
        if workload_id == 0 {
            return Err(AssignError::ZeroId);
        }
        self.by_port.insert(port_key(addr, port), workload_id, 0).map_err(|source| AssignError::Map {
            op: "assign",
            target: std::net::SocketAddr::new(addr, port).to_string(),
            source,
        })
    }

    /// Remove the assignment of (`addr`, `port`); `Ok(false)` if there was none.
    pub fn unassign_port(&mut self, addr: IpAddr, port: u16) -> Result<bool, AssignError> {
        removed(self.by_port.remove(&port_key(addr, port))).map_err(|source| AssignError::Map {
            op: "unassign",
            target: std::net::SocketAddr::new(addr, port).to_string(),
            source,
        })
    }

    /// The workload assigned to `addr`, if any.
    pub fn addr_assignment(&self, addr: IpAddr) -> Result<Option<u32>, MapError> {
        match self.by_addr.get(&addr_key(addr), 0) {
            Ok(id) => Ok(Some(id)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The workload assigned to (`addr`, `port`), if any.
    pub fn port_assignment(&self, addr: IpAddr, port: u16) -> Result<Option<u32>, MapError> {
        match self.by_port.get(&port_key(addr, port), 0) {
            Ok(id) => Ok(Some(id)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
