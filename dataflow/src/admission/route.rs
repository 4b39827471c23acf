//! [`Routed`]: what one activation of the source derived from its messages, gathered into one
//! container per (dataflow time, target worker), so that the exchange moves few, large
//! containers whatever the number of batches and exporters.

use std::collections::BTreeMap;

use flowmap_operators::records::{EvidencePiece, FlowPiece, FlowRow, Reporter, Verdict, VerdictPiece};
use flowmap_operators::{Reason, Time};

/// A flow piece being filled, and which batch last added its exporter to the piece's table.
#[derive(Default)]
struct Builder {
    piece: FlowPiece,
    last_batch: Option<u64>,
    exporter: u16,
}

impl Builder {
    fn push(&mut self, batch: &BatchRef, mut row: FlowRow, bytes: &[u8]) {
        if self.last_batch != Some(batch.n) {
            self.last_batch = Some(batch.n);
            self.exporter = self.piece.exporters.len() as u16;
            self.piece.exporters.push(batch.reporter.clone());
        }
        row.exporter = self.exporter;
        row.msg_off = self.piece.bytes.len() as u32;
        row.msg_len = bytes.len() as u32;
        self.piece.bytes.extend_from_slice(bytes);
        self.piece.rows.push(row);
    }
}

/// The batch whose records are being routed (see [`Routed::begin_batch`]).
pub struct BatchRef {
    n: u64,
    reporter: Reporter,
}

/// Pieces per (time, worker), filled by [`crate::admission::Admission::admit`].
#[derive(Default)]
pub struct Routed {
    batches: u64,
    /// Flow pieces being filled, found by (time, worker) through `flow_index`; the last one
    /// used is tried first (consecutive flows of a batch often share a lookup time). A map
    /// probe per flow was measured at about 5% of the core-lookup benchmark with a `BTreeMap`.
    flows: Vec<((Time, u32), Builder)>,
    flow_index: foldhash::HashMap<(Time, u32), usize>,
    last_flow: usize,
    external: BTreeMap<Time, (Builder, Vec<Verdict>)>,
    evidence: BTreeMap<(Time, u32), EvidencePiece>,
}

/// The pieces of one activation, by time.
pub type ByTime<T> = Vec<(Time, Vec<T>)>;

impl Routed {
    /// Starts routing the records of a new batch of `exporter`'s `incarnation`.
    pub fn begin_batch(&mut self, exporter: &str, incarnation: u64) -> BatchRef {
        self.batches += 1;
        BatchRef { n: self.batches, reporter: Reporter { exporter: exporter.to_string(), incarnation } }
    }

    /// Adds a fleet flow with its encoded message, at lookup time `at`, for `worker`.
    pub fn flow(&mut self, at: Time, worker: usize, batch: &BatchRef, row: FlowRow, bytes: &[u8]) {
        let key = (at, worker as u32);
        let i = match self.flows.get(self.last_flow) {
            Some((k, _)) if *k == key => self.last_flow,
            _ => {
                let next = self.flows.len();
                let i = *self.flow_index.entry(key).or_insert(next);
                if i == next {
                    let mut b = Builder::default();
                    b.piece.worker = key.1;
                    self.flows.push((key, b));
                }
                self.last_flow = i;
                i
            }
        };
        self.flows[i].1.push(batch, row, bytes);
    }

    /// Adds a flow decided here (unattributed for `reason`), at `at`.
    pub fn external(&mut self, at: Time, batch: &BatchRef, row: FlowRow, bytes: &[u8], reason: Reason) {
        let (b, verdicts) = self.external.entry(at).or_default();
        b.push(batch, row, bytes);
        verdicts.push(Verdict::Unattributed(reason));
    }

    /// The evidence piece for (`at`, `worker`).
    pub fn evidence(&mut self, at: Time, worker: usize) -> &mut EvidencePiece {
        self.evidence.entry((at, worker as u32)).or_insert_with(|| EvidencePiece::new(worker))
    }

    /// Whether nothing was routed.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.external.is_empty() && self.evidence.is_empty()
    }

    /// Takes the flow pieces, by time.
    pub fn take_flows(&mut self) -> ByTime<FlowPiece> {
        self.flow_index.clear();
        self.last_flow = 0;
        let mut flows = std::mem::take(&mut self.flows);
        flows.sort_unstable_by_key(|(k, _)| *k);
        group(flows.into_iter().map(|((t, _), b)| (t, b.piece)))
    }

    /// Takes the decided flows, by time.
    pub fn take_external(&mut self) -> ByTime<VerdictPiece> {
        std::mem::take(&mut self.external)
            .into_iter()
            .map(|(t, (b, verdicts))| (t, vec![VerdictPiece { flows: b.piece, verdicts, ..Default::default() }]))
            .collect()
    }

    /// Takes the evidence pieces, by time.
    pub fn take_evidence(&mut self) -> ByTime<EvidencePiece> {
        group(std::mem::take(&mut self.evidence).into_iter().map(|((t, _), p)| (t, p)))
    }
}

/// Groups `(time, item)` pairs sorted by time into one vector per time.
fn group<T>(items: impl Iterator<Item = (Time, T)>) -> ByTime<T> {
    let mut out: ByTime<T> = Vec::new();
    for (t, item) in items {
        match out.last_mut() {
            Some((last, v)) if *last == t => v.push(item),
            _ => out.push((t, vec![item])),
        }
    }
    out
}
