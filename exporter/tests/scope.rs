//! The scope of local ownership evidence, on real sockets in network namespaces this test
//! creates: a whole-IP claim only where no other workload has sockets on the IP; port claims
//! (flows, heartbeats of listeners) on shared IPs. Needs root, `ip` (iproute2) and python3.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::exporter::{flows_of, scratch, Exporter};
use common::netns::{have_ip, spawn_in_netns, VethPair};
use serde_json::Value;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Connects (retrying while the server starts), sends a byte, closes; returns the local address.
fn touch(server: SocketAddr) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&server, Duration::from_secs(2)) {
            Ok(mut c) => {
                let local = c.local_addr().unwrap();
                c.write_all(b"x").unwrap();
                return local;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect {server}: {e}"),
        }
    }
}

/// A server thread in namespace `ns` on `addr`: accepts `n` connections, reads each to EOF.
fn serve(ns: &str, addr: SocketAddr, n: usize) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = spawn_in_netns(ns, move || {
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
        }
        // Keep listening a little, so the last batches still see the listener.
        std::thread::sleep(Duration::from_millis(900));
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    handle
}

fn heartbeats(all: &[Value]) -> Vec<(IpAddr, u64, String)> {
    all.iter()
        .filter(|v| v["kind"] == "heartbeat")
        .map(|v| {
            (
                v["ip"].as_str().unwrap().parse().unwrap(),
                v["port"].as_u64().unwrap(),
                v["workload"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// (workload, source, scope) of the one closed flow between these ends.
fn local_of(all: &[Value], local: SocketAddr, remote: SocketAddr) -> (Option<String>, Option<String>, Option<String>) {
    let closed: Vec<&Value> = flows_of(all, local, remote).into_iter().filter(|v| v["open"] == false).collect();
    assert_eq!(closed.len(), 1, "{local} -> {remote}: {closed:?}");
    let s = |k: &str| closed[0][k].as_str().map(str::to_string);
    (s("local_workload"), s("local_source"), s("local_scope"))
}

fn some(w: &str, source: &str, scope: &str) -> (Option<String>, Option<String>, Option<String>) {
    (Some(w.into()), Some(source.into()), Some(scope.into()))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cgroup2 mount, when `ip` is installed too (else says why the test is skipped).
fn cgroups_and_ip() -> Option<std::path::PathBuf> {
    if !have_ip() {
        eprintln!("SKIPPED: `ip` (iproute2) is not installed");
        return None;
    }
    let root = flowmap_exporter::daemon::local::cgroup2_mount();
    if root.is_none() {
        eprintln!("SKIPPED: no cgroup2 hierarchy mounted");
    }
    root
}

#[test]
fn two_servers_in_one_namespace_one_known_by_a_cgroup_rule() {
    let Some(root) = cgroups_and_ip() else { return };
    let pair = VethPair::new("s", &["10.201.0.1"], &["10.201.0.2"]);
    let cg_name = format!("flowmap-scope-{}", std::process::id());
    let cg = root.join(&cg_name);
    std::fs::create_dir_all(&cg).unwrap();
    let dir = scratch("scope-cgroup");
    let config = dir.join("exporter.toml");
    std::fs::write(
        &config,
        format!(
            "exporter_id = \"scope-test\"\nhost_workload = \"host-x\"\n[[cgroup_rules]]\npattern = \"/{cg_name}\"\nworkload = \"cg-web\"\n"
        ),
    )
    .unwrap();
    let exporter = Exporter::start(&dir, "out", &["--config", config.to_str().unwrap()]);

    // Server 1: a process in the rule's cgroup, in namespace A. Server 2: unknown, same IP.
    let (known, unknown) = (sa("10.201.0.1:18080"), sa("10.201.0.1:18081"));
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec ip netns exec {} python3 -c \"
import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('10.201.0.1', 18080)); l.listen(8)
while True:
    c, _ = l.accept()
    while c.recv(4096): pass
    c.close()
\"",
        cg.display(),
        pair.a
    );
    // Into the cgroup first: `ip netns exec` remounts /sys, which hides the cgroup mount.
    let server1 = KillOnDrop(Command::new("sh").args(["-c", &script]).spawn().unwrap());
    let server2 = serve(&pair.a, unknown, 1);
    let client = spawn_in_netns(&pair.b, move || (touch(known), touch(unknown)));
    let (c1, c2) = client.join().unwrap();
    server2.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let all = exporter.stop();
    drop(server1);
    let _ = std::fs::remove_dir(&cg);

    assert_eq!(local_of(&all, known, c1), some("cg-web", "cgroup_rule", "port"), "a cgroup rule claims its port only");
    assert_eq!(local_of(&all, unknown, c2), (None, None, None), "the other server is unknown, not the first's");
    assert_eq!(local_of(&all, c1, known), (None, None, None), "the client namespace is not the host's");
    let ip: IpAddr = "10.201.0.1".parse().unwrap();
    let beats = heartbeats(&all);
    assert!(!beats.iter().any(|(i, p, _)| *i == ip && *p == 0), "no whole-IP heartbeat for the shared IP: {beats:?}");
    assert!(beats.contains(&(ip, 18080, "cg-web".into())), "the cgroup-known listener's port: {beats:?}");
    assert!(!beats.iter().any(|(i, p, _)| *i == ip && *p == 18081), "nothing for the unknown listener: {beats:?}");
    drop(pair);
}

#[test]
fn port_assignments_share_an_ip_and_an_unshared_ip_assignment_claims_the_whole_ip() {
    if !have_ip() {
        eprintln!("SKIPPED: `ip` (iproute2) is not installed");
        return;
    }
    // One namespace, two addresses: 10.202.0.1 shared by two workloads told apart by port (the
    // hostNetwork / NAT case), 10.202.0.3 a pod's own address.
    let pair = VethPair::new("p", &["10.202.0.1", "10.202.0.3"], &["10.202.0.2"]);
    let dir = scratch("scope-port");
    let exporter = Exporter::start(&dir, "out", &["--exporter-id", "scope-port", "--host-workload", "host-x"]);
    for (args, what) in [
        (vec!["assign", "--ip", "10.202.0.1", "--port", "9001", "--workload", "w1"], "w1"),
        (vec!["assign", "--ip", "10.202.0.1", "--port", "9002", "--workload", "w2"], "w2"),
        (vec!["assign", "--ip", "10.202.0.3", "--workload", "pod-e"], "pod-e"),
    ] {
        assert_eq!(exporter.control(&args), "ok", "{what}");
    }
    let (s1, s2, s3) = (sa("10.202.0.1:9001"), sa("10.202.0.1:9002"), sa("10.202.0.3:9003"));
    let servers: Vec<_> = [s1, s2, s3].into_iter().map(|s| serve(&pair.a, s, 1)).collect();
    let client = spawn_in_netns(&pair.b, move || (touch(s1), touch(s2), touch(s3)));
    let (c1, c2, c3) = client.join().unwrap();
    for s in servers {
        s.join().unwrap();
    }
    let all = exporter.stop();

    assert_eq!(local_of(&all, s1, c1), some("w1", "port_assignment", "port"));
    assert_eq!(local_of(&all, s2, c2), some("w2", "port_assignment", "port"));
    assert_eq!(local_of(&all, s3, c3), some("pod-e", "ip_assignment", "ip"), "an unshared IP: the whole IP");
    let beats = heartbeats(&all);
    let (shared, own): (IpAddr, IpAddr) = ("10.202.0.1".parse().unwrap(), "10.202.0.3".parse().unwrap());
    assert!(!beats.iter().any(|(i, p, _)| *i == shared && *p == 0), "no whole-IP heartbeat for a shared IP: {beats:?}");
    assert!(beats.contains(&(shared, 9001, "w1".into())) && beats.contains(&(shared, 9002, "w2".into())), "{beats:?}");
    assert!(beats.contains(&(own, 0, "pod-e".into())), "whole-IP heartbeats for the unshared assignment: {beats:?}");
    assert!(!beats.iter().any(|(i, p, _)| *i == own && *p != 0), "no port heartbeats on an unshared IP: {beats:?}");
    // Every batch after the assignments carries the same evidence (the windows are contiguous).
    let per_batch = |want: &(IpAddr, u64, String)| {
        all.iter()
            .filter(|v| v["kind"] == "heartbeat")
            .filter(|v| {
                v["ip"].as_str() == Some(&want.0.to_string()) && v["port"] == want.1 && v["workload"] == want.2.as_str()
            })
            .count()
    };
    assert!(per_batch(&(own, 0, "pod-e".into())) >= 2);
    drop(pair);
}

#[test]
fn connections_that_never_established_carry_their_error() {
    let dir = scratch("scope-errors");
    let exporter = Exporter::start(&dir, "out", &["--exporter-id", "errors"]);
    // Refused: a bound, non-listening port.
    let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    holder.bind(&sa("127.0.0.1:0").into()).unwrap();
    let refused = holder.local_addr().unwrap().as_socket().unwrap();
    assert!(TcpStream::connect(refused).is_err());
    // Timed out: a full accept queue drops the SYNs; one retry.
    let (_listener, full, _filler) = common::full_listener();
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let one_retry: libc::c_int = 1;
    // SAFETY: a valid socket fd, a c_int option value that lives across the call, its size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&client),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            std::ptr::from_ref(&one_retry).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_SYNCNT");
    assert!(client.connect(&full.into()).is_err());
    std::thread::sleep(Duration::from_millis(700));
    let all = exporter.stop();
    let failed = |remote: SocketAddr| -> Vec<&Value> {
        all.iter()
            .filter(|v| {
                v["kind"] == "flow" && v["remote_ip"] == remote.ip().to_string() && v["remote_port"] == remote.port()
            })
            .filter(|v| v["never_established"] == true)
            .collect()
    };
    for (remote, errno) in [(refused, 111), (full, 110)] {
        let f = failed(remote);
        assert_eq!(f.len(), 1, "{remote}: {f:?}");
        assert_eq!(f[0]["connect_error"], errno, "{:?}", f[0]);
        assert_eq!(f[0]["start_ns"], f[0]["end_ns"], "starts and ends when it failed");
        assert_eq!(f[0]["direction"], "client");
    }
    assert!(
        all.iter().filter(|v| v["kind"] == "flow" && v["never_established"] == false).all(|v| v["connect_error"] == 0),
        "an established connection has no connect error"
    );
}

/// Found by a fresh user: a listener created in one workload's cgroup and served from another
/// (a fork whose child moved to another cgroup; socket activation and SCM_RIGHTS are the same
/// case) was claimed for its creator, through its heartbeats and its accepted connections (an
/// accepted socket is charged to the listener's cgroup). The port belongs to whoever accepts.
#[test]
fn a_listener_belongs_to_the_workload_that_serves_it() {
    let Some(root) = cgroups_and_ip() else { return };
    let pair = VethPair::new("f", &["10.203.0.1"], &["10.203.0.2"]);
    let (cg_a, cg_b) =
        (format!("flowmap-fork-a-{}", std::process::id()), format!("flowmap-fork-b-{}", std::process::id()));
    for cg in [&cg_a, &cg_b] {
        std::fs::create_dir_all(root.join(cg)).unwrap();
    }
    let dir = scratch("scope-fork");
    let config = dir.join("exporter.toml");
    std::fs::write(
        &config,
        format!(
            "exporter_id = \"fork-test\"\n[[cgroup_rules]]\npattern = \"/{cg_a}\"\nworkload = \"creator\"\n\
             [[cgroup_rules]]\npattern = \"/{cg_b}\"\nworkload = \"server\"\n"
        ),
    )
    .unwrap();
    let exporter = Exporter::start(&dir, "out", &["--config", config.to_str().unwrap()]);

    // The parent, in the creator's cgroup, listens, forks and closes its copy; the child
    // accepts once the test has moved it to the server's cgroup.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec ip netns exec {} python3 -c \"
import os, socket, sys, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('10.203.0.1', 18090)); l.listen(8)
pid = os.fork()
if pid == 0:
    sys.stdin.readline()
    while True:
        c, _ = l.accept()
        while c.recv(4096): pass
        c.close()
l.close()
print(pid, flush=True)
time.sleep(60)
\"",
        root.join(&cg_a).display(),
        pair.a
    );
    let mut parent = KillOnDrop(
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(parent.0.stdout.take().unwrap()), &mut line).unwrap();
    let child: i32 = line.trim().parse().unwrap();
    std::fs::write(root.join(&cg_b).join("cgroup.procs"), child.to_string()).unwrap();
    parent.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    // Two batches (300 ms) for the scan to see the listener's holder.
    std::thread::sleep(Duration::from_millis(700));
    let server = sa("10.203.0.1:18090");
    let client = spawn_in_netns(&pair.b, move || touch(server)).join().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let all = exporter.stop();
    // SAFETY: kill(2) on the forked child's pid, which this test started; no memory effects.
    unsafe { libc::kill(child, libc::SIGKILL) };
    drop(parent);
    std::thread::sleep(Duration::from_millis(100));
    for cg in [&cg_a, &cg_b] {
        let _ = std::fs::remove_dir(root.join(cg));
    }

    let (workload, _, _) = local_of(&all, server, client);
    assert_ne!(workload.as_deref(), Some("creator"), "the creator does not serve the connection");
    let ip: IpAddr = "10.203.0.1".parse().unwrap();
    let beats: Vec<_> = heartbeats(&all).into_iter().filter(|(i, p, _)| *i == ip && *p == 18090).collect();
    assert!(beats.iter().all(|(_, _, w)| w == "server"), "the port is the server's: {beats:?}");
    assert!(!beats.is_empty(), "the serving workload claims its port: {:?}", heartbeats(&all));
    drop(pair);
}
