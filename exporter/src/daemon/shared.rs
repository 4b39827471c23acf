//! Which local IPs are *shared*, and the heartbeats that follow from it.
//!
//! Why: the job reads a flow's local workload as a claim on the whole local IP when the flow
//! says `local_scope = SCOPE_IP`, and a heartbeat with `port = 0` as a claim on the whole IP.
//! Such a claim is a promise that no other workload has sockets on that address: if another
//! one does, the job attributes the other one's connections to the claimant, which is a
//! misattribution. A narrow (port) claim only costs attribution rate. So the exporter claims
//! a whole IP only when it can vouch for it, and when in doubt it claims the port.
//!
//! The rule. A local IP is shared when sockets on it can belong to more than one workload:
//! - a per-(IP, port) assignment is set on it (an address shared through NAT, hostNetwork
//!   workloads told apart by port);
//! - a socket on it (a flow's local end, or a listener, a wildcard listener covering every
//!   address of its network namespace) belongs to a cgroup that a cgroup rule names (the rule
//!   knows that socket's workload, not the address's: the address is also used by whatever
//!   else runs there, the host's own processes or sibling containers);
//! - sockets of more than one network namespace were seen on it;
//! - it is a loopback, unspecified or IPv6 link-local address (every namespace has its own);
//! - the host forwards a port of it elsewhere (destination NAT, seen in conntrack: see
//!   [`super::nat`]); the forwarded port gets no heartbeat.
//!
//! A reason keeps the IP shared for `shared_ip_hold` (default 10 minutes) after it was last
//! seen, so that a workload that is quiet for a while does not see its address claimed whole
//! in between. Then:
//! - a flow's scope is `SCOPE_IP` only when its source can vouch for an address (a per-IP
//!   assignment or the host identity) and its local IP is not shared; otherwise `SCOPE_PORT`;
//! - whole-IP heartbeats (`port = 0`) go only to IPs that are not shared: per-IP assignments,
//!   and the host's own addresses under its identity;
//! - every (IP, port) on a shared IP gets a port-scoped heartbeat (`port` set) when every
//!   listening socket that covers it names one known workload, so a shared IP's servers still
//!   give positive evidence (an IPv6 wildcard covers IPv4 too unless it is `IPV6_V6ONLY`; in
//!   the host's namespace a listener covers only addresses the host has now).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use flowmap_schema::{self as wire, Ownership};

use super::local::Attributor;
use crate::sockets::Listener;

/// Why an IP is shared (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A per-(IP, port) assignment is set on it.
    PortAssignment,
    /// A socket on it matched a cgroup rule.
    CgroupRule,
    /// Sockets of several network namespaces were seen on it.
    Namespaces,
    /// Loopback, unspecified or link-local: every namespace has its own.
    Local,
    /// NAT ([`super::nat`]): the host forwards a port of it elsewhere, other endpoints'
    /// connections leave with it (masquerade), or the host's NAT cannot be read.
    Nat,
}

/// A network namespace's use of an IP.
#[derive(Clone, Copy, Debug)]
struct Seen {
    netns: u32,
    last_ns: u64,
}

/// The shared-IP state of one exporter.
#[derive(Debug)]
pub struct SharedIps {
    hold_ns: u64,
    /// IP -> (shared until, last reason).
    until: HashMap<IpAddr, (u64, Reason)>,
    /// IP -> the namespaces seen on it, and when.
    users: HashMap<IpAddr, Vec<Seen>>,
    /// (IP, port) the host forwards elsewhere -> until when it counts as forwarded.
    forwarded: HashMap<(IpAddr, u16), u64>,
}

/// Addresses that exist in every network namespace separately.
fn namespace_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

impl SharedIps {
    /// A tracker whose reasons last `hold_ns` nanoseconds.
    pub fn new(hold_ns: u64) -> Self {
        SharedIps { hold_ns, until: HashMap::new(), users: HashMap::new(), forwarded: HashMap::new() }
    }

    fn mark(&mut self, ip: IpAddr, reason: Reason, now_ns: u64) {
        let until = now_ns.saturating_add(self.hold_ns);
        let entry = self.until.entry(ip).or_insert((until, reason));
        if entry.0 <= until {
            *entry = (until, reason);
        }
    }

    /// A socket of network namespace `netns` on `ip` at `now_ns`; `by_rule`: its cgroup
    /// matched a cgroup rule.
    pub fn observe(&mut self, ip: IpAddr, netns: u32, by_rule: bool, now_ns: u64) {
        if by_rule {
            self.mark(ip, Reason::CgroupRule, now_ns);
        }
        let seen = self.users.entry(ip).or_default();
        match seen.iter_mut().find(|s| s.netns == netns) {
            Some(s) => s.last_ns = s.last_ns.max(now_ns),
            None => seen.push(Seen { netns, last_ns: now_ns }),
        }
        let since = now_ns.saturating_sub(self.hold_ns);
        if seen.iter().filter(|s| s.last_ns >= since).count() > 1 {
            self.mark(ip, Reason::Namespaces, now_ns);
        }
    }

    /// The per-(IP, port) assignments in force at `now_ns`.
    pub fn observe_port_assignments<'a>(&mut self, keys: impl IntoIterator<Item = &'a (IpAddr, u16)>, now_ns: u64) {
        for (ip, _) in keys {
            self.mark(*ip, Reason::PortAssignment, now_ns);
        }
    }

    /// Ports the host forwards elsewhere at `now_ns` (destination NAT, [`super::nat`]): their
    /// address is shared, and the port is claimed by nobody here.
    pub fn observe_forwarded<'a>(&mut self, pairs: impl IntoIterator<Item = &'a (IpAddr, u16)>, now_ns: u64) {
        for &(ip, port) in pairs {
            self.mark(ip, Reason::Nat, now_ns);
            self.forwarded.insert((ip, port), now_ns.saturating_add(self.hold_ns));
        }
    }

    /// `addresses` of the host whose ports may be others' at `now_ns`: other endpoints'
    /// connections leave with them (masquerade), or the host's NAT cannot be known (the
    /// conntrack table exists but is unreadable). They are shared (no whole-IP claim); their
    /// listeners' ports are still claimed.
    pub fn observe_nat_shared<'a>(&mut self, addresses: impl IntoIterator<Item = &'a IpAddr>, now_ns: u64) {
        for ip in addresses {
            self.mark(*ip, Reason::Nat, now_ns);
        }
    }

    /// Whether the host forwards `(ip, port)` elsewhere at `now_ns`.
    pub fn is_forwarded(&self, ip: IpAddr, port: u16, now_ns: u64) -> bool {
        self.forwarded.get(&(ip, port)).is_some_and(|until| *until > now_ns)
    }

    /// Why `ip` is shared at `now_ns`, or `None` when it is not.
    pub fn reason(&self, ip: IpAddr, now_ns: u64) -> Option<Reason> {
        if namespace_local(ip) {
            return Some(Reason::Local);
        }
        self.until.get(&ip).filter(|(until, _)| *until > now_ns).map(|(_, r)| *r)
    }

    /// Whether `ip` is shared at `now_ns`.
    pub fn is_shared(&self, ip: IpAddr, now_ns: u64) -> bool {
        self.reason(ip, now_ns).is_some()
    }

    /// The IPs seen in network namespace `netns` within the hold (what a wildcard listener
    /// there covers, besides the host's addresses for the host's namespace).
    pub fn ips_of(&self, netns: u32, now_ns: u64) -> Vec<IpAddr> {
        let since = now_ns.saturating_sub(self.hold_ns);
        let mut ips: Vec<IpAddr> = self
            .users
            .iter()
            .filter(|(ip, seen)| !namespace_local(**ip) && seen.iter().any(|s| s.netns == netns && s.last_ns >= since))
            .map(|(ip, _)| *ip)
            .collect();
        ips.sort_unstable();
        ips
    }

    /// Forgets what is older than the hold; returns how many IPs are shared now (besides the
    /// namespace-local ones).
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let since = now_ns.saturating_sub(self.hold_ns);
        self.until.retain(|_, (until, _)| *until > now_ns);
        self.forwarded.retain(|_, until| *until > now_ns);
        self.users.retain(|_, seen| {
            seen.retain(|s| s.last_ns >= since);
            !seen.is_empty()
        });
        self.until.len()
    }
}

/// The addresses a listener covers: its own, or for a wildcard bind every address known in its
/// namespace (the host's addresses in the host's namespace). In the host's namespace, only
/// addresses the host has now: Linux keeps a listening socket whose address was removed (a VIP
/// moved to another host), and a heartbeat for it would claim the address for this host's
/// workload while another host holds it (found by a fresh user, for listeners on the address
/// and wildcard listeners alike).
pub fn listener_ips(
    listener: &Listener,
    shared: &SharedIps,
    host_netns: Option<u32>,
    host_addresses: &[IpAddr],
    now_ns: u64,
) -> Vec<IpAddr> {
    let ip = listener.local.ip();
    let in_host = host_netns == Some(listener.netns_ino);
    if !ip.is_unspecified() {
        return if !in_host || host_addresses.contains(&ip) { vec![ip] } else { Vec::new() };
    }
    let mut ips = shared.ips_of(listener.netns_ino, now_ns);
    if in_host {
        ips.clear();
        ips.extend(host_addresses.iter().copied());
    }
    // An IPv4 wildcard socket serves IPv4 only; an IPv6 one serves both unless IPV6_V6ONLY is
    // set (found by a fresh user: a V6ONLY listener was credited with the host's IPv4 port,
    // which another workload's socket served).
    if ip.is_ipv4() {
        ips.retain(IpAddr::is_ipv4);
    } else if listener.v6only {
        ips.retain(IpAddr::is_ipv6);
    }
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// The heartbeats of the window `[from_ns, to_ns)`: whole-IP ones for per-IP assignments and
/// (under the host identity) the host's addresses that are not shared; port-scoped ones for the
/// listeners of known workloads on shared IPs.
pub fn heartbeats(
    attributor: &mut Attributor,
    shared: &SharedIps,
    listeners: &[Listener],
    host_addresses: &[IpAddr],
    from_ns: u64,
    to_ns: u64,
) -> Vec<Ownership> {
    let now = to_ns;
    let beat = |ip: IpAddr, workload: &Arc<str>, port: u16| Ownership {
        ip: wire::ip_to_bytes(ip),
        workload: workload.to_string(),
        from_ns,
        to_ns,
        port: u32::from(port),
    };
    let mut out: Vec<Ownership> = Vec::new();
    for (ip, workload) in &attributor.by_ip {
        if !shared.is_shared(*ip, now) {
            out.push(beat(*ip, workload, 0));
        }
    }
    if let Some(host) = attributor.host_workload().cloned() {
        for ip in host_addresses {
            if !shared.is_shared(*ip, now) && !attributor.by_ip.contains_key(ip) {
                out.push(beat(*ip, &host, 0));
            }
        }
    }
    // Every listener that covers an (IP, port) must name the same known workload: several can
    // (an SO_REUSEPORT group, a V6ONLY wildcard beside an IPv4 one), and the kernel spreads
    // connections among them (found by a fresh user: the port was claimed for the first one's
    // workload, and connections another one served were attributed to it). `None`: unknown,
    // or listeners that disagree.
    let mut ports: BTreeMap<(IpAddr, u16), Option<Arc<str>>> = BTreeMap::new();
    let host_netns = attributor.host_netns();
    for listener in listeners {
        let port = listener.local.port();
        for ip in listener_ips(listener, shared, host_netns, host_addresses, now) {
            if !shared.is_shared(ip, now) || namespace_local(ip) || shared.is_forwarded(ip, port, now) {
                continue;
            }
            let workload = attributor.listener(listener, ip).map(|(w, _)| w);
            ports
                .entry((ip, port))
                .and_modify(|w| {
                    if *w != workload {
                        *w = None
                    }
                })
                .or_insert(workload);
        }
    }
    for ((ip, port), workload) in ports {
        if let Some(workload) = workload {
            out.push(beat(ip, &workload, port));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::local::CgroupIndex;

    const S: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn listener(addr: &str, netns: u32) -> Listener {
        Listener {
            local: addr.parse().unwrap(),
            v6only: false,
            netns_ino: netns,
            cgroup_id: 0,
            cookie: 0,
            holder_cgroup_id: 0,
        }
    }

    #[test]
    fn reasons_and_their_hold() {
        let mut s = SharedIps::new(60 * S);
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        s.observe(a, 1, false, 100 * S);
        assert!(!s.is_shared(a, 100 * S), "one namespace, no rule");
        s.observe(a, 2, false, 110 * S);
        assert_eq!(s.reason(a, 110 * S), Some(Reason::Namespaces));
        s.observe(b, 1, true, 100 * S);
        assert_eq!(s.reason(b, 100 * S), Some(Reason::CgroupRule));
        s.observe_port_assignments(&[(c, 80)], 100 * S);
        assert_eq!(s.reason(c, 159 * S), Some(Reason::PortAssignment));
        assert!(!s.is_shared(c, 160 * S), "the hold ends");
        assert_eq!(s.reason(ip("127.0.0.1"), 0), Some(Reason::Local));
        assert_eq!(s.reason(ip("fe80::1"), 0), Some(Reason::Local));
        assert_eq!(s.reason(ip("::1"), 0), Some(Reason::Local));
        // Namespaces seen longer ago than the hold do not count.
        let mut s = SharedIps::new(60 * S);
        s.observe(a, 1, false, 0);
        s.observe(a, 2, false, 61 * S);
        assert!(!s.is_shared(a, 61 * S));
        assert_eq!(s.expire(200 * S), 0);
        assert!(s.ips_of(2, 200 * S).is_empty(), "forgotten");
    }

    #[test]
    fn heartbeats_whole_ip_only_when_unshared_and_ports_for_known_listeners() {
        let mut a = Attributor::new(Vec::new(), Some("host".into()), Some(1), CgroupIndex::default());
        let (x, y, z) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        a.by_ip.insert(x, "pod".into());
        a.by_port.insert((y, 80), "svc-a".into());
        a.by_port.insert((y, 81), "svc-b".into());
        let mut s = SharedIps::new(60 * S);
        s.observe_port_assignments(a.by_port.keys().collect::<Vec<_>>(), 5 * S);
        let listeners = [listener("10.0.0.2:80", 1), listener("0.0.0.0:81", 1), listener("10.0.0.3:22", 1)];
        let hb = heartbeats(&mut a, &s, &listeners, &[x, y, z], 0, 10 * S);
        let got: Vec<(IpAddr, String, u32)> =
            hb.iter().map(|h| (wire::ip_from_bytes(&h.ip).unwrap(), h.workload.clone(), h.port)).collect();
        assert_eq!(
            got,
            vec![
                (x, "pod".to_string(), 0),
                (z, "host".to_string(), 0),
                (y, "svc-a".to_string(), 80),
                (y, "svc-b".to_string(), 81),
            ],
            "no whole-IP heartbeat for the shared IP; its listeners by port; unshared IPs whole"
        );
        assert!(hb.iter().all(|h| (h.from_ns, h.to_ns) == (0, 10 * S)));
    }

    #[test]
    fn wildcard_listeners_cover_their_namespace() {
        let mut s = SharedIps::new(60 * S);
        s.observe(ip("10.1.0.5"), 7, false, S);
        s.observe(ip("fd00::5"), 7, false, S);
        s.observe(ip("10.9.0.9"), 8, false, S);
        let host = [ip("192.0.2.1")];
        assert_eq!(listener_ips(&listener("0.0.0.0:80", 7), &s, Some(1), &host, S), vec![ip("10.1.0.5")]);
        assert_eq!(listener_ips(&listener("[::]:80", 7), &s, Some(1), &host, S), vec![ip("10.1.0.5"), ip("fd00::5")]);
        assert_eq!(listener_ips(&listener("0.0.0.0:80", 1), &s, Some(1), &host, S), vec![ip("192.0.2.1")]);
        assert_eq!(listener_ips(&listener("10.1.0.5:80", 9), &s, Some(1), &host, S), vec![ip("10.1.0.5")]);
    }

    /// Found by a fresh user: a port of a host address forwarded to a container (destination
    /// NAT) was covered by the host identity's whole-IP heartbeat. A forwarded port makes its
    /// address shared (no whole-IP heartbeat) and is claimed by nobody here, even with a host
    /// listener on it (a userland proxy beside the NAT rule).
    #[test]
    fn a_forwarded_port_shares_its_address_and_is_claimed_by_nobody_here() {
        let mut s = SharedIps::new(60 * S);
        let a = ip("10.253.8.1");
        s.observe_forwarded(&[(a, 8080)], S);
        assert_eq!(s.reason(a, S), Some(Reason::Nat));
        let mut attributor = Attributor::new(Vec::new(), Some("host".into()), Some(1), CgroupIndex::default());
        let listeners = [listener("0.0.0.0:8080", 1), listener("0.0.0.0:22", 1)];
        let hb = heartbeats(&mut attributor, &s, &listeners, &[a], 0, 10 * S);
        let beats: Vec<(IpAddr, u32)> = hb.iter().map(|h| (wire::ip_from_bytes(&h.ip).unwrap(), h.port)).collect();
        assert_eq!(beats, vec![(a, 22)], "only the host's own listener's port");
        // Forgotten after the hold, like any reason.
        s.expire(70 * S);
        assert!(!s.is_forwarded(a, 8080, 70 * S) && s.reason(a, 70 * S).is_none());
        // When the table cannot be read, any port may be forwarded: no whole-IP claim, and the
        // host's listeners still claim their ports.
        s.observe_nat_shared(&[a], 80 * S);
        let hb = heartbeats(&mut attributor, &s, &listeners, &[a], 70 * S, 80 * S);
        let beats: Vec<(IpAddr, u32)> = hb.iter().map(|h| (wire::ip_from_bytes(&h.ip).unwrap(), h.port)).collect();
        assert_eq!(beats, vec![(a, 22), (a, 8080)]);
    }

    /// Found by a fresh user: an IPv6 wildcard listener with IPV6_V6ONLY serves no IPv4 (it
    /// was credited with the host's IPv4 port, which another workload's socket served), and
    /// listeners that share an (IP, port) claim it only if they all name one known workload
    /// (an SO_REUSEPORT group split across workloads: the first one's claimed the port).
    #[test]
    fn a_port_is_claimed_only_by_what_serves_it() {
        let mut s = SharedIps::new(60 * S);
        s.observe(ip("10.1.0.5"), 1, true, S);
        s.observe(ip("fd00::5"), 1, true, S);
        let host = [ip("10.1.0.5"), ip("fd00::5")];
        let mut v6only = listener("[::]:8090", 1);
        v6only.v6only = true;
        assert_eq!(listener_ips(&v6only, &s, Some(1), &host, S), vec![ip("fd00::5")]);
        assert_eq!(listener_ips(&listener("[::]:8090", 1), &s, Some(1), &host, S), host.to_vec());
        let mut attributor = Attributor::new(Vec::new(), Some("host".into()), Some(1), CgroupIndex::default());
        let beats = |attributor: &mut Attributor, listeners: &[Listener]| {
            let hb = heartbeats(attributor, &s, listeners, &host, 0, 10 * S);
            let mut v: Vec<(IpAddr, u32, String)> = hb
                .iter()
                .filter(|h| h.port != 0)
                .map(|h| (wire::ip_from_bytes(&h.ip).unwrap(), h.port, h.workload.clone()))
                .collect();
            v.sort();
            v
        };
        // The host's V6ONLY listener claims the IPv6 port only.
        assert_eq!(beats(&mut attributor, &[v6only]), vec![(ip("fd00::5"), 8090, "host".to_string())]);
        // Two sockets of the host's workload on one port (a reuseport group): one claim.
        let two = [listener("10.1.0.5:8090", 1), listener("0.0.0.0:8090", 1)];
        assert_eq!(beats(&mut attributor, &two), vec![(ip("10.1.0.5"), 8090, "host".to_string())]);
        // Beside a socket of another namespace whose workload is unknown: no claim, in either order.
        let mixed = [listener("10.1.0.5:8090", 1), listener("10.1.0.5:8090", 7)];
        assert_eq!(beats(&mut attributor, &mixed), vec![]);
        let reversed = [mixed[1], mixed[0]];
        assert_eq!(beats(&mut attributor, &reversed), vec![]);
    }

    /// Found by a fresh user: Linux keeps a listener whose address was removed, and its
    /// heartbeats claimed the address for this host's workload after another host took it
    /// (a listener on the address, a wildcard one, or one on an address that left before
    /// the exporter started).
    #[test]
    fn in_the_hosts_namespace_listeners_cover_only_the_hosts_addresses_now() {
        let mut s = SharedIps::new(60 * S);
        // Sockets of the host's namespace were seen on the departed address.
        s.observe(ip("10.251.60.31"), 1, true, S);
        let host = [ip("192.0.2.1")];
        assert_eq!(listener_ips(&listener("0.0.0.0:8082", 1), &s, Some(1), &host, S), vec![ip("192.0.2.1")]);
        assert_eq!(listener_ips(&listener("10.251.60.31:8080", 1), &s, Some(1), &host, S), Vec::<IpAddr>::new());
        assert_eq!(listener_ips(&listener("192.0.2.1:8080", 1), &s, Some(1), &host, S), vec![ip("192.0.2.1")]);
        // Addresses not known: nothing in the host's namespace.
        assert_eq!(listener_ips(&listener("192.0.2.1:8080", 1), &s, Some(1), &[], S), Vec::<IpAddr>::new());
        // The heartbeats follow: a listener of a known workload on the departed address gets none.
        let mut attributor = Attributor::new(Vec::new(), Some("host".into()), Some(1), CgroupIndex::default());
        let hb = heartbeats(&mut attributor, &s, &[listener("10.251.60.31:8080", 1)], &host, 0, 10 * S);
        assert!(hb.iter().all(|h| h.ip != wire::ip_to_bytes(ip("10.251.60.31"))), "{hb:?}");
        assert!(hb.iter().any(|h| h.ip == wire::ip_to_bytes(ip("192.0.2.1"))), "{hb:?}");
    }
}
