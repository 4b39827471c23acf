//! What the map's integration tests share: the fixture and its reference computation
//! ([`fixture`]), a server on 127.0.0.1 over a source ([`Server`]), and headless Chromium driven
//! through chromedriver ([`browser`]). The browser harness takes any base URL, so it can point at
//! `flowmap demo --serve` as well as at a test server.
#![allow(dead_code)]

pub mod browser;
pub mod fixture;

use std::sync::Arc;

use flowmap_serve::{serve, EdgeSource, ServeConfig, ServeOptions, Serving};

/// A map server: one this process serves on an ephemeral loopback port, or one another
/// process serves (`flowmap demo --serve`).
pub struct Server {
    pub serving: Option<Serving>,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Serves `source` with `config`.
    pub fn start(source: Arc<dyn EdgeSource>, config: ServeConfig) -> anyhow::Result<Self> {
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        let addr = "127.0.0.1:0".parse()?;
        let serving = serve(ServeOptions::loopback(addr), config, source, metrics, std::future::pending())?;
        Ok(Server { base: serving.url(), serving: Some(serving), http: reqwest::Client::new() })
    }

    /// A server another process runs at `base` (`http://HOST:PORT`).
    pub fn at(base: &str) -> Self {
        Server { serving: None, base: base.trim_end_matches('/').to_owned(), http: reqwest::Client::new() }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        self.base.clone()
    }

    /// GET `path` (with its query): status and body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let res = self.http.get(format!("{}{path}", self.url())).send().await?;
        let status = res.status().as_u16();
        Ok((status, res.text().await?))
    }

    /// GET `path`, which must answer 200 with JSON.
    pub async fn json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.get(path).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }
}

/// An RFC 3339 time for `ns`.
pub fn rfc3339(ns: u64) -> String {
    flowmap_serve::time::format_time(ns)
}
