//! The old method, run on the same input as the job.
//!
//! It is what a flow log enriched from the IP address manager does today: it keeps a map
//! "IP -> current owner" updated from the assignment feed as the feed's batches arrive, and
//! looks up each record's remote IP in that map when the record's batch arrives. Delivery
//! delays and fast IP reuse make it attribute flows to whoever holds the IP *now*, not when the
//! flow started; a feed that lost batches or went silent leaves stale entries; and it knows
//! nothing of ports. Those are the misattributions this project exists to remove.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::Score;
use crate::publish::{Delivery, IPAM_FEED};
use crate::truth::{RecordKey, TruthFlow};

/// Runs the old method over `deliveries` (in arrival order; each batch used once, by its
/// exporter id, incarnation and `seq`) and adds its counts to `s`.
pub(super) fn run(truth: &[TruthFlow], by_key: &HashMap<RecordKey, usize>, deliveries: &[Delivery], s: &mut Score) {
    let mut current: HashMap<IpAddr, String> = HashMap::new();
    let mut seen_batches: HashSet<(String, u64, u64)> = HashSet::new();
    for d in deliveries {
        let Ok(batch) = flowmap_schema::decode_batch(&d.payload) else { continue };
        if !seen_batches.insert((batch.exporter_id.clone(), batch.incarnation, batch.seq)) {
            continue;
        }
        if batch.exporter_id == IPAM_FEED {
            for a in &batch.assignments {
                let Some(ip) = flowmap_schema::ip_from_bytes(&a.ip) else { continue };
                if a.workload.is_empty() {
                    current.remove(&ip);
                } else {
                    current.insert(ip, a.workload.clone());
                }
            }
            continue;
        }
        let ids = flowmap_schema::FlowIdHasher::new(&batch.exporter_id);
        for f in &batch.flows {
            let Some(ip) = flowmap_schema::ip_from_bytes(&f.remote_ip) else { continue };
            let Some(owner) = current.get(&ip) else { continue };
            let id = if f.connection_id != 0 {
                ids.connection(f.connection_id)
            } else {
                flowmap_schema::flow_id(&batch.exporter_id, f)
            };
            s.baseline_attributed += 1;
            match by_key.get(&RecordKey { id, end_ns: f.end_ns, open: f.open }).map(|&i| &truth[i]) {
                Some(t) if t.remote.as_deref() == Some(owner.as_str()) => s.baseline_correct += 1,
                other => {
                    s.baseline_misattributed += 1;
                    let kind = other.map_or("unknown", |t| t.remote_kind.name());
                    *s.baseline_misattributed_by_kind.entry(kind.to_string()).or_default() += 1;
                }
            }
        }
    }
}
