//! Connections whose local address left the host: they end, for the exporter, where the
//! address was last known here.
//!
//! Why: Linux keeps a TCP socket when its local address is removed from the interface (a
//! secondary IP or a VIP moved to another host, a DHCP lease changed). Nothing sent to the
//! address reaches the socket any more, yet an idle one without keepalives stays established
//! for hours. Reported as open, it claimed the address for its local workload after the
//! address had left, and it stood as the other end's record of any connection of the same
//! 4-tuple that the address's next holder made (found by a fresh user: a server's record of a
//! connection from the next holder was attributed to this host's workload through such a
//! record). So:
//! - when an address of the host (the daemon's network namespace) was here at one window's end
//!   and is gone at the next, it *left* at the earlier end, as far as the exporter can tell
//!   (the last instant it knew the address was here);
//! - a connection of the host's namespace on a departed address that started by the last time
//!   the address was seen absent is reported once more, closed, ending at
//!   `max(start, left)`, and never again (its later slices and its close are dropped);
//! - connections that start after the address came back are reported as usual.
//!
//! What it does not cover (see exporter/DESIGN.md): addresses in other network namespaces (a
//! container's address goes with its namespace, and with its sockets, in the common case), an
//! address that leaves and comes back between two windows' ends, and a connection on an
//! address that left before the exporter started.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::events::FlowEvent;

/// How long a departure, and a connection ended here, are remembered without being seen
/// again: ten minutes of window time. A connection ended here is in every open-connection
/// snapshot while it lives, so it is forgotten only once it is gone (or after ten minutes of
/// failed snapshots, after which it would be reported again).
const FORGET_NS: u64 = 600 * 1_000_000_000;

/// A departed address: last known here at `left`, last seen absent at `absent`.
#[derive(Clone, Copy, Debug)]
struct Departure {
    left: u64,
    absent: u64,
}

/// The host's addresses over windows, and the connections ended because theirs left.
#[derive(Debug, Default)]
pub struct Departures {
    /// The host's addresses at the previous window's end (`None` before the first window, or
    /// when they could not be read).
    held: Option<(u64, HashSet<IpAddr>)>,
    departed: HashMap<IpAddr, Departure>,
    /// Connections ended here (socket cookie), with the window end they were last seen at.
    ended: HashMap<u64, u64>,
}

/// What to do with one connection record in this window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Report it as it is.
    Keep,
    /// Report it closed, ending at this time (ns since the epoch).
    EndAt(u64),
    /// It already ended here: report nothing.
    Drop,
}

impl Departures {
    /// Starts the window ending at `to` (ns since the epoch) with the host's addresses now
    /// (`None`: they could not be read; no departure is inferred from that).
    pub fn window(&mut self, to: u64, addresses: Option<&[IpAddr]>) {
        let Some(now) = addresses else {
            self.held = None;
            return;
        };
        let now: HashSet<IpAddr> = now.iter().copied().collect();
        if let Some((at, before)) = &self.held {
            for ip in before.difference(&now) {
                self.departed.insert(*ip, Departure { left: *at, absent: to });
            }
        }
        for (ip, d) in &mut self.departed {
            if !now.contains(ip) {
                d.absent = to;
            }
        }
        self.departed.retain(|_, d| d.absent.saturating_add(FORGET_NS) > to);
        self.ended.retain(|_, seen| seen.saturating_add(FORGET_NS) > to);
        self.held = Some((to, now));
    }

    /// The fate of `ev` in the window ending at `to`, whose `start` and `end` are as reported
    /// (ns since the epoch); `host`: whether it is in the daemon's network namespace.
    pub fn fate(&mut self, ev: &FlowEvent, start: u64, end: u64, host: bool, to: u64) -> Fate {
        if let Some(seen) = self.ended.get_mut(&ev.cookie) {
            if ev.is_open() {
                *seen = to;
            } else {
                self.ended.remove(&ev.cookie);
            }
            return Fate::Drop;
        }
        let Some(d) = self.departed.get(&ev.local.ip()).filter(|_| host) else { return Fate::Keep };
        if start > d.absent || end <= d.left {
            return Fate::Keep;
        }
        // Also a close: a snapshot is not atomic, the same connection may be in it too.
        self.ended.insert(ev.cookie, to);
        Fate::EndAt(start.max(d.left).min(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn conn(cookie: u64, local: &str, open: bool) -> FlowEvent {
        FlowEvent {
            cookie,
            local: format!("{local}:40001").parse().unwrap(),
            remote: "10.76.0.1:80".parse().unwrap(),
            direction: crate::events::Direction::Client,
            opened: None,
            established: None,
            closed: None,
            bytes_sent: 0,
            bytes_received: 0,
            bytes_retrans: 0,
            segs_out: 0,
            segs_in: 0,
            total_retrans: 0,
            srtt_us: 0,
            cgroup_id: 0,
            netns_ino: 0,
            workload_id: None,
            workload_source: None,
            flags: crate::events::FlowFlags(if open { crate::abi::FLOW_F_OPEN } else { 0 }),
            tcp_state: 0,
            error: None,
        }
    }

    #[test]
    fn a_connection_ends_where_its_address_was_last_known_and_is_not_reported_again() {
        let (a, b): (IpAddr, IpAddr) = ("10.1.0.9".parse().unwrap(), "10.1.0.7".parse().unwrap());
        let mut d = Departures::default();
        d.window(10 * S, Some(&[a, b]));
        let zombie = conn(1, "10.1.0.9", true);
        let other = conn(2, "10.1.0.7", true);
        assert_eq!(d.fate(&zombie, 11 * S, 20 * S - 1, true, 20 * S), Fate::Keep);
        d.window(20 * S, Some(&[a, b]));
        // a leaves during [20, 30): the connection ends at 20 s, once.
        d.window(30 * S, Some(&[b]));
        assert_eq!(d.fate(&zombie, 11 * S, 30 * S - 1, true, 30 * S), Fate::EndAt(20 * S));
        assert_eq!(d.fate(&other, 11 * S, 30 * S - 1, true, 30 * S), Fate::Keep);
        d.window(40 * S, Some(&[b]));
        assert_eq!(d.fate(&zombie, 11 * S, 40 * S - 1, true, 40 * S), Fate::Drop);
        // Another namespace's address of the same value is not the host's.
        assert_eq!(d.fate(&conn(3, "10.1.0.9", true), 11 * S, 40 * S - 1, false, 40 * S), Fate::Keep);
        // One that started in [20, 30), before the exporter saw the address gone: at its start.
        assert_eq!(d.fate(&conn(4, "10.1.0.9", false), 25 * S, 26 * S, true, 40 * S), Fate::EndAt(25 * S));
        // a comes back during [40, 50): connections from then on are its new holder's.
        d.window(50 * S, Some(&[a, b]));
        assert_eq!(d.fate(&conn(5, "10.1.0.9", true), 45 * S, 50 * S - 1, true, 50 * S), Fate::Keep);
        // The zombie's close is dropped too, and then it is forgotten.
        assert_eq!(d.fate(&conn(1, "10.1.0.9", false), 11 * S, 52 * S, true, 60 * S), Fate::Drop);
        assert!(!d.ended.contains_key(&1));
        // a leaves again (last known here at 50 s). A close and a snapshot entry of one
        // connection in one window: one record.
        d.window(70 * S, Some(&[b]));
        d.window(80 * S, Some(&[b]));
        assert_eq!(d.fate(&conn(6, "10.1.0.9", false), 45 * S, 71 * S, true, 80 * S), Fate::EndAt(50 * S));
        assert_eq!(d.fate(&conn(6, "10.1.0.9", true), 45 * S, 80 * S - 1, true, 80 * S), Fate::Drop);
    }

    #[test]
    fn unreadable_addresses_end_nothing() {
        let a: IpAddr = "10.1.0.9".parse().unwrap();
        let mut d = Departures::default();
        d.window(10 * S, Some(&[a]));
        d.window(20 * S, None);
        d.window(30 * S, Some(&[]));
        assert_eq!(d.fate(&conn(1, "10.1.0.9", true), 11 * S, 30 * S - 1, true, 30 * S), Fate::Keep);
    }
}
