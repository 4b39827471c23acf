//! Kernel-side loss counters.
//!
//! Why: the ring buffer drops records when userspace falls behind, and the
//! open-connection map can fill up. The kernel counts both in a per-CPU array
//! (no atomics on the hot path); this sums the CPUs. Export them as
//! monotonically increasing totals.

use aya::maps::{MapData, MapError, PerCpuArray};

use crate::abi;

/// Totals since the probe was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CounterSnapshot {
    /// Close events lost because the ring buffer was full.
    pub ringbuf_drops: u64,
    /// Connections not tracked as open because the open map was full (their
    /// close event carries `no_open_record`).
    pub open_map_full: u64,
    /// Open records whose socket was gone at refresh (it closed while no probe was
    /// attached), deleted by the refresh program.
    pub refresh_stale: u64,
    /// Open records the socket iterator seeded from existing connections.
    pub seeded: u64,
}

/// Handle on the per-CPU counter array.
pub struct Counters {
    map: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

impl Counters {
    pub(crate) fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self { map }
    }

    fn total(&self, index: u32) -> Result<u64, MapError> {
        Ok(self.map.get(&index, 0)?.iter().fold(0u64, |acc, v| acc.wrapping_add(*v)))
    }

    /// Read and sum every counter.
    pub fn read(&self) -> Result<CounterSnapshot, MapError> {
        Ok(CounterSnapshot {
            ringbuf_drops: self.total(abi::FLOW_CTR_RINGBUF_DROPS)?,
            open_map_full: self.total(abi::FLOW_CTR_OPEN_MAP_FULL)?,
            refresh_stale: self.total(abi::FLOW_CTR_REFRESH_STALE)?,
            seeded: self.total(abi::FLOW_CTR_SEEDED)?,
        })
    }
}
