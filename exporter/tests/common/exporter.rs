//! Running the `flowmap-exporter` binary in a test: JSON lines to a file the test reads, a
//! private control socket, and optional flags.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flowmap-exporter")
}

/// A scratch directory for this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fe-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A running exporter.
pub struct Exporter {
    child: Child,
    /// Its JSON-lines output (file sink), if it writes one.
    pub out: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
}

impl Exporter {
    /// Starts an exporter writing JSON lines to `dir/NAME.jsonl` every 300 ms, metrics and
    /// pinning off unless `extra` says otherwise; waits until its control socket exists.
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> Self {
        let out = dir.join(format!("{name}.jsonl"));
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new(bin());
        if !extra.contains(&"--sink") {
            cmd.args(["--sink", &format!("file:{}", out.display())]);
        }
        if !extra.contains(&"--batch-interval") {
            cmd.args(["--batch-interval", "300ms"]);
        }
        for (flag, off) in [("--metrics", "off"), ("--pin-dir", "off")] {
            if !extra.contains(&flag) {
                cmd.args([flag, off]);
            }
        }
        Self::spawn(cmd, dir, name, out, extra)
    }

    fn spawn(mut cmd: Command, dir: &Path, name: &str, out: PathBuf, extra: &[&str]) -> Self {
        let socket = dir.join(format!("{name}.sock"));
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let mut child =
            cmd.arg("--control-socket").arg(&socket).args(extra).stderr(Stdio::from(log)).spawn().expect("spawn");
        let started = Instant::now();
        while !socket.exists() {
            assert!(child.try_wait().expect("wait").is_none(), "the exporter exited at start: {}", log_of(dir, name));
            assert!(started.elapsed() < Duration::from_secs(20), "the exporter did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Exporter { child, out, socket }
    }

    /// Runs `flowmap-exporter ARGS --control-socket SOCKET` and returns its answer.
    pub fn control(&self, args: &[&str]) -> String {
        let out = Command::new(bin()).args(args).arg("--control-socket").arg(&self.socket).output().expect("control");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stops with SIGTERM (one last batch) and returns every line written.
    pub fn stop(mut self) -> Vec<Value> {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "exit {status}");
        lines(&self.out)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The stderr log of exporter `name` in `dir`.
pub fn log_of(dir: &Path, name: &str) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(dir.join(format!("{name}.log"))) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// The JSON lines of a file.
pub fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The flow lines whose local and remote ends are these.
pub fn flows_of(all: &[Value], local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Vec<&Value> {
    all.iter()
        .filter(|v| {
            v["kind"] == "flow"
                && v["local_ip"] == local.ip().to_string()
                && v["local_port"] == local.port()
                && v["remote_ip"] == remote.ip().to_string()
                && v["remote_port"] == remote.port()
        })
        .collect()
}
