//! A connection and a listener whose local address leaves the host, on real sockets: the kernel
//! keeps both sockets, the exporter ends the connection where the address was last known here
//! and reports nothing of it afterwards (no open slices, no claim on the address), and the
//! listener's heartbeats stop. Needs root and `ip`
//! (iproute2); the addresses live on a veth pair this test creates (one end in the host's
//! namespace, the other in a namespace of its own), deleted at the end.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::exporter::{flows_of, scratch, Exporter};
use common::netns::{have_ip, ip, spawn_in_netns};

/// The veth pair and namespace, removed on drop.
struct Link {
    ns: String,
    host_dev: String,
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_dev]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn a_connection_ends_when_its_local_address_leaves_the_host() {
    if !have_ip() {
        eprintln!("SKIPPED: no ip (iproute2)");
        return;
    }
    let id = std::process::id() % 100_000;
    let link = Link { ns: format!("fmdep-{id}"), host_dev: format!("vdeph{id}") };
    let peer_dev = format!("vdepp{id}");
    ip(&["netns", "add", &link.ns]);
    ip(&["link", "add", &link.host_dev, "type", "veth", "peer", "name", &peer_dev]);
    ip(&["link", "set", &peer_dev, "netns", &link.ns]);
    ip(&["addr", "add", "10.251.77.1/24", "dev", &link.host_dev]);
    ip(&["link", "set", &link.host_dev, "up"]);
    ip(&["-n", &link.ns, "addr", "add", "10.251.77.2/24", "dev", &peer_dev]);
    ip(&["-n", &link.ns, "link", "set", &peer_dev, "up"]);
    ip(&["-n", &link.ns, "link", "set", "lo", "up"]);

    // The server in the other namespace keeps the connection open until told.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = spawn_in_netns(&link.ns, move || {
        let listener = TcpListener::bind("10.251.77.2:0").unwrap();
        ready_tx.send(listener.local_addr().unwrap()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1];
        // Returns when the client end is closed (or reset): the test is over.
        let _ = s.read(&mut buf);
    });
    let server_addr: SocketAddr = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let dir = scratch("departed");
    let exporter = Exporter::start(&dir, "departed", &["--host-workload", "host-dep"]);
    // A listener of the host's workload on the address, which a per-(IP, port) assignment
    // makes shared: it gets port-scoped heartbeats.
    let listener = TcpListener::bind("10.251.77.1:0").unwrap();
    let listening = listener.local_addr().unwrap().port();
    assert_eq!(exporter.control(&["assign", "--ip", "10.251.77.1", "--port", "9", "--workload", "other"]), "ok");
    // Let the exporter see the address in a few windows (300 ms each) before the connection.
    std::thread::sleep(Duration::from_millis(900));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"10.251.77.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect_timeout(&server_addr.into(), Duration::from_secs(5)).unwrap();
    let mut client: TcpStream = socket.into();
    client.write_all(b"x").unwrap();
    let local = client.local_addr().unwrap();
    std::thread::sleep(Duration::from_millis(1_200));

    let before_delete = now_ns();
    ip(&["addr", "del", "10.251.77.1/24", "dev", &link.host_dev]);
    let deleted = now_ns();
    // The kernel keeps the socket: it is still established.
    let wait = Instant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(wait.elapsed() >= Duration::from_millis(1_500));
    let all = exporter.stop();
    drop(client);
    let _ = server.join();

    let records = flows_of(&all, local, server_addr);
    assert!(records.iter().any(|r| r["open"] == true), "open slices while the address was here: {records:?}");
    let finals: Vec<_> = records.iter().filter(|r| r["open"] == false).collect();
    assert_eq!(finals.len(), 1, "one final record: {records:?}");
    let end = finals[0]["end_ns"].as_u64().unwrap();
    assert!(end <= deleted, "ends where the address was last known here ({end} > {deleted}): {records:?}");
    assert!(end + 400_000_000 >= before_delete, "not earlier than the window before: {end} vs {before_delete}");
    let last_seq = records.iter().map(|r| r["seq"].as_u64().unwrap()).max().unwrap();
    assert_eq!(finals[0]["seq"].as_u64(), Some(last_seq), "nothing of it after its final record: {records:?}");
    assert!(
        records.iter().all(|r| r["end_ns"].as_u64().unwrap() <= deleted),
        "no record of it past the departure: {records:?}"
    );
    assert_eq!(finals[0]["local_workload"], "host-dep", "{records:?}");
    // The listener's heartbeats claimed its port while the address was here, and no more
    // after it left; nothing else claims the address after it left either.
    let beats: Vec<_> = all.iter().filter(|v| v["kind"] == "heartbeat" && v["ip"] == "10.251.77.1").collect();
    assert!(beats.iter().any(|hb| hb["port"] == listening && hb["workload"] == "host-dep"), "{beats:?}");
    for hb in beats {
        assert!(hb["to_ns"].as_u64().unwrap() <= deleted, "{hb}");
    }
    drop(listener);
}
