//! Who held an address at a given time, for picking destinations (a stale DNS answer reaches
//! whoever holds the address now) and for checking the fleet in tests.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{End, LbTenure, NatTenure, Pod};

/// Who held something, over time: `(start, end, holder)`, sorted by start.
type Tenures = Vec<(u64, u64, End)>;

/// The holders of whole addresses (pods and load balancers) over time.
pub struct OwnerIndex {
    by_ip: HashMap<IpAddr, Tenures>,
}

impl OwnerIndex {
    /// Indexes the pods (as their apps) and load balancers of a fleet.
    pub fn new(pods: &[Pod], lbs: &[LbTenure]) -> Self {
        let mut by_ip: HashMap<IpAddr, Tenures> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            by_ip.entry(p.ip).or_default().push((p.start, p.end, End::App(i)));
        }
        for (i, l) in lbs.iter().enumerate() {
            by_ip.entry(l.ip).or_default().push((l.start, l.end, End::Lb(i)));
        }
        for tenures in by_ip.values_mut() {
            tenures.sort_by_key(|t| t.0);
        }
        OwnerIndex { by_ip }
    }

    /// The holder of `ip` at true time `t`: [`End::App`] of a pod, or [`End::Lb`].
    pub fn owner_at(&self, ip: IpAddr, t: u64) -> Option<End> {
        at(self.by_ip.get(&ip)?, t)
    }
}

/// The workloads on each (NAT address, port) over time.
pub struct NatIndex {
    by_slot: HashMap<(IpAddr, u16), Tenures>,
}

impl NatIndex {
    /// Indexes NAT port tenures.
    pub fn new(nats: &[NatTenure]) -> Self {
        let mut by_slot: HashMap<(IpAddr, u16), Tenures> = HashMap::new();
        for (i, n) in nats.iter().enumerate() {
            by_slot.entry((n.ip, n.port)).or_default().push((n.start, n.end, End::Nat(i)));
        }
        for tenures in by_slot.values_mut() {
            tenures.sort_by_key(|t| t.0);
        }
        NatIndex { by_slot }
    }

    /// The workload on `(ip, port)` at true time `t` ([`End::Nat`]).
    pub fn holder_at(&self, ip: IpAddr, port: u16, t: u64) -> Option<End> {
        at(self.by_slot.get(&(ip, port))?, t)
    }
}

fn at(tenures: &[(u64, u64, End)], t: u64) -> Option<End> {
    let i = tenures.partition_point(|x| x.0 <= t);
    let (start, end, who) = *tenures.get(i.checked_sub(1)?)?;
    (start <= t && t < end).then_some(who)
}
