//! Local workload attribution, in order of precedence: a per-(IPv4, port) assignment, a
//! per-IP assignment (both resolved in the kernel, which stamps the flow with a workload id),
//! a cgroup rule (the socket's cgroup path), then the host's own identity (sockets in the
//! host's network namespace). A flow nothing attributes is still reported, with no workload.
//!
//! Heartbeats claim whole IPs, so they come only from IP-level knowledge: per-IP assignments
//! and, with a host identity, the host's own addresses. An IP with port-level assignments is
//! shared by several workloads and gets no heartbeat; nor do IPs attributed only through
//! cgroups (usually the host's shared address).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::events::FlowEvent;

use super::config::{glob_match, CgroupRule};

/// cgroup v2 ids (the cgroup directory's inode number) to paths below the cgroup mount.
#[derive(Debug, Default)]
pub struct CgroupIndex {
    root: std::path::PathBuf,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupIndex {
    /// An index over the cgroup2 hierarchy mounted at `root` (normally `/sys/fs/cgroup`).
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        CgroupIndex { root: root.into(), paths: HashMap::new(), last_scan: None }
    }

    fn scan(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.paths.clear();
        let mut stack = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, path)) = stack.pop() {
            if let Ok(meta) = std::fs::metadata(&dir) {
                self.paths.insert(meta.ino(), path.clone());
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
                    stack.push((entry.path(), child));
                }
            }
        }
        self.last_scan = Some(Instant::now());
    }

    /// The path of cgroup `id`, rescanning (at most every 100 ms) when it is unknown.
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) && self.last_scan.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
            self.scan();
        }
        self.paths.get(&id).map(String::as_str)
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on most systems,
/// `/sys/fs/cgroup/unified` on hybrid ones), from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4).map(Into::into))?
    })
}

/// Workload names and the small ids the kernel maps hold.
#[derive(Debug, Default)]
pub struct Names {
    by_id: HashMap<u32, String>,
    by_name: HashMap<String, u32>,
}

impl Names {
    /// The id of `name`, allocated on first use (ids start at 1; 0 means "none" in the kernel).
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.by_id.len() as u32 + 1;
        self.by_id.insert(id, name.to_string());
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// The name of `id`.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }
}

/// How a flow's local workload was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A per-(IPv4, port) assignment.
    Port,
    /// A per-IP assignment.
    Ip,
    /// A cgroup rule.
    Cgroup,
    /// The host's identity.
    Host,
}

/// The attribution state of one exporter.
#[derive(Debug)]
pub struct Attributor {
    /// Workload names by kernel id.
    pub names: Names,
    rules: Vec<CgroupRule>,
    host_workload: Option<String>,
    host_netns: Option<u32>,
    cgroups: CgroupIndex,
    /// Per-IP assignments (mirrors the kernel map, for heartbeats).
    pub by_ip: BTreeMap<IpAddr, String>,
    /// (IP, port) assignments (mirrors the kernel map).
    pub by_port: BTreeMap<(IpAddr, u16), String>,
}

impl Attributor {
    /// An attributor with these rules and identity; `host_netns` is the inode of the host's
    /// network namespace (sockets elsewhere are not the host's).
    pub fn new(
        rules: Vec<CgroupRule>,
        host_workload: Option<String>,
        host_netns: Option<u32>,
        cgroups: CgroupIndex,
    ) -> Self {
        Attributor {
            names: Names::default(),
            rules,
            host_workload,
            host_netns,
            cgroups,
            by_ip: BTreeMap::new(),
            by_port: BTreeMap::new(),
        }
    }

    /// Replaces the rules and the identity (SIGHUP).
    pub fn reconfigure(&mut self, rules: Vec<CgroupRule>, host_workload: Option<String>) {
        self.rules = rules;
        self.host_workload = host_workload;
    }

    /// The local workload of a flow, and how it was found.
    pub fn local(&mut self, ev: &FlowEvent) -> Option<(String, Source)> {
        if let Some(id) = ev.workload_id {
            let source = match ev.workload_source {
                Some(crate::events::WorkloadSource::AddrPort) => Source::Port,
                _ => Source::Ip,
            };
            if let Some(name) = self.names.name(id) {
                return Some((name.to_string(), source));
            }
        }
        if !self.rules.is_empty() && ev.cgroup_id != 0 {
            if let Some(path) = self.cgroups.path(ev.cgroup_id) {
                if let Some(rule) = self.rules.iter().find(|r| glob_match(&r.pattern, path)) {
                    return Some((rule.workload.clone(), Source::Cgroup));
                }
            }
        }
        match (&self.host_workload, self.host_netns) {
            (Some(host), Some(netns)) if ev.netns_ino == netns => Some((host.clone(), Source::Host)),
            _ => None,
        }
    }

    /// The IP-level claims for a window: per-IP assignments, and the host's own addresses
    /// under its identity; never an IP that has port-level assignments.
    pub fn heartbeats(&self, host_addresses: &[IpAddr]) -> Vec<(IpAddr, String)> {
        let shared: HashSet<IpAddr> = self.by_port.keys().map(|(ip, _)| *ip).collect();
        let mut out: Vec<(IpAddr, String)> =
            self.by_ip.iter().filter(|(ip, _)| !shared.contains(ip)).map(|(ip, w)| (*ip, w.clone())).collect();
        if let Some(host) = &self.host_workload {
            for ip in host_addresses {
                if !shared.contains(ip) && !self.by_ip.contains_key(ip) {
                    out.push((*ip, host.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_small_ids() {
        let mut n = Names::default();
        assert_eq!(n.id("a"), 1);
        assert_eq!(n.id("b"), 2);
        assert_eq!(n.id("a"), 1);
        assert_eq!(n.name(2), Some("b"));
        assert_eq!(n.name(0), None);
    }

    #[test]
    fn heartbeats_skip_shared_ips() {
        let mut a = Attributor::new(Vec::new(), Some("host".into()), Some(1), CgroupIndex::default());
        let (x, y, z): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        a.by_ip.insert(x, "pod".into());
        a.by_port.insert((y, 80), "svc".into());
        let hb = a.heartbeats(&[x, y, z]);
        assert_eq!(hb, vec![(x, "pod".to_string()), (z, "host".to_string())]);
    }

    #[test]
    fn cgroup_index_finds_this_process_cgroup() {
        // /proc/self/cgroup: "0::/path" on cgroup v2.
        let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else { return };
        let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else { return };
        let Some(root) = cgroup2_mount() else { return };
        let dir = root.join(path.trim_start_matches('/'));
        let Ok(meta) = std::fs::metadata(&dir) else { return };
        use std::os::unix::fs::MetadataExt;
        let mut index = CgroupIndex::new(root);
        assert_eq!(index.path(meta.ino()), Some(if path.is_empty() { "/" } else { path }));
    }
}
