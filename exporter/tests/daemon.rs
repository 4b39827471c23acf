//! The `flowmap-exporter` binary on the real kernel: JSON lines on stdout with no config file,
//! assignments through the control socket, a cgroup rule, SIGHUP reload, heartbeats and the
//! window promise, graceful shutdown.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flowmap-exporter")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fe-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running exporter writing JSON lines to a file (so the test can read while it runs).
struct Exporter {
    child: Child,
    out: PathBuf,
    socket: PathBuf,
}

impl Exporter {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let out = dir.join("out.jsonl");
        let socket = dir.join("control.sock");
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new(bin());
        cmd.args(["--sink", &format!("file:{}", out.display()), "--batch-interval", "300ms"]);
        if !extra.contains(&"--metrics") {
            cmd.args(["--metrics", "off"]);
        }
        if !extra.contains(&"--pin-dir") {
            cmd.args(["--pin-dir", "off"]);
        }
        let mut child = cmd.arg("--control-socket").arg(&socket).args(extra).stderr(Stdio::piped()).spawn().unwrap();
        let started = Instant::now();
        while !socket.exists() {
            assert!(child.try_wait().unwrap().is_none(), "the exporter exited at start");
            assert!(started.elapsed() < Duration::from_secs(20), "the exporter did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Exporter { child, out, socket }
    }

    fn control(&self, args: &[&str]) -> String {
        let out = Command::new(bin()).args(args).arg("--control-socket").arg(&self.socket).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stops with SIGTERM (one last batch) and returns every line written.
    fn stop(mut self) -> Vec<Value> {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "exit {status}: {err}");
        lines(&self.out)
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// One connection: sends `up` bytes, receives `down`; returns (client, server) addresses.
fn connect(server_ip: &str, up: usize, down: usize) -> (SocketAddr, SocketAddr) {
    let listener = TcpListener::bind((server_ip, 0)).unwrap();
    let server = listener.local_addr().unwrap();
    let mut c = TcpStream::connect(server).unwrap();
    let (mut s, client) = listener.accept().unwrap();
    c.write_all(&vec![7u8; up]).unwrap();
    let mut buf = vec![0u8; up];
    s.read_exact(&mut buf).unwrap();
    s.write_all(&vec![9u8; down]).unwrap();
    let mut buf = vec![0u8; down];
    c.read_exact(&mut buf).unwrap();
    drop(c);
    drop(s);
    (client, server)
}

fn flow(all: &[Value], local: SocketAddr, remote: SocketAddr) -> &Value {
    let found: Vec<&Value> = all
        .iter()
        .filter(|v| {
            v["kind"] == "flow"
                && v["open"] == false
                && v["local_ip"] == local.ip().to_string()
                && v["local_port"] == local.port()
                && v["remote_ip"] == remote.ip().to_string()
                && v["remote_port"] == remote.port()
        })
        .collect();
    assert_eq!(found.len(), 1, "{local} -> {remote}: {found:?}");
    found[0]
}

#[test]
fn stdout_sink_works_with_no_config_file() {
    let mut child = Command::new(bin())
        .args([
            "--sink",
            "stdout",
            "--batch-interval",
            "1s",
            "--metrics",
            "off",
            "--pin-dir",
            "off",
            "--control-socket",
        ])
        .arg(scratch("stdout").join("c.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let (client, server) = connect("127.0.0.1", 4321, 1234);
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut text = String::new();
    child.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    assert!(child.wait().unwrap().success());
    let all: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let c = flow(&all, client, server);
    assert_eq!(
        (c["direction"].as_str(), c["bytes_sent"].as_u64(), c["bytes_received"].as_u64()),
        (Some("client"), Some(4321), Some(1234))
    );
    let s = flow(&all, server, client);
    assert_eq!(
        (s["direction"].as_str(), s["bytes_sent"].as_u64(), s["bytes_received"].as_u64()),
        (Some("server"), Some(1234), Some(4321))
    );
}

#[test]
fn assignments_cgroup_rules_reload_heartbeats_and_windows() {
    let dir = scratch("assign");
    // A cgroup of the test's own, and a rule for it.
    let cg_name = format!("flowmap-test-{}", std::process::id());
    let root = flowmap_exporter::daemon::local::cgroup2_mount().unwrap_or_else(|| "/sys/fs/cgroup".into());
    let cg = root.join(&cg_name);
    let have_cgroup = std::fs::create_dir_all(&cg).is_ok();
    let config = dir.join("exporter.toml");
    let write_config = |host: &str| {
        let text = format!(
            "exporter_id = \"test-host\"\nhost_workload = \"{host}\"\n[[cgroup_rules]]\npattern = \"/flowmap-test-*\"\nworkload = \"cg-workload\"\n"
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config("host-a");
    let exporter = Exporter::start(&dir, &["--config", config.to_str().unwrap()]);

    // Per-(IP, port) and per-IP assignments, set through the control socket.
    let shared = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = shared.local_addr().unwrap().port();
    assert_eq!(
        exporter.control(&["assign", "--ip", "127.0.0.1", "--port", &port.to_string(), "--workload", "svc-port"]),
        "ok"
    );
    assert_eq!(exporter.control(&["assign", "--ip", "127.0.0.2", "--workload", "pod-ip"]), "ok");
    let mut c = TcpStream::connect(shared.local_addr().unwrap()).unwrap();
    let (s, by_port_client) = shared.accept().unwrap();
    c.write_all(b"hi").unwrap();
    drop((c, s));
    let (ip_client, ip_server) = connect("127.0.0.2", 10, 10);
    let (host_client, host_server) = connect("127.0.0.1", 10, 10);

    // A client in the rule's cgroup.
    let mut cg_flow = None;
    if have_cgroup {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec python3 -c \"import socket; s=socket.create_connection(('127.0.0.1',{})); s.sendall(b'x'); s.close()\"",
            cg.display(),
            addr.port()
        );
        let status = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(status.success());
        let (_s, peer) = listener.accept().unwrap();
        cg_flow = Some((peer, addr));
    }

    // SIGHUP: a new host identity applies from then on.
    std::thread::sleep(Duration::from_millis(700));
    write_config("host-b");
    exporter.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(700));
    let (after_client, after_server) = connect("127.0.0.1", 5, 5);
    std::thread::sleep(Duration::from_millis(700));
    let all = exporter.stop();
    if have_cgroup {
        let _ = std::fs::remove_dir(&cg);
    }

    let workload =
        |v: &Value| (v["local_workload"].as_str().map(str::to_string), v["local_source"].as_str().map(str::to_string));
    let w = |a: &str, b: &str| (Some(a.to_string()), Some(b.to_string()));
    assert_eq!(
        workload(flow(&all, SocketAddr::new("127.0.0.1".parse().unwrap(), port), by_port_client)),
        w("svc-port", "port_assignment")
    );
    assert_eq!(workload(flow(&all, ip_server, ip_client)), w("pod-ip", "ip_assignment"));
    assert_eq!(workload(flow(&all, host_client, host_server)), w("host-a", "host_identity"));
    assert_eq!(workload(flow(&all, after_client, after_server)), w("host-b", "host_identity"), "reloaded on SIGHUP");
    if let Some((client, server)) = cg_flow {
        let f = flow(&all, client, server);
        eprintln!("cg flow: {f} ino {:?}", std::fs::metadata(&cg).map(|m| std::os::unix::fs::MetadataExt::ino(&m)));
        assert_eq!(workload(f), w("cg-workload", "cgroup_rule"));
    }

    // Heartbeats: the host's own addresses under its identity in every window; none for a
    // loopback address (every network namespace has its own, so no workload owns one: not
    // the per-IP assignment of 127.0.0.2, not 127.0.0.1 shared by port); windows contiguous,
    // and every flow inside its batch's window.
    let mut windows: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    let mut host_windows = 0;
    let host_addresses: Vec<String> = flowmap_exporter_host_addresses();
    for hb in all.iter().filter(|v| v["kind"] == "heartbeat") {
        let seq = hb["seq"].as_u64().unwrap();
        let window = (hb["from_ns"].as_u64().unwrap(), hb["to_ns"].as_u64().unwrap());
        assert_eq!(*windows.entry(seq).or_insert(window), window, "one window per batch");
        let ip: IpAddr = hb["ip"].as_str().unwrap().parse().unwrap();
        assert!(!ip.is_loopback(), "no heartbeat for a loopback address: {hb}");
        assert_eq!(hb["port"], 0, "no listener of a known workload on a shared IP here: {hb}");
        if host_addresses.contains(&ip.to_string()) {
            assert!(hb["workload"] == "host-a" || hb["workload"] == "host-b", "{hb}");
            host_windows += 1;
        }
    }
    if host_addresses.is_empty() {
        eprintln!("SKIPPED (heartbeat part): this host has no address besides loopback");
        return;
    }
    assert!(host_windows >= 3, "{host_windows}");
    for f in
        all.iter().filter(|v| v["kind"] == "flow" && v["local_ip"].as_str().is_some_and(|ip| ip.starts_with("127.")))
    {
        assert_ne!(f["local_scope"], "ip", "a loopback address is never claimed whole: {f}");
    }
    // A heartbeat in every batch but the first and the one during which SIGHUP changed the
    // identity: a heartbeat claims its whole window, so only what held at the window's start
    // too is sent.
    let seqs: Vec<u64> = windows.keys().copied().collect();
    assert!(seqs.windows(2).all(|w| w[1] - w[0] <= 2), "a heartbeat in nearly every batch: {seqs:?}");
    assert!(seqs.windows(2).filter(|w| w[1] - w[0] == 2).count() <= 1, "{seqs:?}");
    for (a, b) in windows.iter().zip(windows.iter().skip(1)) {
        if b.0 - a.0 == 1 {
            assert_eq!(a.1 .1, b.1 .0, "contiguous windows");
        }
    }
    // (Windows are known here from the heartbeats, so batches without one are not checked.)
    let first_seq = all.iter().filter_map(|v| v["seq"].as_u64()).min();
    for f in all.iter().filter(|v| v["kind"] == "flow") {
        let Some(&(from, to)) = windows.get(&f["seq"].as_u64().unwrap()) else { continue };
        let end = f["end_ns"].as_u64().unwrap();
        assert!(end < to, "the promise: a flow is in the batch whose window it ended in");
        if f["open"] == false {
            assert!(end >= from || f["seq"].as_u64() == first_seq, "not reported late");
        }
    }
}

/// The host's non-loopback, non-link-local addresses, as `ip -o addr` lists them.
fn flowmap_exporter_host_addresses() -> Vec<String> {
    let out = Command::new("ip").args(["-o", "addr", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback() && !matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .map(|a| a.to_string())
        .collect()
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = scratch("bad");
    let config = dir.join("bad.toml");
    std::fs::write(&config, "batch_interval = \"1ms\"\n").unwrap();
    let out = Command::new(bin()).args(["--config", config.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch_interval"), "{err}");
    let out = Command::new(bin())
        .args(["assign", "--ip", "10.0.0.1", "--workload", "w", "--control-socket", "/nonexistent.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is it running"));
}

/// The test broker: `FLOWMAP_TEST_BROKERS`, or the one `scripts/broker start` starts.
fn brokers() -> String {
    if let Ok(b) = std::env::var("FLOWMAP_TEST_BROKERS") {
        return b;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker");
    let out = Command::new(script).arg("start").stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_string()
}

#[test]
fn kafka_sink_publishes_contiguous_batches_keyed_by_exporter() {
    use flowmap_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    use flowmap_kafka::rdkafka::Message;
    let b = brokers();
    let topic = format!("exporter-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos());
    let client = flowmap_kafka::ClientSettings::new(&b);
    flowmap_kafka::admin::ensure_topics(&client, &[(&topic, 1)], Duration::from_secs(10)).unwrap();
    let dir = scratch("kafka");
    let mut child = Command::new(bin())
        .args([
            "--sink",
            &format!("kafka://{b}/{topic}"),
            "--batch-interval",
            "300ms",
            "--metrics",
            "off",
            "--pin-dir",
            "off",
        ])
        .args(["--exporter-id", "kafka-test", "--host-workload", "h"])
        .arg("--control-socket")
        .arg(dir.join("c.sock"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (client_addr, server_addr) = connect("127.0.0.1", 100, 200);
    std::thread::sleep(Duration::from_millis(1000));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let consumer: BaseConsumer = {
        let mut c = client.client_config();
        c.set("group.id", "exporter-test").set("enable.partition.eof", "true");
        c.create().unwrap()
    };
    let mut tpl = flowmap_kafka::rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, flowmap_kafka::rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut batches = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                assert_eq!(m.key(), Some(&b"kafka-test"[..]), "keyed by exporter id");
                batches.push(flowmap_schema::decode_batch(m.payload().unwrap()).unwrap());
            }
            Some(Err(flowmap_kafka::rdkafka::error::KafkaError::PartitionEOF(_))) if !batches.is_empty() => break,
            _ => {}
        }
    }
    assert!(batches.len() >= 3, "{}", batches.len());
    for (i, pair) in batches.windows(2).enumerate() {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "batch {i}: no gaps");
        assert_eq!(pair[1].window_from_ns, pair[0].window_to_ns, "batch {i}: contiguous windows");
    }
    let found = batches.iter().flat_map(|b| b.flows.iter().map(move |f| (b, f))).find(|(_, f)| {
        f.local_port == u32::from(client_addr.port()) && f.remote_port == u32::from(server_addr.port()) && !f.open
    });
    let (batch, f) = found.expect("the connection's client side was published");
    assert_eq!((f.bytes_sent, f.bytes_received), (100, 200));
    assert!(f.end_ns < batch.window_to_ns && f.start_ns <= f.end_ns);
    assert_eq!(f.local_workload, "h");
}

#[test]
fn metrics_endpoint_serves_counters_on_loopback() {
    let dir = scratch("metrics");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let exporter = Exporter::start(&dir, &["--metrics", &format!("127.0.0.1:{port}")]);
    connect("127.0.0.1", 10, 10);
    std::thread::sleep(Duration::from_millis(800));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    let value = |name: &str| -> f64 {
        let line = body
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(body.lines().next().is_some_and(|l| l.starts_with("HTTP/1.") && l.ends_with(" 200 OK")), "{body}");
    assert!(value("flowmap_exporter_built_batches_total") >= 1.0);
    assert!(value("flowmap_exporter_reported_flows_total{kind=\"closed\"}") >= 2.0, "the connection's two sides");
    assert_eq!(value("flowmap_exporter_ringbuf_dropped_events_total"), 0.0);
    assert!(value("flowmap_exporter_process_resident_memory_bytes") > 0.0);
    assert!(value("flowmap_exporter_process_cpu_seconds_total") > 0.0);
    assert_eq!(value("flowmap_exporter_sink_failed_batches_total"), 0.0);
    assert_eq!(value("flowmap_exporter_starts_total"), 1.0);
    assert_eq!(value("flowmap_exporter_open_map_pins_total{outcome=\"off\"}"), 1.0);
    assert!(body.contains("flowmap_exporter_incarnation_info{incarnation=\""), "{body}");
    value("flowmap_exporter_seeded_at_start_connections_total");
    value("flowmap_exporter_shared_ips");
    value("flowmap_exporter_listening_sockets");
    exporter.stop();
}
