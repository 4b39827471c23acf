//! Measures the API's response times on a large fleet: 2,000 workloads and 20,000 distinct edges
//! in the range (each in every one-minute bucket), served from the in-memory source and from a
//! lake written by `flowmap-lake` (first request: files decoded; later ones: cached). Each
//! request is made `--requests` times over HTTP on loopback; the median and the slowest are
//! printed with the response size.
//!
//! ```sh
//! cargo run --release -p flowmap-serve --example bench_api
//! cargo run --release -p flowmap-serve --example bench_api -- --buckets 60   # an hour of rows
//! ```

#[path = "common/fleet.rs"]
mod fleet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use flowmap_serve::{serve, EdgeSource, LakeSource, MemoryOptions, MemorySource, ServeConfig, ServeOptions};

#[derive(Parser)]
struct Args {
    /// Workloads in the fleet.
    #[arg(long, default_value_t = 2_000)]
    workloads: usize,
    /// Distinct edges (client, server, port) in the range.
    #[arg(long, default_value_t = 20_000)]
    edges: usize,
    /// One-minute buckets (rows = edges x buckets).
    #[arg(long, default_value_t = 15)]
    buckets: u64,
    /// Times each request is made.
    #[arg(long, default_value_t = 10)]
    requests: usize,
}

const START_NS: u64 = 1_795_953_600_000_000_000; // 2026-11-29T12:00:00Z

struct Timing {
    median: Duration,
    max: Duration,
    first: Duration,
    bytes: usize,
}

async fn time(http: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<Timing> {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let started = Instant::now();
        let res = http.get(url).send().await?;
        anyhow::ensure!(res.status().is_success(), "{url}: {}", res.status());
        bytes = res.bytes().await?.len();
        times.push(started.elapsed());
    }
    let first = times[0];
    times.sort();
    Ok(Timing { median: times[times.len() / 2], max: times[times.len() - 1], first, bytes })
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let t = Instant::now();
    let fleet = fleet::fleet(args.workloads, args.edges, args.buckets, START_NS, 3);
    println!(
        "fleet: {} workloads, {} edges, {} buckets = {} rows (generated in {:.1} s)",
        args.workloads,
        args.edges,
        args.buckets,
        fleet.edges.len(),
        t.elapsed().as_secs_f64()
    );
    let memory = Arc::new(MemorySource::new(MemoryOptions::default()));
    let t = Instant::now();
    memory.push_edges(fleet.edges.iter().map(Into::into).collect());
    memory.push_events(fleet.events.iter().map(Into::into).collect());
    println!("memory source: {} rows pushed in {:.2} s", fleet.edges.len(), t.elapsed().as_secs_f64());
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let written = fleet::write_lake(dir.path(), &fleet.edges)?;
    println!("lake: {written} rows written by flowmap-lake in {:.1} s", t.elapsed().as_secs_f64());
    let lake = Arc::new(LakeSource::open(dir.path(), Default::default())?);
    drop(fleet);

    let range = format!(
        "from={}&to={}",
        flowmap_serve::time::format_time(START_NS),
        flowmap_serve::time::format_time(START_NS + args.buckets * 60_000_000_000)
    );
    let requests = [
        ("graph, group 1 (services), top 500", format!("/api/graph?{range}&group=1")),
        ("graph, group 2 (workloads), top 500", format!("/api/graph?{range}&group=2")),
        ("graph, group 2, all edges (limit 20000)", format!("/api/graph?{range}&group=2&limit=20000")),
        ("graph, group 2, search svc-007", format!("/api/graph?{range}&group=2&filter=svc-007")),
        ("node svc-007, group 1", format!("/api/node?{range}&group=1&id=svc-007")),
        ("series svc-007 -> svc-014", format!("/api/series?{range}&group=1&source=svc-007&target=svc-014")),
        ("edges.csv, group 2, top 500", format!("/api/edges.csv?{range}&group=2")),
        ("events", format!("/api/events?{range}")),
    ];
    let http = reqwest::Client::new();
    for (name, source) in [("memory", memory as Arc<dyn EdgeSource>), ("lake", lake as Arc<dyn EdgeSource>)] {
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        let server = serve(
            ServeOptions::loopback("127.0.0.1:0".parse()?),
            ServeConfig::default(),
            source,
            metrics,
            std::future::pending(),
        )?;
        println!("\n{name} source ({} requests each; ms)", args.requests);
        println!("{:<44} {:>8} {:>8} {:>8} {:>10}", "request", "first", "median", "max", "bytes");
        for (label, path) in &requests {
            let t = time(&http, &format!("{}{path}", server.url()), args.requests).await?;
            println!("{label:<44} {:>8} {:>8} {:>8} {:>10}", ms(t.first), ms(t.median), ms(t.max), t.bytes);
        }
        server.stop()?;
    }
    Ok(())
}
