//! `expire`: retract every closed ownership claim once it is older than the retention horizon.
//!
//! Time contract: an insertion of a claim ending at `to` is passed through untouched, and its
//! retraction is issued at the first input time at or after `to + retention` (rounded up to the
//! tick). The operator holds no capability: it keeps the pending retractions in a map by due
//! time and releases them with the next input message whose time has reached them. Holding a
//! capability for the future would hold back the frontier of everything downstream; handing
//! differential an update at a future time would make its batcher re-sort every pending
//! retraction on every batch. This bounds the ownership state on an endless stream: it holds
//! only claims that ended less than about `retention` ago, plus open assignments.
//!
//! Why a late retraction is harmless: a reader that looks up instant `s` at time `q` reads only
//! claims that end after `s - guard`, and refuses lookups with `q >= s - guard + retention`, so
//! every claim it reads is due for retraction after `q`, whenever exactly the retraction comes.
//!
//! ```
//! use flowmap_operators::{Claim, EvidenceKind, Expire, Ip, Workload};
//! use std::collections::BTreeMap;

use std::collections::BTreeMap;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::types::{Claim, Diff, Ip, Time, OPEN};

/// Rounds `t` up to a multiple of `tick` (saturating).
pub fn round_up(t: Time, tick: Time) -> Time {
    if tick <= 1 {
        return t;
    }
    match t % tick {
        0 => t,
        r => t.saturating_add(tick - r),
    }
}

/// Extension trait: retract each closed claim once it is older than the retention.
pub trait Expire {
    /// Passes updates through and retracts every inserted claim with a known end at the first
    /// input time at or after `to + retention` (rounded up to `tick`).
    fn expire(self, retention: Time, tick: Time) -> Self;
}

impl<'scope> Expire for VecCollection<'scope, Time, (Ip, Claim), Diff> {
    fn expire(self, retention: Time, tick: Time) -> Self {
        self.inner
            .unary(Pipeline, "Expire", move |_, _| {
                let mut pending: BTreeMap<Time, Vec<(Ip, Claim, Diff)>> = BTreeMap::new();
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(&now) = cap.least() else { return };
                        let mut session = output.session(&cap);
                        for batch in data {
                            for ((ip, claim), time, diff) in batch.drain(..) {
                                if diff > 0 && claim.to != OPEN {
                                    let due = round_up(time.max(claim.to.saturating_add(retention)), tick);
                                    pending.entry(due).or_default().push((ip, claim.clone(), -diff));
                                }
                                session.give(((ip, claim), time, diff));
                            }
                        }
                        while let Some(entry) = pending.first_entry() {
                            if *entry.key() > now {
                                break;
                            }
                            for (ip, claim, diff) in entry.remove() {
                                session.give(((ip, claim), now, diff));
                            }
                        }
                    });
                }
            })
            .as_collection()
    }
}
