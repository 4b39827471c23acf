//! `#[repr(C)]` mirrors of `exporter-ebpf/flow.h`, the kernel/user ABI.
//!
//! Why a hand-written mirror rather than bindgen: the header is small, the
//! mirror stays readable, and it avoids a libclang build dependency. What keeps
//! it honest is the layout test at the bottom of this file: the build script
//! compiles `exporter/abi_layout.c` against `flow.h`, prints every struct size,
//! field offset/size and constant as Rust (`$OUT_DIR/abi_layout.rs`) and also
//! asserts the same numbers for `-target bpf`; the test compares all of them
//! with this module.
//!
//! Types here are raw: kernel byte orders and encodings. The typed view is
//! [`crate::events::FlowEvent`].

use std::mem::size_of;

/// Version of the ABI in `flow.h` (`FLOW_ABI_VERSION`).
pub const FLOW_ABI_VERSION: u32 = 3;

/// Default ring buffer size in bytes (`FLOW_RINGBUF_BYTES`).
pub const FLOW_RINGBUF_BYTES: u32 = 256 * 1024;
/// Default capacity of the open-connection map (`FLOW_OPEN_MAX_ENTRIES`).
pub const FLOW_OPEN_MAX_ENTRIES: u32 = 65536;
/// Default capacity of each workload map (`FLOW_WORKLOAD_MAX_ENTRIES`).
pub const FLOW_WORKLOAD_MAX_ENTRIES: u32 = 65536;

/// Direction not observed (`FLOW_DIR_UNKNOWN`).
pub const FLOW_DIR_UNKNOWN: u8 = 0;
/// Active open (`FLOW_DIR_CLIENT`).
pub const FLOW_DIR_CLIENT: u8 = 1;
/// Passive open (`FLOW_DIR_SERVER`).
pub const FLOW_DIR_SERVER: u8 = 2;

/// Closed before ESTABLISHED (`FLOW_F_NEVER_ESTABLISHED`).
pub const FLOW_F_NEVER_ESTABLISHED: u32 = 1 << 0;
/// No open record at close (`FLOW_F_NO_OPEN_RECORD`).
pub const FLOW_F_NO_OPEN_RECORD: u32 = 1 << 1;
/// Workload from the (address, port) map (`FLOW_F_WORKLOAD_BY_PORT`).
pub const FLOW_F_WORKLOAD_BY_PORT: u32 = 1 << 2;
/// Workload from the address map (`FLOW_F_WORKLOAD_BY_ADDR`).
pub const FLOW_F_WORKLOAD_BY_ADDR: u32 = 1 << 3;
/// The peer's FIN was received (`FLOW_F_FIN_RECEIVED`).
pub const FLOW_F_FIN_RECEIVED: u32 = 1 << 4;
/// Record of a still-open connection (`FLOW_F_OPEN`).
pub const FLOW_F_OPEN: u32 = 1 << 5;
/// Refresh could not confirm the socket (`FLOW_F_STALE`).
pub const FLOW_F_STALE: u32 = 1 << 6;
/// The handshake was not observed; times are when the probe first saw it (`FLOW_F_SEEDED`).
pub const FLOW_F_SEEDED: u32 = 1 << 7;

/// Counter index: failed ring buffer reservations (`FLOW_CTR_RINGBUF_DROPS`).
pub const FLOW_CTR_RINGBUF_DROPS: u32 = 0;
/// Counter index: open records that did not fit (`FLOW_CTR_OPEN_MAP_FULL`).
pub const FLOW_CTR_OPEN_MAP_FULL: u32 = 1;
/// Counter index: stale records seen by refresh (`FLOW_CTR_REFRESH_STALE`).
pub const FLOW_CTR_REFRESH_STALE: u32 = 2;
/// Counter index: open records seeded from existing sockets (`FLOW_CTR_SEEDED`).
pub const FLOW_CTR_SEEDED: u32 = 3;
/// Number of slots in the counter array (`FLOW_CTR_COUNT`).
pub const FLOW_CTR_COUNT: u32 = 4;

/// Ring buffer of closed flows (`FLOW_EVENTS_MAP`).
pub const FLOW_EVENTS_MAP: &str = "flow_events";
/// Open-connection map (`FLOW_OPEN_MAP`).
pub const FLOW_OPEN_MAP: &str = "flow_open";
/// Per-address workload map (`FLOW_WL_ADDR_MAP`).
pub const FLOW_WL_ADDR_MAP: &str = "flow_wl_addr";
/// Per-(address, port) workload map (`FLOW_WL_PORT_MAP`).
pub const FLOW_WL_PORT_MAP: &str = "flow_wl_port";
/// Per-CPU counter array (`FLOW_COUNTERS_MAP`).
pub const FLOW_COUNTERS_MAP: &str = "flow_counters";
/// State-change program (`FLOW_STATE_PROG`).
pub const FLOW_STATE_PROG: &str = "flow_state";
/// Open-record refresh program (`FLOW_REFRESH_PROG`).
pub const FLOW_REFRESH_PROG: &str = "flow_refresh";
/// Socket iterator that seeds the open map and lists listeners (`FLOW_SEED_PROG`).
pub const FLOW_SEED_PROG: &str = "flow_seed";

/// `flow_sock.kind`: a listening socket (`FLOW_SOCK_LISTENER`).
pub const FLOW_SOCK_LISTENER: u8 = 1;
/// `flow_sock.kind`: a connection the pass seeded into the open map (`FLOW_SOCK_SEEDED`).
pub const FLOW_SOCK_SEEDED: u8 = 2;
/// `flow_sock.flags`: an IPv6 socket with `IPV6_V6ONLY` (`FLOW_SOCK_F_V6ONLY`).
pub const FLOW_SOCK_F_V6ONLY: u8 = 1;

/// `AF_INET` as stored in [`RawFlowEvent::family`].
pub const AF_INET: u16 = 2;
/// `AF_INET6` as stored in [`RawFlowEvent::family`].
pub const AF_INET6: u16 = 10;

/// `struct flow_event`: one TCP connection as seen by one local socket.
///
/// Field meanings are documented in `flow.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawFlowEvent {
    /// Socket cookie.
    pub cookie: u64,
    /// CLOCK_TAI ns of the first handshake state; 0 if not observed.
    pub opened_ns: u64,
    /// CLOCK_TAI ns of ESTABLISHED; 0 if never.
    pub established_ns: u64,
    /// CLOCK_TAI ns of CLOSE; 0 while open.
    pub closed_ns: u64,
    /// cgroup v2 id of the socket.
    pub cgroup_id: u64,
    /// Payload bytes sent, retransmissions excluded.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Payload bytes retransmitted.
    pub bytes_retrans: u64,
    /// Segments sent.
    pub segs_out: u32,
    /// Segments received.
    pub segs_in: u32,
    /// Retransmitted segments.
    pub total_retrans: u32,
    /// Smoothed RTT, microseconds.
    pub srtt_us: u32,
    /// Local workload id; 0 = none.
    pub workload_id: u32,
    /// Network namespace inode.
    pub netns_ino: u32,
    /// `FLOW_F_*` bits.
    pub flags: u32,
    /// `sk_err` at close.
    pub sk_err: i32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host order.
    pub local_port: u16,
    /// Remote port, host order.
    pub remote_port: u16,
    /// `FLOW_DIR_*`.
    pub direction: u8,
    /// TCP state before the event.
    pub state: u8,
    /// Local address, network order, IPv4 as `::ffff:a.b.c.d`.
    pub local_addr: [u8; 16],
    /// Remote address, network order, IPv4 as `::ffff:a.b.c.d`.
    pub remote_addr: [u8; 16],
}

impl RawFlowEvent {
    /// Decode a ring buffer record. `None` if `bytes` is not exactly one
    /// `struct flow_event`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above; `RawFlowEvent` is `repr(C)` and
        // made of integers and byte arrays only, so every bit pattern is a
        // valid value; `read_unaligned` makes no alignment assumption.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// `struct flow_open`: value of the open-connection map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawFlowOpen {
    /// The flow so far.
    pub ev: RawFlowEvent,
    /// Kernel address of the socket; opaque, for the refresh program only.
    pub sk: u64,
}

/// `struct workload_addr_key`: key of the per-address workload map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RawWorkloadAddrKey {
    /// Address, network order, IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
}

/// `struct workload_port_key`: key of the per-(address, port) workload map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RawWorkloadPortKey {
    /// Address, network order, IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
    /// Local port, host order.
    pub port: u16,
    /// Must be zero.
    pub _pad: u16,
}

/// `struct flow_sock`: one socket listed by the `flow_seed` iterator.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawFlowSock {
    /// Socket cookie.
    pub cookie: u64,
    /// cgroup v2 id of the socket.
    pub cgroup_id: u64,
    /// Network namespace inode.
    pub netns_ino: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host order.
    pub local_port: u16,
    /// Remote port, host order (0 for a listener).
    pub remote_port: u16,
    /// `FLOW_SOCK_*`.
    pub kind: u8,
    /// TCP state.
    pub state: u8,
    /// Local address, network order, IPv4 as `::ffff:a.b.c.d`.
    pub local_addr: [u8; 16],
    /// Remote address, network order, IPv4 as `::ffff:a.b.c.d`.
    pub remote_addr: [u8; 16],
    /// `FLOW_SOCK_F_*`.
    pub flags: u8,
    /// Zero.
    pub _pad: [u8; 3],
    /// cgroup v2 id of the task holding the socket (one record per holding task).
    pub holder_cgroup_id: u64,
}

impl RawFlowSock {
    /// Decodes one record of the iterator's output; `None` unless `bytes` is exactly one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above; `RawFlowSock` is `repr(C)` and made of
        // integers and byte arrays only, so every bit pattern is a valid value;
        // `read_unaligned` makes no alignment assumption.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

// SAFETY: all four are `repr(C)`, `Copy`, contain only integers and byte
// arrays (every bit pattern valid) and have no implicit padding: the layout
// test below checks that the fields cover each struct (sizes match flow.h,
// which keeps its padding explicit).
unsafe impl aya::Pod for RawFlowEvent {}
// SAFETY: see above.
unsafe impl aya::Pod for RawFlowOpen {}
// SAFETY: see above.
unsafe impl aya::Pod for RawWorkloadAddrKey {}
// SAFETY: see above.
unsafe impl aya::Pod for RawWorkloadPortKey {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    mod c {
        include!(concat!(env!("OUT_DIR"), "/abi_layout.rs"));
    }

    fn c_field(s: &str, f: &str) -> (usize, usize) {
        c::C_FIELDS
            .iter()
            .find(|(cs, cf, _, _)| *cs == s && *cf == f)
            .map(|&(_, _, off, size)| (off, size))
            .unwrap_or_else(|| panic!("{s}.{f} is not listed by abi_layout.c"))
    }

    fn c_size(s: &str) -> usize {
        c::C_SIZES
            .iter()
            .find(|(cs, _)| *cs == s)
            .map(|&(_, size)| size)
            .unwrap_or_else(|| panic!("sizeof {s} is not listed by abi_layout.c"))
    }

    fn c_const(name: &str) -> u64 {
        c::C_CONSTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
            .unwrap_or_else(|| panic!("{name} is not listed by abi_layout.c"))
    }

    /// Size of a field's type, from a value of the struct.
    fn size_of_val_of<T>(_: &T) -> usize {
        size_of::<T>()
    }

    /// Check `$rust.$field` against `struct $c.$field`; evaluates to the
    /// number of fields checked.
    macro_rules! check_fields {
        ($rust:ty, $c:literal, $($field:ident),+ $(,)?) => {{
            let v = <$rust>::default();
            let mut n = 0usize;
            $(
                let (off, size) = c_field($c, stringify!($field));
                assert_eq!(offset_of!($rust, $field), off, "offset of {}.{}", $c, stringify!($field));
                assert_eq!(size_of_val_of(&v.$field), size, "size of {}.{}", $c, stringify!($field));
                n += 1;
            )+
            assert_eq!(size_of::<$rust>(), c_size($c), "sizeof {}", $c);
            n
        }};
    }

    #[test]
    fn layout_matches_flow_h() {
        let mut checked = 0;
        checked += check_fields!(
            RawFlowEvent,
            "flow_event",
            cookie,
            opened_ns,
            established_ns,
            closed_ns,
            cgroup_id,
            bytes_sent,
            bytes_received,
            bytes_retrans,
            segs_out,
            segs_in,
            total_retrans,
            srtt_us,
            workload_id,
            netns_ino,
            flags,
            sk_err,
            family,
            local_port,
            remote_port,
            direction,
            state,
            local_addr,
            remote_addr,
        );
        checked += check_fields!(RawFlowOpen, "flow_open", ev, sk);
        checked += check_fields!(RawWorkloadAddrKey, "workload_addr_key", addr);
        checked += check_fields!(RawWorkloadPortKey, "workload_port_key", addr, port, _pad);
        checked += check_fields!(
            RawFlowSock,
            "flow_sock",
            cookie,
            cgroup_id,
            netns_ino,
            family,
            local_port,
            remote_port,
            kind,
            state,
            local_addr,
            remote_addr,
            flags,
            _pad,
            holder_cgroup_id,
        );
        assert_eq!(checked, c::C_FIELDS.len(), "every field printed by abi_layout.c is checked");
        assert_eq!(c::C_SIZES.len(), 5, "every struct printed by abi_layout.c is checked");
    }

    #[test]
    fn constants_match_flow_h() {
        let rust: &[(&str, u64)] = &[
            ("FLOW_ABI_VERSION", FLOW_ABI_VERSION.into()),
            ("FLOW_RINGBUF_BYTES", FLOW_RINGBUF_BYTES.into()),
            ("FLOW_OPEN_MAX_ENTRIES", FLOW_OPEN_MAX_ENTRIES.into()),
            ("FLOW_WORKLOAD_MAX_ENTRIES", FLOW_WORKLOAD_MAX_ENTRIES.into()),
            ("FLOW_DIR_UNKNOWN", FLOW_DIR_UNKNOWN.into()),
            ("FLOW_DIR_CLIENT", FLOW_DIR_CLIENT.into()),
            ("FLOW_DIR_SERVER", FLOW_DIR_SERVER.into()),
            ("FLOW_F_NEVER_ESTABLISHED", FLOW_F_NEVER_ESTABLISHED.into()),
            ("FLOW_F_NO_OPEN_RECORD", FLOW_F_NO_OPEN_RECORD.into()),
            ("FLOW_F_WORKLOAD_BY_PORT", FLOW_F_WORKLOAD_BY_PORT.into()),
            ("FLOW_F_WORKLOAD_BY_ADDR", FLOW_F_WORKLOAD_BY_ADDR.into()),
            ("FLOW_F_FIN_RECEIVED", FLOW_F_FIN_RECEIVED.into()),
            ("FLOW_F_OPEN", FLOW_F_OPEN.into()),
            ("FLOW_F_STALE", FLOW_F_STALE.into()),
            ("FLOW_F_SEEDED", FLOW_F_SEEDED.into()),
            ("FLOW_CTR_RINGBUF_DROPS", FLOW_CTR_RINGBUF_DROPS.into()),
            ("FLOW_CTR_OPEN_MAP_FULL", FLOW_CTR_OPEN_MAP_FULL.into()),
            ("FLOW_CTR_REFRESH_STALE", FLOW_CTR_REFRESH_STALE.into()),
            ("FLOW_CTR_SEEDED", FLOW_CTR_SEEDED.into()),
            ("FLOW_SOCK_LISTENER", FLOW_SOCK_LISTENER.into()),
            ("FLOW_SOCK_SEEDED", FLOW_SOCK_SEEDED.into()),
            ("FLOW_SOCK_F_V6ONLY", FLOW_SOCK_F_V6ONLY.into()),
            ("FLOW_CTR_COUNT", FLOW_CTR_COUNT.into()),
        ];
        for (name, value) in rust {
            assert_eq!(*value, c_const(name), "{name}");
        }
        assert_eq!(rust.len(), c::C_CONSTS.len(), "every constant is checked");

        let names: &[(&str, &str)] = &[
            ("FLOW_EVENTS_MAP", FLOW_EVENTS_MAP),
            ("FLOW_OPEN_MAP", FLOW_OPEN_MAP),
            ("FLOW_WL_ADDR_MAP", FLOW_WL_ADDR_MAP),
            ("FLOW_WL_PORT_MAP", FLOW_WL_PORT_MAP),
            ("FLOW_COUNTERS_MAP", FLOW_COUNTERS_MAP),
            ("FLOW_STATE_PROG", FLOW_STATE_PROG),
            ("FLOW_REFRESH_PROG", FLOW_REFRESH_PROG),
            ("FLOW_SEED_PROG", FLOW_SEED_PROG),
        ];
        for (name, value) in names {
            let c = c::C_NAMES.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            assert_eq!(c, Some(*value), "{name}");
        }
        assert_eq!(names.len(), c::C_NAMES.len(), "every name is checked");
    }

    #[test]
    fn from_bytes_rejects_wrong_lengths() {
        let size = size_of::<RawFlowEvent>();
        assert!(RawFlowEvent::from_bytes(&[]).is_none());
        assert!(RawFlowEvent::from_bytes(&vec![0u8; size - 1]).is_none());
        assert!(RawFlowEvent::from_bytes(&vec![0u8; size + 1]).is_none());
        let mut bytes = vec![0u8; size];
        bytes[0] = 7; // cookie, little-endian on the supported targets
        bytes[offset_of!(RawFlowEvent, local_port)] = 0x50;
        let ev = RawFlowEvent::from_bytes(&bytes).expect("exact length decodes");
        assert_eq!(ev.cookie, u64::from_ne_bytes([7, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(ev.local_port, u16::from_ne_bytes([0x50, 0]));
    }
}
