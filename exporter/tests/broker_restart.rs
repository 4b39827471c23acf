//! The exporter against a broker that stops and comes back: a Tansu broker of this test's own
//! (its own port, persistent SQLite storage) is stopped and restarted while a real exporter
//! publishes every second; every batch must be on the topic afterwards (contiguous sequence
//! numbers in the exporter's incarnation), and nothing dropped or failed. Needs root and the
//! broker `scripts/broker` installs (`scripts/test` does).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::exporter::{log_of, scratch, Exporter};
use flowmap_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use flowmap_kafka::rdkafka::Message;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `scripts/broker CMD PORT` with this test's state directory and SQLite storage.
fn broker(cmd: &str, port: u16, state: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker");
    let out = Command::new(script)
        .args([cmd, &port.to_string()])
        .env("FLOWMAP_BROKER_STATE", state)
        .env("FLOWMAP_BROKER_STORAGE", "sqlite")
        .output()
        .unwrap();
    assert!(out.status.success(), "broker {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}

struct Broker {
    port: u16,
    state: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = broker("stop", self.port, &self.state);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
}

#[test]
fn every_batch_arrives_after_the_broker_restarts() {
    if std::env::var("FLOWMAP_TEST_BROKERS").is_err() {
        eprintln!("SKIPPED: FLOWMAP_TEST_BROKERS is not set (scripts/test installs and starts the broker)");
        return;
    }
    let state = scratch("broker-restart").join("broker");
    let port = free_port();
    let b = Broker { port, state: state.clone() };
    let brokers = broker("start", port, &state);
    let topic = format!("restart-{}", std::process::id());
    let client = flowmap_kafka::ClientSettings::new(&brokers);
    flowmap_kafka::admin::ensure_topics(&client, &[(&topic, 1)], Duration::from_secs(10)).unwrap();

    let dir = scratch("broker-restart");
    let mport = free_port();
    let exporter = Exporter::start(
        &dir,
        "exporter",
        &[
            "--sink",
            &format!("kafka://{brokers}/{topic}"),
            "--batch-interval",
            "1s",
            "--exporter-id",
            "restart-kafka",
            "--metrics",
            &format!("127.0.0.1:{mport}"),
        ],
    );
    // Traffic, so batches have flows; the broker goes away with records in flight.
    let traffic = std::thread::spawn(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for _ in 0..120 {
            let c = TcpStream::connect(addr).unwrap();
            drop(l.accept().unwrap());
            drop(c);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(3500));
    broker("stop", port, &state);
    std::thread::sleep(Duration::from_secs(3));
    broker("start", port, &state);
    std::thread::sleep(Duration::from_secs(6));
    traffic.join().unwrap();
    // Everything built so far must be acknowledged before the exporter stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = metrics(mport);
        let queued = value(&body, "flowmap_exporter_producer_queued_records_total");
        let delivered = value(&body, "flowmap_exporter_producer_delivered_records_total");
        if delivered >= queued || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let built = value(&body, "flowmap_exporter_built_batches_total") as u64;
    eprintln!(
        "built {built}, recreations {}, resent {}, failed {}, dropped {}",
        value(&body, "flowmap_exporter_producer_recreations_total"),
        value(&body, "flowmap_exporter_producer_resent_records_total"),
        value(&body, "flowmap_exporter_producer_failed_records_total"),
        value(&body, "flowmap_exporter_producer_dropped_records_total"),
    );
    assert_eq!(value(&body, "flowmap_exporter_producer_failed_records_total"), 0.0, "{}", log_of(&dir, "exporter"));
    assert_eq!(value(&body, "flowmap_exporter_producer_dropped_records_total"), 0.0);
    assert_eq!(value(&body, "flowmap_exporter_sink_failed_batches_total"), 0.0);
    exporter.stop();

    let consumer: BaseConsumer = {
        let mut c = client.client_config();
        c.set("group.id", format!("{topic}-check")).set("enable.partition.eof", "true");
        c.create().unwrap()
    };
    let mut tpl = flowmap_kafka::rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, flowmap_kafka::rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut seqs = BTreeSet::new();
    let mut incarnations = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let batch = flowmap_schema::decode_batch(m.payload().unwrap()).unwrap();
                incarnations.insert(batch.incarnation);
                seqs.insert(batch.seq);
            }
            Some(Err(flowmap_kafka::rdkafka::error::KafkaError::PartitionEOF(_))) if seqs.len() as u64 > built => break,
            _ => {}
        }
    }
    drop(consumer); // before the broker: closing a consumer waits for it
    assert_eq!(incarnations.len(), 1, "one incarnation: {incarnations:?}");
    assert!(!incarnations.contains(&0), "the incarnation is stated");
    let max = seqs.iter().max().copied().unwrap_or(0);
    assert_eq!(seqs, (0..=max).collect::<BTreeSet<u64>>(), "contiguous: no batch lost");
    assert!(max + 1 > built, "every batch built (and the last one at stop) is on the topic: {} of {built}", max + 1);
    drop(b);
}
