//! Connection storm: open and close short TCP connections on loopback at a
//! paced rate, to load the flow probe (see `scripts/bench-exporter-kernel`).
//!
//! ```text
//! cargo run --release -p flowmap-exporter --example storm -- \
//!     --rate 10000 --seconds 10 [--threads N] [--bytes B] [--close rst|fin]
//! ```
//!
//! It listens on `127.0.0.1:0` itself (one thread accepts; with `--bytes B`
//! it writes B bytes to each connection before closing it, and the client
//! reads them). `--threads` clients each connect at `rate / threads`,
//! following a schedule from the start time: a client that falls behind
//! catches up at once, so a short stall does not lower the achieved rate, and
//! a client that is ahead sleeps until its next connection is due.
//!
//! Closing: by default (`--close rst`) clients set `SO_LINGER` 0, so `close()`
//! sends a RST and no socket enters TIME_WAIT; the ephemeral ports
//! (`net.ipv4.ip_local_port_range`, 28 232 by default) are reused at once and
//! the storm can last any time. `--close fin` closes normally; the client then
//! holds TIME_WAIT and depends on `net.ipv4.tcp_tw_reuse` (2 = loopback only,
//! the default) to get ports back, else `connect()` fails with
//! EADDRNOTAVAIL after about `ports / rate` seconds.
//!
//! Failures are counted by kind, never fatal. At the end one JSON line goes
//! to stdout: the target and achieved rates, connections made, failures, and
//! the slowest and fastest whole second (so a rate that was only reached on
//! average shows up).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const USAGE: &str = "usage: storm --rate CONN_PER_SEC --seconds S [--threads N] [--bytes B] [--close rst|fin]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Close {
    /// `SO_LINGER` 0: RST, no TIME_WAIT.
    Rst,
    /// Normal FIN handshake.
    Fin,
}

#[derive(Debug, Clone, Copy)]
struct Args {
    rate: u32,
    seconds: u32,
    threads: u32,
    bytes: u32,
    close: Close,
}

fn parse_args() -> anyhow::Result<Args> {
    fn value<T: std::str::FromStr>(name: &str, v: Option<String>) -> anyhow::Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        v.with_context(|| format!("{name} needs a value ({USAGE})"))?.parse().with_context(|| name.to_string())
    }
    let mut rate = None;
    let mut seconds = None;
    let mut threads = 2;
    let mut bytes = 0;
    let mut close = Close::Rst;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rate" => rate = Some(value("--rate", args.next())?),
            "--seconds" => seconds = Some(value("--seconds", args.next())?),
            "--threads" => threads = value("--threads", args.next())?,
            "--bytes" => bytes = value("--bytes", args.next())?,
            "--close" => {
                close = match args.next().as_deref() {
                    Some("rst") => Close::Rst,
                    Some("fin") => Close::Fin,
                    other => bail!("--close must be rst or fin, not {other:?}"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    let (Some(rate), Some(seconds)) = (rate, seconds) else {
        bail!("--rate and --seconds are required ({USAGE})");
    };
    if rate == 0 || seconds == 0 || threads == 0 {
        bail!("--rate, --seconds and --threads must be at least 1");
    }
    Ok(Args { rate, seconds, threads, bytes, close })
}

/// What the accepting thread saw.
#[derive(Debug, Default)]
struct Server {
    accepted: AtomicU64,
    accept_errors: AtomicU64,
    write_errors: AtomicU64,
}

fn listen() -> anyhow::Result<TcpListener> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).context("creating the listening socket")?;
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    sock.bind(&SockAddr::from(addr)).context("binding 127.0.0.1:0")?;
    // The kernel caps this at net.core.somaxconn; a deep queue absorbs the
    // moments the accepting thread is descheduled.
    sock.listen(4096).context("listen")?;
    Ok(sock.into())
}

fn serve(listener: &TcpListener, bytes: u32, stop: &AtomicBool, server: &Server) {
    let payload = vec![0x5a_u8; bytes as usize];
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match conn {
            Ok(mut s) => {
                server.accepted.fetch_add(1, Ordering::Relaxed);
                if !payload.is_empty() && s.write_all(&payload).is_err() {
                    server.write_errors.fetch_add(1, Ordering::Relaxed);
                }
                drop(s);
            }
            Err(_) => {
                server.accept_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One client thread's results.
#[derive(Debug, Default)]
struct ClientReport {
    made: u64,
    failures: BTreeMap<String, u64>,
    /// Connections completed in each whole second since the common start.
    per_second: Vec<u64>,
    /// Largest delay behind the schedule.
    max_lag: Duration,
}

fn failure_kind(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        // errno names for the usual suspects, so the report is readable.
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::EMFILE) => "EMFILE".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(n) => format!("errno {n}"),
        None => format!("{:?}", e.kind()),
    }
}

/// One short connection: connect, read the server's bytes if any, close.
fn one_connection(to: SocketAddr, args: &Args, buf: &mut [u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(to)?;
    if args.close == Close::Rst {
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
    }
    if args.bytes > 0 {
        let mut left = args.bytes as usize;
        while left > 0 {
            let n = s.read(buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            left = left.saturating_sub(n);
        }
    }
    // With `--close fin` and no bytes the client usually closes first (the
    // server has not accepted yet) and takes TIME_WAIT, which tcp_tw_reuse
    // lets connect() reuse on loopback; with bytes the server closes first.
    drop(s);
    Ok(())
}

fn client(to: SocketAddr, args: Args, start: Instant, index: u32) -> ClientReport {
    // This thread's share of the rate; the remainder goes to the first ones.
    let share = args.rate / args.threads + u32::from(index < args.rate % args.threads);
    let total = u64::from(share) * u64::from(args.seconds);
    let mut report = ClientReport { per_second: vec![0; args.seconds as usize + 1], ..ClientReport::default() };
    if share == 0 {
        return report;
    }
    // Stagger the threads within one interval so they do not connect in
    // lockstep.
    let interval = Duration::from_secs(1) / share;
    let offset = interval * index / args.threads;
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..total {
        let due = start
            + offset
            + Duration::from_secs(i / u64::from(share))
            + interval * u32::try_from(i % u64::from(share)).unwrap_or(0);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            report.max_lag = report.max_lag.max(now - due);
        }
        match one_connection(to, &args, &mut buf) {
            Ok(()) => {
                report.made += 1;
                let sec = usize::try_from(start.elapsed().as_secs()).unwrap_or(usize::MAX);
                if let Some(c) = report.per_second.get_mut(sec) {
                    *c += 1;
                } else if let Some(c) = report.per_second.last_mut() {
                    *c += 1;
                }
            }
            Err(e) => *report.failures.entry(failure_kind(&e)).or_default() += 1,
        }
    }
    report
}

#[derive(serde::Serialize)]
struct Summary {
    target_rate: u32,
    seconds: u32,
    threads: u32,
    bytes: u32,
    close: Close,
    listen: String,
    connections: u64,
    failures: u64,
    failure_kinds: BTreeMap<String, u64>,
    elapsed_s: f64,
    achieved_rate: f64,
    /// Fewest / most connections completed within one whole second (seconds
    /// 0..seconds-1 of the schedule).
    min_per_second: u64,
    max_per_second: u64,
    /// Completed after the scheduled end (the clients were behind).
    late_connections: u64,
    max_lag_ms: f64,
    accepted: u64,
    accept_errors: u64,
    server_write_errors: u64,
}

fn run(args: Args) -> anyhow::Result<Summary> {
    let listener = listen()?;
    let addr = listener.local_addr().context("listener address")?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = Arc::new(Server::default());
    let acceptor = {
        let (stop, server) = (Arc::clone(&stop), Arc::clone(&server));
        std::thread::Builder::new()
            .name("storm-accept".into())
            .spawn(move || serve(&listener, args.bytes, &stop, &server))
            .context("starting the accepting thread")?
    };

    let start = Instant::now() + Duration::from_millis(50);
    let mut clients = Vec::new();
    for index in 0..args.threads {
        clients.push(
            std::thread::Builder::new()
                .name(format!("storm-client-{index}"))
                .spawn(move || client(addr, args, start, index))
                .context("starting a client thread")?,
        );
    }
    let mut made = 0;
    let mut failure_kinds = BTreeMap::new();
    let mut per_second = vec![0u64; args.seconds as usize + 1];
    let mut max_lag = Duration::ZERO;
    for c in clients {
        let r = c.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        made += r.made;
        for (k, v) in r.failures {
            *failure_kinds.entry(k).or_insert(0) += v;
        }
        for (total, n) in per_second.iter_mut().zip(&r.per_second) {
            *total += n;
        }
        max_lag = max_lag.max(r.max_lag);
    }
    let elapsed = start.elapsed();

    // Let the acceptor drain its queue (every completed connect() is in it),
    // then wake it with one last connection so it sees the stop flag.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while server.accepted.load(Ordering::Relaxed) < made && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let woke = TcpStream::connect(addr).is_ok();
    if woke {
        acceptor.join().map_err(|_| anyhow::anyhow!("the accepting thread panicked"))?;
    }

    let scheduled = &per_second[..args.seconds as usize];
    Ok(Summary {
        target_rate: args.rate,
        seconds: args.seconds,
        threads: args.threads,
        bytes: args.bytes,
        close: args.close,
        listen: addr.to_string(),
        connections: made,
        failures: failure_kinds.values().sum(),
        failure_kinds,
        elapsed_s: elapsed.as_secs_f64(),
        #[allow(clippy::cast_precision_loss)] // a rate for display
        achieved_rate: made as f64 / elapsed.as_secs_f64(),
        min_per_second: scheduled.iter().copied().min().unwrap_or(0),
        max_per_second: scheduled.iter().copied().max().unwrap_or(0),
        late_connections: per_second[args.seconds as usize],
        max_lag_ms: max_lag.as_secs_f64() * 1e3,
        accepted: server.accepted.load(Ordering::Relaxed),
        accept_errors: server.accept_errors.load(Ordering::Relaxed),
        server_write_errors: server.write_errors.load(Ordering::Relaxed),
    })
}

fn main() {
    let result = parse_args().and_then(run).and_then(|summary| {
        let line = serde_json::to_string(&summary).context("encoding the summary")?;
        println!("{line}");
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
