//! Which input offsets may be committed, and from where to rebuild after a restart.
//!
//! A message's offset may be committed once everything derived from it is delivered: the
//! source reports, per message, the latest dataflow time of anything it derived (`until`),
//! and the runner reports the delivered frontier. Offsets are committed in order, so one
//! message still in flight holds back the commits of every later one in its partition.
//!
//! A restarted job must also rebuild its ownership state, which was built from input *before*
//! the committed offset. So along with each commit the tracker names a *rebuild offset*: the
//! first message whose time lies within `window` (event time) before the committed position.
//! The job re-reads from there, using those messages' evidence but not re-emitting their flows.

use std::collections::VecDeque;

use flowmap_operators::Time;

/// Commit bookkeeping for one partition.
#[derive(Debug)]
pub struct OffsetTracker {
    /// Messages read and not yet committable: (offset, until).
    pending: VecDeque<(i64, Time)>,
    /// Recent messages, for the rebuild offset: (offset, time), times > 0 only.
    history: VecDeque<(i64, Time)>,
    /// Next offset to commit (one past the last committable message), once any.
    committable: Option<i64>,
    /// The offset last handed out for committing.
    committed: Option<i64>,
    /// Time of the latest committable message.
    committed_time: Time,
    window: Time,
}

impl OffsetTracker {
    /// A tracker keeping `window` of event time for rebuilds.
    pub fn new(window: Time) -> Self {
        OffsetTracker {
            pending: VecDeque::new(),
            history: VecDeque::new(),
            committable: None,
            committed: None,
            committed_time: 0,
            window,
        }
    }

    /// A message read at `offset`, with nothing derived after `until` (0: nothing derived).
    pub fn read(&mut self, offset: i64, until: Time) {
        self.pending.push_back((offset, until));
        self.remember(offset, until);
    }

    /// A message re-read only to rebuild state (below the committed offset): history only.
    pub fn reread(&mut self, offset: i64, until: Time) {
        self.remember(offset, until);
    }

    fn remember(&mut self, offset: i64, until: Time) {
        if until > 0 {
            self.history.push_back((offset, until));
        }
    }

    /// Advances over messages whose derived output is delivered: everything at times before
    /// `frontier` (an empty frontier, `None`, means everything).
    pub fn advance(&mut self, frontier: Option<Time>) {
        while let Some(&(offset, until)) = self.pending.front() {
            if frontier.is_some_and(|f| until >= f) {
                break;
            }
            self.pending.pop_front();
            self.committable = Some(offset + 1);
            self.committed_time = self.committed_time.max(until);
        }
        // Forget history older than the rebuild window before the committable position.
        let horizon = self.committed_time.saturating_sub(self.window);
        while self.history.len() > 1 && self.history.get(1).is_some_and(|&(_, t)| t <= horizon) {
            self.history.pop_front();
        }
    }

    /// A new `(commit, rebuild)` offset pair if the committable position moved since the last
    /// call. The rebuild offset is at most the commit offset.
    pub fn take_commit(&mut self) -> Option<(i64, i64)> {
        let commit = self.committable?;
        if self.committed == Some(commit) {
            return None;
        }
        self.committed = Some(commit);
        let horizon = self.committed_time.saturating_sub(self.window);
        let rebuild = self
            .history
            .iter()
            .find(|&&(offset, t)| t > horizon || offset >= commit)
            .map_or(commit, |&(offset, _)| offset.min(commit));
        Some((commit, rebuild))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_in_order_once_delivered() {
        let mut t = OffsetTracker::new(100);
        t.read(10, 50);
        t.read(11, 0); // a duplicate: nothing derived
        t.read(12, 40);
        assert_eq!(t.take_commit(), None);
        t.advance(Some(50));
        assert_eq!(t.take_commit(), None, "offset 10 derived output at 50, not delivered yet");
        t.advance(Some(51));
        assert_eq!(t.take_commit(), Some((13, 10)));
        assert_eq!(t.take_commit(), None, "no change, no commit");
    }

    #[test]
    fn one_slow_message_holds_back_later_ones() {
        let mut t = OffsetTracker::new(100);
        t.read(0, 500);
        t.read(1, 10);
        t.advance(Some(100));
        assert_eq!(t.take_commit(), None);
        t.advance(None);
        assert_eq!(t.take_commit().map(|c| c.0), Some(2));
    }

    #[test]
    fn rebuild_offset_covers_the_window() {
        let mut t = OffsetTracker::new(100);
        for (offset, time) in [(0, 100), (1, 150), (2, 210), (3, 260), (4, 300)] {
            t.read(offset, time);
        }
        t.advance(None);
        // Committed position's time is 300; the window reaches back to 200: offsets from 2.
        assert_eq!(t.take_commit(), Some((5, 2)));
        // Re-reading after a restart keeps the history, and a new message moves both.
        let mut r = OffsetTracker::new(100);
        for (offset, time) in [(2, 210), (3, 260), (4, 300)] {
            r.reread(offset, time);
        }
        r.read(5, 330);
        r.advance(None);
        assert_eq!(r.take_commit(), Some((6, 3)));
    }

    #[test]
    fn nothing_read_nothing_committed() {
        let mut t = OffsetTracker::new(1);
        t.advance(None);
        assert_eq!(t.take_commit(), None);
    }
}
