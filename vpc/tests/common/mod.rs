//! Helpers of the end-to-end tests: the local S3 and SQS (moto, started by
//! `scripts/objectstore`), buckets with notifications to a queue, uploads, queue counts, a
//! recording sink, and expected records parsed independently of the ingester.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowmap_vpc::{Batch, DeadLetter, MouthfulId, ObjectId, Record, Sealed, Sink, SinkError};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The endpoint of the local S3 and SQS (started once, idempotently), with the process's AWS
/// environment set for it.
pub fn endpoint() -> &'static str {
    static E: OnceLock<String> = OnceLock::new();
    E.get_or_init(|| {
        let out = std::process::Command::new(root().join("scripts/objectstore")).arg("start").output().unwrap();
        assert!(out.status.success(), "scripts/objectstore start: {}", String::from_utf8_lossy(&out.stderr));
        // Set before any thread of this test process reads the environment (every test calls
        // this first); object_store and aws-config read their credentials from it.
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_string()
    })
}

fn host_port() -> String {
    endpoint().trim_start_matches("http://").to_string()
}

/// A unique, valid bucket or queue name.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() % 1_000_000_000;
    format!("{prefix}-{}-{t}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// An Authorization header: moto checks no signatures, but treats a request without one as
/// anonymous (and refuses anonymous overwrites and deletions).
const AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=0\r\n";

/// One plain HTTP/1.1 request to moto (it checks no signatures); returns status and body.
pub fn http(method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(host_port()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n{AUTH}\r\n",
        host_port(),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A path segment of an S3 key, percent-encoded for a request line.
pub fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn put_object(bucket: &str, key: &str, bytes: &[u8]) {
    let (status, body) = http("PUT", &format!("/{bucket}/{}", encode_key(key)), bytes);
    assert_eq!(status, 200, "PUT {key}: {body}");
}

pub fn delete_object(bucket: &str, key: &str) {
    let (status, _) = http("DELETE", &format!("/{bucket}/{}", encode_key(key)), b"");
    assert_eq!(status, 204);
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub fn sqs() -> aws_sdk_sqs::Client {
    endpoint();
    rt().block_on(async {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint())
            .load()
            .await;
        aws_sdk_sqs::Client::new(&conf)
    })
}

/// A new bucket whose "object created" events go to a new queue; returns the queue URL. (moto
/// sends the queue an `s3:TestEvent` when the notification is configured, as S3 does.)
pub fn bucket_with_queue(bucket: &str) -> String {
    let (status, body) = http("PUT", &format!("/{bucket}"), b"");
    assert_eq!(status, 200, "create bucket: {body}");
    let client = sqs();
    let name = unique("q");
    rt().block_on(async {
        let url = client.create_queue().queue_name(&name).send().await.unwrap().queue_url.unwrap();
        let attrs = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let arn = attrs.attributes.unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
        let xml = format!(
            "<NotificationConfiguration><QueueConfiguration><Id>flowlogs</Id><Queue>{arn}</Queue>\
             <Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>"
        );
        let (status, body) = http("PUT", &format!("/{bucket}?notification"), xml.as_bytes());
        assert_eq!(status, 200, "notification: {body}");
        url
    })
}

/// (visible, in flight) messages of a queue.
pub fn queue_counts(url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let client = sqs();
    rt().block_on(async {
        let out = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let a = out.attributes.unwrap();
        (
            a[&A::ApproximateNumberOfMessages].parse().unwrap(),
            a[&A::ApproximateNumberOfMessagesNotVisible].parse().unwrap(),
        )
    })
}

/// Settings for the local services.
pub fn settings(
    queue_url: &str,
    state: &std::path::Path,
    extra_queue: &str,
    mouthful: &str,
) -> flowmap_vpc::config::Settings {
    let toml = format!(
        "[store]\nkind = \"s3\"\nregion = \"us-east-1\"\nendpoint = \"{e}\"\nallow_http = true\n\
         [queue]\nurl = \"{queue_url}\"\nregion = \"us-east-1\"\nendpoint = \"{e}\"\n{extra_queue}\n\
         [mouthful]\n{mouthful}\n\
         [state]\npath = \"{}\"\nretention = \"1d\"\n",
        state.display(),
        e = endpoint()
    );
    flowmap_vpc::config::Settings::from_toml(&toml).unwrap()
}

/// What a recording sink saw.
#[derive(Default)]
pub struct Seen {
    pub records: Vec<(u64, ObjectId, Record)>,
    pub dead: Vec<DeadLetter>,
    pub sealed: Vec<Sealed>,
    /// While true, nothing is reported delivered beyond `acked`.
    pub hold: bool,
    pub acked: MouthfulId,
}

/// A sink that records everything, and acknowledges only when told (or at once, without hold).
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Seen>>);

impl Sink for Recorder {
    fn submit(&mut self, batch: Batch) -> Result<(), SinkError> {
        let mut s = self.0.lock().unwrap();
        if let Some(file) = &batch.file {
            for r in batch.records {
                s.records.push((file.record_id(r.line), file.id.clone(), r));
            }
        }
        s.dead.extend(batch.dead_letters);
        Ok(())
    }

    fn seal(&mut self, sealed: Sealed) -> Result<(), SinkError> {
        self.0.lock().unwrap().sealed.push(sealed);
        Ok(())
    }

    fn delivered(&mut self) -> MouthfulId {
        let mut s = self.0.lock().unwrap();
        if !s.hold {
            s.acked = s.sealed.iter().map(|x| x.mouthful + 1).max().unwrap_or(0);
        }
        s.acked
    }
}

/// The records of a file's bytes, parsed directly (not through the ingester), by line.
pub fn expected(bytes: &[u8]) -> BTreeMap<u64, Record> {
    flowmap_vpc::parse::text::open(bytes).unwrap().filter_map(Result::ok).map(|r| (r.line, r)).collect()
}

pub const DEFAULT: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

/// `n` default-format rows, distinct per `seed`, with a NODATA row every 97 rows.
pub fn rows(n: usize, seed: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| {
            if i % 97 == 50 {
                return [
                    "2",
                    "123456789010",
                    "eni-0a",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "1700000000",
                    "1700000060",
                    "-",
                    "NODATA",
                ]
                .map(String::from)
                .to_vec();
            }
            vec![
                "2".into(),
                "123456789010".into(),
                format!("eni-{:03}", seed),
                format!("10.{}.{}.{}", seed % 256, i / 256 % 256, i % 256),
                if i % 3 == 0 { format!("fd00::{:x}", i + 1) } else { "10.200.0.1".into() },
                (1024 + i % 60000).to_string(),
                "443".into(),
                "6".into(),
                (i + 1).to_string(),
                ((i + 1) * 64).to_string(),
                (1_700_000_000 + i as u64).to_string(),
                (1_700_000_060 + i as u64).to_string(),
                if i % 5 == 0 { "REJECT".into() } else { "ACCEPT".into() },
                "OK".into(),
            ]
        })
        .map(|mut r: Vec<String>| {
            // IPv6 rows need IPv6 at both ends.
            if r[4].starts_with("fd00") {
                r[3] = format!("fd00:{:x}::{:x}", seed + 1, r[8].parse::<u64>().unwrap_or(0));
            }
            r
        })
        .collect()
}

pub fn gz_file(header: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    flowmap_vpc::write::write_text(Vec::new(), header, rows).unwrap()
}
