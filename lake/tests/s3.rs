//! The lake on S3: a local S3 (moto, `scripts/objectstore start`), an `s3://bucket/prefix`
//! location with an endpoint setting, the same files as on a local directory, and a store that
//! fails mid-cell followed by a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use flowmap_lake::sample::{run_job, SampleInput};
use flowmap_lake::{EdgeRow, FlowRow, Lake, LakeConfig, LakeSettings};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;

/// The endpoint of the local S3 (started once, idempotently), with the process's AWS
/// environment set for it (before any thread of this test reads it: every test calls this first).
fn endpoint() -> &'static str {
    static E: OnceLock<String> = OnceLock::new();
    E.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        // nextest runs each test in its own process: without the lock, two of them start two
        // servers at once, one fails on the taken port and leaves its pid in the pid file
        // (regression: every later `start` then said the port was taken).
        // `-o`: the server the script starts must not inherit the lock (regression: it held it
        // for its whole life, and the next test's `flock` waited forever).
        let out = std::process::Command::new("flock")
            .arg("-o")
            .arg(std::env::temp_dir().join("flowmap-objectstore-start.lock"))
            .arg(root.join("scripts/objectstore"))
            .arg("start")
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/objectstore start: {}", String::from_utf8_lossy(&out.stderr));
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_string()
    })
}

/// A new bucket with a unique name (one plain request; moto checks no signature, but needs an
/// Authorization header to treat the request as authenticated).
fn bucket(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let host = endpoint().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    name
}

fn s3_settings(bucket: &str, prefix: &str) -> LakeSettings {
    let mut c = LakeConfig::at(&format!("s3://{bucket}/{prefix}"));
    c.endpoint = Some(endpoint().to_string());
    c.max_rows_per_file = 40;
    c.validate().unwrap()
}

fn input() -> SampleInput {
    SampleInput { base_ns: BASE, messages: 300, rows_per_message: 4, step_ns: SEC, spread: 75 }
}

/// The job model on `s3://bucket/prefix` writes the same objects, byte for byte, as on a local
/// directory, and reads back every row once.
#[test]
fn the_lake_on_s3_matches_the_local_one() {
    let b = bucket("lake");
    let lake = Lake::open(&s3_settings(&b, "fleet/a")).unwrap();
    assert_eq!(lake.location(), format!("s3://{b}/fleet/a"));
    let dir = scratch("s3-local");
    let commits = dir.join("commits-s3");
    run_job(&lake, &input(), 0, 1, &commits, |_| {}).unwrap();
    assert_eq!(stored::<FlowRow>(&lake), expected_flows(&input()));
    assert_eq!(stored::<EdgeRow>(&lake), expected_edges(&input()));

    let local_lake = local(&dir.join("lake"), 60, 40);
    run_job(&local_lake, &input(), 0, 1, &dir.join("commits-local"), |_| {}).unwrap();
    for table in ["flows", "edges"] {
        let names = lake.data_files(table).unwrap();
        assert!(!names.is_empty());
        assert_eq!(names, local_lake.data_files(table).unwrap());
        // Every object under the prefix, read with a client of its own.
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(&b)
            .with_endpoint(endpoint())
            .with_allow_http(true)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for name in names {
            let key = Path::from(format!("fleet/a/{name}"));
            let got = rt.block_on(async {
                object_store::ObjectStoreExt::get(&store, &key).await.unwrap().bytes().await.unwrap()
            });
            assert_eq!(got.as_ref(), std::fs::read(dir.join("lake").join(&name)).unwrap().as_slice(), "{name}");
        }
    }
}

/// S3 failing at the n-th PUT (the job stops), then the job restarted on a healthy client: every
/// row once, and the committed messages were stored before they were committed.
#[test]
fn s3_failing_mid_cell_then_a_restart() {
    for fail_at in [3, 6, 11] {
        let b = bucket("fail");
        let settings = s3_settings(&b, "");
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(&b)
            .with_endpoint(endpoint())
            .with_allow_http(true)
            .build()
            .unwrap();
        let failing = FailingStore::new(Arc::new(s3), fail_at, false);
        let lake = Lake::with_store(failing, Path::default(), settings.clone()).unwrap();
        let dir = scratch(&format!("s3-fail-{fail_at}"));
        let commits = dir.join("commits");
        let err = run_job(&lake, &input(), 0, 1, &commits, |_| {}).unwrap_err();
        assert!(err.to_string().contains("fails"), "{err}");
        let healthy = Lake::open(&settings).unwrap();
        let committed: u64 = std::fs::read_to_string(&commits).map(|s| s.trim().parse().unwrap()).unwrap_or(0);
        let now = stored::<FlowRow>(&healthy);
        for i in 0..committed {
            for (_, r) in input().flows(i) {
                assert!(now.contains_key(&flowmap_lake::LakeRow::key(&r)), "message {i} committed, not stored");
            }
        }
        let run = run_job(&healthy, &input(), 0, 1, &commits, |_| {}).unwrap();
        assert_eq!(run.resumed_at, committed);
        assert_eq!(stored::<FlowRow>(&healthy), expected_flows(&input()), "fail at {fail_at}");
        assert_eq!(stored::<EdgeRow>(&healthy), expected_edges(&input()), "fail at {fail_at}");
    }
}
