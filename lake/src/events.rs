//! The `events` table: one row per change event the job emits (`flowmap.v1.Event`): a new
//! dependency, a policy violation, or a disagreement between the two ends of a connection.
//!
//! Key: (`at`, `kind`, `client`, `server`, `server_port`, `flow_id`, `exporter`): a new
//! dependency or a policy violation is one per edge and bucket, a disagreement one per record.
//! Partition: the event's time (`at`). `flow_id`, `exporter`, `peer_workload`,
//! `claims_workload` and `claims_evidence` are set for disagreements only (0 or null otherwise).

use std::sync::{Arc, OnceLock};

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Schema, SchemaRef};
use flowmap_schema::edges::{Event, EventKind};

use crate::error::BadRow;
use crate::row::{build, check_ns, field, timestamp_type, ColumnError, Columns, LakeRow};

/// One row of `events`; the columns, in order, are its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    /// When, ns since the Unix epoch (a bucket's start, or a record's start).
    pub at_ns: u64,
    /// `new_dependency`, `policy_violation` or `disagreement`.
    pub kind: String,
    /// The calling end.
    pub client: String,
    /// The called end.
    pub server: String,
    /// The server's port.
    pub server_port: u16,
    /// What happened, in words.
    pub detail: String,
    /// The flow a disagreement is about (0 otherwise).
    pub flow_id: u64,
    /// The exporter whose record it was (empty otherwise).
    pub exporter: String,
    /// A disagreement: the workload the other end's own record names.
    pub peer_workload: Option<String>,
    /// A disagreement: the workload the claims (or a second record) name.
    pub claims_workload: Option<String>,
    /// A disagreement: what those claims rest on.
    pub claims_evidence: Option<String>,
}

/// An event the lake cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A port above 65535.
    #[error("event server port {0} is above 65535")]
    Port(u32),
    /// A kind this version does not know.
    #[error("unknown event kind {0}")]
    Kind(i32),
}

impl EventRow {
    /// The row of one event the job emits.
    ///
    /// # Errors
    /// [`EventError`]: a port above 65535, an unknown kind.
    pub fn from_event(e: &Event) -> Result<EventRow, EventError> {
        let kind = EventKind::try_from(e.kind)
            .ok()
            .filter(|k| *k != EventKind::Unspecified)
            .ok_or(EventError::Kind(e.kind))?;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let evidence = flowmap_schema::Evidence::try_from(e.claims_evidence)
            .ok()
            .filter(|v| *v != flowmap_schema::Evidence::Unspecified)
            .map(|v| crate::flows::evidence_name(v).to_string());
        Ok(EventRow {
            at_ns: e.at_ns,
            kind: kind.name().to_string(),
            client: e.client.clone(),
            server: e.server.clone(),
            server_port: u16::try_from(e.server_port).map_err(|_| EventError::Port(e.server_port))?,
            detail: e.detail.clone(),
            flow_id: e.flow_id,
            exporter: e.exporter_id.clone(),
            peer_workload: some(&e.peer_workload),
            claims_workload: some(&e.claims_workload),
            claims_evidence: evidence,
        })
    }
}

impl LakeRow for EventRow {
    const TABLE: &'static str = "events";
    const KEY_COLUMNS: &'static [&'static str] =
        &["at", "kind", "client", "server", "server_port", "flow_id", "exporter"];
    type Key = (u64, String, String, String, u16, u64, String);

    fn schema() -> SchemaRef {
        static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
        SCHEMA
            .get_or_init(|| {
                use DataType::*;
                Arc::new(Schema::new(vec![
                    field("at", timestamp_type(), false),
                    field("kind", Utf8, false),
                    field("client", Utf8, false),
                    field("server", Utf8, false),
                    field("server_port", UInt16, false),
                    field("detail", Utf8, false),
                    field("flow_id", UInt64, false),
                    field("exporter", Utf8, false),
                    field("peer_workload", Utf8, true),
                    field("claims_workload", Utf8, true),
                    field("claims_evidence", Utf8, true),
                ]))
            })
            .clone()
    }

    fn key(&self) -> Self::Key {
        (
            self.at_ns,
            self.kind.clone(),
            self.client.clone(),
            self.server.clone(),
            self.server_port,
            self.flow_id,
            self.exporter.clone(),
        )
    }

    fn partition_ns(&self) -> u64 {
        self.at_ns
    }

    fn check(&self) -> Result<(), BadRow> {
        check_ns(self.at_ns)
    }

    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                build::timestamps(rows, |r| r.at_ns),
                build::strs(rows, |r| &r.kind),
                build::strs(rows, |r| &r.client),
                build::strs(rows, |r| &r.server),
                build::u16s(rows, |r| r.server_port),
                build::strs(rows, |r| &r.detail),
                build::u64s(rows, |r| r.flow_id),
                build::strs(rows, |r| &r.exporter),
                build::opt_strs(rows, |r| r.peer_workload.as_deref()),
                build::opt_strs(rows, |r| r.claims_workload.as_deref()),
                build::opt_strs(rows, |r| r.claims_evidence.as_deref()),
            ],
        )
    }

    fn keys(batch: &RecordBatch) -> Result<Vec<Self::Key>, ColumnError> {
        let c = Columns(batch);
        let (at, kind, client, server) = (c.timestamps("at")?, c.strs("kind")?, c.strs("client")?, c.strs("server")?);
        let (port, flow_id, exporter) = (c.u16s("server_port")?, c.u64s("flow_id")?, c.strs("exporter")?);
        Ok((0..batch.num_rows())
            .map(|i| {
                (
                    at[i],
                    kind[i].to_string(),
                    client[i].to_string(),
                    server[i].to_string(),
                    port[i],
                    flow_id[i],
                    exporter[i].to_string(),
                )
            })
            .collect())
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, ColumnError> {
        let c = Columns(batch);
        let (at, kind, client, server) = (c.timestamps("at")?, c.strs("kind")?, c.strs("client")?, c.strs("server")?);
        let (port, detail, flow_id, exporter) =
            (c.u16s("server_port")?, c.strs("detail")?, c.u64s("flow_id")?, c.strs("exporter")?);
        let (peer, claims, evidence) =
            (c.opt_strs("peer_workload")?, c.opt_strs("claims_workload")?, c.opt_strs("claims_evidence")?);
        Ok((0..batch.num_rows())
            .map(|i| EventRow {
                at_ns: at[i],
                kind: kind[i].to_string(),
                client: client[i].to_string(),
                server: server[i].to_string(),
                server_port: port[i],
                detail: detail[i].to_string(),
                flow_id: flow_id[i],
                exporter: exporter[i].to_string(),
                peer_workload: peer[i].map(str::to_string),
                claims_workload: claims[i].map(str::to_string),
                claims_evidence: evidence[i].map(str::to_string),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_convert_and_refuse_what_the_lake_cannot_hold() {
        let e = Event {
            kind: EventKind::Disagreement as i32,
            at_ns: 5,
            client: "a".into(),
            server: "b".into(),
            server_port: 5432,
            flow_id: 9,
            exporter_id: "host-a".into(),
            peer_workload: "db".into(),
            claims_workload: "impostor".into(),
            claims_evidence: flowmap_schema::Evidence::Peer as i32,
            ..Default::default()
        };
        let row = EventRow::from_event(&e).unwrap();
        assert_eq!(row.kind, "disagreement");
        assert_eq!(row.claims_evidence.as_deref(), Some("peer"));
        assert_eq!((row.peer_workload.as_deref(), row.claims_workload.as_deref()), (Some("db"), Some("impostor")));
        let batch = EventRow::to_batch(&[&row]).unwrap();
        assert_eq!(EventRow::from_batch(&batch).unwrap(), vec![row]);
        assert_eq!(EventRow::from_event(&Event { server_port: 70_000, ..e.clone() }), Err(EventError::Port(70_000)));
        assert_eq!(EventRow::from_event(&Event { kind: 0, ..e }), Err(EventError::Kind(0)));
    }
}
