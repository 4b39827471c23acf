//! The kernel's own run-time statistics for the flow programs: how often
//! each ran and how long it took in total, as the kernel measures it.
//!
//! Why: the userspace reader's CPU is only part of the exporter's cost. The
//! `flow_state` program runs inside every TCP state change of the host, in
//! the context of whoever caused it (softirq, a `connect()`, a `close()`), so
//! its cost never shows up in the exporter's own CPU time.
//!
//! How: the kernel counts `run_cnt` and `run_time_ns` per program only while
//! statistics are switched on, either by the `kernel.bpf_stats_enabled`
//! sysctl or, as here, by holding the file descriptor that `bpf(BPF_ENABLE_STATS)`
//! returns (Linux 5.8+; released with the guard, so a crashed benchmark does
//! not leave the host paying for statistics). Counting adds two clock reads per
//! program run, so keep it off outside measurements; the totals are cumulative
//! from load time but only grow while enabled, so measure a window as the
//! difference of two reads ([`ProgramStats::since`]).
//!
//! Which programs: [`program_stats`] lists the flow programs held by this
//! process and [`process_program_stats`] those held by another process (the
//! benchmark reads the exporter's from outside). A program is recognised by
//! its name ([`abi::FLOW_STATE_PROG`], [`abi::FLOW_REFRESH_PROG`]) among the
//! `bpf-prog` file descriptors listed in `/proc/<pid>/fd`. A process that has
//! loaded two probes at once cannot be told apart this way ([`FlowProbe`]
//! does not expose its program descriptors), so that case is an error rather
//! than a silent sum.
//!
//! No unsafe code: aya wraps `BPF_ENABLE_STATS` (`aya::sys::enable_stats`)
//! and `BPF_OBJ_GET_INFO_BY_FD` ([`aya::programs::loaded_programs`]).

use std::collections::BTreeSet;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use aya::programs::{loaded_programs, ProgramError};
use aya::sys::{enable_stats, Stats, SyscallError};

use crate::{abi, FlowProbe};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum BpfStatsError {
    /// `bpf(BPF_ENABLE_STATS)` failed.
    #[error(
        "enabling BPF run-time statistics (bpf(BPF_ENABLE_STATS), Linux 5.8+) failed: \
         needs root or CAP_SYS_ADMIN; `sysctl kernel.bpf_stats_enabled=1` is the alternative"
    )]
    Enable(#[source] SyscallError),
    /// Listing a process's file descriptors failed.
    #[error("reading {}", path.display())]
    Proc {
        /// The `/proc` path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading a program's information from the kernel failed.
    #[error("reading BPF program information (bpf(BPF_OBJ_GET_INFO_BY_FD))")]
    Info(#[source] ProgramError),
    /// The process holds no flow program.
    #[error("process {pid} holds no `{}` program: is the flow probe loaded there?", abi::FLOW_STATE_PROG)]
    NotFound {
        /// The process searched.
        pid: u32,
    },
    /// The process holds several flow probes; their programs cannot be told
    /// apart by name.
    #[error(
        "process {pid} holds {count} `{}` programs (several flow probes): cannot tell which is which",
        abi::FLOW_STATE_PROG
    )]
    Ambiguous {
        /// The process searched.
        pid: u32,
        /// How many `flow_state` programs it holds.
        count: usize,
    },
}

/// Switches the kernel's BPF run-time statistics on.
#[derive(Debug)]
pub struct BpfStats;

impl BpfStats {
    /// Switch statistics on for as long as the guard lives (and as long as any
    /// other holder keeps them on; the sysctl is independent of this).
    pub fn enable() -> Result<BpfStatsGuard, BpfStatsError> {
        enable_stats(Stats::RunTime).map(|fd| BpfStatsGuard { _fd: fd }).map_err(BpfStatsError::Enable)
    }
}

/// Statistics stay on while this is alive.
#[derive(Debug)]
pub struct BpfStatsGuard {
    _fd: OwnedFd,
}

/// One program's totals as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProgramStats {
    /// Kernel program id.
    pub id: u32,
    /// Program name (the kernel keeps at most 15 bytes).
    pub name: String,
    /// Runs counted while statistics were on.
    pub run_count: u64,
    /// Total run time, in nanoseconds, counted while statistics were on.
    pub run_time_ns: u64,
}

impl ProgramStats {
    /// The runs between `earlier` (a read of the same program) and `self`.
    #[must_use]
    pub fn since(&self, earlier: &ProgramStats) -> ProgramStats {
        ProgramStats {
            id: self.id,
            name: self.name.clone(),
            run_count: self.run_count.saturating_sub(earlier.run_count),
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
        }
    }

    /// Mean run time in nanoseconds; `None` if it never ran.
    #[must_use]
    pub fn ns_per_run(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)] // a ratio for display
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

/// The flow programs of `probe`, which must have been loaded by this process.
///
/// Fails with [`BpfStatsError::Ambiguous`] if this process holds more than one
/// probe at the time of the call.
pub fn program_stats(probe: &FlowProbe) -> Result<Vec<ProgramStats>, BpfStatsError> {
    // The probe is the proof that its programs are held by this process; its
    // descriptors themselves are private to the loader.
    let _ = probe;
    process_program_stats(std::process::id())
}

/// The flow programs (`flow_state`, `flow_refresh`) held by process `pid`, in
/// id order. Needs permission to read `/proc/<pid>/fd` (the same user, or root).
pub fn process_program_stats(pid: u32) -> Result<Vec<ProgramStats>, BpfStatsError> {
    let ids = held_program_ids(Path::new(&format!("/proc/{pid}")))?;
    let mut found = Vec::new();
    for info in loaded_programs() {
        let info = info.map_err(BpfStatsError::Info)?;
        if !ids.contains(&info.id()) {
            continue;
        }
        let name = info.name_as_str().unwrap_or_default();
        if name == abi::FLOW_STATE_PROG || name == abi::FLOW_REFRESH_PROG {
            found.push(ProgramStats {
                id: info.id(),
                name: name.to_owned(),
                run_count: info.run_count(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            });
        }
    }
    found.sort_by_key(|p| p.id);
    match found.iter().filter(|p| p.name == abi::FLOW_STATE_PROG).count() {
        0 => Err(BpfStatsError::NotFound { pid }),
        1 => Ok(found),
        count => Err(BpfStatsError::Ambiguous { pid, count }),
    }
}

/// Ids of the BPF programs a process holds a descriptor for, from
/// `/proc/<pid>/fd` (links named `anon_inode:bpf-prog`) and the `prog_id:`
/// line of the matching `/proc/<pid>/fdinfo/<fd>`.
fn held_program_ids(proc_dir: &Path) -> Result<BTreeSet<u32>, BpfStatsError> {
    let fd_dir = proc_dir.join("fd");
    let entries = std::fs::read_dir(&fd_dir).map_err(|source| BpfStatsError::Proc { path: fd_dir.clone(), source })?;
    let mut ids = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|source| BpfStatsError::Proc { path: fd_dir.clone(), source })?;
        // A descriptor closed since the listing is not an error: skip it.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf-prog" {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(proc_dir.join("fdinfo").join(entry.file_name())) else {
            continue;
        };
        if let Some(id) = fdinfo_prog_id(&info) {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// The `prog_id:` field of a `bpf-prog` fdinfo text.
fn fdinfo_prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_prog_id_parses_the_kernel_format() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2077\n\
                    prog_type:\t26\nprog_jited:\t1\nprog_tag:\t0123456789abcdef\n\
                    memlock:\t8192\nprog_id:\t4242\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(fdinfo_prog_id(text), Some(4242));
        assert_eq!(fdinfo_prog_id("pos:\t0\n"), None);
        assert_eq!(fdinfo_prog_id("prog_id:\tx\n"), None);
        assert_eq!(fdinfo_prog_id(""), None);
    }

    #[test]
    fn since_and_mean() {
        let a = ProgramStats { id: 7, name: "flow_state".into(), run_count: 10, run_time_ns: 1_000 };
        let b = ProgramStats { run_count: 30, run_time_ns: 5_000, ..a.clone() };
        let d = b.since(&a);
        assert_eq!((d.run_count, d.run_time_ns), (20, 4_000));
        assert_eq!(d.ns_per_run(), Some(200.0));
        assert_eq!(a.since(&b).run_count, 0, "a counter never goes backwards");
        assert_eq!(a.since(&a).ns_per_run(), None);
    }

    #[test]
    fn a_process_without_programs_is_not_found() {
        let dir = std::env::temp_dir().join(format!("bpf_stats_test_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(std::fs::create_dir_all(dir.join("fd")).is_ok());
        let ids = held_program_ids(&dir);
        assert!(matches!(&ids, Ok(s) if s.is_empty()), "{ids:?}");
        let missing = held_program_ids(&dir.join("nope"));
        assert!(matches!(missing, Err(BpfStatsError::Proc { .. })), "{missing:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
