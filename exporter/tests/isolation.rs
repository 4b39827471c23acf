//! Flows across network namespaces joined by a veth pair, and the socket's
//! cgroup (not the current task's). Needs root, `ip` (iproute2) and `bash`.
//!
//! Addresses are in 10.200.0.0/24 inside two namespaces this test creates and
//! deletes; no traffic leaves them.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use flowmap_exporter::{Direction, WorkloadSource};

const TIMEOUT: Duration = Duration::from_secs(10);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces joined by a veth pair; deleted on drop (which also
/// deletes the veth pair).
struct VethPair {
    a: String,
    b: String,
}

impl VethPair {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let pair = Self { a: format!("fm-a-{id}"), b: format!("fm-b-{id}") };
        let (va, vb) = (format!("fma{id}"), format!("fmb{id}"));
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &pair.a]);
        ip(&["link", "set", &vb, "netns", &pair.b]);
        ip(&["-n", &pair.a, "addr", "add", "10.200.0.1/24", "dev", &va]);
        ip(&["-n", &pair.b, "addr", "add", "10.200.0.2/24", "dev", &vb]);
        for (ns, dev) in [(&pair.a, &va), (&pair.b, &vb)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    fn ino(name: &str) -> u32 {
        std::fs::metadata(format!("/run/netns/{name}")).expect("netns file").ino() as u32
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Run `f` on a new thread that has entered the named network namespace
/// (setns changes only the calling thread).
fn spawn_in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let ns = File::open(format!("/run/netns/{name}")).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: a valid namespace fd; setns only switches this thread's
        // network namespace, which nothing else on this thread relies on.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

#[test]
fn flows_across_network_namespaces_over_veth() {
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED: `ip` (iproute2) is not installed");
        return;
    }
    let mut probe = probe();
    let pair = VethPair::new();
    let server_ip: IpAddr = "10.200.0.1".parse().expect("ip");
    probe.assignments.assign_addr(server_ip, 4242).expect("assign");

    let (port_tx, port_rx) = mpsc::channel();
    let (open_tx, open_rx) = mpsc::channel::<()>();
    let (up, down) = (200_000usize, 4096usize);
    let server = spawn_in_netns(&pair.a, move || {
        let l = TcpListener::bind("10.200.0.1:0").expect("bind in netns A");
        port_tx.send(l.local_addr().expect("addr")).expect("send port");
        let (mut s, peer) = l.accept().expect("accept");
        let mut got = vec![0u8; up];
        s.read_exact(&mut got).expect("read");
        assert_eq!(got, pattern(up));
        s.write_all(&pattern(down)).expect("write");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("eof");
        peer
    });
    let server_addr: SocketAddr = port_rx.recv_timeout(TIMEOUT).expect("server port");
    let client = spawn_in_netns(&pair.b, move || {
        let mut c = TcpStream::connect_timeout(&server_addr, TIMEOUT).expect("connect across veth");
        c.write_all(&pattern(up)).expect("write");
        let mut got = vec![0u8; down];
        c.read_exact(&mut got).expect("read");
        let local = c.local_addr().expect("addr");
        open_tx.send(()).expect("signal");
        // Stay open until the main thread has taken a snapshot.
        std::thread::sleep(Duration::from_millis(300));
        local
    });
    open_rx.recv_timeout(TIMEOUT).expect("exchange done");
    let snap = probe.open_flows.snapshot().expect("snapshot");
    let open: Vec<_> = snap.flows.iter().filter(|e| e.local == server_addr || e.remote == server_addr).collect();
    assert_eq!(open.len(), 2, "both namespaces' sockets are in the one open map: {open:#?}");

    let client_addr = client.join().expect("client thread");
    let peer = server.join().expect("server thread");
    assert_eq!(peer, client_addr);

    let events = collect(&mut probe, TIMEOUT, between(client_addr, server_addr), |e| e.len() >= 2);
    let (a_ino, b_ino) = (VethPair::ino(&pair.a), VethPair::ino(&pair.b));
    assert_ne!(a_ino, b_ino);
    let srv = one(&events, server_addr, client_addr);
    assert_eq!((srv.direction, srv.netns_ino), (Direction::Server, a_ino));
    assert_eq!((srv.bytes_received, srv.bytes_sent), (up as u64, down as u64));
    assert_eq!((srv.workload_id, srv.workload_source), (Some(4242), Some(WorkloadSource::Addr)));
    let cli = one(&events, client_addr, server_addr);
    assert_eq!((cli.direction, cli.netns_ino), (Direction::Client, b_ino));
    assert_eq!((cli.bytes_sent, cli.bytes_received), (up as u64, down as u64));
    assert_eq!(cli.workload_id, None);
    assert!(cli.srtt_us > 0);
    drop(pair);
}

#[test]
fn cgroup_id_is_the_sockets_cgroup() {
    let Some(root) = cgroup2_mount() else {
        eprintln!("SKIPPED: no cgroup2 hierarchy mounted");
        return;
    };
    let Some(own) = own_cgroup_id() else {
        eprintln!("SKIPPED: cannot resolve this process's cgroup2 id");
        return;
    };
    let dir = root.join(format!("flowmap-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        eprintln!("SKIPPED: cannot create {}: {e}", dir.display());
        return;
    }
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let cleanup = Cleanup(dir.clone());
    let child_cgroup = std::fs::metadata(&dir).expect("stat cgroup").ino();
    assert_ne!(child_cgroup, own);

    let mut probe = probe();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    // A child process that connects once it has been moved into the new cgroup.
    let script = format!("read -r _ ; exec 3<>/dev/tcp/127.0.0.1/{}; printf hi >&3; exec 3>&-", server.port());
    let mut child =
        Command::new("bash").args(["-c", &script]).stdin(std::process::Stdio::piped()).spawn().expect("spawn bash");
    std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).expect("move child into cgroup");
    child.stdin.take().expect("stdin").write_all(b"go\n").expect("release child");
    let (mut accepted, client_addr) = listener.accept().expect("accept");
    let mut got = Vec::new();
    accepted.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"hi");
    drop(accepted);
    assert!(child.wait().expect("wait").success());

    let events = collect(&mut probe, TIMEOUT, between(client_addr, server), |e| e.len() >= 2);
    let cli = one(&events, client_addr, server);
    assert_eq!(cli.cgroup_id, child_cgroup, "the connecting process's cgroup");
    // The accepted socket belongs to the listener's cgroup (this process),
    // although the kernel created it in softirq context.
    let srv = one(&events, server, client_addr);
    assert_eq!(srv.cgroup_id, own);
    drop(cleanup);
}
