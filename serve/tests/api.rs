//! The HTTP API over a real socket on 127.0.0.1, served from the in-memory source fed the way
//! the job feeds it (`push_edges(edges.iter().map(Into::into).collect())`): bad parameters get a
//! 400 with a message; the graph for a range equals an independent computation over the fixture
//! rows; the top edges come first; node, series, CSV, events, health and metrics agree with it.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flowmap_schema::edges::{Edge, Event, EventKind};
use flowmap_serve::row::BAD_SKETCH;
use flowmap_serve::{MemoryOptions, MemorySource, ServeConfig};
use harness::fixture::{fixture, quantile, reference, Fixture, BUCKETS, MINUTE_NS, START_NS};
use harness::{rfc3339, Server};
use serde_json::Value;

fn memory(f: &Fixture) -> Arc<MemorySource> {
    let source = Arc::new(MemorySource::new(MemoryOptions::default()));
    source.push_edges(f.edges.iter().map(Into::into).collect());
    source.push_events(f.events.iter().map(Into::into).collect());
    source
}

fn server(f: &Fixture) -> Server {
    Server::start(memory(f), ServeConfig::default()).expect("server starts")
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_message() -> anyhow::Result<()> {
    let f = fixture();
    let s = server(&f);
    let cases = [
        ("/api/graph?from=yesterday", "from: cannot read \"yesterday\""),
        ("/api/graph?from=now&to=now-1h", "to: empty time range"),
        ("/api/graph?from=2026-01-01T00:00:00Z&to=2026-11-01T00:00:00Z", "from: the range is longer"),
        ("/api/graph?group=99", "group: unknown group"),
        ("/api/graph?group=nope", "group: unknown group"),
        ("/api/graph?filter=client:", "filter:"),
        ("/api/graph?port=http", "port:"),
        ("/api/graph?port=9-1", "port:"),
        ("/api/graph?min_bytes=lots", "min_bytes:"),
        ("/api/graph?limit=0", "limit:"),
        ("/api/graph?limit=-3", "limit:"),
        ("/api/graph?rank=size", "rank:"),
        ("/api/graph?id=x", "id: not a parameter of /api/graph"),
        ("/api/graph?form=now", "query: unknown field `form`"),
        ("/api/graph?from=now&from=now", "query:"),
        ("/api/edges.csv?limit=abc", "limit:"),
        ("/api/node", "id: required"),
        ("/api/series?source=a", "target: required"),
        ("/api/series?source=a&target=b&step=10ms", "step:"),
        ("/api/events?kind=boom", "kind: unknown event kind"),
        ("/api/events?group=1", "group: not a parameter of /api/events"),
        ("/api/meta?x=1", "query:"),
        ("/api/graph?filter=%00", "filter: filter holds control characters"),
    ];
    for (path, message) in cases {
        let (status, body) = s.get(path).await?;
        assert_eq!(status, 400, "{path}: {body}");
        let json: Value = serde_json::from_str(&body)?;
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(message), "{path}: {error:?} should start with {message:?}");
    }
    let (status, body) = s.get("/api/nope").await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s.get("/api/node?id=no-such-node").await?;
    assert_eq!(status, 404, "{body}");
    // Still serving after all that.
    assert_eq!(s.get("/api/graph").await?.0, 200);
    Ok(())
}

/// The API's edges as (source, target) -> edge.
fn edges_of(graph: &Value) -> BTreeMap<(String, String), Value> {
    graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            ((e["source"].as_str().expect("source").into(), e["target"].as_str().expect("target").into()), e.clone())
        })
        .collect()
}

#[tokio::test]
async fn graph_equals_an_independent_computation() -> anyhow::Result<()> {
    let f = fixture();
    let s = server(&f);
    let end = START_NS + BUCKETS * MINUTE_NS;
    // (from, to, group level, search, port)
    type View<'a> = (u64, u64, usize, Option<&'a str>, Option<u32>);
    let views: [View<'_>; 7] = [
        (START_NS, end, 1, None, None),
        (START_NS, end, 2, None, None),
        (START_NS, end, 0, None, None),
        (START_NS + 7 * MINUTE_NS, START_NS + 19 * MINUTE_NS, 2, None, None),
        (START_NS, end, 2, Some("svc-03"), None),
        (START_NS, end, 1, None, Some(5432)),
        (START_NS + 14 * MINUTE_NS, START_NS + 16 * MINUTE_NS, 16, Some("hostnet"), Some(443)),
    ];
    for (from, to, level, search, port) in views {
        let mut path = format!("/api/graph?from={}&to={}&group={level}&limit=20000", rfc3339(from), rfc3339(to));
        if let Some(w) = search {
            path.push_str(&format!("&filter={w}"));
        }
        if let Some(p) = port {
            path.push_str(&format!("&port={p}"));
        }
        let graph = s.json(&path).await?;
        let expected = reference(&f, from, to, level, search, port);
        assert!(!expected.is_empty(), "{path}: the fixture has edges there");
        let got = edges_of(&graph);
        assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{path}: edge set");
        for (key, want) in &expected {
            let e = &got[key];
            let sums = [
                ("connections", want.connections),
                ("bytes", want.bytes),
                ("verified", want.verified),
                ("one_sided", want.one_sided),
                ("disagreements", want.disagreements),
                ("retransmits", want.retransmits),
                ("failed_connects", want.failed_connects),
            ];
            for (name, value) in sums {
                assert_eq!(u(e, name), value, "{path}: {key:?} {name}");
            }
            match &want.samples {
                Some(samples) if !samples.is_empty() => {
                    assert_eq!(e["rtt"]["method"], "sketch", "{path}: {key:?}");
                    assert_eq!(u(&e["rtt"], "samples"), samples.len() as u64);
                    for (q, field) in [(0.5, "p50_us"), (0.99, "p99_us")] {
                        let exact = quantile(samples, q).expect("samples");
                        let got = e["rtt"][field].as_f64().expect("a quantile");
                        assert!((got - exact).abs() <= exact * 0.0101, "{path}: {key:?} {field} {got} vs {exact}");
                    }
                }
                Some(_) => assert_eq!(e["rtt"]["method"], "none", "{path}: {key:?}"),
                None => assert_eq!(e["rtt"]["method"], "rows", "{path}: {key:?}"),
            }
            // Certainty: an unattributed end makes the edge `unattributed`; otherwise the class
            // follows the verified share unless part of its traffic went unattributed.
            let class = e["certainty"]["class"].as_str().expect("class");
            if key.0.starts_with("unattributed:") || key.1.starts_with("unattributed:") {
                assert_eq!(class, "unattributed", "{path}: {key:?}");
            } else if class != "partial" {
                let want_class = if want.verified * 2 > want.connections {
                    "verified"
                } else if want.verified == 0 {
                    "one_sided"
                } else {
                    "mixed"
                };
                assert_eq!(class, want_class, "{path}: {key:?}");
            }
        }
        let nodes: BTreeSet<String> = graph["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["id"].as_str().expect("id").to_owned())
            .collect();
        let want_nodes: BTreeSet<String> = expected.keys().flat_map(|(c, s)| [c.clone(), s.clone()]).collect();
        assert_eq!(nodes, want_nodes, "{path}: nodes");
        assert_eq!(u(&graph["totals"], "edges"), expected.len() as u64);
        assert_eq!(u(&graph["totals"], "nodes"), want_nodes.len() as u64);
        assert_eq!(u(&graph["totals"], "connections"), expected.values().map(|e| e.connections).sum::<u64>());
        assert_eq!(graph["truncated"], false);
    }
    // The row whose sketch is unreadable is in the full range, and reported.
    let full = s.json(&format!("/api/graph?from={}&to={}&limit=20000", rfc3339(START_NS), rfc3339(end))).await?;
    assert_eq!(u(&full, "rows_unreadable_sketch"), 1);
    Ok(())
}

#[tokio::test]
async fn the_top_edges_come_first_and_filters_narrow() -> anyhow::Result<()> {
    let f = fixture();
    let s = server(&f);
    let end = START_NS + BUCKETS * MINUTE_NS;
    let range = format!("from={}&to={}", rfc3339(START_NS), rfc3339(end));
    let expected = reference(&f, START_NS, end, 2, None, None);
    let mut by_bytes: Vec<(&(String, String), u64)> = expected.iter().map(|(k, e)| (k, e.bytes)).collect();
    by_bytes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let top = s.json(&format!("/api/graph?{range}&group=2&limit=5")).await?;
    let got: Vec<(String, String)> = top["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| (e["source"].as_str().expect("s").into(), e["target"].as_str().expect("t").into()))
        .collect();
    let want: Vec<(String, String)> = by_bytes.iter().take(5).map(|(k, _)| (*k).clone()).collect();
    assert_eq!(got, want, "the five edges with the most bytes, most first");
    assert_eq!(top["truncated"], true);
    assert_eq!(u(&top["totals"], "edges"), expected.len() as u64);
    let nodes: BTreeSet<&str> =
        top["nodes"].as_array().expect("nodes").iter().map(|n| n["id"].as_str().expect("id")).collect();
    let want_nodes: BTreeSet<&str> = want.iter().flat_map(|(c, s)| [c.as_str(), s.as_str()]).collect();
    assert_eq!(nodes, want_nodes, "the nodes of the returned edges");

    // min_bytes keeps exactly the edges with at least that many bytes.
    let threshold = by_bytes[by_bytes.len() / 2].1;
    let big = s.json(&format!("/api/graph?{range}&group=2&limit=20000&min_bytes={threshold}")).await?;
    let want_big = expected.values().filter(|e| e.bytes >= threshold).count();
    assert_eq!(big["edges"].as_array().expect("edges").len(), want_big);

    // A negative term removes every edge touching a matching name.
    let without = s.json(&format!("/api/graph?{range}&group=2&limit=20000&filter=-svc-01")).await?;
    for e in without["edges"].as_array().expect("edges") {
        assert!(
            !e["source"].as_str().expect("s").contains("svc-01")
                && !e["target"].as_str().expect("t").contains("svc-01")
        );
    }
    assert!(without["edges"].as_array().expect("edges").len() < expected.len());
    Ok(())
}

#[tokio::test]
async fn node_series_csv_and_events_agree_with_the_graph() -> anyhow::Result<()> {
    let f = fixture();
    let s = server(&f);
    let end = START_NS + BUCKETS * MINUTE_NS;
    let range = format!("from={}&to={}", rfc3339(START_NS), rfc3339(end));
    let graph = s.json(&format!("/api/graph?{range}&group=1&limit=20000")).await?;
    let edges = edges_of(&graph);

    // A node's callers and callees are exactly the graph's edges into and out of it.
    let node = s.json(&format!("/api/node?{range}&group=1&id=svc-02")).await?;
    let names = |list: &Value| -> BTreeSet<(String, String)> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|e| (e["source"].as_str().expect("s").into(), e["target"].as_str().expect("t").into()))
            .collect()
    };
    let callers: BTreeSet<_> = edges.keys().filter(|(_, t)| t == "svc-02").cloned().collect();
    let callees: BTreeSet<_> = edges.keys().filter(|(c, _)| c == "svc-02").cloned().collect();
    assert!(!callers.is_empty() && !callees.is_empty());
    assert_eq!(names(&node["callers"]), callers);
    assert_eq!(names(&node["callees"]), callees);
    for e in node["callers"].as_array().expect("callers") {
        let key = (e["source"].as_str().expect("s").to_owned(), e["target"].as_str().expect("t").to_owned());
        assert_eq!(e["connections"], edges[&key]["connections"]);
    }

    // An edge's series sums to the edge, one point per minute.
    let (key, edge) = edges.iter().find(|(k, _)| k.0 != k.1).expect("an edge");
    let series = s.json(&format!("/api/series?{range}&group=1&source={}&target={}", key.0, key.1)).await?;
    let points = series["points"].as_array().expect("points");
    assert_eq!(points.len() as u64, BUCKETS);
    assert_eq!(points.iter().map(|p| u(p, "connections")).sum::<u64>(), u(edge, "connections"));
    assert_eq!(points.iter().map(|p| u(p, "bytes")).sum::<u64>(), u(edge, "bytes"));

    // The CSV has the same edges in the same order.
    let (status, csv) = s.get(&format!("/api/edges.csv?{range}&group=1&limit=20000")).await?;
    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers()?.clone();
    assert_eq!(header.iter().collect::<Vec<_>>(), flowmap_serve::export::COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    let json_edges = graph["edges"].as_array().expect("edges");
    assert_eq!(rows.len(), json_edges.len());
    for (row, e) in rows.iter().zip(json_edges) {
        assert_eq!((&row[0], &row[1]), (e["source"].as_str().expect("s"), e["target"].as_str().expect("t")));
        assert_eq!(row[2].parse::<u64>()?, u(e, "connections"));
        assert_eq!(row[5].parse::<u64>()?, u(e, "bytes"));
    }

    // Events: every fixture event in the range, newest first, counted by kind.
    let events = s.json(&format!("/api/events?{range}")).await?;
    let list = events["events"].as_array().expect("events");
    assert_eq!(list.len(), f.events.len());
    let times: Vec<u64> = list.iter().map(|e| u(e, "at_ms")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    let count = |k: EventKind| f.events.iter().filter(|e| e.kind == k as i32).count() as u64;
    assert_eq!(u(&events["counts"], "new_dependency"), count(EventKind::NewDependency));
    assert_eq!(u(&events["counts"], "policy_violation"), count(EventKind::PolicyViolation));
    let only = s.json(&format!("/api/events?{range}&kind=disagreement&limit=2")).await?;
    assert_eq!(only["events"].as_array().expect("events").len(), 2);
    assert_eq!(only["truncated"], true);
    assert!(only["events"].as_array().expect("events").iter().all(|e| e["kind"] == "disagreement"));
    Ok(())
}

fn edge(client: &str, server: &str, port: u32, connections: u64, verified: u64) -> Edge {
    Edge {
        schema_version: 1,
        bucket_start_ns: START_NS,
        bucket_s: 60,
        client: client.into(),
        server: server.into(),
        server_port: port,
        protocol: "tcp".into(),
        emitted_at_ns: START_NS + MINUTE_NS,
        connections,
        bytes_client_to_server: connections * 1000,
        verified,
        one_sided: connections - verified,
        ..Edge::default()
    }
}

#[tokio::test]
async fn partial_edges_show_the_unattributed_share_and_its_reasons() -> anyhow::Result<()> {
    let source = Arc::new(MemorySource::new(MemoryOptions::default()));
    let rows = [
        edge("web/a", "db/main", 5432, 10, 10),
        edge("web/a", "unattributed:near_boundary", 5432, 4, 0),
        edge("web/a", "unattributed:no_owner", 5432, 1, 0),
        edge("web/a", "unattributed:no_owner", 443, 7, 0), // another port: not this edge's
        edge("batch/b", "db/main", 5432, 6, 0),
    ];
    source.push_edges(rows.iter().map(Into::into).collect());
    let s = Server::start(source, ServeConfig::default())?;
    let graph =
        s.json(&format!("/api/graph?from={}&to={}&group=2", rfc3339(START_NS), rfc3339(START_NS + MINUTE_NS))).await?;
    let edges = edges_of(&graph);
    let partial = &edges[&("web/a".to_owned(), "db/main".to_owned())]["certainty"];
    assert_eq!(partial["class"], "partial");
    assert_eq!(u(partial, "unattributed_connections"), 5);
    assert_eq!(partial["unattributed_share"].as_f64(), Some(5.0 / 15.0));
    assert_eq!(partial["unattributed_reasons"], serde_json::json!({"near_boundary": 4, "no_owner": 1}));
    assert_eq!(edges[&("batch/b".to_owned(), "db/main".to_owned())]["certainty"]["class"], "one_sided");
    assert_eq!(edges[&("web/a".to_owned(), "unattributed:no_owner".to_owned())]["certainty"]["class"], "unattributed");
    Ok(())
}

#[tokio::test]
async fn health_meta_and_metrics() -> anyhow::Result<()> {
    let f = fixture();
    let source = memory(&f);
    source.push_events(vec![(&Event {
        kind: 42,
        at_ns: START_NS,
        client: "x".into(),
        server: "y".into(),
        ..Event::default()
    })
        .into()]);
    // The process's recorder (only this test installs one), as the `flowmap` binary does.
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let serving = flowmap_serve::serve(
        flowmap_serve::ServeOptions::loopback("127.0.0.1:0".parse()?),
        ServeConfig::default(),
        source,
        handle,
        std::future::pending(),
    )?;
    let s = Server { base: serving.url(), serving: Some(serving), http: reqwest::Client::new() };
    let health = s.json("/healthz").await?;
    assert_eq!(health["status"], "ok");
    assert_eq!(u(&health, "edge_rows"), f.edges.len() as u64);
    assert_eq!(u(&health["bad_rows"], BAD_SKETCH), 1, "{health}");
    assert_eq!(u(&health["bad_rows"], flowmap_serve::row::UNSPECIFIED_EVENT), 1, "{health}");
    let meta = s.json("/api/meta").await?;
    assert_eq!(meta["source"], "memory");
    assert_eq!(meta["extent"]["from"], rfc3339(START_NS));
    assert_eq!(meta["extent"]["to"], rfc3339(START_NS + BUCKETS * MINUTE_NS));
    assert_eq!(u(&meta["bad_rows"], BAD_SKETCH), 1);
    let (status, text) = s.get("/metrics").await?;
    assert_eq!(status, 200);
    assert!(text.contains(r#"flowmap_serve_requests_total{route="/healthz",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"flowmap_serve_requests_total{route="/api/meta",status="200"}"#), "{text}");
    // The page and its libraries are served from the binary.
    let (status, html) = s.get("/").await?;
    assert_eq!(status, 200);
    assert!(html.contains("vendor/cytoscape.min.js"));
    for asset in
        ["/app.js", "/style.css", "/vendor/cytoscape.min.js", "/vendor/cytoscape-fcose.js", "/vendor/uPlot.iife.min.js"]
    {
        let (status, body) = s.get(asset).await?;
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 100, "{asset}");
    }
    assert_eq!(s.get("/nope.js").await?.0, 404);
    Ok(())
}

/// Regression: an edge's RTT approximated from rows (`method: "rows"`) was a float sum in the
/// order the source handed the rows over, so the lake and the in-memory source (or two pushes in
/// another order) gave different last digits for the same data.
#[tokio::test]
async fn regression_rtt_means_do_not_depend_on_row_order() -> anyhow::Result<()> {
    let f = fixture();
    let forward = server(&f);
    let backward = Arc::new(MemorySource::new(MemoryOptions::default()));
    backward.push_edges(f.edges.iter().rev().map(Into::into).collect());
    backward.push_events(f.events.iter().rev().map(Into::into).collect());
    let backward = Server::start(backward, ServeConfig::default())?;
    let range = format!("from={}&to={}", rfc3339(START_NS), rfc3339(START_NS + BUCKETS * MINUTE_NS));
    for group in ["0", "1", "2"] {
        let path = format!("/api/graph?{range}&group={group}&limit=20000");
        let (a, b) = (forward.json(&path).await?, backward.json(&path).await?);
        assert!(a["edges"].as_array().is_some_and(|e| e.iter().any(|e| e["rtt"]["method"] == "rows")));
        assert_eq!(a["edges"], b["edges"], "{path}");
    }
    Ok(())
}
