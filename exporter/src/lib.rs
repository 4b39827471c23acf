//! Userspace side of the flowmap TCP flow probe.
//!
//! The kernel side (`exporter-ebpf/flow.bpf.c`, C with CO-RE, compiled by
//! `build.rs` and embedded in this crate) follows every TCP socket of the
//! host through `tp_btf/inet_sock_set_state`. This crate loads and attaches
//! it with aya and turns what it records into typed values:
//!
//! - every connection that closes (including ones refused or timed out before
//!   ESTABLISHED) arrives once per local socket as a [`FlowEvent`] through a
//!   ring buffer ([`FlowEvents`]);
//! - every connection still open can be listed with its counters so far
//!   ([`OpenFlows::snapshot`]), so a batch can report long-lived flows;
//! - userspace tells the kernel which local addresses, or (address, port)
//!   pairs, belong to which workload ([`Assignments`]); each flow carries the
//!   resulting id;
//! - losses are counted in the kernel and readable here ([`Counters`]).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut probe = flowmap_exporter::load(&flowmap_exporter::LoaderConfig::default())?;
//! probe.assignments.assign_addr("10.0.0.5".parse()?, 42)?;
//! let mut closed = Vec::new();
//! if probe.events.wait(std::time::Duration::from_secs(1))? {
//!     probe.events.read_available(&mut closed);
//! }
//! let open = probe.open_flows.snapshot()?;
//! let lost = probe.counters.read()?.ringbuf_drops;
//! # let _ = (open, lost); Ok(()) }
//! ```
//!
//! # Layout
//! - [`abi`]: `#[repr(C)]` mirror of `exporter-ebpf/flow.h`, checked against it.
//! - [`loader`]: load and attach; errors that name what is missing.
//! - [`events`]: ring buffer reader and the typed [`FlowEvent`].
//! - [`open`]: open-connection snapshots with live counters.
//! - [`sockets`]: the socket iterator: listeners, and connections older than the probe.
//! - [`assign`]: per-address and per-(address, port) workload assignments.
//! - [`counters`]: kernel-side loss counters.
//! - [`bpf_stats`]: the kernel's run-time statistics for the flow programs (benchmarks).
//! - [`clock`]: kernel CLOCK_TAI timestamps to UNIX time.
//! - `sys`: the few raw system calls aya does not wrap (the unsafe code).
//! - [`daemon`]: the host daemon behind the `flowmap-exporter` binary (batches, local
//!   workloads, heartbeats, sinks, control socket, metrics).
#![deny(missing_docs)]

pub mod abi;
pub mod assign;
pub mod bpf_stats;
pub mod clock;
pub mod counters;
pub mod daemon;
pub mod events;
pub mod loader;
pub mod open;
pub mod sockets;
mod sys;

pub use assign::{AssignError, Assignments};
pub use clock::{TaiClock, UnixNanos};
pub use counters::{CounterSnapshot, Counters};
pub use events::{DecodeError, Direction, FlowEvent, FlowEvents, FlowFlags, WorkloadSource};
pub use loader::{load, open_map_pin_path, Attachment, FlowProbe, LoadError, LoaderConfig, PinOutcome};
pub use open::{OpenFlows, OpenFlowsError, OpenSnapshot};
pub use sockets::{Listener, ScanError, SeededConnection, SocketScan};
