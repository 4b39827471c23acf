//! The ownership index of one worker: everything its share of the addresses was said to be,
//! shaped for the one question the job asks ("who held `(R, p)` around `t`?").
//!
//! Per address, a small vector of exporter claims (whole-IP and port-scoped, heartbeats and
//! flows' local ends), and, where there are any, the connection records of that address's own
//! end and the mirrors of the fleet flows to it (both for the peer rule, module `peer`), and the
//! assignment events of address managers. A claim that abuts or overlaps a claim of the same
//! port, kind and workload grows it in place, so a stable owner costs one claim per run of
//! evidence, not one per heartbeat. Names live in an [`Arena`].
//!
//! # Time
//! The index has no notion of versions: it is always "the evidence applied so far". The
//! operator around it ([`crate::attribute`]) applies evidence and answers lookups in dataflow
//! time order, evidence of a time before the lookups of that time, so a lookup at `q` sees
//! exactly the evidence of times `<= q`. Expiry is driven by the same clock ([`Index::advance`]):
//! a claim is dropped `retention` after it ends, a connection record `peer_horizon` after it
//! ends, an assignment `retention` after its effective end. That never changes a verdict: a
//! lookup of instant `t` at `q` only reads records ending after `t - guard`, and a lookup with
//! `q >= t - guard + retention` is answered `evidence_expired` without reading anything.
//!
//! # The rule
//! [`Index::lookup`] gathers the [`Candidates`] (module `candidates`) and applies
//! [`crate::rule::decide`]; see there. Two details live here: *which records are the same
//! connection* (the peer rule: the other end's record of the mirrored 4-tuple whose start is
//! within the guard band of this one's, or, when either end did not see the connection
//! established, whose lifetime overlaps this one's, and which provably matches no other
//! connection of the 4-tuple: see module `peer`), and *where an assignment ends*: at the next event
//! of the same source for the address, or where its source's run of contiguous batches ends,
//! whichever is first.
//!
//! One verdict per connection: the first record of a connection that has several (an open
//! slice, or a record of a connection that started before its window) is remembered by flow id
//! and remote end (the *memo*: the remote end too, so that two connections an exporter gave one
//! id by mistake never share a verdict, whichever workers look them up), and every other record
//! of it gets the same verdict, until no record of it came for `retention`.

mod arena;
mod candidates;
mod peer;

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::FixedState;

pub use arena::{Arena, MAX_NAME};
use candidates::{assignment_end, assignments, candidates, exporter_claims, whole_only};
use peer::{Conn, Mirror};

use crate::records::{Check, EvidencePiece, FlowPiece, FlowRow, NameRef, Names, RunId, Verdict, Verification};
use crate::rule::{decide, decide_over, Band, Candidates, Decision, Interval};
use crate::types::{EvidenceKind, Ip, Reason, Time};

type Map<K, V> = HashMap<K, V, FixedState>;

/// Settings of an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexParams {
    /// Clock-skew guard band: an owner must hold `[t - guard, t + guard]` alone.
    pub guard: Time,
    /// How long evidence is kept after it ends.
    pub retention: Time,
    /// How long a connection record is kept after it ends, for the other end's record of the
    /// same connection to find it (at least the longest batch window plus the guard band).
    pub peer_horizon: Time,
}

/// An exporter claim, 24 bytes.
#[derive(Clone, Copy, Debug)]
struct Claim {
    from: Time,
    to: Time,
    /// Offset of the owner's name in the arena.
    name: u32,
    /// 0: the whole address.
    port: u16,
    kind: u8,
}

/// An assignment event; `name == NONE` releases the address. `source` is its source's id,
/// taken from its run's promise when it was applied (`NONE`: no promise known then, so the
/// event vouches for nothing and ends nothing).
#[derive(Clone, Copy, Debug)]
struct Assign {
    at: Time,
    run: RunId,
    name: u32,
    source: u32,
}

const NONE: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Extra {
    conns: Vec<Conn>,
    /// The fleet flows whose remote end this address is (see [`peer`]).
    mirrors: Vec<Mirror>,
    /// Sorted by `at`.
    assigns: Vec<Assign>,
}

/// Everything about one address. Claims are a boxed slice sized to fit (a stable owner's
/// claim grows in place; a new claim costs a reallocation, which is rare next to lookups and
/// heartbeats), to keep the per-address state small.
#[derive(Debug)]
struct Entry {
    claims: Box<[Claim]>,
    extra: Option<Box<Extra>>,
    /// The timer-wheel slot of this entry's next sweep (`u64::MAX`: none).
    due: u64,
}

impl Default for Entry {
    fn default() -> Self {
        Entry { claims: Box::default(), extra: None, due: u64::MAX }
    }
}

impl Entry {
    fn push_claim(&mut self, claim: Claim) {
        let mut v = std::mem::take(&mut self.claims).into_vec();
        v.reserve_exact(1);
        v.push(claim);
        self.claims = v.into_boxed_slice();
    }

    fn retain_claims(&mut self, mut keep: impl FnMut(&Claim) -> bool) {
        if self.claims.iter().all(&mut keep) {
            return;
        }
        let mut v = std::mem::take(&mut self.claims).into_vec();
        v.retain(keep);
        self.claims = v.into_boxed_slice();
    }
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.claims.is_empty()
            && self.extra.as_ref().is_none_or(|x| x.conns.is_empty() && x.mirrors.is_empty() && x.assigns.is_empty())
    }
}

/// A run of an assignment source.
#[derive(Clone, Copy, Debug)]
struct Run {
    source: u32,
    end: Time,
}

/// What a remembered verdict is found by: flow id, remote address and port.
type MemoKey = (u64, Ip, u16);

/// A remembered verdict of a connection with several records.
#[derive(Debug)]
struct Memo {
    verdict: Remembered,
    verification: Verification,
    counts: bool,
    last_seen: Time,
}

#[derive(Debug)]
enum Remembered {
    Attributed(Box<str>, EvidenceKind),
    Unattributed(Reason),
}

/// What a lookup found about one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Looked {
    /// The verdict on the remote end.
    pub verdict: Verdict,
    /// Verification and counting.
    pub check: Check,
    /// The other end and the claims disagree: (the other end's workload, the claims' workload,
    /// what the claims rest on); names in the caller's table.
    pub disagreement: Option<(NameRef, NameRef, EvidenceKind)>,
}

/// Two-sided verification: the other end's workloads (`peers`, non-empty) against what the
/// claims alone decide.
fn verify(
    peers: &[&str],
    claims: Decision<'_>,
    names: Option<&mut Names>,
) -> (Verification, Option<(NameRef, NameRef, EvidenceKind)>) {
    let first = peers[0];
    let named = |a: &str, b: &str, e| match names {
        Some(n) => (n.push(a), n.push(b), e),
        None => (NameRef::default(), NameRef::default(), e),
    };
    if peers.iter().any(|w| *w != first) {
        let other = peers.iter().find(|w| **w != first).copied().unwrap_or("");
        return (Verification::Disagree, Some(named(first, other, EvidenceKind::Peer)));
    }
    match claims {
        Decision::Attributed { workload, .. } if workload == first => (Verification::Agree, None),
        Decision::Attributed { workload, evidence } => (Verification::Disagree, Some(named(first, workload, evidence))),
        Decision::Unattributed(_) => (Verification::PeerOnly, None),
    }
}

/// Sizes of an index, for state reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSize {
    /// Addresses with any evidence.
    pub ips: u64,
    /// Exporter claims.
    pub claims: u64,
    /// Connection records: each end's own, and the mirrors of fleet flows at their remote end.
    pub conns: u64,
    /// Assignment events.
    pub assignments: u64,
    /// Remembered verdicts of open connections.
    pub memo: u64,
    /// Heap bytes held (allocated capacity of every table and vector, and the name arena).
    pub bytes: u64,
}

impl IndexSize {
    /// Adds another index's sizes (another worker's).
    pub fn add(&mut self, o: &IndexSize) {
        self.ips += o.ips;
        self.claims += o.claims;
        self.conns += o.conns;
        self.assignments += o.assignments;
        self.memo += o.memo;
        self.bytes += o.bytes;
    }
}

/// One worker's ownership index (see the module docs).
#[derive(Debug)]
pub struct Index {
    params: IndexParams,
    entries: Map<Ip, Entry>,
    arena: Arena,
    /// A timer wheel of addresses to sweep: slot `k` holds addresses with something due in
    /// `((k - 1) * slot, k * slot]`, so a sweep never comes before what it removes is due.
    /// Sweeping late is harmless: lookups never read what expired (see the module docs), and
    /// connection records and remembered verdicts, whose expiry does matter, are checked
    /// against the clock where they are read.
    wheel: BTreeMap<u64, Vec<Ip>>,
    slot: Time,
    runs: Map<RunId, Run>,
    sources: Map<String, u32>,
    next_sweep: Time,
    memo: Map<MemoKey, Memo>,
    now: Time,
    /// Reusable buffers of a lookup.
    scratch: Scratch,
}

#[derive(Debug, Default)]
struct Scratch {
    peers: Vec<u32>,
}

impl Index {
    /// An empty index.
    pub fn new(params: IndexParams) -> Self {
        Index {
            params,
            entries: Map::default(),
            arena: Arena::default(),
            wheel: BTreeMap::new(),
            // 1/64 of the retention: sweeps are batched per slot.
            slot: (params.retention / 64).max(1),
            runs: Map::default(),
            sources: Map::default(),
            next_sweep: 0,
            memo: Map::default(),
            now: 0,
            scratch: Scratch::default(),
        }
    }

    /// The time of the latest [`advance`](Index::advance).
    pub fn now(&self) -> Time {
        self.now
    }

    /// Moves the index's clock to `now` (never backwards) and drops what expired by then (or a
    /// little later: see `wheel`).
    pub fn advance(&mut self, now: Time) {
        if now <= self.now && self.now != 0 {
            return;
        }
        self.now = now;
        let p = self.params;
        let mut released = false;
        let last_slot = now / self.slot;
        while let Some(entry) = self.wheel.first_entry() {
            if *entry.key() > last_slot {
                break;
            }
            let (slot, ips) = entry.remove_entry();
            for ip in ips {
                let Some(entry) = self.entries.get_mut(&ip) else { continue };
                if entry.due != slot {
                    continue; // rescheduled since
                }
                sweep(entry, &mut self.arena, &self.runs, p, now);
                released = true;
                if entry.is_empty() {
                    self.entries.remove(&ip);
                } else {
                    let due = next_due(entry, &self.runs, p);
                    entry.due = u64::MAX;
                    schedule(&mut self.wheel, self.slot, entry, ip, due);
                }
            }
        }
        if now >= self.next_sweep {
            self.runs.retain(|_, r| r.end.saturating_add(p.retention) > now);
            self.memo.retain(|_, m| m.last_seen.saturating_add(p.retention) > now);
            self.next_sweep = now.saturating_add((p.retention / 16).max(1));
        }
        if released && self.arena.wants_compaction() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let entries = &mut self.entries;
        self.arena.compact(|moved| {
            for entry in entries.values_mut() {
                for c in &mut entry.claims {
                    moved(&mut c.name);
                }
                if let Some(x) = &mut entry.extra {
                    for c in &mut x.conns {
                        moved(&mut c.name);
                    }
                    for a in x.assigns.iter_mut().filter(|a| a.name != NONE) {
                        moved(&mut a.name);
                    }
                }
            }
        });
    }

    /// Applies the evidence pieces of the current time (see the module docs on time): every
    /// piece's promises first, then everything else, so that the order the pieces arrived in
    /// does not matter.
    pub fn apply(&mut self, pieces: &[EvidencePiece]) {
        for piece in pieces {
            for p in &piece.promises {
                let source = self.source(piece.names.get(p.source));
                let run = self.runs.entry(p.run).or_insert(Run { source, end: p.to });
                run.end = run.end.max(p.to);
            }
        }
        for piece in pieces {
            self.apply_records(piece);
        }
    }

    fn apply_records(&mut self, piece: &EvidencePiece) {
        let names = &piece.names;
        for c in &piece.claims {
            self.claim(c.ip, c.port, c.kind, c.from, c.to, names.get(c.name));
        }
        for c in &piece.conns {
            self.conn(c, names.get(c.name));
        }
        for c in &piece.mirrors {
            self.mirror(c);
        }
        for a in &piece.assignments {
            self.assign(a.ip, a.at, a.name.map(|n| names.get(n)), a.run);
        }
    }

    fn source(&mut self, name: &str) -> u32 {
        let next = self.sources.len() as u32;
        *self.sources.entry(name.to_string()).or_insert(next)
    }

    /// Adds an exporter claim, growing a claim of the same port, kind and workload that it
    /// abuts or overlaps, and leaving out flow claims that a heartbeat of their owner covers
    /// (both ways: a new flow claim inside a heartbeat, and flow claims inside a new or grown
    /// heartbeat). Every choice here is one the rule is indifferent to, so the order in which
    /// the evidence of one instant is applied never shows in a verdict.
    fn claim(&mut self, ip: Ip, port: u16, kind: EvidenceKind, from: Time, to: Time, name: &str) {
        if from >= to || to.saturating_add(self.params.retention) <= self.now {
            return; // empty, or expired already (a late batch): no lookup can read it
        }
        let kind = kind.to_u8();
        let retention = self.params.retention;
        let entry = self.entries.entry(ip).or_default();
        let arena = &mut self.arena;
        let heartbeat = EvidenceKind::Heartbeat.to_u8();
        let same = |c: &Claim| c.port == port && c.kind == kind && c.from <= to && from <= c.to;
        // The common case: the claim grows one of its owner's at its end (the next heartbeat,
        // the next window's flows) and reaches no other: grow it in place.
        if let Some(i) = entry.claims.iter().position(|c| same(c) && arena.is(c.name, name)) {
            let (lo, hi) = (entry.claims[i].from.min(from), entry.claims[i].to.max(to));
            let reaches_another = entry.claims.iter().enumerate().any(|(j, c)| {
                j != i && c.port == port && c.kind == kind && c.from <= hi && lo <= c.to && arena.is(c.name, name)
            });
            let flows_to_drop = kind == heartbeat && entry.claims.iter().any(|c| c.kind != heartbeat);
            if !reaches_another && !flows_to_drop {
                entry.claims[i].from = lo;
                entry.claims[i].to = hi;
                return schedule(&mut self.wheel, self.slot, entry, ip, hi.saturating_add(retention));
            }
        }
        // A flow claim inside a heartbeat of the same owner and scope changes no decision (the
        // union is the same, and the verdict names the heartbeat): leave it out. Whether it is
        // left out depends on the order of evidence of one instant, so it must not matter.
        // The same holds for a port claim inside a whole-IP heartbeat of its owner (the rule
        // does not count it: `rule::inside_whole_heartbeat`).
        let covered = kind != heartbeat
            && entry.claims.iter().any(|c| {
                (c.port == port || c.port == 0)
                    && c.kind == heartbeat
                    && c.from <= from
                    && to <= c.to
                    && arena.is(c.name, name)
            });
        if covered {
            return;
        }
        // Take out every claim of the same port, kind and owner that the new one reaches
        // (transitively, as the union grows) and put back their union.
        let (mut lo, mut hi) = (from, to);
        let mut kept: Option<u32> = None;
        loop {
            let mut grown = false;
            entry.retain_claims(|c| {
                let reached = c.port == port && c.kind == kind && c.from <= hi && lo <= c.to && arena.is(c.name, name);
                if reached {
                    lo = lo.min(c.from);
                    hi = hi.max(c.to);
                    grown = true;
                    match kept {
                        None => kept = Some(c.name),
                        Some(_) => arena.release(c.name),
                    }
                }
                !reached
            });
            if !grown {
                break;
            }
        }
        if kind == heartbeat {
            // Flow claims of the same owner now inside this heartbeat change no decision.
            entry.retain_claims(|c| {
                let inside = c.kind != heartbeat
                    && (c.port == port || port == 0)
                    && lo <= c.from
                    && c.to <= hi
                    && arena.is(c.name, name);
                if inside {
                    arena.release(c.name);
                }
                !inside
            });
        }
        let name = kept.unwrap_or_else(|| arena.push(name));
        entry.push_claim(Claim { from: lo, to: hi, name, port, kind });
        schedule(&mut self.wheel, self.slot, entry, ip, hi.saturating_add(retention));
    }

    fn conn(&mut self, c: &crate::records::ConnIn, name: &str) {
        let horizon = self.params.guard.saturating_add(self.params.peer_horizon);
        if c.end.saturating_add(horizon) <= self.now {
            return; // past its horizon already (a late batch): it would match nothing
        }
        let entry = self.entries.entry(c.local).or_default();
        let extra = entry.extra.get_or_insert_with(Box::default);
        let end = peer::add_conn(&mut extra.conns, &mut self.arena, c, name, self.now, horizon);
        schedule(&mut self.wheel, self.slot, entry, c.local, end.saturating_add(horizon));
    }

    fn mirror(&mut self, c: &crate::records::ConnIn) {
        let horizon = self.params.guard.saturating_add(self.params.peer_horizon);
        if c.end.saturating_add(horizon) <= self.now {
            return;
        }
        let entry = self.entries.entry(c.peer).or_default();
        let extra = entry.extra.get_or_insert_with(Box::default);
        peer::add_mirror(&mut extra.mirrors, c);
        schedule(&mut self.wheel, self.slot, entry, c.peer, c.end.saturating_add(horizon));
    }

    fn assign(&mut self, ip: Ip, at: Time, name: Option<&str>, run: RunId) {
        let entry = self.entries.entry(ip).or_default();
        let extra = entry.extra.get_or_insert_with(Box::default);
        let arena = &mut self.arena;
        let dup = extra.assigns.iter().any(|a| {
            a.at == at && a.run == run && name.map_or(a.name == NONE, |n| a.name != NONE && arena.is(a.name, n))
        });
        if dup {
            return;
        }
        // Events are ordered by (time, run, name), whatever order they were applied in, so
        // that two events of one instant resolve the same way in every run.
        let i = extra.assigns.partition_point(|a| {
            (a.at, a.run).cmp(&(at, run)).then_with(|| {
                let a_name = (a.name != NONE).then(|| arena.get(a.name));
                a_name.cmp(&name)
            }) == std::cmp::Ordering::Less
        });
        let name = name.map_or(NONE, |n| arena.push(n));
        let source = self.runs.get(&run).map_or(NONE, |r| r.source);
        extra.assigns.insert(i, Assign { at, run, name, source });
        let end = self.runs.get(&run).map_or(0, |r| r.end);
        schedule(&mut self.wheel, self.slot, entry, ip, end.saturating_add(self.params.retention));
    }

    /// Looks up one flow record of `piece` at the current time. The verdict's workload name
    /// (and a disagreement's names) are written to `names`, or not at all with `None`, for a
    /// caller that only counts.
    pub fn lookup(&mut self, piece: &FlowPiece, row: &FlowRow, mut names: Option<&mut Names>) -> Looked {
        let p = self.params;
        let key = (row.id, row.remote, row.remote_port);
        // Only a connection with several records has a verdict to repeat: a record that is the
        // whole of its connection never reads one (found by a fresh user: an exporter that
        // reused a connection id gave a later, closed connection an earlier one's verdict).
        let memo = if row.one_of_several() { self.memo.get_mut(&key) } else { None };
        if let Some(m) = memo {
            // Kept until it expires, not dropped at the final record: batches may arrive out of
            // order, and a slice may come after its connection's final record.
            if m.last_seen.saturating_add(p.retention) > self.now {
                m.last_seen = self.now;
                let check = Check { verification: m.verification, first: false, counts: m.counts };
                return Looked { verdict: remembered(&m.verdict, names), check, disagreement: None };
            }
            self.memo.remove(&key);
        }
        let mut check = Check::default();
        let mut disagreement = None;
        let verdict = if self.now >= row.start.saturating_sub(p.guard).saturating_add(p.retention) {
            Decision::Unattributed(Reason::EvidenceExpired)
        } else {
            match self.entries.get(&row.remote) {
                None => Decision::Unattributed(Reason::NoOwner),
                Some(entry) => match whole_only(entry, row, &self.arena, p, names.is_some() || row.one_of_several()) {
                    Some(decision) => decision,
                    None => {
                        let now = self.now;
                        let scratch = &mut self.scratch;
                        candidates(entry, piece, row, &self.arena, &self.runs, p, now, scratch, |c, peers| {
                            let verdict = decide(c, row.start, p.guard);
                            check.counts = peers.counts;
                            if let [Some(first), other] = peers.seen {
                                let claims = decide(&Candidates { peers: Vec::new(), ..c.clone() }, row.start, p.guard);
                                let seen: &[&str] = match other {
                                    Some(other) => &[first, other],
                                    None => &[first],
                                };
                                let (v, d) = verify(seen, claims, names.as_deref_mut());
                                check.verification = v;
                                disagreement = d;
                            }
                            verdict
                        })
                    }
                },
            }
        };
        let verdict = match verdict {
            Decision::Attributed { workload, evidence } => {
                let name = names.map(|n| n.push(workload)).unwrap_or_default();
                if row.one_of_several() {
                    let remembered = Remembered::Attributed(workload.into(), evidence);
                    self.remember(key, remembered, check);
                }
                Verdict::Attributed { name, evidence }
            }
            Decision::Unattributed(reason) => {
                if row.one_of_several() {
                    self.remember(key, Remembered::Unattributed(reason), check);
                }
                Verdict::Unattributed(reason)
            }
        };
        Looked { verdict, check, disagreement }
    }

    /// Looks up who held `(ip, port)` over the whole interval `[from, to]` (ns, both included;
    /// a cloud flow log row's), at the current time, by the rule's interval form
    /// ([`crate::rule::decide_over`]): exporter claims and assignments as for a flow, no peers
    /// (a flow log row is no connection of an exporter). The workload's name borrows from the
    /// index.
    ///
    /// A band starting a retention or more before the index's time is `evidence_expired`, as
    /// for flows: look intervals up within the retention of their start (a flow log row arrives
    /// about ten minutes after its interval ends, so the retention must cover that, the
    /// interval and the guard band).
    pub fn lookup_interval(&self, ip: Ip, port: u16, from: Time, to: Time) -> Interval<'_> {
        let p = self.params;
        if self.now >= from.saturating_sub(p.guard).saturating_add(p.retention) {
            return Interval::Decided(Decision::Unattributed(Reason::EvidenceExpired));
        }
        let Some(entry) = self.entries.get(&ip) else {
            return Interval::Decided(Decision::Unattributed(Reason::NoOwner));
        };
        let b = Band::interval(from, to, p.guard).range();
        let mut c = Candidates::default();
        exporter_claims(entry, port, b, &self.arena, &mut c);
        if let Some(x) = &entry.extra {
            assignments(&x.assigns, &self.arena, &self.runs, b, (self.now, p.retention), &mut c);
        }
        decide_over(&c, from, to, p.guard)
    }

    fn remember(&mut self, key: MemoKey, verdict: Remembered, check: Check) {
        let memo = Memo { verdict, verification: check.verification, counts: check.counts, last_seen: self.now };
        self.memo.insert(key, memo);
    }

    /// The sizes of the index now (walks every entry: call it at a sampling rate, not per
    /// record).
    pub fn size(&self) -> IndexSize {
        let mut s = IndexSize { ips: self.entries.len() as u64, memo: self.memo.len() as u64, ..Default::default() };
        let mut bytes = self.entries.capacity() * (size_of::<Ip>() + size_of::<Entry>() + 1);
        for e in self.entries.values() {
            s.claims += e.claims.len() as u64;
            bytes += e.claims.len() * size_of::<Claim>();
            if let Some(x) = &e.extra {
                s.conns += x.conns.len() as u64;
                s.assignments += x.assigns.len() as u64;
                s.conns += x.mirrors.len() as u64;
                bytes += size_of::<Extra>()
                    + x.conns.capacity() * size_of::<Conn>()
                    + x.mirrors.capacity() * size_of::<Mirror>()
                    + x.assigns.capacity() * size_of::<Assign>();
            }
        }
        bytes += self.arena.heap_bytes();
        bytes += self.wheel.values().map(|v| v.capacity() * size_of::<Ip>() + 32).sum::<usize>();
        bytes += self.runs.capacity() * (size_of::<RunId>() + size_of::<Run>() + 1);
        bytes += self.memo.capacity() * (size_of::<MemoKey>() + size_of::<Memo>() + 1)
            + self
                .memo
                .values()
                .map(|m| match &m.verdict {
                    Remembered::Attributed(n, _) => n.len(),
                    _ => 0,
                })
                .sum::<usize>();
        s.bytes = bytes as u64;
        s
    }
}

fn remembered(r: &Remembered, names: Option<&mut Names>) -> Verdict {
    match r {
        Remembered::Attributed(w, evidence) => {
            Verdict::Attributed { name: names.map(|n| n.push(w)).unwrap_or_default(), evidence: *evidence }
        }
        Remembered::Unattributed(reason) => Verdict::Unattributed(*reason),
    }
}

/// Schedules a sweep of `entry` (at address `ip`) for when something of it is due at `at`,
/// unless one is scheduled no later.
fn schedule(wheel: &mut BTreeMap<u64, Vec<Ip>>, slot: Time, entry: &mut Entry, ip: Ip, at: Time) {
    if at == Time::MAX {
        return;
    }
    let k = at.div_ceil(slot);
    if k < entry.due {
        entry.due = k;
        wheel.entry(k).or_default().push(ip);
    }
}

/// Drops what expired by `now` from one entry, releasing names.
fn sweep(entry: &mut Entry, arena: &mut Arena, runs: &Map<RunId, Run>, p: IndexParams, now: Time) {
    entry.retain_claims(|c| {
        let keep = c.to.saturating_add(p.retention) > now;
        if !keep {
            arena.release(c.name);
        }
        keep
    });
    let Some(x) = &mut entry.extra else { return };
    x.conns.retain(|k| {
        let keep = k.end.saturating_add(p.guard).saturating_add(p.peer_horizon) > now;
        if !keep {
            arena.release(k.name);
        }
        keep
    });
    x.mirrors.retain(|m| m.end.saturating_add(p.guard).saturating_add(p.peer_horizon) > now);
    // Assignments: drop a prefix whose effective ends are past the retention (an event's end
    // depends only on later events, so removing a prefix changes no other event's end).
    let mut drop = 0;
    for i in 0..x.assigns.len() {
        if assignment_end(&x.assigns, i, runs).saturating_add(p.retention) > now {
            break;
        }
        drop = i + 1;
    }
    for a in x.assigns.drain(..drop) {
        if a.name != NONE {
            arena.release(a.name);
        }
    }
    if x.conns.is_empty() && x.mirrors.is_empty() && x.assigns.is_empty() {
        entry.extra = None;
    }
}

/// The earliest time anything left in `entry` may expire.
fn next_due(entry: &Entry, runs: &Map<RunId, Run>, p: IndexParams) -> Time {
    let mut due = entry.claims.iter().map(|c| c.to.saturating_add(p.retention)).min().unwrap_or(Time::MAX);
    if let Some(x) = &entry.extra {
        for end in x.conns.iter().map(|k| k.end).chain(x.mirrors.iter().map(|m| m.end)) {
            due = due.min(end.saturating_add(p.guard).saturating_add(p.peer_horizon));
        }
        if !x.assigns.is_empty() {
            due = due.min(assignment_end(&x.assigns, 0, runs).saturating_add(p.retention));
        }
    }
    due
}

#[cfg(test)]
mod tests;
