//! Exporter batches on their way to the job: each window's records and heartbeats, through the
//! host's delivery delay and the transport's faults (loss, duplicates, truncated copies, bad
//! records), plus the bad input a real job meets.
//!
//! Heartbeats are what each exporter hears on its host, with the scope the real one states: a
//! whole-IP heartbeat (`port = 0`) only for a pod alone on its address; for listeners on a
//! shared address (an app and its sidecar, hostNetwork workloads on the node address, NAT
//! workloads on their ports) one heartbeat per listening port, never a whole-IP one.

use std::sync::Arc;

use flowmap_schema::{self as wire, ExporterBatch, Ownership, SCHEMA_VERSION};

use super::exporters::{skewed, ExporterPlan, Timing};
use super::records::HostRecords;
use super::{Delivery, Summary};
use crate::rng::Rng;
use crate::scenario::Checked;
use crate::truth::{Fate, TruthFlow};
use crate::world::{World, MS, SEC, SIDECAR_PORT};

/// Something an exporter vouches for in its heartbeats: `(ip, port)` (port 0: the whole IP)
/// held by `workload` during `[start, end)`, true time.
struct Claim {
    ip: Vec<u8>,
    port: u16,
    workload: Arc<str>,
    start: u64,
    end: u64,
}

/// The claims each host's exporter makes over the run.
fn claims(world: &World) -> Vec<Vec<Claim>> {
    let mut by_host: Vec<Vec<Claim>> = (0..world.hosts.len()).map(|_| Vec::new()).collect();
    for p in &world.pods {
        let (ip, start, end) = (wire::ip_to_bytes(p.ip), p.start, p.end);
        let claims = &mut by_host[p.host];
        match &p.sidecar {
            None => claims.push(Claim { ip, port: 0, workload: Arc::clone(&p.name), start, end }),
            Some(sidecar) => {
                let app = Claim { ip: ip.clone(), port: p.app_port(), workload: Arc::clone(&p.name), start, end };
                claims.push(app);
                claims.push(Claim { ip, port: SIDECAR_PORT, workload: Arc::clone(sidecar), start, end });
            }
        }
    }
    for hs in &world.host_services {
        let ip = wire::ip_to_bytes(world.hosts[hs.host].ip);
        let workload = Arc::clone(&hs.name);
        by_host[hs.host].push(Claim { ip, port: hs.port, workload, start: 0, end: u64::MAX });
    }
    for n in &world.nats {
        let claim = Claim {
            ip: wire::ip_to_bytes(n.ip),
            port: n.port,
            workload: Arc::clone(&n.name),
            start: n.start,
            end: n.end,
        };
        by_host[n.host].push(claim);
    }
    by_host
}

/// Publishes every host's batches into `out` and their records' truth into `truth`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn publish_hosts(
    s: &Checked,
    world: &World,
    plans: &[ExporterPlan],
    records: Vec<HostRecords>,
    timing: &Timing,
    rng: &mut Rng,
    out: &mut Vec<Delivery>,
    truth: &mut Vec<TruthFlow>,
    summary: &mut Summary,
) {
    let claims = claims(world);
    for ((plan, host_records), host_claims) in plans.iter().zip(records).zip(&claims) {
        let delay = rng.range(s.delay_min_ms * MS, s.delay_max_ms * MS + 1);
        let mut arrival = 0u64;
        for (inc, windows) in plan.incarnations.iter().zip(host_records) {
            for (k, records) in windows.into_iter().enumerate() {
                let (from, to) = inc.window(k as u64, timing);
                let heartbeats = host_claims
                    .iter()
                    .filter_map(|c| {
                        let lo = skewed(c.start, plan.skew).max(from);
                        let hi = skewed(c.end, plan.skew).min(to);
                        (lo < hi).then(|| Ownership {
                            ip: c.ip.clone(),
                            workload: c.workload.to_string(),
                            from_ns: lo,
                            to_ns: hi,
                            port: u32::from(c.port),
                        })
                    })
                    .collect();
                let lost = rng.chance(s.loss);
                let mut flows = Vec::with_capacity(records.len());
                for mut record in records {
                    if lost {
                        record.truth.fate = Fate::Lost;
                    } else if rng.chance(s.bad_record) {
                        record.flow.remote_ip.push(0); // 5 or 17 bytes: not an address
                        record.truth.fate = Fate::Corrupted;
                        // The id of the record as published, so a dead-lettered copy can be named.
                        record.truth.id = wire::flow_id(&plan.id, &record.flow);
                    }
                    flows.push(record.flow);
                    truth.push(record.truth);
                }
                let batch = ExporterBatch {
                    schema_version: SCHEMA_VERSION,
                    exporter_id: plan.id.to_string(),
                    seq: k as u64,
                    window_from_ns: from,
                    window_to_ns: to,
                    flows,
                    heartbeats,
                    assignments: Vec::new(),
                    incarnation: inc.id,
                };
                summary.batches += 1;
                summary.batches_lost += u64::from(lost);
                let published = to.saturating_add_signed(-plan.skew);
                arrival = arrival.max(published + delay + rng.range(0, s.jitter_ms * MS + 1));
                deliver(s, rng, out, &plan.id, arrival, wire::encode_batch(&batch), lost);
            }
        }
    }
}

/// Adds one batch's deliveries: none if lost, plus a duplicate or a truncated copy by chance.
fn deliver(s: &Checked, rng: &mut Rng, out: &mut Vec<Delivery>, key: &str, arrival: u64, payload: Vec<u8>, lost: bool) {
    if lost {
        return;
    }
    if rng.chance(s.corrupt) {
        // A truncated copy, cut inside a field so that it is detectably corrupt (a cut on a
        // field boundary would be a valid, shorter batch: that is what the transport's own
        // checksums are for, not the job).
        let mut cut = rng.range(1, payload.len().max(2) as u64) as usize;
        while cut > 0 && wire::view_batch(&payload[..cut]).is_ok() {
            cut -= 1;
        }
        if cut > 0 {
            out.push(Delivery {
                key: key.to_string(),
                arrival: arrival.saturating_sub(1),
                payload: payload[..cut].to_vec(),
            });
        }
    }
    if rng.chance(s.duplicate) {
        let again = arrival + rng.range(0, 30 * SEC);
        out.push(Delivery { key: key.to_string(), arrival: again, payload: payload.clone() });
    }
    out.push(Delivery { key: key.to_string(), arrival, payload });
}

/// Bad input a real job meets: garbage bytes, an unknown schema version, a batch from the
/// future. None of it carries flows of the truth.
pub(crate) fn rogue_batches(out: &mut Vec<Delivery>, base: u64, last: u64) {
    let mid = base + (last - base) / 2;
    let mut future = ExporterBatch {
        schema_version: SCHEMA_VERSION,
        exporter_id: "rogue".into(),
        seq: 0,
        window_from_ns: last + 3600 * SEC,
        window_to_ns: last + 3610 * SEC,
        ..Default::default()
    };
    out.push(Delivery { key: "rogue".into(), arrival: mid, payload: wire::encode_batch(&future) });
    future.schema_version = 9;
    future.window_from_ns = mid;
    future.window_to_ns = mid + SEC;
    out.push(Delivery { key: "rogue".into(), arrival: mid + 1, payload: wire::encode_batch(&future) });
    out.push(Delivery { key: "rogue".into(), arrival: mid + 2, payload: b"\xff\xff\xff\xffnot a batch".to_vec() });
}
