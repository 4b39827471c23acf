//! `assignment_claims`: turn IP assignment events into ownership claims.
//!
//! An assignment event says "from `at` on, IP belongs to W" (or, with no workload, "is
//! released"). As a claim, the current assignment of an IP is the open range `[at, OPEN)`;
//! when the next event for that IP arrives, the open claim is retracted and replaced by the
//! closed range `[at, next_at)`. Readers of the arrangement therefore see, at every time, the
//! assignment history exactly as known at that time.
//!
//! Time contract: events are stashed under their capability until the input frontier passes
//! it, then applied per IP in event-time order, so the claims are the same whatever order the
//! events of one time arrived in. The state is one entry per currently assigned IP. An event
//! older than the current assignment of its IP is applied at the current assignment's start
//! (the feed's clock went backwards; nothing before it is rewritten).
//!
//! ```
//! use flowmap_operators::{AssignmentClaims, AssignmentEvent, Ip, Workload, OPEN};
//! use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
//!
//! let ip = Ip::v4([10, 9, 0, 1]);
//! let out = timely::example(move |scope| {
//!     vec![
//!         AssignmentEvent { ip, workload: Some(Workload::new("lb-1")), at: 10 },
//!         AssignmentEvent { ip, workload: None, at: 20 },
//!     ]
//!     .to_stream(scope).assignment_claims().inner.capture()
//! });
//! let mut claims: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v)
//!     .map(|((_, c), _, d)| (c.from, c.to, d)).collect();
//! claims.sort();
//! assert_eq!(claims, vec![(10, 20, 1), (10, OPEN, -1), (10, OPEN, 1)]);
//! ```

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::types::{Claim, Diff, EvidenceKind, Ip, Time, Workload, OPEN};

/// One IP assignment event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AssignmentEvent {
    /// The IP.
    pub ip: Ip,
    /// The new owner, or `None` when released.
    pub workload: Option<Workload>,
    /// When it took effect.
    pub at: Time,
}

/// Extension trait on a stream of assignment events.
pub trait AssignmentClaims<'scope> {
    /// Converts events to assignment claims keyed by IP.
    fn assignment_claims(self) -> VecCollection<'scope, Time, (Ip, Claim), Diff>;
}

impl<'scope> AssignmentClaims<'scope> for Stream<'scope, Time, Vec<AssignmentEvent>> {
    fn assignment_claims(self) -> VecCollection<'scope, Time, (Ip, Claim), Diff> {
        let exchange = Exchange::new(|e: &AssignmentEvent| e.ip.hashed());
        self.unary_frontier(exchange, "AssignmentClaims", |_capability, _info| {
            let mut stash: BTreeMap<Time, (Capability<Time>, Vec<AssignmentEvent>)> = BTreeMap::new();
            let mut current: HashMap<Ip, (Workload, Time)> = HashMap::new();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(port) else { return };
                    let entry = stash.entry(*cap.time()).or_insert_with(|| (cap, Vec::new()));
                    for batch in data {
                        entry.1.append(batch);
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, mut events) = entry.remove();
                    events.sort_by_key(|e| (e.ip, e.at));
                    let time = *cap.time();
                    let mut session = output.session(&cap);
                    let claim = |from, to, workload| Claim { kind: EvidenceKind::Assignment, from, to, workload };
                    for event in events {
                        let mut at = event.at;
                        if let Some((workload, since)) = current.remove(&event.ip) {
                            at = at.max(since);
                            session.give(((event.ip, claim(since, OPEN, workload.clone())), time, -1));
                            if since < at {
                                session.give(((event.ip, claim(since, at, workload)), time, 1));
                            }
                        }
                        if let Some(workload) = event.workload {
                            session.give(((event.ip, claim(at, OPEN, workload.clone())), time, 1));
                            current.insert(event.ip, (workload, at));
                        }
                    }
                }
            }
        })
        .as_collection()
    }
}
