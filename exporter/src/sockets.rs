//! The sockets that exist now: listening sockets, and connections older than the probe.
//!
//! Why an iterator: the state-change tracepoint sees a connection only when its state changes,
//! so a connection established before the probe was loaded is invisible until it closes, and a
//! socket entering LISTEN fires no tracepoint at all (the kernel stores that state without
//! tracing it). The `flow_seed` program (`iter/task_file`) walks every open file of every task
//! on the host, which covers every network namespace with one pass (unlike `iter/tcp` or
//! sock_diag, which see one namespace each), and for each TCP socket:
//! - a connection the open map does not know gets an open record, flagged seeded (its times
//!   are when it was first seen), so it is reported while it lives and its close finds the
//!   record; it is listed here so the caller can set its direction;
//! - a listening socket is listed here (local address, port, namespace, cgroup).
//!
//! A socket no task holds (in an accept queue, or closed by its owner but still closing) is
//! not visited; its close is still reported, as a flow without an open record.

use std::io::Read;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use aya::programs::Iter;

use crate::abi::{self, RawFlowSock};
use crate::events::{canonical_addr, Direction};
use crate::loader::Attachment;

/// A listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listener {
    /// The bound address (unspecified for a wildcard bind) and port. IPv4-mapped addresses
    /// are reported as IPv4.
    pub local: SocketAddr,
    /// An IPv6 socket with `IPV6_V6ONLY`: a wildcard one serves no IPv4.
    pub v6only: bool,
    /// Inode of its network namespace.
    pub netns_ino: u32,
    /// Its cgroup v2 id.
    pub cgroup_id: u64,
    /// Socket cookie.
    pub cookie: u64,
    /// The cgroup v2 id of a task holding it (0: not known). A listening socket is charged to
    /// the cgroup of the task that created it, but the tasks that accept on it may be elsewhere
    /// (socket activation, a fork whose child moved, SCM_RIGHTS): the scan lists a listener
    /// once per holding cgroup.
    pub holder_cgroup_id: u64,
}

impl Listener {
    /// The cgroups whose tasks serve it: its holder's (when known), else its own.
    pub fn serving_cgroup(&self) -> u64 {
        if self.holder_cgroup_id != 0 {
            self.holder_cgroup_id
        } else {
            self.cgroup_id
        }
    }
}

/// A connection the scan seeded into the open map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededConnection {
    /// Socket cookie (the open map's key).
    pub cookie: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Inode of its network namespace.
    pub netns_ino: u32,
}

/// The result of one pass of the socket iterator.
#[derive(Debug, Clone, Default)]
pub struct SocketScan {
    /// Every listening TCP socket held by a task.
    pub listeners: Vec<Listener>,
    /// Connections this pass inserted into the open map.
    pub seeded: Vec<SeededConnection>,
    /// Records that did not decode (ABI mismatch); counted, not returned.
    pub decode_errors: u64,
}

impl SocketScan {
    /// The direction of a seeded connection, told from the listeners: `Server` when its local
    /// port is listened on (on its address or the wildcard) in its namespace, `Client` when
    /// its remote end is such a listener of this host (a local connection), else `Unknown`
    /// (never a guess: an ephemeral-looking port proves nothing).
    pub fn direction_of(&self, conn: &SeededConnection) -> Direction {
        let listens = |addr: SocketAddr| {
            self.listeners.iter().any(|l| {
                l.netns_ino == conn.netns_ino
                    && l.local.port() == addr.port()
                    && (l.local.ip() == addr.ip() || l.local.ip().is_unspecified())
            })
        };
        if listens(conn.local) {
            Direction::Server
        } else if listens(conn.remote) {
            Direction::Client
        } else {
            Direction::Unknown
        }
    }
}

/// Why the sockets could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The iterator program is missing or was not loaded.
    #[error("the flow_seed iterator is not loaded")]
    NotLoaded,
    /// Attaching or opening the iterator failed.
    #[error("{step} failed")]
    Iterator {
        /// What was being done.
        step: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading the iterator's output failed.
    #[error("reading the socket iterator")]
    Read(#[source] std::io::Error),
}

/// The address of a record: IPv4 as IPv4, also when an IPv6 socket is bound to an IPv4-mapped
/// address (it serves that IPv4 address only; found by a fresh user: such a listener was left
/// as an IPv6 address and its IPv4 port looked free). `::` stays the IPv6 wildcard.
fn addr(raw: [u8; 16], _family: u16) -> IpAddr {
    canonical_addr(IpAddr::V6(Ipv6Addr::from(raw)))
}

/// Splits the iterator's output into records.
fn decode(bytes: &[u8]) -> SocketScan {
    let size = std::mem::size_of::<RawFlowSock>();
    let mut scan = SocketScan::default();
    let chunks = bytes.chunks_exact(size);
    if !chunks.remainder().is_empty() {
        scan.decode_errors += 1;
    }
    for chunk in chunks {
        let Some(raw) = RawFlowSock::from_bytes(chunk) else {
            scan.decode_errors += 1;
            continue;
        };
        if raw.family != abi::AF_INET && raw.family != abi::AF_INET6 {
            scan.decode_errors += 1;
            continue;
        }
        let local = SocketAddr::new(addr(raw.local_addr, raw.family), raw.local_port);
        match raw.kind {
            abi::FLOW_SOCK_LISTENER => scan.listeners.push(Listener {
                local,
                v6only: raw.flags & abi::FLOW_SOCK_F_V6ONLY != 0,
                netns_ino: raw.netns_ino,
                cgroup_id: raw.cgroup_id,
                cookie: raw.cookie,
                holder_cgroup_id: raw.holder_cgroup_id,
            }),
            abi::FLOW_SOCK_SEEDED => scan.seeded.push(SeededConnection {
                cookie: raw.cookie,
                local,
                remote: SocketAddr::new(addr(raw.remote_addr, raw.family), raw.remote_port),
                netns_ino: raw.netns_ino,
            }),
            _ => scan.decode_errors += 1,
        }
    }
    // A socket shared by several processes is visited once per file table: kept once per
    // holding cgroup.
    scan.listeners.sort_unstable();
    scan.listeners.dedup_by_key(|l| (l.cookie, l.holder_cgroup_id));
    scan
}

impl Attachment {
    /// Runs the socket iterator once: seeds the open map with the connections it does not know
    /// yet, and lists the listening sockets and the seeded connections.
    pub fn scan_sockets(&mut self) -> Result<SocketScan, ScanError> {
        let iter: &mut Iter = self
            .ebpf
            .program_mut(abi::FLOW_SEED_PROG)
            .ok_or(ScanError::NotLoaded)?
            .try_into()
            .map_err(|e| ScanError::Iterator { step: "finding the flow_seed iterator", source: Box::new(e) })?;
        let id = iter
            .attach()
            .map_err(|e| ScanError::Iterator { step: "attaching the flow_seed iterator", source: Box::new(e) })?;
        let link = iter
            .take_link(id)
            .map_err(|e| ScanError::Iterator { step: "taking the flow_seed link", source: Box::new(e) })?;
        let mut file = link
            .into_file()
            .map_err(|e| ScanError::Iterator { step: "opening the flow_seed iterator", source: Box::new(e) })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(ScanError::Read)?;
        let _ = self.clock.refresh();
        Ok(decode(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::encode_addr;

    fn raw(kind: u8, local: SocketAddr, remote: SocketAddr, netns: u32, cookie: u64) -> Vec<u8> {
        let r = RawFlowSock {
            cookie,
            netns_ino: netns,
            family: if local.is_ipv4() { abi::AF_INET } else { abi::AF_INET6 },
            local_port: local.port(),
            remote_port: remote.port(),
            kind,
            local_addr: encode_addr(local.ip()),
            remote_addr: encode_addr(remote.ip()),
            ..RawFlowSock::default()
        };
        // SAFETY: RawFlowSock is repr(C) plain data without implicit padding (layout test).
        let bytes = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(&r).cast::<u8>(), std::mem::size_of::<RawFlowSock>())
        };
        bytes.to_vec()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn decodes_and_tells_directions_without_guessing() {
        let any = sa("0.0.0.0:0");
        let mut bytes = raw(abi::FLOW_SOCK_LISTENER, sa("0.0.0.0:80"), any, 7, 1);
        bytes.extend(raw(abi::FLOW_SOCK_LISTENER, sa("10.0.0.1:443"), any, 7, 2));
        bytes.extend(raw(abi::FLOW_SOCK_LISTENER, sa("10.0.0.1:443"), any, 7, 2)); // same socket, 2nd task
        bytes.extend(raw(abi::FLOW_SOCK_SEEDED, sa("10.0.0.1:80"), sa("10.9.9.9:5555"), 7, 10));
        bytes.extend(raw(abi::FLOW_SOCK_SEEDED, sa("10.0.0.1:40000"), sa("10.0.0.1:443"), 7, 11));
        bytes.extend(raw(abi::FLOW_SOCK_SEEDED, sa("10.0.0.1:40001"), sa("10.9.9.9:443"), 7, 12));
        bytes.extend(raw(abi::FLOW_SOCK_SEEDED, sa("10.0.0.1:80"), sa("10.9.9.9:5556"), 8, 13));
        bytes.extend(raw(9, sa("10.0.0.1:1"), any, 7, 14));
        bytes.extend([0u8; 3]);
        let scan = decode(&bytes);
        assert_eq!(scan.listeners.len(), 2, "deduplicated by cookie");
        assert_eq!(scan.decode_errors, 2, "an unknown kind and a torn tail");
        let dirs: Vec<Direction> = scan.seeded.iter().map(|c| scan.direction_of(c)).collect();
        assert_eq!(
            dirs,
            [Direction::Server, Direction::Client, Direction::Unknown, Direction::Unknown],
            "wildcard listener; local listener as remote; remote port 443 elsewhere; other netns"
        );
    }
}
