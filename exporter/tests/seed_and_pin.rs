//! Connections older than the probe (seeded from the socket iterator), listeners, and the
//! pinned open-connection map that outlives a probe. Needs root (bpffs at /sys/fs/bpf).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use flowmap_exporter::{Direction, FlowEvent, LoaderConfig, PinOutcome};

const TIMEOUT: Duration = Duration::from_secs(10);

fn open_pair(listener: &TcpListener) -> (TcpStream, TcpStream, SocketAddr, SocketAddr) {
    let server = listener.local_addr().expect("addr");
    let client = TcpStream::connect(server).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    let client_addr = client.local_addr().expect("addr");
    (client, accepted, client_addr, server)
}

fn open_between(probe: &mut flowmap_exporter::FlowProbe, a: SocketAddr, b: SocketAddr) -> Vec<FlowEvent> {
    let snap = probe.open_flows.snapshot().expect("snapshot");
    assert_eq!(snap.decode_errors, 0, "{:?}", snap.last_decode_error);
    snap.flows.into_iter().filter(between(a, b)).collect()
}

/// A private bpffs instance (mounted on a temporary directory for this test, unmounted on
/// drop), and a pin directory in it.
pub struct PinDir {
    mount: PathBuf,
    dir: PathBuf,
}

impl PinDir {
    fn new(name: &str) -> Option<Self> {
        let mount = std::env::temp_dir().join(format!("flowmap-bpffs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&mount).expect("mount point");
        let status = std::process::Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&mount).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: cannot mount a bpffs instance on {} (needs root)", mount.display());
            let _ = std::fs::remove_dir(&mount);
            return None;
        }
        Some(PinDir { dir: mount.join("flowmap"), mount })
    }

    fn config(&self) -> LoaderConfig {
        LoaderConfig { pin_dir: Some(self.dir.clone()), ..LoaderConfig::default() }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
    }
}

#[test]
fn connection_older_than_the_probe_is_seeded_with_its_direction() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (mut client, mut accepted, c, s) = open_pair(&listener);
    client.write_all(&pattern(300)).expect("write");
    let mut got = vec![0u8; 300];
    accepted.read_exact(&mut got).expect("read");
    let before = now_ns();

    let mut probe = probe();
    assert!(open_between(&mut probe, c, s).is_empty(), "not seen before the scan");
    let scan = probe.attachment.scan_sockets().expect("scan");
    assert_eq!(scan.decode_errors, 0);
    assert!(
        scan.listeners.iter().any(|l| l.local == s && l.netns_ino == own_netns_ino()),
        "the test's listener is listed: {:?}",
        scan.listeners
    );
    let seeded: Vec<_> =
        scan.seeded.iter().filter(|x| (x.local == c && x.remote == s) || x.local == s && x.remote == c).collect();
    assert_eq!(seeded.len(), 2, "both ends are seeded: {:?}", scan.seeded);
    for conn in &seeded {
        let want = if conn.local == s { Direction::Server } else { Direction::Client };
        assert_eq!(scan.direction_of(conn), want, "{conn:?}");
        assert!(probe.open_flows.set_direction(conn.cookie, want).expect("set direction"));
    }
    // A second pass seeds nothing new (the records exist).
    let again = probe.attachment.scan_sockets().expect("scan");
    assert!(!again.seeded.iter().any(|x| x.local == c || x.local == s), "{:?}", again.seeded);
    assert!(probe.counters.read().expect("counters").seeded >= 2);

    let open = open_between(&mut probe, c, s);
    assert_eq!(open.len(), 2, "{open:#?}");
    for ev in &open {
        assert!(ev.flags.seeded() && ev.flags.start_unobserved() && ev.is_open(), "{ev:#?}");
        let first_seen = ev.established.expect("first seen").0;
        assert!(first_seen >= before && first_seen <= now_ns(), "start = when first seen {ev:#?}");
        assert_eq!(ev.opened, ev.established);
    }
    assert_eq!(one(&open, c, s).direction, Direction::Client);
    assert_eq!(one(&open, s, c).direction, Direction::Server);
    assert_eq!(one(&open, c, s).bytes_sent, 300, "lifetime counters");

    drop(client);
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).expect("eof");
    drop(accepted);
    let closed = collect(&mut probe, TIMEOUT, between(c, s), |e| e.len() >= 2);
    for ev in &closed {
        assert!(ev.flags.seeded() && !ev.flags.no_open_record() && !ev.never_established(), "{ev:#?}");
    }
    assert_eq!(one(&closed, c, s).direction, Direction::Client);
    assert_eq!(one(&closed, s, c).direction, Direction::Server);
    assert_eq!(one(&closed, c, s).established, one(&open, c, s).established, "one start, open and closed");
}

#[test]
fn pinned_open_map_keeps_start_and_direction_across_probes_and_drops_what_closed_between() {
    let Some(pin) = PinDir::new("pin") else { return };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");

    let mut first = probe_with(&pin.config());
    assert_eq!(first.pin, PinOutcome::Created);
    let (mut client, mut accepted, c, s) = open_pair(&listener);
    let (gone_client, gone_accepted, gc, gs) = open_pair(&listener);
    first.assignments.assign_addr("127.0.0.1".parse().expect("ip"), 77).expect("assign");
    let seen = open_between(&mut first, c, s);
    assert_eq!(seen.len(), 2);
    assert_eq!(open_between(&mut first, gc, gs).len(), 2);
    assert!(seen.iter().all(|e| e.workload_id == Some(77)));
    drop(first);

    // Closed while no probe is attached: never reported, and its records must go.
    drop(gone_client);
    drop(gone_accepted);
    std::thread::sleep(Duration::from_millis(100));

    let mut second = probe_with(&pin.config());
    assert_eq!(second.pin, PinOutcome::Reused);
    let stale_before = second.counters.read().expect("counters").refresh_stale;
    let now = open_between(&mut second, c, s);
    assert_eq!(now.len(), 2, "{now:#?}");
    for ev in &now {
        let then = one(&seen, ev.local, ev.remote);
        assert_eq!(
            (ev.cookie, ev.direction, ev.opened, ev.established),
            (then.cookie, then.direction, then.opened, then.established)
        );
        assert!(!ev.flags.seeded(), "the previous probe saw its start: {ev:#?}");
        assert_eq!(ev.workload_id, None, "ids of the previous process are forgotten");
    }
    assert!(open_between(&mut second, gc, gs).is_empty(), "records of connections closed in between are removed");
    assert!(second.counters.read().expect("counters").refresh_stale >= stale_before + 2);

    send_and_close(&mut client, &mut accepted);
    drop((client, accepted));
    let closed = collect(&mut second, TIMEOUT, between(c, s), |e| e.len() >= 2);
    assert_eq!(one(&closed, c, s).established, one(&seen, c, s).established, "the real start");
    assert_eq!(one(&closed, c, s).direction, Direction::Client);
    drop(second);
}

fn send_and_close(client: &mut TcpStream, accepted: &mut TcpStream) {
    client.write_all(b"bye").expect("write");
    let mut buf = [0u8; 3];
    accepted.read_exact(&mut buf).expect("read");
}

#[test]
fn unwritable_pin_directory_falls_back_to_an_unpinned_map() {
    let dir = std::env::temp_dir().join(format!("flowmap-not-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let probe = probe_with(&LoaderConfig { pin_dir: Some(dir.clone()), ..LoaderConfig::default() });
    match &probe.pin {
        PinOutcome::Unavailable(why) => assert!(why.contains(&dir.display().to_string()), "{why}"),
        other => panic!("pinning on a non-bpffs directory must fail: {other:?}"),
    }
    drop(probe);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found by a fresh user: a wildcard IPv6 listener with IPV6_V6ONLY was taken for dual-stack,
/// and an IPv6 socket bound to an IPv4-mapped address was left as an IPv6 address: the scan
/// says which IPv6 listeners serve no IPv4, and names a mapped address as IPv4.
#[test]
fn the_scan_tells_v6only_listeners_and_names_mapped_addresses_as_ipv4() {
    use socket2::{Domain, Socket, Type};
    let listen = |addr: &str, v6only: bool| {
        let addr: SocketAddr = addr.parse().unwrap();
        let s = Socket::new(Domain::IPV6, Type::STREAM, None).expect("socket");
        s.set_only_v6(v6only).expect("IPV6_V6ONLY");
        s.bind(&addr.into()).expect("bind");
        s.listen(8).expect("listen");
        let port = s.local_addr().expect("addr").as_socket().expect("inet").port();
        (s, port)
    };
    let (_only, only_port) = listen("[::]:0", true);
    let (_dual, dual_port) = listen("[::]:0", false);
    let (_mapped, mapped_port) = listen("[::ffff:127.0.0.1]:0", false);
    let mut probe = probe();
    let scan = probe.attachment.scan_sockets().expect("scan");
    let find = |port: u16| scan.listeners.iter().find(|l| l.local.port() == port).copied();
    let only = find(only_port).expect("the V6ONLY listener is listed");
    assert!(only.v6only && only.local.ip().is_unspecified() && only.local.is_ipv6(), "{only:?}");
    let dual = find(dual_port).expect("the dual-stack listener is listed");
    assert!(!dual.v6only && dual.local.ip().is_unspecified(), "{dual:?}");
    let mapped = find(mapped_port).expect("the mapped listener is listed");
    assert_eq!(mapped.local, SocketAddr::from(([127, 0, 0, 1], mapped_port)), "{mapped:?}");
}
