//! The local control interface: a Unix socket on which a container agent (or an operator, via
//! `flowmap-exporter assign/unassign`) sets per-IP and per-(IPv4, port) assignments. One
//! request per connection, one line each way:
//!
//! ```text
//! assign 10.1.2.3 checkout-7f9c          -> ok
//! assign 10.0.0.5 80 web                 -> ok        (an address shared through NAT)
//! unassign 10.1.2.3                      -> ok | ok (none)
//! nonsense                               -> error: ...
//! ```
//! The daemon applies requests between batches, in its main loop, so the kernel maps and the
//! heartbeat tables change together.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

/// One request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Attribute `ip` (and `port`, if given) to `workload`.
    Assign {
        /// Address.
        ip: IpAddr,
        /// Port, for an address shared by several workloads.
        port: Option<u16>,
        /// Workload.
        workload: String,
    },
    /// Remove an assignment.
    Unassign {
        /// Address.
        ip: IpAddr,
        /// Port.
        port: Option<u16>,
    },
}

impl Request {
    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ip = |s: &str| s.parse::<IpAddr>().map_err(|e| format!("bad address '{s}': {e}"));
        let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port '{s}'"));
        let v4 =
            |a: IpAddr| if a.is_ipv4() { Ok(a) } else { Err("port assignments are for IPv4 addresses".to_string()) };
        match words.as_slice() {
            ["assign", a, w] => Ok(Request::Assign { ip: ip(a)?, port: None, workload: w.to_string() }),
            ["assign", a, p, w] => {
                Ok(Request::Assign { ip: v4(ip(a)?)?, port: Some(port(p)?), workload: w.to_string() })
            }
            ["unassign", a] => Ok(Request::Unassign { ip: ip(a)?, port: None }),
            ["unassign", a, p] => Ok(Request::Unassign { ip: v4(ip(a)?)?, port: Some(port(p)?) }),
            _ => Err("expected: assign IP [PORT] WORKLOAD | unassign IP [PORT]".into()),
        }
    }

    /// The request as a line.
    pub fn to_line(&self) -> String {
        match self {
            Request::Assign { ip, port: Some(p), workload } => format!("assign {ip} {p} {workload}"),
            Request::Assign { ip, port: None, workload } => format!("assign {ip} {workload}"),
            Request::Unassign { ip, port: Some(p) } => format!("unassign {ip} {p}"),
            Request::Unassign { ip, port: None } => format!("unassign {ip}"),
        }
    }
}

/// A request and where to send the answer.
pub type Pending = (Request, Sender<Result<String, String>>);

/// Serves the socket at `path` on a thread; requests arrive on the returned channel.
pub fn serve(path: &Path) -> std::io::Result<Receiver<Pending>> {
    if path.exists() {
        // A live daemon answers; a stale socket file from a crash is replaced.
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another exporter", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let listener = UnixListener::bind(path)?;
    let (tx, rx) = channel::<Pending>();
    std::thread::Builder::new().name("control".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let answer = match Request::parse(line.trim()) {
                Ok(request) => {
                    let (reply, wait) = channel();
                    if tx.send((request, reply)).is_err() {
                        return; // The daemon is gone.
                    }
                    wait.recv_timeout(Duration::from_secs(5))
                        .unwrap_or_else(|_| Err("the daemon did not answer".into()))
                }
                Err(e) => Err(e),
            };
            let text = match answer {
                Ok(ok) => ok,
                Err(e) => format!("error: {e}"),
            };
            let _ = (&stream).write_all(format!("{text}\n").as_bytes());
        }
    })?;
    Ok(rx)
}

/// Sends one request to a running daemon and returns its answer.
pub fn request(path: &PathBuf, request: &Request) -> Result<String, String> {
    let mut stream = UnixStream::connect(path)
        .map_err(|e| format!("cannot reach the exporter at {} ({e}); is it running?", path.display()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    stream.write_all(format!("{}\n", request.to_line()).as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(|e| e.to_string())?;
    let answer = answer.trim().to_string();
    match answer.strip_prefix("error: ") {
        Some(e) => Err(e.to_string()),
        None => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print() {
        for line in ["assign 10.0.0.1 web", "assign 10.0.0.1 80 web", "unassign fd00::1", "unassign 10.0.0.1 80"] {
            assert_eq!(Request::parse(line).unwrap().to_line(), line);
        }
        for bad in ["assign", "assign x web", "assign fd00::1 80 web", "unassign 10.0.0.1 0", "drop 1"] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
    }
}
