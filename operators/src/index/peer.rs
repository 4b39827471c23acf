//! The peer rule's records: which of the other end's connection records are the same
//! connection as a flow being looked up, and which end counts it.
//!
//! Per address, the index keeps the connection records of that address's own end ([`Conn`],
//! the other end reads them) and, for the fleet flows whose *remote* end it is, what their
//! exporters reported ([`Mirror`]: the same records seen from this end). A 4-tuple names one
//! connection at a time but may be reused right after, so a connection record matches a flow
//! only when it is provably that flow's connection and no other's: its start is within the guard
//! band of the flow's (or, when either end did not see the start, the lifetimes overlap), and it
//! can be no other connection's on the 4-tuple, either because the lifetimes rule that out, or
//! because the flow's exporter reported no such connection *and* would have (the windows where
//! one could have been are inside its run: every record of them delivered, see
//! [`crate::records::Promise`], as known at the lookup). Otherwise the record is no peer of the
//! flow, and the claims decide as if the other end had not reported ([`certain`]).
//!
//! # Time
//! Records are applied at their batch's dataflow time, which is at most their start, and a
//! flow is looked up at `start + guard` or later, so what the lookup reads is exactly the
//! evidence of times up to its own; a run's promise of a later window is not known yet, which
//! only makes a match uncertain, never wrong.

use crate::records::{direction, ConnIn, FlowRow};
use crate::types::{Ip, Time};

use super::arena::Arena;

/// A connection record of this address's end.
#[derive(Clone, Copy, Debug)]
pub(super) struct Conn {
    pub peer: Ip,
    pub start: Time,
    pub end: Time,
    /// The reporting end's first lookup of this connection.
    pub lookup: Time,
    pub name: u32,
    pub local_port: u16,
    pub peer_port: u16,
    pub start_unobserved: bool,
    pub direction: u8,
}

/// A connection that an exporter reported with this address as its remote end: `peer` is the
/// reporting end's address, `peer_port` its port, `local_port` this end's port.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mirror {
    pub peer: Ip,
    pub start: Time,
    pub end: Time,
    pub local_port: u16,
    pub peer_port: u16,
    pub start_unobserved: bool,
}

/// Adds connection record `c` (named `name`) to `conns`, merging the records of one
/// connection (slices of an open one); returns the connection's end so far.
pub(super) fn add_conn(conns: &mut Vec<Conn>, arena: &mut Arena, c: &ConnIn, name: &str) -> Time {
    let found = conns.iter_mut().find(|k| {
        k.local_port == c.local_port
            && k.peer == c.peer
            && k.peer_port == c.peer_port
            && k.start == c.start
            && arena.is(k.name, name)
    });
    match found {
        Some(k) => {
            // Order-independent merges: records of one instant may be applied in any order.
            k.end = k.end.max(c.end);
            k.lookup = k.lookup.min(c.lookup);
            k.start_unobserved |= c.start_unobserved;
            k.end
        }
        None => {
            let name = arena.push(name);
            conns.push(Conn {
                peer: c.peer,
                start: c.start,
                end: c.end,
                lookup: c.lookup,
                name,
                local_port: c.local_port,
                peer_port: c.peer_port,
                start_unobserved: c.start_unobserved,
                direction: c.direction,
            });
            c.end
        }
    }
}

/// Adds the mirror of `c` (stored under `c.peer`) to `mirrors`, merging the records of one
/// connection; returns the connection's end so far.
pub(super) fn add_mirror(mirrors: &mut Vec<Mirror>, c: &ConnIn) -> Time {
    let found = mirrors.iter_mut().find(|m| {
        m.peer == c.local && m.peer_port == c.local_port && m.local_port == c.peer_port && m.start == c.start
    });
    match found {
        Some(m) => {
            m.end = m.end.max(c.end);
            m.start_unobserved |= c.start_unobserved;
            m.end
        }
        None => {
            mirrors.push(Mirror {
                peer: c.local,
                start: c.start,
                end: c.end,
                local_port: c.peer_port,
                peer_port: c.local_port,
                start_unobserved: c.start_unobserved,
            });
            c.end
        }
    }
}

/// The flow being looked up, as the peer rule sees it: what is the same for every record of its
/// connection looked up at one time (so that whichever is looked up first, the connection's
/// verdict is the same).
#[derive(Clone, Copy, Debug)]
pub(super) struct Flow<'a> {
    /// Its reporting end (the local address and port of its record).
    pub local: Ip,
    pub local_port: u16,
    /// This end's port (the record's remote port).
    pub port: u16,
    pub start: Time,
    /// The latest end its exporter's records of the connection applied so far show.
    pub end: Time,
    /// Whether any of them did not see the start.
    pub start_unobserved: bool,
    /// What the runs of its exporter's stream cover, as known now: `[from, to)` each.
    pub runs: &'a [(Time, Time)],
}

/// Whether `k` mirrors `flow`'s 4-tuple (this end's port and address pair reversed).
pub(super) fn mirrored(k: &Conn, flow: &Flow) -> bool {
    k.local_port == flow.port && k.peer == flow.local && k.peer_port == flow.local_port
}

/// Whether a connection record and a flow record (start, end, start seen) could be the same
/// connection, given that their 4-tuples mirror each other.
pub(super) fn same_connection(k: &Conn, start: Time, end: Time, unobserved: bool, guard: Time) -> bool {
    if !k.start_unobserved && !unobserved {
        return k.start.abs_diff(start) <= guard;
    }
    // One end did not see the start: the lifetimes must overlap (a 4-tuple names one
    // connection at a time).
    k.start <= end.saturating_add(guard) && start <= k.end.saturating_add(guard)
}

/// Whether `k`, a record that [`same_connection`] pairs with `flow`, is provably `flow`'s
/// connection (see the module docs).
///
/// Any other connection of the 4-tuple either ended before `flow` started (an *earlier* one) or
/// started after it ended (a *later* one). `k` is no earlier one's record if it lasted past
/// `flow.start + guard` (the earlier one's end, at most `flow.start`, plus the skew of the two
/// ends' clocks), and no later one's if it started before `flow.end - guard` (a slice's end is
/// a lower bound of its connection's, which only strengthens this). On a side not excluded so,
/// no connection the exporter reported may be one that `k` could be the record of (by
/// [`same_connection`]), and the windows where an unreported one could have been must be inside
/// one run of the flow's exporter stream (an exporter reports every connection in each window it
/// is open, and sees the start of every connection started in a window of a run): before
/// `flow`, from `k.start - guard` (where an earlier one could still have been alive); after it,
/// up to `k.start + guard` (by when a later one that `k` could be the record of had started).
pub(super) fn certain(k: &Conn, flow: &Flow, mirrors: &[Mirror], guard: Time) -> bool {
    let earlier = k.end <= flow.start.saturating_add(guard);
    let later = k.start.saturating_add(guard) >= flow.end;
    if !earlier && !later {
        return true;
    }
    let rival = mirrors.iter().any(|m| {
        let side = (earlier && m.start < flow.start) || (later && m.start > flow.start);
        let as_k = if !k.start_unobserved && !m.start_unobserved {
            m.start.abs_diff(k.start) <= guard
        } else {
            m.start <= k.end.saturating_add(guard) && k.start <= m.end.saturating_add(guard)
        };
        m.peer == flow.local && m.peer_port == flow.local_port && m.local_port == flow.port && side && as_k
    });
    if rival {
        return false;
    }
    // An earlier one that `k` could be the record of was alive after `k.start - guard`; a later
    // one started by `k.start + guard` (`k` began by its own start, the other end saw it
    // within the skew of that; a connection started in a covered window was seen starting).
    let (lo, hi) = (k.start.saturating_sub(guard), k.start.saturating_add(guard));
    let covered = |a: Time, b: Time| flow.runs.iter().any(|&(from, to)| from <= a && b < to);
    // `[lo, flow.start)` and `(flow.end, hi]`, where not empty.
    let before = !earlier || lo >= flow.start || covered(lo, flow.start - 1);
    let after = !later || hi <= flow.end || covered(flow.end + 1, hi);
    before && after
}

/// Whether this end's record (`row`) carries a connection that the other end reported too
/// (its record `k`) in aggregates, so that exactly one end does.
///
/// The client end does, if the server end's lookup saw the client's record (the client's
/// record entered no later than the server's lookup); otherwise the server end counted it
/// (it saw no other end) and the client does not. The server end never does when it sees the
/// client's record. Which end is the server comes from the directions, and for two ends that
/// do not know theirs, from the address order (`lower`: this end's (address, port) is the
/// lower one, and plays the server). Both ends decide the same way from what each saw; only
/// when neither end's record reached the other's lookup (both batches late) do both count.
pub(super) fn counts(row: &FlowRow, k: &Conn, lower: bool) -> bool {
    let server = match (row.direction, k.direction) {
        (direction::SERVER, _) | (_, direction::CLIENT) => true,
        (direction::CLIENT, _) | (_, direction::SERVER) => false,
        _ => lower,
    };
    !server && row.batch_at <= k.lookup
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(start: Time, end: Time) -> Conn {
        Conn {
            peer: Ip(1),
            start,
            end,
            lookup: 0,
            name: 0,
            local_port: 443,
            peer_port: 50000,
            start_unobserved: false,
            direction: direction::SERVER,
        }
    }

    fn flow(start: Time, end: Time, run: Option<&'static [(Time, Time)]>) -> Flow<'static> {
        Flow {
            local: Ip(1),
            local_port: 50000,
            port: 443,
            start,
            end,
            start_unobserved: false,
            runs: run.unwrap_or(&[]),
        }
    }

    fn mirror(start: Time, end: Time) -> Mirror {
        Mirror { peer: Ip(1), start, end, local_port: 443, peer_port: 50000, start_unobserved: false }
    }

    #[test]
    fn a_record_another_connection_of_the_tuple_could_have_is_not_the_flows() {
        // The flow [100, 110] and a second connection [120, 130] on the same 4-tuple; the
        // other end reported only the second (at 125): it could be either's (guard 50).
        let k = conn(125, 135);
        let seen = [mirror(100, 110), mirror(120, 130)];
        assert!(!certain(&k, &flow(100, 110, Some(&[(0, 1000)])), &seen, 50));
        assert!(!certain(&k, &flow(120, 130, Some(&[(0, 1000)])), &seen, 50), "nor provably the second's");
        // With the guard at 10, the first connection is too far from k to be its.
        assert!(certain(&k, &flow(120, 130, Some(&[(0, 1000)])), &seen, 10));
    }

    #[test]
    fn lifetimes_can_rule_the_others_out() {
        // k lasted past the flow's start + guard and began before its end - guard: no other
        // connection of the 4-tuple had it, whatever was reported.
        let k = conn(100, 400);
        assert!(certain(&k, &flow(101, 390, None), &[mirror(60, 99), mirror(395, 420)], 50));
        // Only the side not ruled out needs proof: k ends early, so an earlier connection could
        // be k's; one was reported (60..99, within 50 of k's start 100).
        let short = conn(100, 120);
        assert!(!certain(&short, &flow(101, 390, Some(&[(0, 1000)])), &[mirror(60, 99)], 50));
        assert!(certain(&short, &flow(101, 390, Some(&[(0, 1000)])), &[mirror(395, 420)], 50));
    }

    #[test]
    fn a_match_is_uncertain_where_the_run_does_not_reach() {
        // No other connection seen; after the flow's end, up to k.start + guard = 175, must be
        // covered, and before its start, from k.start - guard = 75.
        let k = conn(125, 135);
        let seen = [mirror(100, 110)];
        assert!(!certain(&k, &flow(100, 110, Some(&[(0, 175)])), &seen, 50));
        assert!(certain(&k, &flow(100, 110, Some(&[(0, 176)])), &seen, 50));
        assert!(!certain(&k, &flow(100, 110, Some(&[(76, 176)])), &seen, 50));
        assert!(certain(&k, &flow(100, 110, Some(&[(75, 176)])), &seen, 50));
        assert!(!certain(&k, &flow(100, 110, Some(&[(75, 120), (120, 176)])), &seen, 50), "within one run");
        assert!(!certain(&k, &flow(100, 110, None), &[], 50), "no promise known: no window is covered");
    }

    #[test]
    fn unobserved_starts_compare_lifetimes() {
        let mut k = conn(100, 108);
        k.start_unobserved = true;
        let f = flow(105, 125, Some(&[(0, 1000)]));
        assert!(certain(&k, &f, &[], 10));
        assert!(!certain(&k, &f, &[mirror(60, 95)], 10), "another connection within the guard of k's lifetime");
        assert!(certain(&k, &f, &[mirror(40, 80)], 10));
    }
}
