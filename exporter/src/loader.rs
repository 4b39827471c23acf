//! Load the embedded eBPF object, attach it, and hand out typed handles.
//!
//! Why errors are classified here: when loading fails on a customer's host,
//! the person reading the log needs to know what to fix: privilege (root, or
//! CAP_BPF + CAP_PERFMON), kernel BTF (`/sys/kernel/btf/vmlinux`), or a kernel
//! too old for a feature the program uses. Verifier rejections carry the
//! verifier log.
//!
//! Kernel requirements: BTF, BPF ring buffer (5.8), `tp_btf`
//! (5.5), `bpf_for_each_map_elem` (5.13), `bpf_ktime_get_tai_ns` (6.1),
//! `tcp_sock.bytes_sent/bytes_retrans` (4.19). Developed on 6.18.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData, MapError, MapInfo, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, Iter, ProgramError, RawTracePoint};
use aya::{Btf, BtfError, Ebpf, EbpfError, EbpfLoader, Endianness};

use crate::abi::{self, RawFlowOpen, RawWorkloadAddrKey, RawWorkloadPortKey};
use crate::assign::Assignments;
use crate::clock::TaiClock;
use crate::counters::Counters;
use crate::events::FlowEvents;
use crate::open::OpenFlows;

/// The compiled kernel side, embedded at build time by `build.rs`.
static FLOW_BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flow.bpf.o"));

/// The kernel tracepoint the state program attaches to.
const TRACEPOINT: &str = "inet_sock_set_state";

/// Where the kernel exposes its BTF.
pub const DEFAULT_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Ring buffer size in bytes: a power of two and a multiple of the page
    /// size. Each closed flow takes 144 bytes (136 + 8 header).
    pub ringbuf_bytes: u32,
    /// Capacity of the open-connection map (concurrently open TCP sockets).
    pub open_max_entries: u32,
    /// Capacity of each workload-assignment map.
    pub workload_max_entries: u32,
    /// Kernel BTF file.
    pub btf_path: PathBuf,
    /// A bpffs directory where the open-connection map is pinned, so that it outlives the
    /// process: the next probe loaded with the same directory reuses it, and the connections
    /// the previous one saw keep their start and direction. `None`: not pinned.
    pub pin_dir: Option<PathBuf>,
}

/// What became of the open-connection map's pin (see [`LoaderConfig::pin_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// No pin directory was configured.
    Off,
    /// A new map was created and pinned.
    Created,
    /// The map a previous probe pinned was reused.
    Reused,
    /// Pinning was not possible (no bpffs, no write access, an incompatible pinned map);
    /// the map lives only as long as this process. The reason, for the log.
    Unavailable(String),
}

impl PinOutcome {
    /// A short, bounded label (`off`, `created`, `reused`, `unavailable`) for metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            PinOutcome::Off => "off",
            PinOutcome::Created => "created",
            PinOutcome::Reused => "reused",
            PinOutcome::Unavailable(_) => "unavailable",
        }
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            ringbuf_bytes: abi::FLOW_RINGBUF_BYTES,
            open_max_entries: abi::FLOW_OPEN_MAX_ENTRIES,
            workload_max_entries: abi::FLOW_WORKLOAD_MAX_ENTRIES,
            btf_path: PathBuf::from(DEFAULT_BTF_PATH),
            pin_dir: None,
        }
    }
}

/// Why loading failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting is out of range.
    #[error("invalid loader configuration: {0}")]
    Config(String),
    /// The kernel exposes no BTF.
    #[error("kernel BTF not found at {path}: the kernel must be built with CONFIG_DEBUG_INFO_BTF=y")]
    BtfMissing {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The kernel BTF exists but could not be read or parsed.
    #[error("cannot read kernel BTF from {path}")]
    Btf {
        /// The path that was read.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: BtfError,
    },
    /// The kernel refused for lack of privilege.
    #[error(
        "permission denied while {step}: run as root, or grant CAP_BPF and CAP_PERFMON \
         (CAP_SYS_ADMIN on kernels before 5.8)"
    )]
    Privilege {
        /// What was being done.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The running kernel lacks something the programs need.
    #[error("the kernel lacks {feature} (needed while {step}){}", log_suffix(verifier_log))]
    KernelFeature {
        /// What is missing, with the kernel version that introduced it.
        feature: &'static str,
        /// What was being done.
        step: &'static str,
        /// The verifier log, when the verifier said so.
        verifier_log: Option<String>,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The verifier rejected a program.
    #[error("the verifier rejected program `{program}`{}", log_suffix(&Some(verifier_log.clone())))]
    Verifier {
        /// The program name.
        program: &'static str,
        /// The verifier's output.
        verifier_log: String,
        /// The `BPF_PROG_LOAD` error.
        #[source]
        source: io::Error,
    },
    /// Anything else aya reported.
    #[error("{step} failed")]
    Other {
        /// What was being done.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

fn log_suffix(log: &Option<String>) -> String {
    match log {
        Some(l) if !l.trim().is_empty() => format!("\n--- verifier log ---\n{}", l.trim_end()),
        _ => String::new(),
    }
}

/// The first `io::Error` errno in an error's source chain.
fn errno_in(err: &(dyn StdError + 'static)) -> Option<i32> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        cur = e.source();
    }
    None
}

/// Map an aya error to a [`LoadError`] that names what is missing.
fn classify<E>(step: &'static str, program: Option<&'static str>, err: E) -> LoadError
where
    E: StdError + Send + Sync + 'static,
{
    let err_ref: &(dyn StdError + 'static) = &err;
    // The verifier log, wherever aya put the ProgramError.
    let prog_err = err_ref.downcast_ref::<ProgramError>().or_else(|| match err_ref.downcast_ref::<EbpfError>() {
        Some(EbpfError::ProgramError(p)) => Some(p),
        _ => None,
    });
    if let Some(ProgramError::LoadError { io_error, verifier_log }) = prog_err {
        let log = verifier_log.to_string();
        let code = io_error.raw_os_error();
        if matches!(code, Some(libc::EPERM) | Some(libc::EACCES)) && log.trim().is_empty() {
            return LoadError::Privilege { step, source: Box::new(err) };
        }
        let feature = if log.contains("bpf_ktime_get_tai_ns") || log.contains("unknown#208") {
            Some("the bpf_ktime_get_tai_ns helper (Linux 6.1)")
        } else if log.contains("for_each_map_elem") || log.contains("unknown#164") {
            Some("the bpf_for_each_map_elem helper (Linux 5.13)")
        } else if log.contains("unknown func") || log.contains("invalid func") {
            Some("a BPF helper the program calls")
        } else {
            None
        };
        if let Some(feature) = feature {
            return LoadError::KernelFeature { feature, step, verifier_log: Some(log), source: Box::new(err) };
        }
        return LoadError::Verifier {
            program: program.unwrap_or("?"),
            verifier_log: log,
            source: io::Error::new(io_error.kind(), io_error.to_string()),
        };
    }
    if matches!(errno_in(err_ref), Some(libc::EPERM) | Some(libc::EACCES)) {
        return LoadError::Privilege { step, source: Box::new(err) };
    }
    match err_ref.downcast_ref::<EbpfError>() {
        Some(EbpfError::MapError(MapError::CreateError { name, .. })) if name == abi::FLOW_EVENTS_MAP => {
            return LoadError::KernelFeature {
                feature: "the BPF ring buffer map (Linux 5.8)",
                step,
                verifier_log: None,
                source: Box::new(err),
            };
        }
        Some(EbpfError::BtfRelocationError(_)) => {
            return LoadError::KernelFeature {
                feature: "a kernel struct field the program reads through CO-RE \
                          (tcp_sock byte counters need Linux 4.19)",
                step,
                verifier_log: None,
                source: Box::new(err),
            };
        }
        _ => {}
    }
    if let Some(ProgramError::Btf(_)) = prog_err {
        return LoadError::KernelFeature {
            feature: "the BTF tracepoint inet_sock_set_state (Linux 5.5 with BTF)",
            step,
            verifier_log: None,
            source: Box::new(err),
        };
    }
    LoadError::Other { step, source: Box::new(err) }
}

/// Keeps the programs loaded and attached; dropping it detaches them (the map
/// handles stay valid but stop receiving data). It also runs the socket iterator
/// ([`Attachment::scan_sockets`], in [`crate::sockets`]).
pub struct Attachment {
    pub(crate) ebpf: Ebpf,
    pub(crate) clock: TaiClock,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment").finish_non_exhaustive()
    }
}

/// A loaded and attached flow probe, split into independently usable parts.
#[derive(Debug)]
pub struct FlowProbe {
    /// Closed flows.
    pub events: FlowEvents,
    /// Workload assignments.
    pub assignments: Assignments,
    /// Snapshots of open flows.
    pub open_flows: OpenFlows,
    /// Kernel-side loss counters.
    pub counters: Counters,
    /// Keep alive while the other parts are in use; lists sockets.
    pub attachment: Attachment,
    /// Whether the open-connection map is pinned, and how.
    pub pin: PinOutcome,
}

fn check_config(config: &LoaderConfig) -> Result<(), LoadError> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = u32::try_from(page).unwrap_or(4096);
    let rb = config.ringbuf_bytes;
    if !rb.is_power_of_two() || rb < page || !rb.is_multiple_of(page) {
        return Err(LoadError::Config(format!(
            "ringbuf_bytes = {rb}: must be a power of two and a multiple of the page size ({page})"
        )));
    }
    if config.open_max_entries == 0 || config.workload_max_entries == 0 {
        return Err(LoadError::Config("map capacities must be at least 1".into()));
    }
    Ok(())
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, LoadError> {
    ebpf.take_map(name).ok_or_else(|| LoadError::Other {
        step: "finding the maps in the object",
        source: format!("map `{name}` is missing from flow.bpf.o").into(),
    })
}

fn typed<T>(name: &'static str, r: Result<T, MapError>) -> Result<T, LoadError> {
    r.map_err(|e| LoadError::Other {
        step: match name {
            abi::FLOW_EVENTS_MAP => "opening the flow_events ring buffer",
            abi::FLOW_OPEN_MAP => "opening the flow_open map",
            abi::FLOW_COUNTERS_MAP => "opening the flow_counters map",
            _ => "opening a workload map",
        },
        source: Box::new(e),
    })
}

/// The pin path of the open-connection map in `dir` (the ABI version is part of the name, so
/// a probe never reuses a map of another layout).
pub fn open_map_pin_path(dir: &Path) -> PathBuf {
    dir.join(format!("{}_v{}", abi::FLOW_OPEN_MAP, abi::FLOW_ABI_VERSION))
}

fn loader<'a>(config: &LoaderConfig, btf: &'a Btf) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(btf))
        .map_max_entries(abi::FLOW_EVENTS_MAP, config.ringbuf_bytes)
        .map_max_entries(abi::FLOW_OPEN_MAP, config.open_max_entries)
        .map_max_entries(abi::FLOW_WL_ADDR_MAP, config.workload_max_entries)
        .map_max_entries(abi::FLOW_WL_PORT_MAP, config.workload_max_entries);
    loader
}

/// Loads the object with the open map pinned in `dir` when possible; otherwise without a pin,
/// saying why.
fn load_object(config: &LoaderConfig, btf: &Btf) -> Result<(Ebpf, PinOutcome), LoadError> {
    let unpinned = || {
        loader(config, btf)
            .load(FLOW_BPF_OBJECT)
            .map_err(|e| classify("loading flow.bpf.o (maps and relocations)", None, e))
    };
    let Some(dir) = &config.pin_dir else { return Ok((unpinned()?, PinOutcome::Off)) };
    let path = open_map_pin_path(dir);
    let unavailable =
        |why: String| -> Result<(Ebpf, PinOutcome), LoadError> { Ok((unpinned()?, PinOutcome::Unavailable(why))) };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return unavailable(format!("cannot create {}: {e}", dir.display()));
    }
    let existed = path.exists();
    if existed {
        // A map pinned by a probe of this ABI version has this layout; check anyway, since a
        // wrong value size would make every record unreadable.
        match MapInfo::from_pin(&path) {
            Ok(info) if info.value_size() as usize == std::mem::size_of::<RawFlowOpen>() && info.key_size() == 8 => {}
            Ok(info) => {
                return unavailable(format!(
                    "{} holds a map of another layout (key {} / value {} bytes): remove it",
                    path.display(),
                    info.key_size(),
                    info.value_size()
                ))
            }
            Err(e) => return unavailable(format!("cannot open {}: {}", path.display(), chain(&e))),
        }
    }
    match loader(config, btf).map_pin_path(abi::FLOW_OPEN_MAP, path.clone()).load(FLOW_BPF_OBJECT) {
        Ok(ebpf) => Ok((ebpf, if existed { PinOutcome::Reused } else { PinOutcome::Created })),
        Err(e @ EbpfError::MapError(MapError::PinError { .. })) => {
            unavailable(format!("cannot pin {}: {}", path.display(), chain(&e)))
        }
        Err(e) if matches!(errno_in(&e), Some(libc::EPERM | libc::EACCES | libc::EROFS | libc::ENOENT)) => {
            unavailable(format!("cannot pin {}: {}", path.display(), chain(&e)))
        }
        Err(e) => Err(classify("loading flow.bpf.o (maps and relocations)", None, e)),
    }
}

/// An error and its sources, on one line.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

/// Load the embedded object, attach the state program and return the handles.
pub fn load(config: &LoaderConfig) -> Result<FlowProbe, LoadError> {
    check_config(config)?;
    let btf = read_btf(&config.btf_path)?;
    let (mut ebpf, pin) = load_object(config, &btf)?;

    let state: &mut BtfTracePoint = program(&mut ebpf, abi::FLOW_STATE_PROG)?;
    state
        .load(TRACEPOINT, &btf)
        .map_err(|e| classify("loading the flow_state program", Some(abi::FLOW_STATE_PROG), e))?;

    let refresh: &mut RawTracePoint = program(&mut ebpf, abi::FLOW_REFRESH_PROG)?;
    refresh.load().map_err(|e| classify("loading the flow_refresh program", Some(abi::FLOW_REFRESH_PROG), e))?;
    let refresh_fd = refresh
        .fd()
        .and_then(|fd| {
            fd.try_clone().map_err(|e| ProgramError::SyscallError(aya::sys::SyscallError { call: "dup", io_error: e }))
        })
        .map_err(|e| classify("getting the flow_refresh program fd", Some(abi::FLOW_REFRESH_PROG), e))?;

    let seed: &mut Iter = program(&mut ebpf, abi::FLOW_SEED_PROG)?;
    seed.load("task_file", &btf)
        .map_err(|e| classify("loading the flow_seed iterator", Some(abi::FLOW_SEED_PROG), e))?;

    let events = typed(abi::FLOW_EVENTS_MAP, RingBuf::try_from(take_map(&mut ebpf, abi::FLOW_EVENTS_MAP)?))?;
    let open: HashMap<MapData, u64, RawFlowOpen> =
        typed(abi::FLOW_OPEN_MAP, HashMap::try_from(take_map(&mut ebpf, abi::FLOW_OPEN_MAP)?))?;
    let by_addr: HashMap<MapData, RawWorkloadAddrKey, u32> =
        typed(abi::FLOW_WL_ADDR_MAP, HashMap::try_from(take_map(&mut ebpf, abi::FLOW_WL_ADDR_MAP)?))?;
    let by_port: HashMap<MapData, RawWorkloadPortKey, u32> =
        typed(abi::FLOW_WL_PORT_MAP, HashMap::try_from(take_map(&mut ebpf, abi::FLOW_WL_PORT_MAP)?))?;
    let counters: PerCpuArray<MapData, u64> =
        typed(abi::FLOW_COUNTERS_MAP, PerCpuArray::try_from(take_map(&mut ebpf, abi::FLOW_COUNTERS_MAP)?))?;

    let clock = TaiClock::new()
        .map_err(|e| LoadError::Other { step: "reading CLOCK_TAI and CLOCK_REALTIME", source: Box::new(e) })?;
    let mut open_flows = OpenFlows::new(open, refresh_fd, clock);
    if pin == PinOutcome::Reused {
        // Workload ids are this process's names (`daemon::local::Names`): the previous
        // process's ids mean nothing now, so its records forget them (the kernel resolves
        // them again from the new assignments at every refresh and at close).
        open_flows.forget_workloads().map_err(|e| LoadError::Other {
            step: "clearing workload ids in the pinned open map",
            source: Box::new(e),
        })?;
    }

    // Attach last: from here on every TCP state change on the host is seen.
    let state: &mut BtfTracePoint = program(&mut ebpf, abi::FLOW_STATE_PROG)?;
    state
        .attach()
        .map_err(|e| classify("attaching flow_state to tp_btf/inet_sock_set_state", Some(abi::FLOW_STATE_PROG), e))?;

    Ok(FlowProbe {
        events: FlowEvents::new(events, clock),
        assignments: Assignments::new(by_addr, by_port),
        open_flows,
        counters: Counters::new(counters),
        attachment: Attachment { ebpf, clock },
        pin,
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| LoadError::Other {
        step: "finding the programs in the object",
        source: format!("program `{name}` is missing from flow.bpf.o").into(),
    })?;
    prog.try_into().map_err(|e| classify("checking the program type", Some(name), e))
}

fn read_btf(path: &Path) -> Result<Btf, LoadError> {
    if !path.exists() {
        return Err(LoadError::BtfMissing { path: path.to_path_buf() });
    }
    Btf::parse_file(path, Endianness::default()).map_err(|source| LoadError::Btf { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_ringbuf_sizes() {
        for bytes in [0, 1000, 4096 + 1, 3 * 4096] {
            let cfg = LoaderConfig { ringbuf_bytes: bytes, ..LoaderConfig::default() };
            assert!(matches!(check_config(&cfg), Err(LoadError::Config(_))), "{bytes}");
        }
        assert!(check_config(&LoaderConfig::default()).is_ok());
    }

    #[test]
    fn missing_btf_is_named() {
        let cfg = LoaderConfig { btf_path: "/nonexistent/vmlinux".into(), ..LoaderConfig::default() };
        let err = load(&cfg).expect_err("no BTF there");
        assert!(matches!(err, LoadError::BtfMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }

    #[test]
    fn verifier_log_is_in_the_message() {
        let err = classify(
            "loading",
            Some("flow_state"),
            ProgramError::LoadError {
                io_error: io::Error::from_raw_os_error(libc::EINVAL),
                verifier_log: aya_obj_log("R1 invalid mem access 'scalar'"),
            },
        );
        assert!(matches!(err, LoadError::Verifier { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("flow_state") && msg.contains("R1 invalid mem access"), "{msg}");
    }

    #[test]
    fn missing_helper_is_a_kernel_feature() {
        let err = classify(
            "loading",
            Some("flow_state"),
            ProgramError::LoadError {
                io_error: io::Error::from_raw_os_error(libc::EINVAL),
                verifier_log: aya_obj_log("invalid func unknown#208"),
            },
        );
        assert!(matches!(err, LoadError::KernelFeature { .. }), "{err:?}");
        assert!(err.to_string().contains("6.1"), "{err}");
    }

    #[test]
    fn eperm_is_privilege() {
        let err = classify(
            "creating maps",
            None,
            EbpfError::MapError(MapError::CreateError {
                name: "flow_open".into(),
                io_error: io::Error::from_raw_os_error(libc::EPERM),
            }),
        );
        assert!(matches!(err, LoadError::Privilege { .. }), "{err:?}");
        assert!(err.to_string().contains("CAP_BPF"), "{err}");
    }

    fn aya_obj_log(s: &str) -> aya_obj::VerifierLog {
        aya_obj::VerifierLog::new(s.to_string())
    }
}
