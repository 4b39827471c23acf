//! Headless Chromium through chromedriver (Debian's `chromium` and `chromium-driver`, which
//! `scripts/setup` installs), driven with fantoccini. Chromium starts with the flags that keep it
//! off the network (`--disable-background-networking`, `--disable-component-update`, ...: on a
//! closed network its connections would hang) and a fresh profile directory.
//!
//! Reusable against any server: [`Browser::start`] then [`Browser::open`] with a base URL, and
//! [`Browser::wait_ready`] for the page to have drawn its map.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// Chromium's flags (web.md): headless, no sandbox (root in a VM), no GPU, and nothing that
/// reaches for the network on its own.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
];

/// A running chromedriver and a Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn find(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    ///
    /// # Errors
    /// Chromium or chromedriver missing (with what to install), or either failing to start.
    pub async fn start() -> anyhow::Result<Self> {
        let chromium = find("FLOWMAP_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
        let driver = find("FLOWMAP_CHROMEDRIVER", &["chromedriver"]);
        let (Some(chromium), Some(driver_bin)) = (chromium, driver) else {
            bail!(
                "the browser test needs Chromium and chromedriver: run scripts/setup (Debian packages `chromium` and \
                 `chromium-driver`), or set FLOWMAP_CHROMIUM and FLOWMAP_CHROMEDRIVER"
            );
        };
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", driver_bin.display()))?;
        let profile = tempfile::tempdir()?;
        let mut browser_guard = DriverGuard(Some(driver));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver ({}) did not listen on port {port} within 20 s", driver_bin.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium.to_string_lossy(), "args": args },
        });
        let Value::Object(caps) = caps else { unreachable!("an object literal") };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .with_context(|| format!("chromedriver could not start {}", chromium.display()))?;
        let driver = browser_guard.0.take().expect("the driver is still ours");
        Ok(Browser { client, driver, _profile: profile })
    }

    /// Loads `url`.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await.with_context(|| format!("cannot load {url}"))
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Waits until the page's `body[data-state]` is `ready` after having been anything else
    /// since `since_seq` (the page's request counter), for at most `timeout`.
    ///
    /// # Errors
    /// The page shows an error (its message is returned) or does not get ready in time.
    pub async fn wait_ready(&self, min_seq: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self
                .js(
                    "const f = window.flowmap; return [document.body.dataset.state || '', f ? f.state.seq : 0, \
                     document.getElementById('error').textContent];",
                    vec![],
                )
                .await?;
            let (state, seq, error) =
                (v[0].as_str().unwrap_or(""), v[1].as_u64().unwrap_or(0), v[2].as_str().unwrap_or(""));
            if seq >= min_seq && state == "ready" {
                return Ok(());
            }
            if seq >= min_seq && state == "error" {
                bail!("the page shows an error: {error}");
            }
            if Instant::now() > deadline {
                bail!("the page was not ready within {timeout:?} (state {state:?}, request {seq}, error {error:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Kills chromedriver if the session never started.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
