//! Helpers for the kernel integration tests: load a probe, drive TCP
//! connections, and collect the events that belong to the test.
//!
//! Every test loads its own probe (its own maps), so tests running in
//! parallel do not see each other's assignments; they do all see every TCP
//! flow on the machine, so each filters events by its own ports.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowmap_exporter::{FlowEvent, FlowProbe, LoaderConfig};

/// Load and attach a probe with the default configuration.
pub fn probe() -> FlowProbe {
    probe_with(&LoaderConfig::default())
}

/// Load and attach a probe.
pub fn probe_with(config: &LoaderConfig) -> FlowProbe {
    match flowmap_exporter::load(config) {
        Ok(p) => p,
        Err(e) => panic!("loading the probe failed (these tests need root and BTF): {e}"),
    }
}

/// Read events until `done(collected)` holds or `timeout` passes; only events
/// for which `keep` is true are collected. Panics on timeout, showing what
/// was collected.
pub fn collect(
    probe: &mut FlowProbe,
    timeout: Duration,
    keep: impl Fn(&FlowEvent) -> bool,
    done: impl Fn(&[FlowEvent]) -> bool,
) -> Vec<FlowEvent> {
    let deadline = Instant::now() + timeout;
    let mut kept = Vec::new();
    let mut batch = Vec::new();
    while !done(&kept) {
        let now = Instant::now();
        assert!(now < deadline, "timed out after {timeout:?}; collected: {kept:#?}");
        match probe.events.wait((deadline - now).min(Duration::from_millis(100))) {
            Ok(_) => {}
            Err(e) => panic!("waiting on the ring buffer: {e}"),
        }
        batch.clear();
        probe.events.read_available(&mut batch);
        kept.extend(batch.drain(..).filter(|e| keep(e)));
    }
    assert_eq!(probe.events.decode_errors(), 0, "{:?}", probe.events.last_decode_error());
    kept
}

/// Events whose 4-tuple is the connection between `a` and `b`, either side.
pub fn between(a: SocketAddr, b: SocketAddr) -> impl Fn(&FlowEvent) -> bool {
    move |e| (e.local == a && e.remote == b) || (e.local == b && e.remote == a)
}

/// Exactly one event with this local and remote address.
pub fn one(events: &[FlowEvent], local: SocketAddr, remote: SocketAddr) -> &FlowEvent {
    let found: Vec<_> = events.iter().filter(|e| e.local == local && e.remote == remote).collect();
    assert_eq!(found.len(), 1, "events {local} -> {remote}: {events:#?}");
    found[0]
}

/// Fill a buffer with a recognisable pattern.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The result of [`exchange`].
pub struct Exchange {
    /// The client socket's local address.
    pub client: SocketAddr,
    /// The server socket's address (the listener's).
    pub server: SocketAddr,
}

/// Connect to `listener`, send `up` bytes client->server and `down` bytes
/// server->client, read them all, then close both sides cleanly.
pub fn exchange(listener: &TcpListener, up: usize, down: usize) -> Exchange {
    let server = listener.local_addr().expect("listener address");
    let mut client = TcpStream::connect(server).expect("connect");
    let (mut accepted, _) = listener.accept().expect("accept");
    let client_addr = client.local_addr().expect("client address");

    let writer = {
        let mut c = client.try_clone().expect("clone");
        let data = pattern(up);
        std::thread::spawn(move || c.write_all(&data).expect("client write"))
    };
    let mut got = vec![0u8; up];
    accepted.read_exact(&mut got).expect("server read");
    assert_eq!(got, pattern(up));
    writer.join().expect("writer thread");

    accepted.write_all(&pattern(down)).expect("server write");
    let mut got = vec![0u8; down];
    client.read_exact(&mut got).expect("client read");
    assert_eq!(got, pattern(down));

    drop(client); // client FIN first
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).expect("server sees EOF");
    assert!(rest.is_empty());
    drop(accepted);
    Exchange { client: client_addr, server }
}

/// Wall-clock nanoseconds now.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Inode of this process's network namespace (what `netns_ino` reports).
pub fn own_netns_ino() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").expect("/proc/self/ns/net").ino() as u32
}

/// Mount point of the cgroup v2 hierarchy, if any.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4).map(Into::into))?
    })
}

/// cgroup v2 id of this process (the inode of its cgroup directory).
pub fn own_cgroup_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = cgroup2_mount()?.join(path.trim_start_matches('/'));
    Some(std::fs::metadata(dir).ok()?.ino())
}

/// A listener (backlog 0) whose accept queue is already full, so the kernel
/// silently drops further SYNs to it. Returns the listener, its address and
/// the connection that fills the queue (keep both alive).
pub fn full_listener() -> (socket2::Socket, SocketAddr, TcpStream) {
    use std::os::fd::AsRawFd;
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    listener.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
    listener.listen(0).expect("listen");
    let server = listener.local_addr().expect("addr").as_socket().expect("inet");
    let filler = TcpStream::connect(server).expect("first connection fits the queue");
    // connect() returns when the client has the SYN-ACK; the server may not
    // have queued the connection yet (the final ACK is processed in softirq).
    // A listening socket polls readable once its accept queue is non-empty.
    let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd that lives across the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!(rc, 1, "the filler connection reaches the accept queue");
    (listener, server, filler)
}

pub mod exporter;
pub mod netns;
