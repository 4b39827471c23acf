//! The page in a real browser: headless Chromium (through chromedriver) loads the map served
//! from a lake written by `flowmap-lake`; the nodes and edges it draws are the API's for the
//! query it made; a search narrows them exactly as the API says; a click on a node lists its
//! callers and callees as `/api/node` does; a click on one of them shows the edge and its series.
//! Screenshots go to `target/map.png` (an edge selected) and `target/map-node.png`; the same
//! checks run against the page `flowmap demo --serve` serves (`target/map-demo*.png`).
//!
//! Needs `chromium` and `chromedriver` (scripts/setup installs Debian's); fails saying so when
//! they are missing.

mod harness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::Locator;
use flowmap_serve::{LakeOptions, LakeSource, ServeConfig};
use harness::browser::Browser;
use harness::fixture::{fixture, write_lake};
use harness::Server;
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(60);

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// What the page drew: (nodes, edges, the API query it drew them from).
async fn drawn(b: &Browser) -> anyhow::Result<(u64, u64, String)> {
    let v = b
        .js(
            "const cy = window.flowmap.cy; const s = document.getElementById('status'); \
             return [cy.nodes().length, cy.edges().length, s.dataset.query, \
                     Number(document.getElementById('count-nodes').dataset.count), \
                     Number(document.getElementById('count-edges').dataset.count)];",
            vec![],
        )
        .await?;
    let (nodes, edges) = (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0));
    assert_eq!((v[3].as_u64(), v[4].as_u64()), (Some(nodes), Some(edges)), "the status line shows what is drawn");
    Ok((nodes, edges, v[2].as_str().unwrap_or_default().to_owned()))
}

async fn seq(b: &Browser) -> anyhow::Result<u64> {
    Ok(b.js("return window.flowmap.state.seq;", vec![]).await?.as_u64().unwrap_or(0))
}

/// Clicks the drawn node `id` with the mouse, at its position on the screen (centred first).
async fn click_node(b: &Browser, id: &str) -> anyhow::Result<()> {
    let pos = b
        .js(
            "const cy = window.flowmap.cy; const n = cy.getElementById(arguments[0]); cy.center(n); \
             const p = n.renderedPosition(); const r = document.getElementById('cy').getBoundingClientRect(); \
             const x = r.left + p.x, y = r.top + p.y; const hit = document.elementFromPoint(x, y); \
             return [x, y, hit && hit.closest('#cy') !== null];",
            vec![json!(id)],
        )
        .await?;
    let (x, y) = (pos[0].as_f64().unwrap_or(0.0), pos[1].as_f64().unwrap_or(0.0));
    // Centred, so that no overlay (status, legend) is above it.
    anyhow::ensure!(pos[2] == json!(true), "node {id} at ({x}, {y}) is covered by something else");
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo { duration: None, x, y })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    b.client.perform_actions(mouse).await?;
    b.client.release_actions().await?;
    Ok(())
}

async fn wait_detail(b: &Browser) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + READY;
    loop {
        let state = b.js("return document.getElementById('detail').dataset.state || '';", vec![]).await?;
        match state.as_str() {
            Some("ready") => return Ok(()),
            Some("error") => anyhow::bail!("the detail panel shows an error"),
            _ if std::time::Instant::now() > deadline => anyhow::bail!("the detail panel did not load"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn screenshot(b: &Browser, name: &str) -> anyhow::Result<PathBuf> {
    let png = b.client.screenshot().await?;
    anyhow::ensure!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = target_dir().join(name);
    std::fs::write(&path, png)?;
    Ok(path)
}

async fn run(b: &Browser, server: &Server, png: &str) -> anyhow::Result<()> {
    b.open(&format!("{}/", server.url())).await?;
    b.wait_ready(1, READY).await?;

    // What is drawn is what the API answers for the query the page made.
    let (nodes, edges, query) = drawn(b).await?;
    let graph = server.json(&format!("/api/graph?{query}")).await?;
    let api = |g: &Value, k: &str| g[k].as_array().map_or(0, Vec::len) as u64;
    assert!(nodes > 3 && edges > 3, "a map was drawn: {nodes} nodes, {edges} edges");
    assert_eq!((nodes, edges), (api(&graph, "nodes"), api(&graph, "edges")), "drawn vs /api/graph?{query}");

    // The view is in the URL.
    let url = b.client.current_url().await?;
    assert!(url.query().unwrap_or_default().contains("group=1"), "{url}");

    // Narrow with the search box; the drawn map follows the API.
    let before = seq(b).await?;
    b.client.find(Locator::Id("filter")).await?.send_keys("svc-03").await?;
    b.client.find(Locator::Id("apply")).await?.click().await?;
    b.wait_ready(before + 1, READY).await?;
    let (n2, e2, q2) = drawn(b).await?;
    assert!(q2.contains("filter=svc-03"), "{q2}");
    let narrowed = server.json(&format!("/api/graph?{q2}")).await?;
    assert_eq!((n2, e2), (api(&narrowed, "nodes"), api(&narrowed, "edges")), "drawn vs /api/graph?{q2}");
    assert!(e2 < edges && n2 < nodes, "the search narrows: {e2} < {edges}, {n2} < {nodes}");
    let url = b.client.current_url().await?;
    assert!(url.query().unwrap_or_default().contains("filter=svc-03"), "{url}");

    // Clear the search again.
    let before = seq(b).await?;
    let search = b.client.find(Locator::Id("filter")).await?;
    search.clear().await?;
    b.client.find(Locator::Id("apply")).await?.click().await?;
    b.wait_ready(before + 1, READY).await?;

    // Click a node: its callers and callees are listed, as /api/node says.
    let node = "svc-02";
    click_node(b, node).await?;
    wait_detail(b).await?;
    let (_, _, query) = drawn(b).await?;
    let node_query: String = query.split('&').filter(|p| !p.starts_with("limit=")).collect::<Vec<_>>().join("&");
    let detail = server.json(&format!("/api/node?{node_query}&id={node}")).await?;
    let listed = b
        .js(
            "const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')].map(r => r.querySelector('td').textContent); \
             return [document.querySelector('#detail .title').textContent, rows('callers'), rows('callees')];",
            vec![],
        )
        .await?;
    assert_eq!(listed[0], node, "the panel shows the clicked node");
    let peers = |list: &Value, end: &str| -> Vec<Value> {
        list.as_array().map(|l| l.iter().map(|e| e[end].clone()).collect()).unwrap_or_default()
    };
    assert_eq!(listed[1].as_array().cloned().unwrap_or_default(), peers(&detail["callers"], "source"));
    assert_eq!(listed[2].as_array().cloned().unwrap_or_default(), peers(&detail["callees"], "target"));
    assert!(!listed[1].as_array().is_none_or(Vec::is_empty), "svc-02 has callers in the fixture");
    let url = b.client.current_url().await?;
    assert!(url.query().unwrap_or_default().contains("node=svc-02"), "{url}");
    let node_png = screenshot(b, &format!("{png}-node.png")).await?;

    // Click its first callee: the edge's measures and series.
    b.client.find(Locator::Css("#callees tbody tr")).await?.click().await?;
    wait_detail(b).await?;
    let chart = b.js("return document.querySelectorAll('#chart canvas').length;", vec![]).await?;
    assert!(chart.as_u64().unwrap_or(0) > 0, "the edge's series is drawn");
    let png = screenshot(b, &format!("{png}.png")).await?;
    eprintln!("screenshots: {} {}", png.display(), node_png.display());
    Ok(())
}

#[tokio::test]
async fn the_page_draws_what_the_api_says() -> anyhow::Result<()> {
    let f = fixture();
    let dir = tempfile::tempdir()?;
    write_lake(dir.path(), &f.edges)?;
    let server =
        Server::start(Arc::new(LakeSource::open(dir.path(), LakeOptions::default())?), ServeConfig::default())?;
    let browser = Browser::start().await?;
    let result = run(&browser, &server, "map").await;
    browser.close().await;
    result
}

/// The page `flowmap demo --serve` serves (the `flowmap` binary of this workspace, which
/// `scripts/test` builds first), checked the same way.
#[tokio::test]
async fn the_demo_map_draws_what_the_api_says() -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    let bin = std::env::var_os("FLOWMAP_BIN").map(PathBuf::from).unwrap_or_else(|| target_dir().join("debug/flowmap"));
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p flowmap; scripts/test does)",
        bin.display()
    );
    /// Kills the demo however the test ends.
    struct Demo(std::process::Child);
    impl Drop for Demo {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut demo = Demo(
        std::process::Command::new(&bin)
            .args(["demo", "--scenario", "steady", "--serve", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    let stdout = demo.0.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let url = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("the map of this run is at ") {
                return Ok(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
        anyhow::bail!("the demo ended without serving its map")
    })
    .await??;
    let server = Server::at(&url);
    let browser = Browser::start().await?;
    let result = run(&browser, &server, "map-demo").await;
    browser.close().await;
    drop(demo);
    result
}
