//! Connections still open, with their counters so far.
//!
//! Why this design: a batch must report long-lived flows while they live,
//! and only the kernel can read a socket's live counters. The state-change
//! program keeps one record per open socket in the `flow_open` hash map
//! (keyed by socket cookie, inserted at the first handshake state, deleted at
//! CLOSE). Counters in those records would only move at state changes, so a
//! second program, `flow_refresh`, walks the map and copies each socket's
//! live counters into its record. It is never attached: [`OpenFlows::snapshot`]
//! runs it once with `BPF_PROG_TEST_RUN` and then reads the map. This works
//! across network namespaces (the map is global), needs no tracefs and no
//! BPF iterator support in aya (0.13 has none), and costs nothing between
//! batches.
//!
//! Consistency: a snapshot is not atomic. A flow that closes during it may
//! appear both in the snapshot and as a close event; the close event is
//! authoritative (same cookie). Records the refresh could not confirm carry
//! the `stale` flag.

use aya::maps::{HashMap, MapData, MapError};
use aya::programs::ProgramFd;

use crate::abi::{self, RawFlowOpen};
use crate::clock::TaiClock;
use crate::events::{DecodeError, Direction, FlowEvent};

/// `BPF_EXIST`: update only an element that exists (never re-insert one the kernel deleted).
const BPF_EXIST: u64 = 2;

/// Errors taking a snapshot of open flows.
#[derive(Debug, thiserror::Error)]
pub enum OpenFlowsError {
    /// Running the refresh program failed.
    #[error("running the flow_refresh program (BPF_PROG_TEST_RUN) failed")]
    Refresh(#[source] std::io::Error),
    /// Reading the open-connection map failed.
    #[error("reading the open-connection map failed")]
    Map(#[source] MapError),
}

/// A snapshot of the open-connection map.
#[derive(Debug, Clone, Default)]
pub struct OpenSnapshot {
    /// Every tracked connection: established ones and handshakes in progress
    /// (`established == None`).
    pub flows: Vec<FlowEvent>,
    /// Records that did not decode (ABI mismatch); counted, not returned.
    pub decode_errors: u64,
    /// The most recent decode error, for diagnostics.
    pub last_decode_error: Option<DecodeError>,
}

/// Handle on the open-connection map and its refresh program.
pub struct OpenFlows {
    map: HashMap<MapData, u64, RawFlowOpen>,
    refresh: ProgramFd,
    clock: TaiClock,
}

impl std::fmt::Debug for OpenFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFlows").field("clock", &self.clock).finish_non_exhaustive()
    }
}

impl OpenFlows {
    pub(crate) fn new(map: HashMap<MapData, u64, RawFlowOpen>, refresh: ProgramFd, clock: TaiClock) -> Self {
        Self { map, refresh, clock }
    }

    /// Copy the live counters of every open socket into its record.
    pub fn refresh(&self) -> Result<(), OpenFlowsError> {
        crate::sys::prog_test_run(&self.refresh).map(drop).map_err(OpenFlowsError::Refresh)
    }

    /// Sets the direction of an open record (one the seed iterator inserted, whose direction
    /// only userspace can tell). `Ok(false)` when the record is gone (the connection closed).
    pub fn set_direction(&mut self, cookie: u64, direction: Direction) -> Result<bool, OpenFlowsError> {
        let mut rec = match self.map.get(&cookie, 0) {
            Ok(rec) => rec,
            Err(MapError::KeyNotFound) => return Ok(false),
            Err(e) => return Err(OpenFlowsError::Map(e)),
        };
        rec.ev.direction = match direction {
            Direction::Client => abi::FLOW_DIR_CLIENT,
            Direction::Server => abi::FLOW_DIR_SERVER,
            Direction::Unknown => abi::FLOW_DIR_UNKNOWN,
        };
        match self.map.insert(cookie, rec, BPF_EXIST) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(OpenFlowsError::Map(e)),
        }
    }

    /// Clears the workload id of every record (a map pinned by an earlier process holds that
    /// process's ids). Returns how many records were changed.
    pub fn forget_workloads(&mut self) -> Result<usize, OpenFlowsError> {
        let mut stale = Vec::new();
        for entry in self.map.iter() {
            match entry {
                Ok((cookie, rec)) if rec.ev.workload_id != 0 => stale.push((cookie, rec)),
                Ok(_) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(OpenFlowsError::Map(e)),
            }
        }
        let mut changed = 0;
        for (cookie, mut rec) in stale {
            rec.ev.workload_id = 0;
            rec.ev.flags &= !(abi::FLOW_F_WORKLOAD_BY_ADDR | abi::FLOW_F_WORKLOAD_BY_PORT);
            match self.map.insert(cookie, rec, BPF_EXIST) {
                Ok(()) => changed += 1,
                Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(OpenFlowsError::Map(e)),
            }
        }
        Ok(changed)
    }

    /// Refresh, then read every open record.
    pub fn snapshot(&mut self) -> Result<OpenSnapshot, OpenFlowsError> {
        self.refresh()?;
        let _ = self.clock.refresh(); // keep the previous offset if it fails
        let mut snap = OpenSnapshot::default();
        for entry in self.map.iter() {
            let (_cookie, rec) = match entry {
                Ok(kv) => kv,
                // Deleted between listing and lookup: the flow just closed.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(OpenFlowsError::Map(e)),
            };
            match FlowEvent::from_raw(&rec.ev, &self.clock) {
                Ok(ev) => snap.flows.push(ev),
                Err(e) => {
                    snap.decode_errors += 1;
                    snap.last_decode_error = Some(e);
                }
            }
        }
        Ok(snap)
    }
}
