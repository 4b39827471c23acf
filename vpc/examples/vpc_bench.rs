//! Benchmarks of the VPC input, each in a process of its own so that its peak RSS is its own:
//!
//! ```sh
//! B=target/release/examples/vpc_bench
//! cargo build --release -p flowmap-vpc --example vpc_bench
//! $B generate --out /tmp/vpc-75m.log.gz --mb 75   # a default-format gzip file of ~75 MB
//! $B parse /tmp/vpc-75m.log.gz                     # records/s parsed from gzip, peak RSS
//! $B ingest /tmp/vpc-75m.log.gz                    # the whole ingester (backfill, local store), peak RSS
//! # the same over S3 (moto): create bucket "bench" first, then
//! E=$(scripts/objectstore start | tail -1); export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
//! $B upload /tmp/vpc-75m.log.gz --s3-endpoint $E && $B ingest /tmp/vpc-75m.log.gz --s3-endpoint $E
//! ```
//!
//! Each prints one JSON line: records, seconds, records per second, bytes, and `peak_rss_mib`
//! (the kernel's high-water mark of the process's resident set, `VmHWM`).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use flowmap_vpc::backfill::BackfillRange;
use flowmap_vpc::config::Settings;
use flowmap_vpc::ingest::{run_backfill, RunOptions, Stop};
use flowmap_vpc::{Batch, MouthfulId, Sealed, Sink, SinkError};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes a gzip default-format flow log of about `mb` MB.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 75)]
        mb: u64,
    },
    /// Parses a file (the parser alone).
    Parse { file: PathBuf },
    /// Ingests a file through the whole ingester (backfill over a local store, or with
    /// `--s3-endpoint`, over bucket `bucket` of an S3-compatible service, after `upload`).
    Ingest {
        file: PathBuf,
        #[arg(long)]
        s3_endpoint: Option<String>,
        #[arg(long, default_value = "bench")]
        bucket: String,
    },
    /// Uploads a file to an S3-compatible service (its own process: the upload's memory is not
    /// the ingester's).
    Upload {
        file: PathBuf,
        #[arg(long)]
        s3_endpoint: String,
        #[arg(long, default_value = "bench")]
        bucket: String,
    },
}

/// The process's peak resident set, MiB (`VmHWM` in /proc/self/status).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(-1.0, |kb| kb / 1024.0)
}

/// A small xorshift generator: deterministic rows without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn generate(out: &PathBuf, mb: u64) -> anyhow::Result<()> {
    let file = std::fs::File::create(out).with_context(|| out.display().to_string())?;
    let counter = CountingWriter { inner: BufWriter::new(file), written: 0 };
    let mut gz = flate2::write::GzEncoder::new(counter, flate2::Compression::default());
    writeln!(gz, "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status")?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let target = mb * 1_000_000;
    let mut rows = 0u64;
    let t0 = 1_700_000_000u64;
    let mut line = String::with_capacity(200);
    while gz.get_ref().written < target {
        for _ in 0..10_000 {
            let r = rng.next();
            let eni = r % 400;
            let (src, dst) = (rng.next(), rng.next());
            let start = t0 + rows / 2000;
            line.clear();
            use std::fmt::Write as _;
            if r.is_multiple_of(1000) {
                let _ = writeln!(line, "2 123456789010 eni-{eni:017x} - - - - - - - {start} {} - NODATA", start + 60);
            } else {
                let _ = writeln!(
                    line,
                    "2 123456789010 eni-{eni:017x} 10.{}.{}.{} 10.{}.{}.{} {} {} 6 {} {} {start} {} {} OK",
                    src % 256,
                    (src >> 8) % 256,
                    (src >> 16) % 256,
                    dst % 256,
                    (dst >> 8) % 256,
                    (dst >> 16) % 256,
                    1024 + (src >> 24) % 60000,
                    [443, 80, 5432, 6379, 8080][(dst >> 24) as usize % 5],
                    1 + (r >> 12) % 2000,
                    64 + (r >> 24) % 3_000_000,
                    start + 60,
                    if (r >> 40).is_multiple_of(20) { "REJECT" } else { "ACCEPT" },
                );
            }
            gz.write_all(line.as_bytes())?;
            rows += 1;
        }
    }
    let mut counter = gz.finish()?;
    counter.inner.flush()?;
    println!("{}", serde_json::json!({"generated": out, "rows": rows, "bytes": counter.written}));
    Ok(())
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn parse(file: &PathBuf) -> anyhow::Result<()> {
    let bytes = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let reader = flowmap_vpc::parse::text::open(std::fs::File::open(file)?)?;
    let (mut records, mut errors) = (0u64, 0u64);
    for r in reader {
        match r {
            Ok(_) => records += 1,
            Err(_) => errors += 1,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "parse", "records": records, "errors": errors, "seconds": secs,
            "records_per_sec": records as f64 / secs, "gzip_bytes": bytes, "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// Counts and acknowledges at once (the job's attribution is not measured here).
struct Count {
    records: u64,
    delivered: MouthfulId,
}

impl Sink for Count {
    fn submit(&mut self, batch: Batch) -> Result<(), SinkError> {
        self.records += batch.records.len() as u64;
        Ok(())
    }

    fn seal(&mut self, sealed: Sealed) -> Result<(), SinkError> {
        self.delivered = sealed.mouthful + 1;
        Ok(())
    }

    fn delivered(&mut self) -> MouthfulId {
        self.delivered
    }
}

fn s3_settings(endpoint: &str, state: &std::path::Path) -> anyhow::Result<Settings> {
    Ok(Settings::from_toml(&format!(
        "[store]\nkind = \"s3\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\nallow_http = true\n\
         [state]\npath = \"{}\"\nretention = \"1d\"\n",
        state.display()
    ))?)
}

fn upload(file: &PathBuf, endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    use object_store::ObjectStoreExt;
    let root = tempfile::tempdir()?;
    let stores = flowmap_vpc::store::Stores::new(s3_settings(endpoint, &root.path().join("s"))?.store);
    let store = stores.bucket(bucket)?;
    let name = file.file_name().context("file name")?.to_string_lossy().to_string();
    let bytes = std::fs::read(file)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(store.put(&object_store::path::Path::from(name.as_str()), bytes.into()))?;
    println!("{}", serde_json::json!({"uploaded": name, "bucket": bucket}));
    Ok(())
}

fn ingest(file: &PathBuf, s3_endpoint: Option<String>, bucket_name: String) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let settings = match &s3_endpoint {
        Some(endpoint) => s3_settings(endpoint, &root.path().join("state.jsonl"))?,
        None => {
            let bucket = root.path().join(&bucket_name);
            std::fs::create_dir_all(&bucket)?;
            let name = file.file_name().context("file name")?;
            // A hard link (or a copy across file systems) into the store's bucket directory.
            if std::fs::hard_link(file, bucket.join(name)).is_err() {
                std::fs::copy(file, bucket.join(name))?;
            }
            Settings::from_toml(&format!(
                "[store]\nkind = \"local\"\nroot = \"{}\"\n[state]\npath = \"{}\"\nretention = \"1d\"\n",
                root.path().display(),
                root.path().join("state.jsonl").display()
            ))?
        }
    };
    let range = BackfillRange {
        bucket: bucket_name,
        prefix: String::new(),
        from: std::time::UNIX_EPOCH,
        to: std::time::SystemTime::now() + Duration::from_secs(86_400),
    };
    let t = Instant::now();
    let (summary, sink) =
        run_backfill(&settings, range, Count { records: 0, delivered: 0 }, Stop::new(), RunOptions::default())?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "ingest", "store": if s3_endpoint.is_some() { "s3" } else { "local" }, "records": sink.records, "files": summary.files, "bytes": summary.bytes,
            "malformed": summary.malformed, "seconds": secs, "records_per_sec": sink.records as f64 / secs,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Generate { out, mb } => generate(&out, mb),
        Cmd::Parse { file } => parse(&file),
        Cmd::Ingest { file, s3_endpoint, bucket } => ingest(&file, s3_endpoint, bucket),
        Cmd::Upload { file, s3_endpoint, bucket } => upload(&file, &s3_endpoint, &bucket),
    }
}
