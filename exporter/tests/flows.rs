//! Closed-flow events against the real kernel: 4-tuple, direction, byte
//! counts, times, cgroup and netns, for IPv4, IPv6 and dual-stack sockets,
//! and connections that never establish. Needs root (or CAP_BPF+CAP_PERFMON).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::*;
use flowmap_exporter::{Direction, FlowEvent};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Assert the two events of one cleanly closed loopback connection.
fn check_pair(events: &[FlowEvent], x: &Exchange, up: u64, down: u64) {
    let client = one(events, x.client, x.server);
    let server = one(events, x.server, x.client);
    let t_before = now_ns() - 60_000_000_000;

    for (ev, dir, sent, received) in [(client, Direction::Client, up, down), (server, Direction::Server, down, up)] {
        assert_eq!(ev.direction, dir, "{ev:#?}");
        assert_eq!(ev.bytes_sent, sent, "bytes_sent {ev:#?}");
        assert_eq!(ev.bytes_received, received, "bytes_received {ev:#?}");
        // Loopback retransmits too when the machine is loaded (a tail loss probe fired for one
        // 64 KiB segment while the whole suite ran): counted apart, never in `bytes_sent`.
        assert!(ev.bytes_retrans == 0 || ev.total_retrans > 0, "{ev:#?}");
        assert!(ev.bytes_retrans <= sent, "{ev:#?}");
        assert!(ev.segs_out >= 1 && ev.segs_in >= 1, "{ev:#?}");
        assert!(!ev.never_established() && !ev.is_open() && !ev.flags.no_open_record(), "{ev:#?}");
        assert!(ev.flags.fin_received(), "clean close: the peer's FIN was seen {ev:#?}");
        assert_eq!(ev.error, None, "{ev:#?}");
        let (o, e, c) =
            (ev.opened.expect("opened").0, ev.established.expect("established").0, ev.closed.expect("closed").0);
        assert!(t_before < o && o <= e && e <= c && c <= now_ns(), "times {ev:#?}");
        assert_eq!(ev.netns_ino, own_netns_ino());
        if let Some(id) = own_cgroup_id() {
            assert_eq!(ev.cgroup_id, id, "socket cgroup {ev:#?}");
        }
        assert_eq!(ev.workload_id, None, "no assignment in this probe");
    }
    assert_ne!(client.cookie, server.cookie);
    assert!(client.srtt_us > 0 || server.srtt_us > 0, "an RTT sample exists");
}

#[test]
fn loopback_ipv4_reports_both_sides_with_exact_bytes() {
    let mut probe = probe();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (up, down) = (1_000_000, 12_345);
    let x = exchange(&listener, up, down);
    let events = collect(&mut probe, TIMEOUT, between(x.client, x.server), |e| e.len() >= 2);
    check_pair(&events, &x, up as u64, down as u64);
}

#[test]
fn loopback_ipv6_reports_both_sides_with_exact_bytes() {
    let mut probe = probe();
    let listener = TcpListener::bind("[::1]:0").expect("bind ::1");
    let (up, down) = (70_000, 3);
    let x = exchange(&listener, up, down);
    assert!(x.client.is_ipv6() && x.server.is_ipv6());
    let events = collect(&mut probe, TIMEOUT, between(x.client, x.server), |e| e.len() >= 2);
    check_pair(&events, &x, up as u64, down as u64);
}

#[test]
fn zero_byte_connection_counts_zero() {
    let mut probe = probe();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let x = exchange(&listener, 0, 0);
    let events = collect(&mut probe, TIMEOUT, between(x.client, x.server), |e| e.len() >= 2);
    check_pair(&events, &x, 0, 0);
}

#[test]
fn dual_stack_socket_with_v4_mapped_addresses_is_reported_as_ipv4() {
    let mut probe = probe();
    // An AF_INET6 listener on [::] accepts IPv4 clients as ::ffff:127.0.0.1.
    let listener = match TcpListener::bind("[::]:0") {
        Ok(l) => l,
        Err(e) => panic!("bind [::]: {e}"),
    };
    let port = listener.local_addr().expect("addr").port();
    let v4_server: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut client = TcpStream::connect(v4_server).expect("connect over IPv4");
    let (accepted, peer) = listener.accept().expect("accept");
    assert!(peer.is_ipv6(), "the kernel hands out a v4-mapped peer: {peer}");
    let client_addr = client.local_addr().expect("addr");
    std::io::Write::write_all(&mut client, b"hello").expect("write");
    drop(client);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut &accepted, &mut rest).expect("read");
    assert_eq!(rest, b"hello");
    drop(accepted);

    let events = collect(&mut probe, TIMEOUT, between(client_addr, v4_server), |e| e.len() >= 2);
    let server = one(&events, v4_server, client_addr);
    assert!(server.local.is_ipv4() && server.remote.is_ipv4(), "{server:#?}");
    assert_eq!(server.direction, Direction::Server);
    assert_eq!(server.bytes_received, 5);
    assert_eq!(one(&events, client_addr, v4_server).bytes_sent, 5);
}

#[test]
fn refused_connection_is_reported_as_never_established() {
    let mut probe = probe();
    // A bound socket that does not listen: SYNs to its port get a RST, and
    // holding the port keeps a parallel test from listening there.
    let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    holder.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
    let closed = holder.local_addr().expect("addr").as_socket().expect("inet");
    let err = TcpStream::connect(closed).expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    let events = collect(&mut probe, TIMEOUT, move |e| e.remote == closed, |e| !e.is_empty());
    assert_eq!(events.len(), 1, "{events:#?}");
    let ev = &events[0];
    assert!(ev.never_established(), "{ev:#?}");
    assert_eq!(ev.established, None);
    assert!(ev.opened.is_some() && ev.closed.is_some());
    assert_eq!(ev.direction, Direction::Client);
    assert_eq!(ev.error, Some(libc::ECONNREFUSED));
    assert_eq!((ev.bytes_sent, ev.bytes_received), (0, 0));
    assert!(ev.local.ip().is_loopback() && ev.local.port() != 0, "{ev:#?}");
}

#[test]
fn timed_out_connection_is_reported_as_never_established() {
    let mut probe = probe();
    // A listener whose accept queue is full drops further SYNs silently.
    let (_listener, server, _filler) = full_listener();

    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let one_retry: libc::c_int = 1;
    // SAFETY: valid socket fd, a c_int option value that lives across the call,
    // and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            std::ptr::from_ref(&one_retry).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_SYNCNT");
    let err = client.connect(&server.into()).expect_err("SYNs are dropped");
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    // (The failed socket's local address is no longer readable: the kernel
    // released the port; filter on the listener, whose queue this test owns.)
    let events = collect(&mut probe, TIMEOUT, move |e| e.remote == server && e.never_established(), |e| !e.is_empty());
    let ev = &events[0];
    assert!(ev.never_established(), "{ev:#?}");
    assert_eq!(ev.error, Some(libc::ETIMEDOUT));
    assert_eq!(ev.direction, Direction::Client);
    assert!(ev.segs_out >= 2 && ev.total_retrans >= 1, "SYN and its retries: {ev:#?}");
}

#[test]
fn abandoned_connect_is_reported_as_never_established() {
    let mut probe = probe();
    // A listener whose accept queue is full drops further SYNs silently.
    let (_listener, server, _filler) = full_listener();

    // The application gives up before the kernel does: SYN_SENT -> CLOSE, no error.
    let err = TcpStream::connect_timeout(&server, Duration::from_millis(200)).expect_err("SYN dropped");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let events = collect(&mut probe, TIMEOUT, move |e| e.remote == server && e.never_established(), |e| !e.is_empty());
    assert_eq!(events[0].error, None, "{:#?}", events[0]);
}

#[test]
fn connection_older_than_the_probe_is_reported_at_close_without_open_record() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let mut client = TcpStream::connect(server).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    let client_addr = client.local_addr().expect("addr");
    std::io::Write::write_all(&mut client, &pattern(300)).expect("write");

    // Attach only now: the handshake is not seen, the close is.
    let mut probe = probe();
    let snap = probe.open_flows.snapshot().expect("snapshot");
    assert!(
        !snap.flows.iter().any(between(client_addr, server)),
        "known gap: connections older than the probe are not listed as open"
    );
    drop(client);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut &accepted, &mut got).expect("read");
    assert_eq!(got.len(), 300);
    drop(accepted);

    let events = collect(&mut probe, TIMEOUT, between(client_addr, server), |e| e.len() >= 2);
    for ev in &events {
        assert!(ev.flags.no_open_record() && !ev.never_established(), "{ev:#?}");
        assert_eq!((ev.direction, ev.opened, ev.established), (Direction::Unknown, None, None));
        assert!(ev.closed.is_some());
    }
    // Counters are the socket's lifetime totals, read at close.
    assert_eq!(one(&events, client_addr, server).bytes_sent, 300);
    assert_eq!(one(&events, server, client_addr).bytes_received, 300);
}
