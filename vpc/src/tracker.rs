//! The ingester's bookkeeping, as a pure state machine (no I/O, time passed in): which queue
//! messages are in flight, which files wait for a mouthful, which mouthful each file went to, when
//! a message may be deleted, and when its visibility must be extended.
//!
//! The rules:
//! - A message may be deleted once every file it announced is in a mouthful below the sink's
//!   delivered watermark (or was skipped as already processed, or it announced nothing, like
//!   `s3:TestEvent`). Never before.
//! - A file announced twice (two messages, or one object in two notifications) is read once;
//!   both messages wait for that one mouthful.
//! - Files are taken into mouthfuls in arrival order, up to `max_files` files and `max_bytes`
//!   bytes (a larger file goes alone); a partial mouthful goes when its first file has waited
//!   `max_wait`, or on a flush.
//! - A message still in flight whose visibility ends within `extend_before` is due for an
//!   extension of `visibility`.
//! - A file that failed (an error reading it that a retry might cure) releases its messages
//!   without deleting them: the controller makes them visible again, and SQS redelivers them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::sink::{MouthfulId, ObjectId};

/// A queue message: id and the receipt handle of its latest receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRef {
    /// The SQS message id.
    pub id: String,
    /// The receipt handle (needed to delete or extend it).
    pub receipt: String,
}

/// A file to read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileRef {
    /// Bucket.
    pub bucket: String,
    /// Key, decoded.
    pub key: String,
    /// Size in bytes, as announced.
    pub size: u64,
    /// ETag, when announced.
    pub etag: Option<String>,
}

/// Something a mouthful carries: a file, or the dead letter of a message that is not a
/// notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A file to read.
    File(FileRef),
    /// A message body that could not be read as a notification.
    BadMessage {
        /// Its id.
        message_id: String,
        /// Why.
        reason: String,
        /// The body (cut).
        body: String,
    },
}

/// A mouthful to process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MouthfulPlan {
    /// Its number.
    pub id: MouthfulId,
    /// What it carries, in order.
    pub items: Vec<Item>,
}

/// What a watermark advance releases.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Files now delivered, to record as processed (those with a known ETag).
    pub files: Vec<ObjectId>,
    /// Messages now deletable.
    pub deletable: Vec<MessageRef>,
}

#[derive(Debug)]
struct Message {
    /// Which receipt of this message id (a released message can come back: references made
    /// for an earlier receipt must not touch the new one).
    gen: u64,
    receipt: String,
    deadline: Instant,
    open_items: usize,
    last_mouthful: Option<MouthfulId>,
}

#[derive(Debug)]
struct Pending {
    item: Item,
    messages: Vec<MsgKey>,
    since: Instant,
}

type FileKey = (String, String, Option<String>);
/// A message id and the generation of its receipt.
type MsgKey = (String, u64);

fn key_of(f: &FileRef) -> FileKey {
    (f.bucket.clone(), f.key.clone(), f.etag.clone())
}

/// Limits the tracker works to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most bytes of a mouthful.
    pub max_bytes: u64,
    /// Most files of a mouthful.
    pub max_files: usize,
    /// Longest wait of a partial mouthful.
    pub max_wait: Duration,
    /// Visibility asked per extension.
    pub visibility: Duration,
    /// Extend when less than this is left.
    pub extend_before: Duration,
}

/// The bookkeeping.
#[derive(Debug)]
pub struct Tracker {
    limits: Limits,
    messages: HashMap<String, Message>,
    pending: VecDeque<Pending>,
    /// Where each file not yet delivered is: `None` pending, `Some(m)` in mouthful `m`.
    files: HashMap<FileKey, Option<MouthfulId>>,
    /// Files (and their messages) of each mouthful not yet delivered.
    mouthfuls: BTreeMap<MouthfulId, Vec<(FileKey, Vec<MsgKey>)>>,
    /// Messages whose items are all in mouthfuls, by their last mouthful.
    waiting: BTreeMap<MouthfulId, Vec<MsgKey>>,
    /// Messages deletable now.
    ready: Vec<MsgKey>,
    generation: u64,
    next_mouthful: MouthfulId,
    watermark: MouthfulId,
}

impl Tracker {
    /// A tracker with nothing in flight.
    pub fn new(limits: Limits) -> Tracker {
        Tracker {
            limits,
            messages: HashMap::new(),
            pending: VecDeque::new(),
            files: HashMap::new(),
            mouthfuls: BTreeMap::new(),
            waiting: BTreeMap::new(),
            ready: Vec::new(),
            next_mouthful: 0,
            watermark: 0,
            generation: 0,
        }
    }

    /// The limits it works to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Messages received and not yet deleted or released.
    pub fn in_flight(&self) -> usize {
        self.messages.len()
    }

    /// Items waiting for a mouthful.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Mouthfuls started and not yet delivered.
    pub fn open_mouthfuls(&self) -> u64 {
        self.next_mouthful - self.watermark
    }

    /// True when nothing is in flight, pending or undelivered.
    pub fn is_idle(&self) -> bool {
        self.messages.is_empty() && self.pending.is_empty() && self.next_mouthful == self.watermark
    }

    /// A message arrived with what it announces (files not already processed, and its dead
    /// letter if it is not a notification). Returns false for a message already in flight (SQS
    /// delivered it again): its receipt and deadline are updated, its items not added again.
    pub fn receive(&mut self, message: MessageRef, items: Vec<Item>, now: Instant) -> bool {
        let deadline = now + self.limits.visibility;
        if let Some(m) = self.messages.get_mut(&message.id) {
            m.receipt = message.receipt;
            m.deadline = deadline;
            return false;
        }
        self.generation += 1;
        let key: MsgKey = (message.id.clone(), self.generation);
        let mut open = 0;
        let mut last = None;
        for item in items {
            match self.place(item, Some(&key), now) {
                None => open += 1,
                Some(m) => last = last.max(Some(m)),
            }
        }
        self.messages.insert(
            message.id,
            Message { gen: key.1, receipt: message.receipt, deadline, open_items: open, last_mouthful: last },
        );
        if open == 0 {
            self.settle(key);
        }
        true
    }

    /// Adds a file that no message announced (backfill).
    pub fn add_file(&mut self, file: FileRef, now: Instant) {
        self.place(Item::File(file), None, now);
    }

    /// Queues an item, or joins the same file already queued or in a mouthful. Returns the
    /// mouthful when the file is already in one.
    fn place(&mut self, item: Item, message: Option<&MsgKey>, now: Instant) -> Option<MouthfulId> {
        if let Item::File(f) = &item {
            let key = key_of(f);
            match self.files.get(&key) {
                Some(Some(m)) => {
                    let m = *m;
                    if let (Some(id), Some(entries)) = (message, self.mouthfuls.get_mut(&m)) {
                        if let Some((_, msgs)) = entries.iter_mut().find(|(k, _)| *k == key) {
                            msgs.push(id.clone());
                        }
                    }
                    return Some(m);
                }
                Some(None) => {
                    if let Some(p) =
                        self.pending.iter_mut().find(|p| matches!(&p.item, Item::File(g) if key_of(g) == key))
                    {
                        p.messages.extend(message.cloned());
                    }
                    return None;
                }
                None => {
                    self.files.insert(key, None);
                }
            }
        }
        self.pending.push_back(Pending { item, messages: message.into_iter().cloned().collect(), since: now });
        None
    }

    /// A message with no open items waits for its last mouthful, or is ready.
    fn settle(&mut self, key: MsgKey) {
        let Some(m) = self.messages.get(&key.0) else { return };
        match m.last_mouthful {
            Some(last) if last >= self.watermark => self.waiting.entry(last).or_default().push(key),
            _ => self.ready.push(key),
        }
    }

    /// The message of `key`, if still in flight under that receipt.
    fn live(&mut self, key: &MsgKey) -> Option<&mut Message> {
        self.messages.get_mut(&key.0).filter(|m| m.gen == key.1)
    }

    /// The next mouthful, if one is due: full, or its first item waited `max_wait`, or `flush`.
    pub fn next_mouthful(&mut self, now: Instant, flush: bool) -> Option<MouthfulPlan> {
        let first = self.pending.front()?;
        let (mut files, mut bytes, mut take) = (0usize, 0u64, 0usize);
        let mut full = false;
        for p in &self.pending {
            let size = match &p.item {
                Item::File(f) => f.size,
                Item::BadMessage { .. } => 0,
            };
            let is_file = matches!(p.item, Item::File(_));
            if files > 0
                && (files + usize::from(is_file) > self.limits.max_files || bytes + size > self.limits.max_bytes)
            {
                full = true;
                break;
            }
            files += usize::from(is_file);
            bytes += size;
            take += 1;
            if files >= self.limits.max_files || bytes >= self.limits.max_bytes {
                full = true;
                break;
            }
        }
        if !(full || flush || now.saturating_duration_since(first.since) >= self.limits.max_wait) {
            return None;
        }
        let id = self.next_mouthful;
        self.next_mouthful += 1;
        let mut items = Vec::with_capacity(take);
        let mut entries = Vec::new();
        let taken: Vec<Pending> = self.pending.drain(..take).collect();
        for p in taken {
            if let Item::File(f) = &p.item {
                let key = key_of(f);
                self.files.insert(key.clone(), Some(id));
                entries.push((key, p.messages.clone()));
            }
            for mk in &p.messages {
                if let Some(m) = self.live(mk) {
                    m.open_items -= 1;
                    m.last_mouthful = m.last_mouthful.max(Some(id));
                    if m.open_items == 0 {
                        self.waiting.entry(id).or_default().push(mk.clone());
                    }
                }
            }
            items.push(p.item);
        }
        self.mouthfuls.insert(id, entries);
        Some(MouthfulPlan { id, items })
    }

    /// The sink's delivered watermark moved to `watermark`: the files of the mouthfuls below it
    /// are processed, and the messages waiting only on them are deletable (returned once).
    pub fn delivered(&mut self, watermark: MouthfulId) -> Released {
        let mut out = Released::default();
        if watermark > self.watermark {
            self.watermark = watermark.min(self.next_mouthful);
            let later = self.mouthfuls.split_off(&self.watermark);
            for (_, entries) in std::mem::replace(&mut self.mouthfuls, later) {
                for (key, _) in entries {
                    self.files.remove(&key);
                    if let (bucket, key, Some(etag)) = key {
                        out.files.push(ObjectId { bucket, key, etag });
                    }
                }
            }
            let later = self.waiting.split_off(&self.watermark);
            for (_, ids) in std::mem::replace(&mut self.waiting, later) {
                self.ready.extend(ids);
            }
        }
        for key in std::mem::take(&mut self.ready) {
            if let Some(m) = self.live(&key) {
                let receipt = m.receipt.clone();
                out.deletable.push(MessageRef { id: key.0, receipt });
            }
        }
        out
    }

    /// A message was deleted (or its deletion failed: it will come back, and be skipped or read
    /// again): it is no longer in flight.
    pub fn forget(&mut self, id: &str) {
        self.messages.remove(id);
    }

    /// Messages whose visibility ends within `extend_before` of `now`; their deadlines move to
    /// `now + visibility` (the caller asks SQS for exactly that).
    pub fn due_extensions(&mut self, now: Instant) -> Vec<MessageRef> {
        let mut due = Vec::new();
        for (id, m) in &mut self.messages {
            if m.deadline.saturating_duration_since(now) < self.limits.extend_before {
                m.deadline = now + self.limits.visibility;
                due.push(MessageRef { id: id.clone(), receipt: m.receipt.clone() });
            }
        }
        due
    }

    /// A file of mouthful `mouthful` failed in a way a retry may cure: it is not recorded as
    /// processed, and every message that announced it is released (returned, to be made visible
    /// again, and forgotten) without deletion.
    pub fn failed(&mut self, mouthful: MouthfulId, file: &FileRef) -> Vec<MessageRef> {
        let key = key_of(file);
        let mut released = Vec::new();
        if let Some(entries) = self.mouthfuls.get_mut(&mouthful) {
            if let Some(pos) = entries.iter().position(|(k, _)| *k == key) {
                let (_, msgs) = entries.remove(pos);
                self.files.remove(&key);
                for key in msgs {
                    if self.live(&key).is_some() {
                        if let Some(m) = self.messages.remove(&key.0) {
                            released.push(MessageRef { id: key.0, receipt: m.receipt });
                        }
                    }
                }
            }
        }
        released
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
