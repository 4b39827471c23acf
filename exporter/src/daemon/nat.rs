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
//! forwarded port is claimed by nobody here.
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

/// One TCP entry: the original tuple's destination and the reply tuple's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    dst: IpAddr,
    dport: u16,
    reply_src: IpAddr,
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
        ([_, dst, reply_src, _], [_, dport, reply_sport, _]) => {
            Some(Entry { dst: *dst, dport: *dport, reply_src: *reply_src, reply_sport: *reply_sport })
        }
        _ => None,
    }
}

/// The (address, port) pairs of `host` addresses whose connections the table shows forwarded
/// elsewhere (the reply comes from another address or port).
///
/// # Errors
/// Reading `table` fails.
pub fn forwarded(table: impl BufRead, host: &[IpAddr]) -> std::io::Result<HashSet<(IpAddr, u16)>> {
    let mut out = HashSet::new();
    for line in table.lines() {
        let line = line?;
        let Some(e) = parse(&line) else { continue };
        if host.contains(&e.dst) && (e.reply_src != e.dst || e.reply_sport != e.dport) {
            out.insert((e.dst, e.dport));
        }
    }
    Ok(out)
}

/// [`forwarded`] from [`CONNTRACK_TABLE`]; an empty set when the table does not exist
/// (conntrack not loaded: nothing is forwarded).
///
/// # Errors
/// The table exists but cannot be read.
pub fn read_forwarded(host: &[IpAddr]) -> std::io::Result<HashSet<(IpAddr, u16)>> {
    match std::fs::File::open(CONNTRACK_TABLE) {
        Ok(f) => forwarded(std::io::BufReader::new(f), host),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
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
ipv4     2 tcp      6 garbage
";

    #[test]
    fn forwarded_ports_are_those_whose_replies_come_from_elsewhere() {
        let host: Vec<IpAddr> = vec!["10.253.8.1".parse().unwrap(), "fd53::1".parse().unwrap()];
        let got = forwarded(TABLE.as_bytes(), &host).unwrap();
        let want: HashSet<(IpAddr, u16)> =
            [("10.253.8.1".parse().unwrap(), 8080), ("fd53::1".parse().unwrap(), 443)].into_iter().collect();
        // Not: the host's own sshd (replies from itself), UDP, another host's address.
        assert_eq!(got, want);
    }

    #[test]
    fn a_missing_table_forwards_nothing_and_the_real_one_is_read() {
        assert!(read_forwarded(&[]).is_ok());
    }
}
