//! Network namespaces joined by a veth pair, for tests that need addresses other than loopback
//! (never reachable from outside: the namespaces are created here and deleted on drop).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Runs `ip ARGS`, panicking with its error.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Whether `ip` is installed.
pub fn have_ip() -> bool {
    Command::new("ip").arg("-V").output().is_ok()
}

/// Two namespaces `a` and `b` joined by a veth pair, with addresses `a_ips` and `b_ips`
/// (`/24`); deleted on drop.
pub struct VethPair {
    /// Namespace names.
    pub a: String,
    /// See [`VethPair::a`].
    pub b: String,
}

impl VethPair {
    /// Creates the pair; `tag` keeps names unique between tests.
    pub fn new(tag: &str, a_ips: &[&str], b_ips: &[&str]) -> Self {
        let id = std::process::id() % 100_000;
        let pair = VethPair { a: format!("fm{tag}a-{id}"), b: format!("fm{tag}b-{id}") };
        let (va, vb) = (format!("v{tag}a{id}"), format!("v{tag}b{id}"));
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &pair.a]);
        ip(&["link", "set", &vb, "netns", &pair.b]);
        for (ns, dev, ips) in [(&pair.a, &va, a_ips), (&pair.b, &vb, b_ips)] {
            for addr in ips {
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            }
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread that has entered the named network namespace (setns changes only
/// the calling thread).
pub fn spawn_in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = File::open(format!("/run/netns/{name}")).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: a valid namespace fd; setns only switches this thread's network namespace,
        // which nothing else on this thread relies on.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}
