//! End to end against a local S3 and SQS (moto, `scripts/objectstore start`): files uploaded to a
//! bucket whose notifications go to a queue, read by the ingester, checked record by record
//! against an independent parse of the same bytes.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use flowmap_vpc::backfill::BackfillRange;
use flowmap_vpc::ingest::{run_backfill, run_queue, RunOptions, Stop};
use flowmap_vpc::{DeadSource, FileStatus, ObjectId, Record};

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn idle_options() -> RunOptions {
    RunOptions { until_idle: Some(Duration::from_secs(3)), drain_timeout: Duration::from_secs(30), progress: false }
}

/// Every file's records reach the sink exactly as parsed; bad lines, damaged and missing files
/// are dead-lettered with where they came from; the test event is ignored; every message is
/// deleted; record ids are unique.
#[test]
fn queue_end_to_end() {
    let bucket = unique("e2e");
    let url = bucket_with_queue(&bucket);
    let dir = tempfile::tempdir().unwrap();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("AWSLogs/1/vpcflowlogs/a.log.gz".into(), gz_file(DEFAULT, &rows(500, 1)));
    files.insert("AWSLogs/1/vpcflowlogs/b.log.gz".into(), gz_file(DEFAULT, &rows(300, 2)));
    // A key that needs URL-decoding (space and plus), a reordered custom format with an
    // unknown field, a malformed line, and plain (not gzip) text.
    let custom = "log-status dstaddr srcaddr surprise-field pkt-srcaddr pkt-dstaddr dstport srcport action start end\n\
                  OK 10.0.0.220 10.0.1.5 x 10.0.1.5 203.0.113.5 443 40000 ACCEPT 1700000000 1700000060\n\
                  OK 10.0.0.220 10.0.1.5 x - - 443 not-a-port ACCEPT 1700000000 1700000060\n\
                  NODATA - - x - - - - - 1700000000 1700000060\n";
    files.insert("custom dir/c+d.log".into(), custom.as_bytes().to_vec());
    // A truncated gzip file: the rows before the cut are used.
    let whole = gz_file(DEFAULT, &rows(2000, 3));
    files.insert("AWSLogs/1/vpcflowlogs/cut.log.gz".into(), whole[..whole.len() * 2 / 3].to_vec());
    for (key, bytes) in &files {
        put_object(&bucket, key, bytes);
    }
    // Parquet: compared below with the same rows as text (a Parquet row's line is its index + 2,
    // the line the same row has in a text file).
    let parquet_rows = rows(200, 5);
    let parquet = flowmap_vpc::write::write_parquet(Vec::new(), DEFAULT, &parquet_rows).unwrap();
    put_object(&bucket, "AWSLogs/1/vpcflowlogs/p.log.parquet", &parquet);
    // A file deleted before it is read.
    put_object(&bucket, "gone.log.gz", &gz_file(DEFAULT, &rows(5, 4)));
    delete_object(&bucket, "gone.log.gz");

    // A message that is not an S3 event.
    let client = sqs();
    rt().block_on(client.send_message().queue_url(&url).message_body("{\"hello\": 1}").send()).unwrap();
    let s = settings(
        &url,
        &dir.path().join("state.jsonl"),
        "max_in_flight = 100\nreceive_wait = \"1s\"\nvisibility_timeout = \"30s\"\nextend_before = \"10s\"",
        "max_bytes = 1000000\nmax_files = 2\nmax_wait = \"1s\"\nbatch_records = 64",
    );
    let sink = Recorder::default();
    let (summary, _) = run_queue(&s, sink.clone(), Stop::new(), idle_options()).unwrap();
    let seen = sink.0.lock().unwrap();

    // Every record as parsed independently, once.
    let mut got: HashMap<(String, u64), &Record> = HashMap::new();
    let mut ids = HashSet::new();
    for (id, object, r) in &seen.records {
        assert!(ids.insert(*id), "record id {id} twice");
        assert_eq!(*id, flowmap_schema::vpc_record_id(&object.bucket, &object.key, &object.etag, r.line));
        assert!(got.insert((object.key.clone(), r.line), r).is_none());
    }
    let mut want = 0;
    let as_text = gz_file(DEFAULT, &parquet_rows);
    for (key, bytes) in files.iter().chain([(&"AWSLogs/1/vpcflowlogs/p.log.parquet".to_string(), &as_text)]) {
        for (line, r) in expected(bytes) {
            assert_eq!(got.get(&(key.clone(), line)), Some(&&r), "{key} line {line}");
            want += 1;
        }
    }
    assert_eq!(seen.records.len(), want);
    assert_eq!(summary.records as usize, want);

    // The malformed line, the truncation and the missing file, each located.
    let located: Vec<(String, Option<u64>)> = seen
        .dead
        .iter()
        .map(|d| match &d.source {
            DeadSource::File { object, line } => (object.key.clone(), *line),
            DeadSource::Message { message_id } => (format!("message {message_id}"), None),
        })
        .collect();
    assert!(located.contains(&("custom dir/c+d.log".into(), Some(3))), "{located:?}");
    assert!(located.contains(&("gone.log.gz".into(), None)), "{located:?}");
    let cut_rows = expected(files["AWSLogs/1/vpcflowlogs/cut.log.gz"].as_slice()).len() as u64;
    assert!(cut_rows > 0 && cut_rows < 2000);
    assert!(located.contains(&("AWSLogs/1/vpcflowlogs/cut.log.gz".into(), Some(cut_rows + 1))), "{located:?}");
    let statuses: HashMap<&str, &FileStatus> =
        seen.sealed.iter().flat_map(|s| &s.files).map(|f| (f.object.key.as_str(), &f.status)).collect();
    assert_eq!(statuses["AWSLogs/1/vpcflowlogs/cut.log.gz"], &FileStatus::Damaged);
    assert_eq!(statuses["gone.log.gz"], &FileStatus::Missing);
    assert_eq!(statuses["AWSLogs/1/vpcflowlogs/a.log.gz"], &FileStatus::Complete);

    // The summary adds up, the test event was ignored, and the queue is empty.
    assert_eq!(summary.test_events, 1);
    assert_eq!(summary.files, 6);
    assert_eq!(summary.malformed, 1);
    assert_eq!((summary.files_damaged, summary.files_missing), (1, 1));
    assert_eq!(summary.unknown_fields.get("surprise-field"), Some(&1));
    assert_eq!(summary.messages_received, 8, "6 uploads, the test event, the bad message");
    assert_eq!(summary.bad_messages, 1);
    assert!(located.iter().any(|(what, _)| what.starts_with("message ")), "{located:?}");
    assert_eq!(summary.messages_deleted, 8);
    let nodata = files
        .values()
        .chain([&as_text])
        .flat_map(|b| expected(b).into_values())
        .filter(|r| r.log_status == Some(flowmap_vpc::LogStatus::Nodata))
        .count();
    assert!(nodata >= 4);
    assert_eq!(summary.rows.nodata as usize, nodata);
    assert!(summary.mouthfuls >= 3, "at most 2 files per mouthful");
    assert_eq!(queue_counts(&url), (0, 0));
}

/// Messages are deleted only after the sink acknowledges; the in-flight cap holds; visibility is
/// extended while the sink holds its acknowledgement (no message comes back meanwhile).
#[test]
fn deletion_waits_for_the_sink_and_the_cap_holds() {
    let bucket = unique("cap");
    let url = bucket_with_queue(&bucket);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        put_object(&bucket, &format!("f{i}.log.gz"), &gz_file(DEFAULT, &rows(50, i)));
    }
    let s = settings(
        &url,
        &dir.path().join("state.jsonl"),
        "max_in_flight = 2\nreceive_wait = \"1s\"\nvisibility_timeout = \"3s\"\nextend_before = \"2s\"",
        "max_bytes = 1000000\nmax_files = 10\nmax_wait = \"200ms\"\nbatch_records = 1000",
    );
    let sink = Recorder::default();
    sink.0.lock().unwrap().hold = true;
    let stop = Stop::new();
    let run = {
        let (s, sink, stop) = (s.clone(), sink.clone(), stop.clone());
        thread::spawn(move || {
            run_queue(&s, sink, stop, RunOptions { drain_timeout: Duration::from_secs(30), ..RunOptions::default() })
        })
    };
    // Two files in (the test event took a slot, and was deleted at once: it announces nothing).
    let files_seen =
        || -> HashSet<String> { sink.0.lock().unwrap().records.iter().map(|(_, o, _)| o.key.clone()).collect() };
    wait_until("two files", Duration::from_secs(20), || files_seen().len() >= 2);
    // Held for longer than the visibility timeout: nothing deleted, nothing more received.
    for _ in 0..5 {
        thread::sleep(Duration::from_secs(1));
        let (visible, in_flight) = queue_counts(&url);
        // 6 file messages (plus the test event, if it was not yet received and deleted).
        assert!(visible + in_flight >= 6, "a file message was deleted before the acknowledgement");
        assert!(in_flight <= 2, "in flight {in_flight} over the cap");
        let files = files_seen();
        assert!(files.len() <= 2, "read {} files with 2 messages allowed", files.len());
    }
    sink.0.lock().unwrap().hold = false;
    wait_until("all files", Duration::from_secs(30), || files_seen().len() == 6);
    wait_until("an empty queue", Duration::from_secs(30), || queue_counts(&url) == (0, 0));
    stop.request();
    let (summary, _) = run.join().unwrap().unwrap();
    assert_eq!(summary.max_in_flight, 2);
    assert!(summary.visibility_extensions > 0);
    assert_eq!(summary.messages_redelivered, 0, "extensions kept held messages invisible");
    assert_eq!(summary.messages_deleted, 7);
    let seen = sink.0.lock().unwrap();
    let ids: HashSet<u64> = seen.records.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids.len(), seen.records.len(), "each record once");
    assert_eq!(seen.records.len(), 6 * 50);
}

/// Backfill reads the files of a time range under a prefix, and a second run skips them all.
#[test]
fn backfill_reads_a_time_range_once() {
    let bucket = unique("fill");
    let (status, _) = http("PUT", &format!("/{bucket}"), b"");
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let name =
        |t: &str| format!("AWSLogs/1/vpcflowlogs/us-east-1/2024/05/01/1_vpcflowlogs_us-east-1_fl-1_{t}_ab.log.gz");
    for (i, t) in ["20240501T1155Z", "20240501T1200Z", "20240501T1230Z", "20240501T1300Z"].iter().enumerate() {
        put_object(&bucket, &name(t), &gz_file(DEFAULT, &rows(10, i)));
    }
    put_object(
        &bucket,
        "elsewhere/1_vpcflowlogs_us-east-1_fl-1_20240501T1230Z_ab.log.gz",
        &gz_file(DEFAULT, &rows(10, 9)),
    );
    let toml = format!(
        "[store]\nkind = \"s3\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nallow_http = true\n\
         [state]\npath = \"{}\"\nretention = \"1d\"\n",
        endpoint(),
        dir.path().join("state.jsonl").display()
    );
    let s = flowmap_vpc::config::Settings::from_toml(&toml).unwrap();
    let range = BackfillRange {
        bucket: bucket.clone(),
        prefix: "AWSLogs/1/vpcflowlogs/".into(),
        from: humantime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap(),
        to: humantime::parse_rfc3339("2024-05-01T13:00:00Z").unwrap(),
    };
    let sink = Recorder::default();
    let (summary, _) = run_backfill(&s, range.clone(), sink.clone(), Stop::new(), RunOptions::default()).unwrap();
    let keys: HashSet<String> = sink.0.lock().unwrap().records.iter().map(|(_, o, _)| o.key.clone()).collect();
    assert_eq!(keys, HashSet::from([name("20240501T1200Z"), name("20240501T1230Z")]));
    assert_eq!(summary.files, 2);
    let again = Recorder::default();
    let (summary, _) = run_backfill(&s, range, again.clone(), Stop::new(), RunOptions::default()).unwrap();
    assert_eq!((summary.files, summary.skipped_processed), (0, 2));
    assert!(again.0.lock().unwrap().records.is_empty());
}

/// The ingester process killed in the middle of a mouthful and started again: nothing is lost,
/// and the only duplicates are whole records repeated with their ids.
#[test]
fn kill_mid_mouthful_and_restart() {
    if let Ok(config) = std::env::var("FLOWMAP_VPC_HELPER_CONFIG") {
        helper(&config);
        return;
    }
    let bucket = unique("kill");
    let url = bucket_with_queue(&bucket);
    let dir = tempfile::tempdir().unwrap();
    let mut files = BTreeMap::new();
    for i in 0..4 {
        let bytes = gz_file(DEFAULT, &rows(400, 10 + i));
        put_object(&bucket, &format!("k{i}.log.gz"), &bytes);
        files.insert(format!("k{i}.log.gz"), bytes);
    }
    let config = dir.path().join("vpc.toml");
    let out = dir.path().join("out.jsonl");
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"s3\"\nregion = \"us-east-1\"\nendpoint = \"{e}\"\nallow_http = true\n\
             [queue]\nurl = \"{url}\"\nregion = \"us-east-1\"\nendpoint = \"{e}\"\nmax_in_flight = 100\n\
             receive_wait = \"1s\"\nvisibility_timeout = \"3s\"\nextend_before = \"1s\"\n\
             [mouthful]\nmax_bytes = 100000000\nmax_files = 2\nmax_wait = \"500ms\"\nbatch_records = 40\n\
             [state]\npath = \"{}\"\nretention = \"1d\"\n",
            dir.path().join("state.jsonl").display(),
            e = endpoint()
        ),
    )
    .unwrap();
    let spawn = |slow: &str, idle: &str| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill_mid_mouthful_and_restart", "--nocapture", "--test-threads", "1"])
            .env("FLOWMAP_VPC_HELPER_CONFIG", &config)
            .env("FLOWMAP_VPC_HELPER_OUT", &out)
            .env("FLOWMAP_VPC_HELPER_SLOW_MS", slow)
            .env("FLOWMAP_VPC_HELPER_IDLE", idle)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // First run: slow (100 ms per 40-record batch), killed once some records are out and the
    // first mouthful is not yet sealed.
    let mut first = spawn("100", "");
    wait_until("records from the first run", Duration::from_secs(30), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.lines().filter(|l| l.contains("\"record\"")).count() >= 100)
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let before = std::fs::read_to_string(&out).unwrap();
    assert!(!before.contains("\"sealed\""), "killed mid-mouthful, before any seal");
    // Second run: messages come back after their visibility timeout; runs until idle.
    let mut second = spawn("0", "4s");
    let t = Instant::now();
    while second.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(90), "the second run did not finish");
        thread::sleep(Duration::from_millis(200));
    }
    assert!(second.wait().unwrap().success());

    let text = std::fs::read_to_string(&out).unwrap();
    let mut by_id: HashMap<u64, serde_json::Value> = HashMap::new();
    let mut duplicates = 0;
    for line in text.lines() {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else { continue }; // a torn last write
        if v.get("record").is_none() {
            continue;
        }
        // The mouthful number is per run; everything else of a repeated record is the same.
        v.as_object_mut().unwrap().remove("mouthful");
        let id = v["id"].as_u64().unwrap();
        if let Some(prev) = by_id.insert(id, v.clone()) {
            assert_eq!(prev, v, "a duplicate is the same record");
            duplicates += 1;
        }
    }
    assert!(duplicates > 0, "the killed run's records come again");
    let mut want = 0;
    for (key, bytes) in &files {
        let object_etag =
            by_id.values().find(|v| v["key"] == key.as_str()).map(|v| v["etag"].as_str().unwrap().to_string());
        let etag = object_etag.expect("every file reached the sink");
        for (line, r) in expected(bytes) {
            let id = flowmap_schema::vpc_record_id(&bucket, key, &etag, line);
            let got = by_id.get(&id).unwrap_or_else(|| panic!("{key} line {line} lost"));
            assert_eq!(got["record"], serde_json::to_value(&r).unwrap());
            want += 1;
        }
    }
    assert_eq!(by_id.len(), want, "nothing but the files' records");
    assert_eq!(queue_counts(&url), (0, 0));
}

/// The ingester in a process of its own, for [`kill_mid_mouthful_and_restart`].
fn helper(config: &str) {
    let s = flowmap_vpc::config::Settings::load(std::path::Path::new(config)).unwrap();
    endpoint();
    let out = std::env::var("FLOWMAP_VPC_HELPER_OUT").unwrap();
    let slow: u64 = std::env::var("FLOWMAP_VPC_HELPER_SLOW_MS").unwrap().parse().unwrap();
    let idle = std::env::var("FLOWMAP_VPC_HELPER_IDLE").unwrap();
    let sink =
        flowmap_vpc::jsonl::JsonLinesSink::append(std::path::Path::new(&out), Duration::from_millis(slow)).unwrap();
    let options = RunOptions {
        until_idle: (!idle.is_empty()).then(|| humantime::parse_duration(&idle).unwrap()),
        ..RunOptions::default()
    };
    run_queue(&s, sink, Stop::new(), options).unwrap();
}

/// Objects are identified by bucket, key and ETag: the same key uploaded again is new.
#[test]
fn an_object_rewritten_is_read_again_and_an_unchanged_one_is_not() {
    let bucket = unique("etag");
    let url = bucket_with_queue(&bucket);
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        &url,
        &dir.path().join("state.jsonl"),
        "max_in_flight = 10\nreceive_wait = \"1s\"\nvisibility_timeout = \"30s\"\nextend_before = \"10s\"",
        "max_bytes = 1000000\nmax_files = 10\nmax_wait = \"200ms\"\nbatch_records = 100",
    );
    put_object(&bucket, "same.log.gz", &gz_file(DEFAULT, &rows(20, 1)));
    let first = Recorder::default();
    run_queue(&s, first.clone(), Stop::new(), idle_options()).unwrap();
    assert_eq!(first.0.lock().unwrap().records.len(), 20);
    // The same bytes again (same ETag) and then new bytes under the same key.
    put_object(&bucket, "same.log.gz", &gz_file(DEFAULT, &rows(20, 1)));
    put_object(&bucket, "same.log.gz", &gz_file(DEFAULT, &rows(7, 2)));
    let second = Recorder::default();
    let (summary, _) = run_queue(&s, second.clone(), Stop::new(), idle_options()).unwrap();
    let seen = second.0.lock().unwrap();
    let objects: HashSet<&ObjectId> = seen.records.iter().map(|(_, o, _)| o).collect();
    assert_eq!(objects.len(), 1);
    assert_eq!(seen.records.len(), 7);
    assert_eq!(summary.skipped_processed, 1);
    assert_eq!(queue_counts(&url), (0, 0));
}
