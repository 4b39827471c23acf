//! The peer rule's records: which of the other end's connection records are the same
//! connection as a flow being looked up, and which end counts it.
//!
//! Per address, the index keeps the connection records of that address's own end ([`Conn`],
//! the other end reads them) and, for the fleet flows whose *remote* end it is, what their
//! exporters reported ([`Mirror`]: the same records seen from this end). A 4-tuple names one
//! connection at a time but may be reused right after (across an owner change of either
//! address, by another host that took over the local address too), so a connection record
//! matches a flow only when it is provably that flow's connection: its start is within the
//! guard band of the flow's (or, when either end did not see the start, the lifetimes overlap),
//! *and* the two lifetimes rule out every other connection of the 4-tuple ([`certain`]).
//! What the flow's exporter did or did not report cannot prove that: another host may have had
//! the local address, or its report may be missing. Otherwise the record is no peer of the flow,
//! and the claims decide as if the other end had not reported.
//!
//! # Time
//! Records are applied at their batch's dataflow time, which is at most their start, and a
//! flow is looked up at `start + guard` or later, so what the lookup reads is exactly the
//! evidence of times up to its own. Every record of one connection looked up at one time sees
//! the same mirrors, hence the same connection (see [`Flow`]).

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
/// reporting end's address, `peer_port` its port, `local_port` this end's port. Read for the
/// flow's own connection: the latest end and any unobserved start over its records.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mirror {
    pub peer: Ip,
    pub start: Time,
    pub end: Time,
    pub local_port: u16,
    pub peer_port: u16,
    pub start_unobserved: bool,
    /// The record's flow id if its exporter stated a connection id, else 0
    /// ([`crate::records::ConnIn::connection`]).
    pub connection: u64,
}

/// Adds connection record `c` (named `name`) to `conns` at time `now`, merging the records of
/// one connection (slices of an open one) while the record so far is within `horizon` of its
/// end; one past it is replaced, swept yet or not (so that when sweeps run changes nothing:
/// found by the index's property test); returns the connection's end so far.
pub(super) fn add_conn(
    conns: &mut Vec<Conn>,
    arena: &mut Arena,
    c: &ConnIn,
    name: &str,
    now: Time,
    horizon: Time,
) -> Time {
    let found = conns.iter_mut().find(|k| {
        k.local_port == c.local_port
            && k.peer == c.peer
            && k.peer_port == c.peer_port
            && k.start == c.start
            && arena.is(k.name, name)
    });
    match found {
        Some(k) if k.end.saturating_add(horizon) > now => {
            // Order-independent merges: records of one instant may be applied in any order.
            k.end = k.end.max(c.end);
            k.lookup = k.lookup.min(c.lookup);
            k.start_unobserved |= c.start_unobserved;
            k.end
        }
        Some(k) => {
            // Past its horizon: it counts for nothing any more, and the new record starts over.
            (k.end, k.lookup, k.start_unobserved, k.direction) = (c.end, c.lookup, c.start_unobserved, c.direction);
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

/// Adds the mirror of `c` (stored under `c.peer`) to `mirrors`. Records of one connection are
/// not merged here (a search per record was measured at about 3% of `flowmap bench`): the
/// reader takes the latest end and any unobserved start over a connection's mirrors.
pub(super) fn add_mirror(mirrors: &mut Vec<Mirror>, c: &ConnIn) {
    mirrors.push(Mirror {
        peer: c.local,
        start: c.start,
        end: c.end,
        local_port: c.peer_port,
        peer_port: c.local_port,
        start_unobserved: c.start_unobserved,
        connection: c.connection,
    });
}

/// The flow being looked up, as the peer rule sees it: what is the same for every record of its
/// connection looked up at one time (so that whichever is looked up first, the connection's
/// verdict is the same).
#[derive(Clone, Copy, Debug)]
pub(super) struct Flow {
    /// Its reporting end (the local address and port of its record).
    pub local: Ip,
    pub local_port: u16,
    /// This end's port (the record's remote port).
    pub port: u16,
    pub start: Time,
    /// The latest end over the mirrors of its own connection (its flow id, stated through a
    /// connection id) applied so far: another exporter naming the same 4-tuple and start says
    /// nothing about this connection's lifetime, and without a connection id none is known to
    /// be its own.
    pub end: Time,
    /// Whether any of them did not see the start.
    pub start_unobserved: bool,
    /// Mirrors count while `end + horizon > now`.
    pub horizon: Time,
    pub now: Time,
}

impl Flow {
    /// Whether mirror `m` is of this flow's 4-tuple and still counts.
    pub fn tuple(&self, m: &Mirror) -> bool {
        m.peer == self.local
            && m.peer_port == self.local_port
            && m.local_port == self.port
            && m.end.saturating_add(self.horizon) > self.now
    }
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
/// connection.
///
/// Any other connection of the 4-tuple either ended before `flow` started (an *earlier* one) or
/// started after it ended (a *later* one), whoever had the addresses then. (A host that kept a
/// half-open connection after its address moved on would break this premise: the exporter
/// ends such a connection where the address was last known on the host, see
/// `flowmap-exporter`'s `daemon::departed`.) `k` is no earlier
/// one's record if it lasted past `flow.start + guard` (the earlier one's end, at most
/// `flow.start`, plus the skew of the two ends' clocks, which the guard band bounds), and no
/// later one's if it started before `flow.end - guard`. A slice's end is a lower bound of its
/// connection's, and a start not seen an upper bound of the real one, which only strengthens
/// both. Short connections (under about twice the guard band) are therefore never proved: the
/// claims decide them.
pub(super) fn certain(k: &Conn, flow: &Flow, guard: Time) -> bool {
    k.end > flow.start.saturating_add(guard) && k.start.saturating_add(guard) < flow.end
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

    fn flow(start: Time, end: Time) -> Flow {
        Flow { local: Ip(1), local_port: 50000, port: 443, start, end, start_unobserved: false, horizon: 1000, now: 0 }
    }

    #[test]
    fn only_lifetimes_that_rule_the_others_out_prove_a_match() {
        // k lasted past the flow's start + guard and began before its end - guard.
        assert!(certain(&conn(100, 400), &flow(101, 390), 50));
        // A short connection: k could be the record of a connection just before or after.
        assert!(!certain(&conn(100, 150), &flow(101, 390), 50), "k ended by start + guard");
        assert!(certain(&conn(100, 152), &flow(101, 390), 50));
        assert!(!certain(&conn(340, 400), &flow(101, 390), 50), "k began at end - guard");
        assert!(certain(&conn(339, 400), &flow(101, 390), 50));
        assert!(!certain(&conn(125, 135), &flow(120, 130), 50), "both short");
    }
}
