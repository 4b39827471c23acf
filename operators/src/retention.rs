//! `expire`: schedule the retraction of every closed ownership claim once it is older than the
//! retention horizon.
//!
//! Time contract: an insertion of a claim ending at `to`, at time `t`, is paired with its
//! retraction at `max(t, to + retention)` (rounded up to the tick). Nothing is held back: the
//! retraction is an ordinary differential update at a future time, which the arrangement keeps
//! pending until the frontier reaches it and then cancels against the insertion when it
//! compacts. This is what bounds the ownership state on an endless stream: at any frontier the
//! arrangement holds only claims that ended less than `retention` ago, plus open assignments.
//!
//! Readers that look up an instant `s` at a time `q` see every claim about `s` as long as
//! `q < s + retention`; the attribution operator leaves older flows unattributed with reason
//! `evidence_expired` instead of reading a partial history.
//!
//! ```
//! use flowmap_operators::{Claim, EvidenceKind, Expire, Ip, Workload};
//! use differential_dataflow::AsCollection;
//! use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
//!
//! let claim = Claim { kind: EvidenceKind::Heartbeat, from: 0, to: 10, workload: Workload::new("a") };
//! let ip = Ip::v4([10, 0, 0, 1]);
//! let out = timely::example(move |scope| {
//!     vec![((ip, claim), 5u64, 1i64)].to_stream(scope).as_collection().expire(100, 1).inner.capture()
//! });
//! let updates: Vec<_> = out.extract().into_iter().flat_map(|(_, v)| v).map(|(_, t, d)| (t, d)).collect();
//! assert_eq!(updates, vec![(5, 1), (110, -1)]);
//! ```

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::Map;

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

/// Extension trait: pair each closed claim with its retraction after `retention`.
pub trait Expire {
    /// Adds, for every inserted claim with a known end, its retraction at
    /// `max(time, to + retention)` rounded up to `tick`.
    fn expire(self, retention: Time, tick: Time) -> Self;
}

impl<'scope> Expire for VecCollection<'scope, Time, (Ip, Claim), Diff> {
    fn expire(self, retention: Time, tick: Time) -> Self {
        self.inner
            .flat_map(move |((ip, claim), time, diff)| {
                let expiry = (diff > 0 && claim.to != OPEN).then(|| {
                    let at = round_up(time.max(claim.to.saturating_add(retention)), tick);
                    ((ip, claim.clone()), at, -diff)
                });
                std::iter::once(((ip, claim), time, diff)).chain(expiry)
            })
            .as_collection()
    }
}
