//! A live feed with an exporter that goes silent: after the idle timeout it stops holding the
//! frontier back (output flows on without it), and its later batch is late and counted. With an
//! idle timeout longer than the run, the silent exporter holds everything back until the end.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowmap::config::{JobConfig, RawJobConfig};
use flowmap::feed::{Feed, FeedStatus, Lane, Message, Outcome};
use flowmap::run::{run, OutputMode, Outputs, RunOptions, SinkFactory};
use flowmap::sink::{FlowSink, Sink, SinkError};
use flowmap_operators::records::VerdictPiece;
use flowmap_operators::Time;
use flowmap_schema::{encode_batch, Direction, ExporterBatch, Flow, Ownership, SCHEMA_VERSION};

const T0: u64 = 1_767_225_600_000_000_000;
const WINDOW: u64 = 10_000_000_000;

fn batch(exporter: &str, seq: u64, ips: &[([u8; 4], &str)], flows: bool) -> Vec<u8> {
    let from = T0 + seq * WINDOW;
    let to = from + WINDOW;
    let heartbeats = ips
        .iter()
        .map(|(ip, w)| Ownership { ip: ip.to_vec(), workload: w.to_string(), from_ns: from, to_ns: to, port: 0 })
        .collect();
    let flows = if flows {
        vec![Flow {
            local_ip: vec![10, 0, 0, 1],
            local_port: 40000,
            remote_ip: vec![10, 0, 0, 3],
            remote_port: 80,
            direction: Direction::Client as i32,
            start_ns: from + 4_000_000_000,
            end_ns: from + 5_000_000_000,
            local_workload: "pa".into(),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    encode_batch(&ExporterBatch {
        schema_version: SCHEMA_VERSION,
        exporter_id: exporter.into(),
        seq,
        window_from_ns: from,
        window_to_ns: to,
        flows,
        heartbeats,
        assignments: Vec::new(),
        incarnation: 0,
    })
}

/// Exporter `a` reports every 40 ms of wall time; `b` reports once, then again at 1.2 s.
struct LiveFeed {
    started: Instant,
    a_seq: u64,
    b_seq: u64,
}

impl Feed for LiveFeed {
    fn lanes(&self) -> Vec<Lane> {
        vec![Lane { id: 0, roster: vec!["a".into(), "b".into()] }]
    }

    fn poll(&mut self, _max: usize, deliver: &mut dyn FnMut(&Message<'_>) -> Outcome) -> FeedStatus {
        let elapsed = self.started.elapsed();
        if elapsed >= Duration::from_millis(1800) {
            return FeedStatus::Done;
        }
        let arrival = T0 + 1_000 * WINDOW;
        while Duration::from_millis(40 * self.a_seq) <= elapsed {
            let payload = batch("a", self.a_seq, &[([10, 0, 0, 1], "pa"), ([10, 0, 0, 3], "pa2")], true);
            deliver(&Message { lane: 0, key: "a", payload: &payload, arrival, rebuild: false });
            self.a_seq += 1;
        }
        let b_due = if self.b_seq == 0 { Duration::ZERO } else { Duration::from_millis(1200) };
        if self.b_seq < 2 && elapsed >= b_due {
            let payload = batch("b", self.b_seq, &[([10, 0, 0, 2], "pb")], false);
            deliver(&Message { lane: 0, key: "b", payload: &payload, arrival, rebuild: false });
            self.b_seq += 1;
        }
        FeedStatus::Pending
    }

    fn live(&self) -> bool {
        true
    }
}

/// Records when output arrives.
struct TimedSink(Arc<Mutex<Vec<(Instant, usize)>>>);

impl Sink<VerdictPiece> for TimedSink {
    fn write(&mut self, _time: Time, piece: &VerdictPiece) -> Result<(), SinkError> {
        self.0.lock().unwrap().push((Instant::now(), piece.verdicts.len()));
        Ok(())
    }
    fn undelivered(&mut self) -> Result<Option<Time>, SinkError> {
        Ok(None)
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Runs the live feed; returns (flows output before b's return at 1.2 s, total, report).
fn run_with_idle(idle: Duration) -> (usize, usize, flowmap::run::RunReport) {
    let raw = RawJobConfig { idle_timeout: idle, ..RawJobConfig::default() };
    let job = JobConfig::try_from(raw).unwrap();
    let writes: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::default();
    let sink_writes = Arc::clone(&writes);
    let factory: SinkFactory = Arc::new(move |_, _| {
        let flows = Box::new(TimedSink(Arc::clone(&sink_writes))) as Box<FlowSink>;
        Ok(Outputs { flows: Some(flows), edges: None, events: None })
    });
    let started = Instant::now();
    let report = run(
        timely::Config::thread(),
        job,
        move |_, _| LiveFeed { started, a_seq: 0, b_seq: 0 },
        RunOptions { sample_every: Duration::from_secs(1), ..RunOptions::new(OutputMode::Sink(factory)) },
    )
    .unwrap();
    let writes = writes.lock().unwrap();
    let early =
        writes.iter().filter(|(t, _)| t.duration_since(started) < Duration::from_millis(1100)).map(|(_, n)| n).sum();
    let total = writes.iter().map(|(_, n)| n).sum();
    (early, total, report)
}

#[test]
fn a_silent_exporter_stops_holding_the_frontier_after_the_idle_timeout() {
    let (early, total, report) = run_with_idle(Duration::from_millis(200));
    assert!(total > 20, "{total}");
    assert!(early > 5, "output flowed on while b was silent: {early}");
    assert!(report.ingest.idle_exporters >= 1, "{:?}", report.ingest);
    assert!(report.ingest.late_batches >= 1, "b's return is late: {:?}", report.ingest);
    assert_eq!(report.attributed, report.output, "a's flows are attributed from a's own heartbeats");
}

#[test]
fn without_the_idle_timeout_a_silent_exporter_holds_everything_back() {
    let (early, total, report) = run_with_idle(Duration::from_secs(3600));
    // Only a's first flow (looked up at 6 s, before b's promise of 10 s) can go early.
    assert_eq!(early, 1, "nothing past b's promise is released while b holds the frontier");
    assert!(total > 20);
    assert_eq!(report.ingest.idle_exporters, 0);
}
