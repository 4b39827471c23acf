//! Connections that outlive an exporter: seeded at start (slices while they live, a flagged
//! start, one flow id across restarts), and, with the open map pinned, the real start and
//! direction after a restart. Needs root.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::exporter::{flows_of, scratch, Exporter};
use serde_json::Value;

fn open_pair() -> (TcpStream, TcpStream, SocketAddr, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let client_addr = client.local_addr().unwrap();
    // The listener stays open while the connection lives (it tells the direction).
    std::mem::forget(listener);
    (client, accepted, client_addr, server)
}

fn close(mut client: TcpStream, mut accepted: TcpStream) {
    client.write_all(b"bye").unwrap();
    drop(client);
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).unwrap();
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Every record of one end of the connection must name the same flow and connection.
fn one_identity(records: &[&Value]) -> (u64, u64) {
    let id = (u(records[0], "flow_id"), u(records[0], "connection_id"));
    assert_ne!(id.1, 0, "a connection id is stated");
    for r in records {
        assert_eq!((u(r, "flow_id"), u(r, "connection_id")), id, "{r}");
    }
    id
}

#[test]
fn connection_older_than_the_exporter_gets_slices_a_flagged_start_and_one_id_across_restarts() {
    let dir = scratch("restart-seed");
    let (client, accepted, c, s) = open_pair();
    let before = common::now_ns();
    std::thread::sleep(Duration::from_millis(50));

    let first = Exporter::start(&dir, "first", &["--exporter-id", "restart-test"]);
    std::thread::sleep(Duration::from_millis(1200));
    let a = first.stop();
    let second = Exporter::start(&dir, "second", &["--exporter-id", "restart-test"]);
    std::thread::sleep(Duration::from_millis(700));
    close(client, accepted);
    std::thread::sleep(Duration::from_millis(700));
    let b = second.stop();

    for (local, remote, direction) in [(c, s, "client"), (s, c, "server")] {
        let slices_a = flows_of(&a, local, remote);
        assert!(slices_a.len() >= 3, "a slice every batch while it lives: {slices_a:?}");
        assert!(slices_a.iter().all(|f| f["open"] == true && f["start_unobserved"] == true), "{slices_a:?}");
        let start = u(slices_a[0], "start_ns");
        assert!(start > before, "started when first seen, not before: {}", slices_a[0]);
        assert!(slices_a.iter().all(|f| u(f, "start_ns") == start && f["direction"] == direction), "{slices_a:?}");
        let id = one_identity(&slices_a);

        let records_b = flows_of(&b, local, remote);
        assert!(records_b.iter().any(|f| f["open"] == false), "closed under the second exporter: {records_b:?}");
        assert!(
            records_b.iter().all(|f| f["start_unobserved"] == true && f["direction"] == direction),
            "{records_b:?}"
        );
        assert_eq!(one_identity(&records_b), id, "one connection, one id, across the restart");
    }
    let incarnation = |lines: &[Value]| {
        let all: std::collections::BTreeSet<u64> = lines.iter().map(|l| u(l, "incarnation")).collect();
        assert_eq!(all.len(), 1);
        all.into_iter().next().unwrap()
    };
    assert_ne!(incarnation(&a), incarnation(&b), "a new incarnation");
    assert_eq!(b.iter().map(|l| u(l, "seq")).min(), Some(0), "seq restarts at 0");
}

/// A private bpffs instance on a temporary directory, unmounted on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount(name: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("flowmap-bpffs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if !Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir).status().is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: cannot mount bpffs on {} (needs root)", dir.display());
            return None;
        }
        Some(Bpffs(dir))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn with_the_open_map_pinned_a_connection_keeps_its_real_start_and_direction_after_a_restart() {
    let Some(bpffs) = Bpffs::mount("restart") else { return };
    let pin = bpffs.0.join("flowmap");
    let pin = pin.to_str().unwrap();
    let dir = scratch("restart-pin");
    let first = Exporter::start(&dir, "first", &["--exporter-id", "pin-test", "--pin-dir", pin]);
    let (client, accepted, c, s) = open_pair();
    std::thread::sleep(Duration::from_millis(800));
    let a = first.stop();
    let second = Exporter::start(&dir, "second", &["--exporter-id", "pin-test", "--pin-dir", pin]);
    std::thread::sleep(Duration::from_millis(700));
    close(client, accepted);
    std::thread::sleep(Duration::from_millis(700));
    let b = second.stop();
    assert!(
        common::exporter::log_of(&dir, "second").contains("reused"),
        "{}",
        common::exporter::log_of(&dir, "second")
    );

    for (local, remote, direction) in [(c, s, "client"), (s, c, "server")] {
        let seen = flows_of(&a, local, remote);
        assert!(!seen.is_empty() && seen.iter().all(|f| f["start_unobserved"] == false), "{seen:?}");
        let start = u(seen[0], "start_ns");
        let after = flows_of(&b, local, remote);
        assert!(after.iter().any(|f| f["open"] == false), "{after:?}");
        for f in &after {
            assert_eq!(f["start_unobserved"], false, "the previous incarnation saw it start: {f}");
            assert_eq!((u(f, "start_ns"), f["direction"].as_str()), (start, Some(direction)), "{f}");
        }
        assert_eq!(one_identity(&after), one_identity(&seen));
    }
}
