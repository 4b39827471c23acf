use prost::Message;

use super::*;
use crate::records::{flags, AssignIn, ClaimIn, ConnIn, Promise};

const S: Time = 1_000_000_000;
const T0: Time = 1_000 * S;

fn params() -> IndexParams {
    IndexParams { guard: 2 * S, retention: 900 * S, peer_horizon: 70 * S }
}

fn ip(s: &str) -> Ip {
    Ip::from_addr(s.parse().unwrap())
}

/// Evidence built by hand.
#[derive(Default)]
struct Ev(EvidencePiece);

impl Ev {
    fn claim(mut self, addr: &str, port: u16, kind: EvidenceKind, from: Time, to: Time, who: &str) -> Self {
        let name = self.0.names.push(who);
        self.0.claims.push(ClaimIn { ip: ip(addr), port, kind, from, to, name });
        self
    }
    fn conn(mut self, local: (&str, u16), peer: (&str, u16), start: Time, end: Time, who: &str) -> Self {
        let name = self.0.names.push(who);
        self.0.conns.push(ConnIn {
            local: ip(local.0),
            local_port: local.1,
            peer: ip(peer.0),
            peer_port: peer.1,
            start,
            end,
            start_unobserved: false,
            direction: 0,
            lookup: 0,
            name,
            connection: 0,
        });
        self
    }
    /// The mirror of a flow record `local -> remote` (what the job stores under `remote` for
    /// every fleet flow) of the connection [`flow`] names [`CONN`].
    fn mirror(self, local: (&str, u16), remote: (&str, u16), start: Time, end: Time) -> Self {
        self.mirror_of(CONN, local, remote, start, end)
    }
    /// [`Ev::mirror`] of the connection with flow id `connection` (0: none stated).
    fn mirror_of(mut self, connection: u64, local: (&str, u16), remote: (&str, u16), start: Time, end: Time) -> Self {
        self.0.mirrors.push(ConnIn {
            local: ip(local.0),
            local_port: local.1,
            peer: ip(remote.0),
            peer_port: remote.1,
            start,
            end,
            start_unobserved: false,
            direction: 0,
            lookup: 0,
            name: NameRef::default(),
            connection,
        });
        self
    }
    fn promise(mut self, run: RunId, from: Time, to: Time) -> Self {
        let source = self.0.names.push("ipam");
        self.0.promises.push(Promise { run, source, from, to });
        self
    }
    fn assign(mut self, addr: &str, at: Time, who: Option<&str>, run: RunId) -> Self {
        let name = who.map(|w| self.0.names.push(w));
        self.0.assignments.push(AssignIn { ip: ip(addr), at, name, run });
        self
    }
}

/// The flow id most tests give the connection they look up (see [`Ev::mirror`]).
const CONN: u64 = 3;

/// A flow piece with one row: local -> remote, starting at `start`, with flow id `id` (stated
/// through a connection id).
fn flow(local: (&str, u16), remote: (&str, u16), start: Time, end: Time, id: u64, open: bool) -> (FlowPiece, FlowRow) {
    let wire = flowmap_schema::Flow {
        connection_id: id,
        local_ip: flowmap_schema::ip_to_bytes(local.0.parse().unwrap()),
        local_port: u32::from(local.1),
        remote_ip: flowmap_schema::ip_to_bytes(remote.0.parse().unwrap()),
        remote_port: u32::from(remote.1),
        start_ns: start,
        end_ns: end,
        open,
        ..Default::default()
    };
    let bytes = wire.encode_to_vec();
    let row = FlowRow {
        remote: ip(remote.0),
        start,
        batch_at: 0,
        id,
        msg_off: 0,
        msg_len: bytes.len() as u32,
        remote_port: remote.1,
        exporter: 0,
        flags: if open { flags::OPEN } else { 0 },
        direction: 0,
    };
    (FlowPiece { rows: vec![row], bytes, ..Default::default() }, row)
}

fn verdict(index: &mut Index, piece: &FlowPiece, row: &FlowRow) -> Result<(String, EvidenceKind), Reason> {
    let mut names = Names::default();
    match index.lookup(piece, row, Some(&mut names)).verdict {
        Verdict::Attributed { name, evidence } => Ok((names.get(name).to_string(), evidence)),
        Verdict::Unattributed(r) => Err(r),
    }
}

fn at(index: &mut Index, t: Time, ev: Ev) {
    index.advance(t);
    index.apply(std::slice::from_ref(&ev.0));
}

/// Kind 1, smallest input: `web` holds 10.200.0.1:8080 (a server-side flow on a port-scoped
/// local end); a flow to 10.200.0.1:5432 is not `web`'s, with or without the database's own
/// unattributed record.
#[test]
fn regression_port_claim_is_not_a_claim_on_the_address() {
    let mut index = Index::new(params());
    let ev = Ev::default().claim("10.200.0.1", 8080, EvidenceKind::Flow, T0 + S, T0 + 19 * S, "web").conn(
        ("10.200.0.1", 8080),
        ("10.200.0.3", 50_000),
        T0 + S,
        T0 + 19 * S,
        "web",
    );
    at(&mut index, T0, ev);
    index.advance(T0 + 8 * S);
    let (p, r) = flow(("10.200.0.2", 40_001), ("10.200.0.1", 5432), T0 + 5 * S, T0 + 6 * S, 1, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::SharedIp));
    // The same address's port 8080 is web's (evidence on exactly that port).
    let (p, r) = flow(("10.200.0.2", 40_002), ("10.200.0.1", 8080), T0 + 5 * S, T0 + 6 * S, 2, false);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("web".into(), EvidenceKind::Flow)));
}

/// The client on a shared address connecting out of an ephemeral port is attributed from its
/// own record of that very connection (the peer rule), although no claim covers the band.
#[test]
fn peer_record_attributes_a_shared_address_client() {
    let mut index = Index::new(params());
    let (start, end) = (T0 + 10 * S + 300_000_000, T0 + 40 * S);
    let ev = Ev::default()
        .claim("10.9.0.5", 9100, EvidenceKind::Heartbeat, T0, T0 + 60 * S, "node-exporter")
        .conn(("10.9.0.5", 41_000), ("10.2.0.9", 443), T0 + 10 * S, end, "agent")
        .mirror(("10.2.0.9", 443), ("10.9.0.5", 41_000), start, end);
    at(&mut index, T0, ev);
    index.advance(T0 + 13 * S);
    // The server's record: remote is the client's ephemeral port, start 300 ms off (skew).
    let (p, r) = flow(("10.2.0.9", 443), ("10.9.0.5", 41_000), start, end, 3, false);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("agent".into(), EvidenceKind::Peer)));
    // Without its own mirror the record's connection is known no further than its start: a
    // connection just before or after could be the agent's record's.
    let mut bare = Index::new(params());
    let ev = Ev::default().conn(("10.9.0.5", 41_000), ("10.2.0.9", 443), T0 + 10 * S, end, "agent");
    at(&mut bare, T0, ev);
    bare.advance(T0 + 13 * S);
    assert_eq!(verdict(&mut bare, &p, &r), Err(Reason::NoOwner));
    // A record of a different connection (another local port) is not a peer: shared address.
    let (p, r) = flow(("10.2.0.9", 444), ("10.9.0.5", 41_000), T0 + 10 * S, T0 + 11 * S, 4, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::SharedIp));
    // Starts further apart than the guard band: not the same connection.
    let (p, r) = flow(("10.2.0.9", 443), ("10.9.0.5", 41_000), T0 + 13 * S, T0 + 14 * S, 5, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::SharedIp));
}

/// Found by fresh users: another exporter (a clone with the same id, another id, or either
/// without an incarnation) named the flow's 4-tuple with the same start and a long life; read
/// as the flow's own record, it stretched the flow's end over a later connection of the
/// 4-tuple, whose record then passed the lifetime proof and named the wrong owner. A flow's own
/// records are those of its connection (its flow id); one that states no connection id has
/// none known as its own.
#[test]
fn regression_another_exporters_record_with_the_same_start_says_nothing_of_the_flows_end() {
    let (start, end) = (T0 + 11 * S, T0 + 11 * S + S / 2);
    // The server's record of a later connection of the 4-tuple (1.9 s later: within the guard).
    let later = ("10.9.0.5", 41_000);
    let me = ("10.2.0.9", 40_001);
    // (the long record's connection, the flow's id, the flow's stated connection id, verdict)
    let cases = [
        (CONN + 1, CONN, CONN, Err(Reason::NoOwner)),
        (0, CONN, CONN, Err(Reason::NoOwner)),
        (CONN, CONN, 0, Err(Reason::NoOwner)),
        (CONN, CONN, CONN, Ok(("new".to_string(), EvidenceKind::Peer))),
    ];
    for (long, id, stated, expect) in cases {
        let mut index = Index::new(params());
        let ev = Ev::default()
            .conn(later, me, start + 19 * S / 10, T0 + 40 * S, "new")
            .mirror(me, later, start, end)
            .mirror_of(long, me, later, start, T0 + 30 * S);
        at(&mut index, T0, ev);
        index.advance(T0 + 14 * S);
        let (mut p, _) = flow(me, later, start, end, id, false);
        if stated == 0 {
            let mut wire = flowmap_schema::Flow::decode(p.bytes.as_slice()).unwrap();
            wire.connection_id = 0;
            p.bytes = wire.encode_to_vec();
            p.rows[0].msg_len = p.bytes.len() as u32;
        }
        // With its own connection's long record, the connection is long and the later record
        // its peer.
        assert_eq!(verdict(&mut index, &p, &p.rows[0]), expect, "long record of {long}, flow {id} stating {stated}");
    }
}

#[test]
fn two_peers_naming_different_workloads_conflict() {
    let mut index = Index::new(params());
    let (start, end) = (T0 + 10 * S + S / 2, T0 + 40 * S);
    let ev = Ev::default()
        .conn(("10.9.0.5", 41_000), ("10.2.0.9", 443), T0 + 10 * S, end, "a")
        .conn(("10.9.0.5", 41_000), ("10.2.0.9", 443), T0 + 11 * S, end, "b")
        .mirror(("10.2.0.9", 443), ("10.9.0.5", 41_000), start, end);
    at(&mut index, T0, ev);
    let (p, r) = flow(("10.2.0.9", 443), ("10.9.0.5", 41_000), start, end, 3, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::Conflict));
}

/// Kind 2, smallest input: `ipam` assigns 10.9.0.1 to lb-old at 3 s in its run [0, 10); its
/// next batch is lost, so its next run starts at 20 s; a flow at 25 s is a source gap, not
/// lb-old's. A flow at 6 s is lb-old's.
#[test]
fn regression_assignment_ends_where_its_source_promise_ends() {
    let mut index = Index::new(params());
    at(&mut index, 0, Ev::default().promise(1, 0, 10 * S).assign("10.9.0.1", 3 * S, Some("lb-old"), 1));
    at(&mut index, 20 * S, Ev::default().promise(2, 20 * S, 30 * S));
    at(&mut index, 30 * S, Ev::default().promise(2, 30 * S, 40 * S));
    index.advance(40 * S);
    let (p, r) = flow(("10.1.0.1", 40_000), ("10.9.0.1", 443), 25 * S, 26 * S, 1, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::SourceGap));
    let (p, r) = flow(("10.1.0.1", 40_001), ("10.9.0.1", 443), 6 * S, 7 * S, 2, false);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("lb-old".into(), EvidenceKind::Assignment)));
    // The lost batch turns up late as its own run [10, 20) with lb-new at 15 s: lb-old ends
    // there (already cut at 10 s), lb-new holds [15, 20).
    at(&mut index, 41 * S, Ev::default().promise(3, 10 * S, 20 * S).assign("10.9.0.1", 15 * S, Some("lb-new"), 3));
    let (p, r) = flow(("10.1.0.1", 40_002), ("10.9.0.1", 443), 17 * S + S / 2, 18 * S, 3, false);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("lb-new".into(), EvidenceKind::Assignment)));
    let (p, r) = flow(("10.1.0.1", 40_003), ("10.9.0.1", 443), 25 * S, 26 * S, 4, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::SourceGap));
}

#[test]
fn a_contiguous_source_keeps_its_assignment() {
    let mut index = Index::new(params());
    at(&mut index, 0, Ev::default().promise(1, 0, 10 * S).assign("10.9.0.1", 3 * S, Some("lb"), 1));
    for k in 1..6 {
        at(&mut index, k * 10 * S, Ev::default().promise(1, k * 10 * S, (k + 1) * 10 * S));
    }
    let (p, r) = flow(("10.1.0.1", 40_000), ("10.9.0.1", 443), 45 * S, 46 * S, 1, false);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("lb".into(), EvidenceKind::Assignment)));
    // A release ends it.
    at(&mut index, 60 * S, Ev::default().promise(1, 60 * S, 70 * S).assign("10.9.0.1", 65 * S, None, 1));
    let (p, r) = flow(("10.1.0.1", 40_001), ("10.9.0.1", 443), 68 * S, 69 * S, 2, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::NoOwner));
}

#[test]
fn heartbeats_grow_one_claim_and_expire_after_retention() {
    let mut index = Index::new(params());
    for k in 0..100 {
        let ev = Ev::default().claim("10.2.0.1", 0, EvidenceKind::Heartbeat, k * 10 * S, (k + 1) * 10 * S, "pod");
        at(&mut index, k * 10 * S, ev);
    }
    let size = index.size();
    assert_eq!((size.ips, size.claims), (1, 1), "100 abutting heartbeats are one claim");
    let (p, r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 500 * S, 501 * S, 1, false);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("pod".into(), EvidenceKind::Heartbeat)));
    index.advance(1_000 * S + 900 * S);
    assert_eq!(index.size().claims, 0);
    assert_eq!(index.size().ips, 0);
}

#[test]
fn lookups_older_than_the_retention_are_expired() {
    let mut index = Index::new(params());
    at(&mut index, 0, Ev::default().claim("10.2.0.1", 0, EvidenceKind::Heartbeat, 0, 2_000 * S, "pod"));
    index.advance(1_000 * S);
    let (p, r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 50 * S, 51 * S, 1, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::EvidenceExpired));
}

/// One verdict per connection: an open slice decides; the final record, looked up after the
/// evidence expired, repeats it.
#[test]
fn later_records_of_an_open_connection_repeat_its_first_verdict() {
    let mut index = Index::new(params());
    at(&mut index, 0, Ev::default().claim("10.2.0.1", 0, EvidenceKind::Heartbeat, 0, 20 * S, "pod"));
    index.advance(12 * S);
    let (p, r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 5 * S, 10 * S, 7, true);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("pod".into(), EvidenceKind::Heartbeat)));
    // A slice every window, long after the evidence about the start expired.
    for k in 2..100 {
        index.advance(k * 10 * S + 2 * S);
        let (p, r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 5 * S, k * 10 * S, 7, true);
        assert_eq!(verdict(&mut index, &p, &r), Ok(("pod".into(), EvidenceKind::Heartbeat)), "slice {k}");
    }
    index.advance(1_000 * S);
    // The final record, of a connection that started before its window (as admission marks it).
    let (mut p, mut r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 5 * S, 990 * S, 7, false);
    r.flags |= flags::CONTINUED;
    p.rows[0] = r;
    assert_eq!(verdict(&mut index, &p, &r), Ok(("pod".into(), EvidenceKind::Heartbeat)));
    // A slice arriving after the final record (batches out of order) still gets it.
    let (p, r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 5 * S, 980 * S, 7, true);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("pod".into(), EvidenceKind::Heartbeat)));
    // Forgotten once no record came for the retention.
    index.advance(1_000 * S + 900 * S);
    assert_eq!(index.size().memo, 0);
}

/// Regression: the final record of a connection, looked up before an earlier slice that came
/// late (its batch was lost, then arrived), fixed the verdict only for itself; the slice got
/// another one. A record of a connection that started before its window is remembered too.
#[test]
fn regression_a_final_record_first_still_fixes_the_connection_verdict() {
    let mut index = Index::new(params());
    index.advance(30 * S);
    let (mut p, mut r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 5 * S, 25 * S, 8, false);
    r.flags |= flags::CONTINUED;
    p.rows[0] = r;
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::NoOwner));
    // The evidence arrives later; the late slice repeats the connection's verdict.
    at(&mut index, 31 * S, Ev::default().claim("10.2.0.1", 0, EvidenceKind::Heartbeat, 0, 40 * S, "pod"));
    let (p, r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 5 * S, 10 * S, 8, true);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::NoOwner));
    // A connection with a single record is not remembered.
    let (p, r) = flow(("10.1.0.1", 40_001), ("10.2.0.1", 80), 20 * S, 21 * S, 9, false);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("pod".into(), EvidenceKind::Heartbeat)));
    assert_eq!(index.size().memo, 1);
}

#[test]
fn connection_records_expire_after_the_peer_horizon() {
    let mut index = Index::new(params());
    let end = T0 + 10 * S;
    let ev = Ev::default().conn(("10.9.0.5", 41_000), ("10.2.0.9", 443), T0, end, "a").mirror(
        ("10.2.0.9", 443),
        ("10.9.0.5", 41_000),
        T0,
        end,
    );
    at(&mut index, T0, ev);
    assert_eq!(index.size().conns, 2, "the record and the mirror");
    let (p, r) = flow(("10.2.0.9", 443), ("10.9.0.5", 41_000), T0, end, 3, false);
    index.advance(end + params().guard + params().peer_horizon - 1);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("a".into(), EvidenceKind::Peer)), "within the horizon");
    index.advance(end + params().guard + params().peer_horizon);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::NoOwner), "past the horizon, swept or not");
    index.advance(T0 + params().retention);
    assert_eq!(index.size().conns, 0, "swept");
}

/// A connection whose records stop (its final record lost) is forgotten after the retention.
#[test]
fn remembered_verdicts_expire() {
    let mut index = Index::new(params());
    index.advance(12 * S);
    let (p, r) = flow(("10.1.0.1", 40_000), ("10.2.0.1", 80), 5 * S, 10 * S, 7, true);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::NoOwner));
    assert_eq!(index.size().memo, 1);
    index.advance(12 * S + 900 * S);
    assert_eq!(index.size().memo, 0);
}

/// Cloud flow log rows: one owner over the whole interval, guard band included, from heartbeats,
/// port-scoped claims and assignments alike; expired like flows.
#[test]
fn intervals_need_one_owner_for_all_of_them() {
    use crate::rule::Interval;
    let mut index = Index::new(params());
    // pod-a holds 10.2.0.1 over [0, 300 s), pod-b from 300 s; 10.2.0.9 is shared: pod-c on
    // port 80 throughout, pod-d on port 9000 for [200, 210 s).
    at(
        &mut index,
        0,
        Ev::default()
            .claim("10.2.0.1", 0, EvidenceKind::Heartbeat, 0, 300 * S, "pod-a")
            .claim("10.2.0.9", 80, EvidenceKind::Flow, 0, 600 * S, "pod-c")
            .promise(1, 0, 600 * S)
            .assign("10.9.0.1", 10 * S, Some("lb"), 1),
    );
    at(
        &mut index,
        300 * S,
        Ev::default().claim("10.2.0.1", 0, EvidenceKind::Heartbeat, 300 * S, 600 * S, "pod-b").claim(
            "10.2.0.9",
            9000,
            EvidenceKind::Flow,
            200 * S,
            210 * S,
            "pod-d",
        ),
    );
    index.advance(600 * S);
    let decided = |i: Interval<'_>| match i {
        Interval::Decided(Decision::Attributed { workload, evidence }) => Ok((workload.to_string(), evidence)),
        Interval::Decided(Decision::Unattributed(r)) => Err(Some(r)),
        Interval::NotCovered => Err(None),
    };
    let a = ip("10.2.0.1");
    assert_eq!(decided(index.lookup_interval(a, 443, 60 * S, 119 * S)), Ok(("pod-a".into(), EvidenceKind::Heartbeat)));
    assert_eq!(decided(index.lookup_interval(a, 443, 240 * S, 299 * S)), Err(None), "the band reaches 301 s");
    assert_eq!(decided(index.lookup_interval(a, 443, 240 * S, 359 * S)), Err(None));
    assert_eq!(decided(index.lookup_interval(a, 443, 360 * S, 419 * S)), Ok(("pod-b".into(), EvidenceKind::Heartbeat)));
    let shared = ip("10.2.0.9");
    assert_eq!(decided(index.lookup_interval(shared, 80, 60 * S, 119 * S)), Ok(("pod-c".into(), EvidenceKind::Flow)));
    assert_eq!(decided(index.lookup_interval(shared, 80, 180 * S, 239 * S)), Ok(("pod-c".into(), EvidenceKind::Flow)));
    assert_eq!(decided(index.lookup_interval(shared, 443, 180 * S, 239 * S)), Err(Some(Reason::SharedIp)));
    assert_eq!(
        decided(index.lookup_interval(ip("10.9.0.1"), 443, 60 * S, 119 * S)),
        Ok(("lb".into(), EvidenceKind::Assignment))
    );
    assert_eq!(decided(index.lookup_interval(ip("10.9.0.1"), 443, 0, 59 * S)), Err(Some(Reason::NoOwner)));
    assert_eq!(decided(index.lookup_interval(ip("10.7.0.7"), 443, 60 * S, 119 * S)), Err(Some(Reason::NoOwner)));
    index.advance(960 * S);
    assert_eq!(decided(index.lookup_interval(a, 443, 60 * S, 119 * S)), Err(Some(Reason::EvidenceExpired)));
}

/// Issue "Never the wrong owner", found by a fresh user: a client reuses its 4-tuple within the
/// guard band (short connections), and the other end reported only one of them: its record
/// proves neither connection its own, whoever reported what.
#[test]
fn regression_short_connections_on_a_reused_4_tuple_get_no_peer() {
    let mut index = Index::new(params());
    let (c, srv) = (("10.1.0.9", 40_001), ("10.76.0.1", 80));
    let ev = Ev::default().conn(srv, c, T0 + 15 * S + S / 2, T0 + 15 * S + 9 * S / 10, "new").mirror(
        c,
        srv,
        T0 + 14 * S,
        T0 + 14 * S + 4 * S / 10,
    );
    at(&mut index, T0, ev);
    index.advance(T0 + 17 * S);
    let (p, r) = flow(c, srv, T0 + 14 * S, T0 + 14 * S + 4 * S / 10, 1, false);
    assert_eq!(verdict(&mut index, &p, &r), Err(Reason::NoOwner));
}

/// Found by a fresh user: two connections that an exporter gave one id by mistake, to two
/// addresses, never share a remembered verdict.
#[test]
fn one_id_on_two_connections_to_two_addresses_is_two_memos() {
    let mut index = Index::new(params());
    let ev = Ev::default().claim("10.76.0.1", 0, EvidenceKind::Heartbeat, T0, T0 + 60 * S, "web").claim(
        "10.76.0.2",
        0,
        EvidenceKind::Heartbeat,
        T0,
        T0 + 60 * S,
        "db",
    );
    at(&mut index, T0, ev);
    index.advance(T0 + 20 * S);
    let (p, r) = flow(("10.1.0.9", 40_001), ("10.76.0.1", 80), T0 + 14 * S, T0 + 20 * S, 99, true);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("web".into(), EvidenceKind::Heartbeat)));
    let (p, r) = flow(("10.1.0.9", 40_002), ("10.76.0.2", 443), T0 + 15 * S, T0 + 16 * S, 99, true);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("db".into(), EvidenceKind::Heartbeat)));
    // Nor does a later connection to the same address and port that is the whole of its
    // connection (one closed record): the owner changed, and it gets its own verdict.
    at(
        &mut index,
        T0 + 60 * S,
        Ev::default().claim("10.76.0.1", 0, EvidenceKind::Heartbeat, T0 + 60 * S, T0 + 90 * S, "new"),
    );
    index.advance(T0 + 70 * S);
    let (p, r) = flow(("10.1.0.9", 40_003), ("10.76.0.1", 80), T0 + 65 * S, T0 + 65 * S + S / 2, 99, false);
    assert_eq!(verdict(&mut index, &p, &r), Ok(("new".into(), EvidenceKind::Heartbeat)));
}
