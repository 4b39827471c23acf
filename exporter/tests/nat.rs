//! NAT on the host's addresses, on real sockets. Destination NAT: a port of the host's address
//! forwarded to a "container" (another network namespace) by an nftables rule; under the host
//! identity, the address's whole-IP heartbeat covered the forwarded port, and connections to
//! it were attributed to the host's workload. Source NAT: a client namespace's connections
//! masqueraded behind the host's address reached the server as the host's (both found by fresh
//! users). The exporter reads the kernel's connection tracking table: once a connection shows
//! the NAT, the address is shared (no whole-IP heartbeat) and a forwarded port is claimed by
//! nobody here. Needs root, `ip`
//! (iproute2) and `nft` (nftables, installed by scripts/setup); everything is created here on
//! addresses of 10.204.0.0/14 and removed at the end. The addresses differ from run to run
//! (by process id): conntrack keeps entries for minutes after their connections, and a
//! previous run's would show the NAT before this run made any.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::exporter::{scratch, Exporter};
use common::netns::{have_ip, ip, spawn_in_netns};

/// The namespaces, links and NAT table of the test, removed on drop.
struct Setup {
    namespaces: [String; 2],
    table: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "ip", &self.table]).status();
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn nft(args: &[&str]) {
    let out = Command::new("nft").args(args).output().expect("run nft");
    assert!(out.status.success(), "nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn sysctl(key: &str) {
    std::fs::write(format!("/proc/sys/{}", key.replace('.', "/")), "1").unwrap();
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn a_forwarded_port_of_a_host_address_is_not_the_hosts() {
    if !have_ip() || Command::new("nft").arg("--version").output().is_err() {
        eprintln!("SKIPPED: needs ip (iproute2) and nft (nftables): scripts/setup installs them");
        return;
    }
    let id = std::process::id() % 100_000;
    let setup = Setup { namespaces: [format!("fmnatc-{id}"), format!("fmnats-{id}")], table: format!("fmnat{id}") };
    // Client namespace <-> host C.1; container namespace <-> host S.1.
    let (c, s) = (format!("10.204.{}", id % 250), format!("10.205.{}", id % 250));
    let net = |k: usize| if k == 0 { c.clone() } else { s.clone() };
    for (k, ns) in setup.namespaces.iter().enumerate() {
        let (host_dev, ns_dev) = (format!("vnat{k}h{id}"), format!("vnat{k}n{id}"));
        ip(&["netns", "add", ns]);
        ip(&["link", "add", &host_dev, "type", "veth", "peer", "name", &ns_dev]);
        ip(&["link", "set", &ns_dev, "netns", ns]);
        ip(&["addr", "add", &format!("{}.1/24", net(k)), "dev", &host_dev]);
        ip(&["link", "set", &host_dev, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{}.2/24", net(k)), "dev", &ns_dev]);
        ip(&["-n", ns, "link", "set", &ns_dev, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", &format!("{}.1", net(k))]);
        // Forwarding between the two links only (the input link's setting decides).
        sysctl(&format!("net.ipv4.conf.{host_dev}.forwarding"));
    }
    nft(&["add", "table", "ip", &setup.table]);
    nft(&["add", "chain", "ip", &setup.table, "pre", "{ type nat hook prerouting priority dstnat; }"]);
    let rule = |words: &str| {
        let mut args = vec!["add", "rule", "ip", &setup.table];
        args.extend(words.split(' '));
        nft(&args);
    };
    rule(&format!("pre ip daddr {c}.1 tcp dport 8080 dnat to {s}.2:80"));
    nft(&["add", "chain", "ip", &setup.table, "post", "{ type nat hook postrouting priority srcnat; }"]);
    rule(&format!("post ip saddr {c}.2 oifname vnat1h{id} masquerade"));

    // The container's server.
    let (ready, started) = std::sync::mpsc::channel();
    let bind = format!("{s}.2:80");
    let server = spawn_in_netns(&setup.namespaces[1], move || {
        let l = TcpListener::bind(bind.as_str()).unwrap();
        ready.send(()).unwrap();
        // The forwarded connection, then the masqueraded one (from the host's address).
        let mut got = Vec::new();
        for _ in 0..2 {
            let (mut s, peer) = l.accept().unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            got.push((buf.len(), peer.ip()));
        }
        got
    });
    started.recv_timeout(Duration::from_secs(10)).unwrap();

    let dir = scratch("nat");
    let exporter = Exporter::start(&dir, "nat", &["--host-workload", "host"]);
    // A few windows (300 ms) in which the address is the host's as a whole.
    std::thread::sleep(Duration::from_millis(1_200));
    let connected = now_ns();
    let targets = [format!("{c}.1:8080"), format!("{s}.2:80")];
    let client = spawn_in_netns(&setup.namespaces[0], move || {
        for to in &targets {
            let to: SocketAddr = to.parse().unwrap();
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
            c.write_all(b"through the NAT").unwrap();
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    client.join().unwrap();
    let host_side: std::net::IpAddr = format!("{s}.1").parse().unwrap();
    let served = server.join().unwrap();
    assert_eq!(served[0].0, 15, "the container served the forwarded connection");
    assert_eq!(served[1], (15, host_side), "the masqueraded connection came from the host's address");
    std::thread::sleep(Duration::from_millis(900));
    let all = exporter.stop();

    let beats: Vec<_> =
        all.iter().filter(|v| v["kind"] == "heartbeat" && v["ip"] == format!("{c}.1").as_str()).collect();
    let whole: Vec<_> = beats.iter().filter(|v| v["port"] == 0).collect();
    assert!(!whole.is_empty(), "the host's address is claimed whole before any forwarding is seen: {beats:?}");
    for hb in &whole {
        assert!(hb["to_ns"].as_u64().unwrap() <= connected, "no whole-IP claim once a port is forwarded: {hb}");
    }
    assert!(!beats.iter().any(|v| v["port"] == 8080), "the forwarded port is nobody's here: {beats:?}");
    // The address the client's connections leave with is not claimed whole either, from the
    // window in which the masqueraded connection was made.
    let masq: Vec<_> =
        all.iter().filter(|v| v["kind"] == "heartbeat" && v["ip"] == format!("{s}.1").as_str()).collect();
    assert!(masq.iter().any(|v| v["port"] == 0), "claimed whole before the masquerade is seen: {masq:?}");
    let masqueraded = connected + 500_000_000;
    for hb in masq.iter().filter(|v| v["port"] == 0) {
        assert!(hb["to_ns"].as_u64().unwrap() <= masqueraded, "no whole-IP claim once masqueraded: {hb}");
    }
    drop(setup);
}
