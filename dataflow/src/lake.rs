//! The flow lake as an output of the job: flow records to the lake's `flows` table, edges to
//! its `edges` table, change events to `events` (`flowmap-lake`: Hive-partitioned Parquet, each file committed atomically).
//!
//! Why a sink like Kafka's: the job commits its input only below the delivered frontier, and a
//! lake writer says when rows are durably stored ([`TableWriter::undelivered`]), so a killed
//! job re-emits exactly the rows that may be missing and the writer drops the ones it already
//! has. The writer also needs the input frontier (a file is cut when the frontier passes its
//! cell): the `deliver` operator hands it over through [`Sink::advance`].

use std::sync::{Arc, Mutex};

use flowmap_lake::{EdgeRow, EventRow, FlowRow, Lake, LakeRow, TableWriter, Verification, WriterStats};
use flowmap_operators::records::{self, VerdictPiece};
use flowmap_operators::Time;
use flowmap_schema as wire;

use crate::output::to_wire;
use crate::sink::{Sink, SinkError};

/// The writers' counters once they finished: (table, one writer's counters), one entry per
/// worker and table.
pub type LakeTotals = Arc<Mutex<Vec<(&'static str, WriterStats)>>>;

/// One worker's writer of one table.
pub struct LakeSink<R: LakeRow> {
    writer: Option<TableWriter<R>>,
    /// Rows of the item being written (reused).
    rows: Vec<R>,
    totals: LakeTotals,
    worker: usize,
}

impl<R: LakeRow> LakeSink<R> {
    /// The writer of worker `index` of `peers` for table `R`.
    ///
    /// # Errors
    /// The lake could not start the writer (a layout written by another worker count, a store
    /// that cannot be listed).
    pub fn new(lake: &Lake, index: usize, peers: usize, totals: LakeTotals) -> Result<Self, SinkError> {
        let writer = lake.writer::<R>(index as u32, peers as u32)?;
        Ok(LakeSink { writer: Some(writer), rows: Vec::new(), totals, worker: index })
    }

    fn writer(&mut self) -> Result<&mut TableWriter<R>, SinkError> {
        self.writer.as_mut().ok_or(SinkError::Finished)
    }

    /// The writer's counters to the metrics, and what is not yet stored.
    fn undelivered_and_publish(&mut self) -> Result<Option<Time>, SinkError> {
        let worker = self.worker;
        let writer = self.writer()?;
        crate::metrics::publish_lake(worker, R::TABLE, &writer.stats());
        Ok(writer.undelivered()?)
    }

    fn push(&mut self, time: Time) -> Result<(), SinkError> {
        let rows = std::mem::take(&mut self.rows);
        self.writer()?.push(time, rows)?;
        Ok(())
    }
}

/// An output item that becomes rows of lake table `R`.
pub trait ToLakeRows<R> {
    /// Appends the item's rows to `out`.
    ///
    /// # Errors
    /// An item the lake cannot hold (an address of another length, a port above 65535, an
    /// unknown enumeration value): never produced by the job's own output, reported rather than
    /// dropped.
    fn to_lake_rows(&self, out: &mut Vec<R>) -> Result<(), SinkError>;
}

impl ToLakeRows<FlowRow> for VerdictPiece {
    fn to_lake_rows(&self, out: &mut Vec<FlowRow>) -> Result<(), SinkError> {
        for (i, (row, verdict)) in self.iter().enumerate() {
            let check = self.check(i);
            let verification = match check.verification {
                records::Verification::Agree => Verification::Agree,
                records::Verification::Disagree => Verification::Disagree,
                records::Verification::PeerOnly => Verification::PeerOnly,
                records::Verification::OneSided => Verification::OneSided,
            };
            let record = to_wire(self, row, verdict);
            out.push(
                FlowRow::from_attributed(&record, check.counts && check.first, verification)
                    .map_err(|e| SinkError::Send { topic: "lake flows".into(), detail: e.to_string() })?,
            );
        }
        Ok(())
    }
}

impl ToLakeRows<EdgeRow> for wire::Edge {
    fn to_lake_rows(&self, out: &mut Vec<EdgeRow>) -> Result<(), SinkError> {
        out.push(
            EdgeRow::from_edge(self)
                .map_err(|e| SinkError::Send { topic: "lake edges".into(), detail: e.to_string() })?,
        );
        Ok(())
    }
}

impl ToLakeRows<EventRow> for wire::Event {
    fn to_lake_rows(&self, out: &mut Vec<EventRow>) -> Result<(), SinkError> {
        out.push(
            EventRow::from_event(self)
                .map_err(|e| SinkError::Send { topic: "lake events".into(), detail: e.to_string() })?,
        );
        Ok(())
    }
}

impl<T: ToLakeRows<R>, R: LakeRow> Sink<T> for LakeSink<R> {
    fn write(&mut self, time: Time, item: &T) -> Result<(), SinkError> {
        item.to_lake_rows(&mut self.rows)?;
        self.push(time)
    }
    fn advance(&mut self, frontier: Option<Time>) -> Result<(), SinkError> {
        Ok(self.writer()?.advance(frontier)?)
    }
    fn undelivered(&mut self) -> Result<Option<Time>, SinkError> {
        self.undelivered_and_publish()
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        finish(&mut self.writer, &self.totals)
    }
}

fn finish<R: LakeRow>(writer: &mut Option<TableWriter<R>>, totals: &LakeTotals) -> Result<(), SinkError> {
    let Some(writer) = writer.take() else { return Ok(()) };
    let stats = writer.finish()?;
    if let Ok(mut totals) = totals.lock() {
        totals.push((R::TABLE, stats));
    }
    Ok(())
}
