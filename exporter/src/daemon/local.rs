//! Local workload attribution, in order of precedence: a per-(IPv4, port) assignment, a
//! per-IP assignment (both resolved in the kernel, which stamps the flow with a workload id),
//! a cgroup rule (the socket's cgroup path), then the host's own identity (sockets in the
//! host's network namespace). A flow nothing attributes is still reported, with no workload.
//!
//! What each source vouches for (the flow's `local_scope`) is decided in [`super::shared`]:
//! only a per-IP assignment or the host identity, on an IP no other workload has sockets on,
//! can claim the whole IP.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::FlowEvent;
use crate::sockets::Listener;

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
    by_id: HashMap<u32, Arc<str>>,
    by_name: HashMap<Arc<str>, u32>,
}

impl Names {
    /// The id of `name`, allocated on first use (ids start at 1; 0 means "none" in the kernel).
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.by_id.len() as u32 + 1;
        let name: Arc<str> = Arc::from(name);
        self.by_id.insert(id, Arc::clone(&name));
        self.by_name.insert(name, id);
        id
    }

    /// The name of `id`.
    pub fn name(&self, id: u32) -> Option<&Arc<str>> {
        self.by_id.get(&id)
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

impl Source {
    /// The wire form (`local_source`).
    pub const fn wire(self) -> flowmap_schema::WorkloadSource {
        match self {
            Source::Port => flowmap_schema::WorkloadSource::PortAssignment,
            Source::Ip => flowmap_schema::WorkloadSource::IpAssignment,
            Source::Cgroup => flowmap_schema::WorkloadSource::CgroupRule,
            Source::Host => flowmap_schema::WorkloadSource::HostIdentity,
        }
    }

    /// The JSON-line form: the wire enum's name in snake case.
    pub const fn name(self) -> &'static str {
        match self {
            Source::Port => "port_assignment",
            Source::Ip => "ip_assignment",
            Source::Cgroup => "cgroup_rule",
            Source::Host => "host_identity",
        }
    }

    /// Whether this source can ever vouch for a whole IP: a cgroup rule or a port assignment
    /// knows one socket or one port, never the address.
    pub const fn can_claim_ip(self) -> bool {
        matches!(self, Source::Ip | Source::Host)
    }
}

/// The attribution state of one exporter.
#[derive(Debug)]
pub struct Attributor {
    /// Workload names by kernel id.
    pub names: Names,
    rules: Vec<CgroupRule>,
    host_workload: Option<Arc<str>>,
    host_netns: Option<u32>,
    cgroups: CgroupIndex,
    /// The first matching rule's workload per cgroup id (ids are never reused while the host
    /// runs; a cgroup whose path is not known yet is not cached).
    by_cgroup: HashMap<u64, Option<Arc<str>>>,
    /// Per-IP assignments (mirrors the kernel map, for heartbeats).
    pub by_ip: BTreeMap<IpAddr, Arc<str>>,
    /// (IP, port) assignments (mirrors the kernel map).
    pub by_port: BTreeMap<(IpAddr, u16), Arc<str>>,
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
            host_workload: host_workload.map(Arc::from),
            host_netns,
            cgroups,
            by_cgroup: HashMap::new(),
            by_ip: BTreeMap::new(),
            by_port: BTreeMap::new(),
        }
    }

    /// Replaces the rules and the identity (SIGHUP).
    pub fn reconfigure(&mut self, rules: Vec<CgroupRule>, host_workload: Option<String>) {
        self.rules = rules;
        self.host_workload = host_workload.map(Arc::from);
        self.by_cgroup.clear();
    }

    /// The host's identity, if any.
    pub fn host_workload(&self) -> Option<&Arc<str>> {
        self.host_workload.as_ref()
    }

    /// The inode of the host's network namespace.
    pub const fn host_netns(&self) -> Option<u32> {
        self.host_netns
    }

    /// Whether any cgroup rule is configured.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The workload the first matching cgroup rule gives sockets of cgroup `id`.
    pub fn cgroup_workload(&mut self, id: u64) -> Option<Arc<str>> {
        if self.rules.is_empty() || id == 0 {
            return None;
        }
        if let Some(cached) = self.by_cgroup.get(&id) {
            return cached.clone();
        }
        let path = self.cgroups.path(id)?.to_string();
        let found = self.rules.iter().find(|r| glob_match(&r.pattern, &path)).map(|r| Arc::from(r.workload.as_str()));
        self.by_cgroup.insert(id, found.clone());
        found
    }

    /// The local workload of a flow, and how it was found.
    pub fn local(&mut self, ev: &FlowEvent) -> Option<(Arc<str>, Source)> {
        if let Some(id) = ev.workload_id {
            let source = match ev.workload_source {
                Some(crate::events::WorkloadSource::AddrPort) => Source::Port,
                _ => Source::Ip,
            };
            if let Some(name) = self.names.name(id) {
                return Some((Arc::clone(name), source));
            }
        }
        if let Some(w) = self.cgroup_workload(ev.cgroup_id) {
            return Some((w, Source::Cgroup));
        }
        match (&self.host_workload, self.host_netns) {
            (Some(host), Some(netns)) if ev.netns_ino == netns => Some((Arc::clone(host), Source::Host)),
            _ => None,
        }
    }

    /// The workload of a listening socket on `ip` (its own address, or one its wildcard bind
    /// covers), by the same precedence as flows.
    pub fn listener(&mut self, listener: &Listener, ip: IpAddr) -> Option<(Arc<str>, Source)> {
        if let Some(w) = self.by_port.get(&(ip, listener.local.port())) {
            return Some((Arc::clone(w), Source::Port));
        }
        if let Some(w) = self.by_ip.get(&ip) {
            return Some((Arc::clone(w), Source::Ip));
        }
        // The cgroup of the tasks that accept on it, not of whoever created it.
        if let Some(w) = self.cgroup_workload(listener.serving_cgroup()) {
            return Some((w, Source::Cgroup));
        }
        match (&self.host_workload, self.host_netns) {
            (Some(host), Some(netns)) if listener.netns_ino == netns => Some((Arc::clone(host), Source::Host)),
            _ => None,
        }
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
        assert_eq!(n.name(2).map(|n| &**n), Some("b"));
        assert_eq!(n.name(0), None);
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
