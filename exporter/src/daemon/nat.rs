//! Ports of the host's addresses that the host forwards elsewhere (destination NAT), read from
//! the kernel's connection tracking table.
//!
//! Why: a port of a host address forwarded to a container (`docker -p`, a hostPort, a
//! NodePort) is served by the container, yet nothing on the host listens on it and the
//! packets never reach a host socket. Under the host identity, the whole-IP heartbeat of the
//! address covered the port, and connections to it were attributed to the host's workload
//! (found by a fresh user). Conntrack sees every such connection: its reply tuple comes from
//! the address it was forwarded to, not from the one the client asked for. A host address
//! with a forwarded port is shared (its ports belong to more than one workload), and the
//! forwarded port is claimed by nobody here. Likewise source NAT (masquerade, the default for
//! containers' connections leaving a node): a host address that other endpoints' connections
//! leave with is shared, so the host identity does not claim their connections.
//!
//! Source: `/proc/net/nf_conntrack` (the host network namespace's table; present when the
//! kernel has `CONFIG_NF_CONNTRACK_PROCFS`, which Debian's and most distributions' have, and
//! conntrack is loaded, which destination NAT needs). It is read once per batch; an entry
//! lingers after its connection (about 10 s after a close, 120 s in TIME_WAIT), so the
//! forwarded connections of a window are still listed at its end. Without the file no
//! forwarding is known (the README's "Known gaps").

use std::collections::HashSet;
use std::io::BufRead;
use std::net::IpAddr;

/// Where the table is.
pub const CONNTRACK_TABLE: &str = "/proc/net/nf_conntrack";

/// One TCP entry: the original tuple's source and destination, the reply tuple's source and
/// destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    reply_src: IpAddr,
    reply_dst: IpAddr,
    reply_sport: u16,
}

/// Parses one line of the table: `ipv4 2 tcp 6 TTL [STATE] src= dst= sport= dport= [flags]
/// src= dst= sport= dport= ...`; `None` for other protocols and lines it cannot read.
fn parse(line: &str) -> Option<Entry> {
    let mut words = line.split_ascii_whitespace();
    if words.nth(2)? != "tcp" {
        return None;
    }
    let (mut ips, mut ports): (Vec<IpAddr>, Vec<u16>) = (Vec::with_capacity(4), Vec::with_capacity(4));
    for word in words {
        match word.split_once('=') {
            Some(("src" | "dst", v)) => ips.push(v.parse().ok()?),
            Some(("sport" | "dport", v)) => ports.push(v.parse().ok()?),
            _ => {}
        }
    }
    // Original src, dst, then reply src, dst; the same for ports.
    match (ips.as_slice(), ports.as_slice()) {
        ([src, dst, reply_src, reply_dst], [_, dport, reply_sport, _]) => Some(Entry {
            src: *src,
            dst: *dst,
            dport: *dport,
            reply_src: *reply_src,
            reply_dst: *reply_dst,
            reply_sport: *reply_sport,
        }),
        _ => None,
    }
}

/// What the table shows of the host's addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nat {
    /// (address, port) of `host` addresses whose connections are forwarded elsewhere
    /// (destination NAT: the reply comes from another address or port).
    pub forwarded: HashSet<(IpAddr, u16)>,
    /// `host` addresses that other endpoints' connections leave with (source NAT,
    /// masquerade: the reply goes to a host address that is not the original source). Their
    /// ports belong to whoever is behind them, not to the host.
    pub masquerading: HashSet<IpAddr>,
}

/// Reads the table (see [`Nat`]).
///
/// # Errors
/// Reading `table` fails.
pub fn nat(table: impl BufRead, host: &[IpAddr]) -> std::io::Result<Nat> {
    let mut out = Nat::default();
    for line in table.lines() {
        let line = line?;
        let Some(e) = parse(&line) else { continue };
        if host.contains(&e.dst) && (e.reply_src != e.dst || e.reply_sport != e.dport) {
            out.forwarded.insert((e.dst, e.dport));
        }
        // Found by a fresh user: containers' connections masqueraded behind the host's
        // address reached other servers as the host's, and were attributed to its identity.
        if host.contains(&e.reply_dst) && e.reply_dst != e.src {
            out.masquerading.insert(e.reply_dst);
        }
    }
    Ok(out)
}

/// [`nat`] from [`CONNTRACK_TABLE`]; nothing when the table does not exist (conntrack not
/// loaded: no NAT).
///
/// # Errors
/// The table exists but cannot be read.
pub fn read_nat(host: &[IpAddr]) -> std::io::Result<Nat> {
    match std::fs::File::open(CONNTRACK_TABLE) {
        Ok(f) => nat(std::io::BufReader::new(f), host),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Nat::default()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
ipv4     2 tcp      6 118 TIME_WAIT src=10.253.8.2 dst=10.253.8.1 sport=40000 dport=8080 src=10.253.9.2 dst=10.253.8.2 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=10.253.8.2 dst=10.253.8.1 sport=40001 dport=22 src=10.253.8.1 dst=10.253.8.2 sport=22 dport=40001 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=10.253.8.2 dst=10.253.8.1 sport=5353 dport=53 src=10.253.9.3 dst=10.253.8.2 sport=53 dport=5353 mark=0 zone=0 use=2
ipv6     10 tcp      6 119 SYN_SENT src=fd53::2 dst=fd53::1 sport=41000 dport=443 [UNREPLIED] src=fd53::9 dst=fd53::2 sport=8443 dport=41000 mark=0 zone=0 use=2
ipv4     2 tcp      6 118 TIME_WAIT src=10.253.8.2 dst=10.9.9.9 sport=40002 dport=80 src=10.9.9.10 dst=10.253.8.2 sport=80 dport=40002 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=10.253.1.2 dst=10.254.2.2 sport=40000 dport=80 src=10.254.2.2 dst=10.254.2.1 sport=80 dport=60774 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=10.254.2.1 dst=10.254.2.2 sport=40001 dport=80 src=10.254.2.2 dst=10.254.2.1 sport=80 dport=40001 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 garbage
";

    #[test]
    fn forwarded_ports_are_those_whose_replies_come_from_elsewhere() {
        let host: Vec<IpAddr> =
            vec!["10.253.8.1".parse().unwrap(), "fd53::1".parse().unwrap(), "10.254.2.1".parse().unwrap()];
        let got = nat(TABLE.as_bytes(), &host).unwrap();
        let want: HashSet<(IpAddr, u16)> =
            [("10.253.8.1".parse().unwrap(), 8080), ("fd53::1".parse().unwrap(), 443)].into_iter().collect();
        // Not: the host's own sshd (replies from itself), UDP, another host's address.
        assert_eq!(got.forwarded, want);
        // A connection of 10.253.1.2 leaves as 10.254.2.1 (masquerade); the host's own
        // connection from 10.254.2.1 is not one.
        assert_eq!(got.masquerading, ["10.254.2.1".parse().unwrap()].into_iter().collect());
    }

    #[test]
    fn a_missing_table_forwards_nothing_and_the_real_one_is_read() {
        assert!(read_nat(&[]).is_ok());
    }
}
