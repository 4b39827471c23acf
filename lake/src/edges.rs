//! The `edges` table: one row per *delta* of a dependency edge the job emits, an edge being
//! (time bucket, client, server, server port, protocol). Summing a column over the rows of an
//! edge gives its total; a bucket's rows can come at several dataflow times (`emitted_at`) as
//! late records arrive.
//!
//! Key: (`bucket_start`, `client`, `server`, `server_port`, `protocol`, `emitted_at`).
//! Partition: the bucket's start (`bucket_start`). `client` and `server` are workload names, or
//! `external:<prefix>`, or `unattributed:<reason>`. `rtt_sketch` is a serialized mergeable
//! sketch, opaque to the lake.

use std::sync::{Arc, OnceLock};

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Schema, SchemaRef};

use crate::error::BadRow;
use crate::row::{build, check_ns, field, timestamp_type, ColumnError, Columns, LakeRow};

/// One row of `edges`; the columns, in order, are its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeRow {
    /// Start of the time bucket, ns since the Unix epoch (the partitioning time).
    pub bucket_start_ns: u64,
    /// The bucket's length, seconds.
    pub bucket_s: u32,
    /// The calling end.
    pub client: String,
    /// The called end.
    pub server: String,
    /// The server's port.
    pub server_port: u16,
    /// The protocol (`tcp`).
    pub protocol: String,
    /// The dataflow time of this delta, ns.
    pub emitted_at_ns: u64,
    /// Connections counted.
    pub connections: u64,
    /// Payload bytes from client to server.
    pub bytes_client_to_server: u64,
    /// Payload bytes from server to client.
    pub bytes_server_to_client: u64,
    /// Segments, both ways.
    pub segments: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Connections that never established.
    pub failed_connects: u64,
    /// Connections whose two ends agree.
    pub verified: u64,
    /// Connections whose two ends disagree.
    pub disagreements: u64,
    /// Connections seen from one end only.
    pub one_sided: u64,
    /// Median RTT, microseconds (`None`: no RTT sample).
    pub rtt_p50_us: Option<f64>,
    /// 90th percentile RTT, microseconds.
    pub rtt_p90_us: Option<f64>,
    /// 99th percentile RTT, microseconds.
    pub rtt_p99_us: Option<f64>,
    /// A serialized mergeable RTT sketch (opaque bytes).
    pub rtt_sketch: Option<Vec<u8>>,
}

impl LakeRow for EdgeRow {
    const TABLE: &'static str = "edges";
    const KEY_COLUMNS: &'static [&'static str] =
        &["bucket_start", "client", "server", "server_port", "protocol", "emitted_at"];
    type Key = (u64, String, String, u16, String, u64);

    fn schema() -> SchemaRef {
        static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
        SCHEMA
            .get_or_init(|| {
                use DataType::*;
                Arc::new(Schema::new(vec![
                    field("bucket_start", timestamp_type(), false),
                    field("bucket_s", UInt32, false),
                    field("client", Utf8, false),
                    field("server", Utf8, false),
                    field("server_port", UInt16, false),
                    field("protocol", Utf8, false),
                    field("emitted_at", timestamp_type(), false),
                    field("connections", UInt64, false),
                    field("bytes_client_to_server", UInt64, false),
                    field("bytes_server_to_client", UInt64, false),
                    field("segments", UInt64, false),
                    field("retransmits", UInt64, false),
                    field("failed_connects", UInt64, false),
                    field("verified", UInt64, false),
                    field("disagreements", UInt64, false),
                    field("one_sided", UInt64, false),
                    field("rtt_p50_us", Float64, true),
                    field("rtt_p90_us", Float64, true),
                    field("rtt_p99_us", Float64, true),
                    field("rtt_sketch", Binary, true),
                ]))
            })
            .clone()
    }

    fn key(&self) -> Self::Key {
        (
            self.bucket_start_ns,
            self.client.clone(),
            self.server.clone(),
            self.server_port,
            self.protocol.clone(),
            self.emitted_at_ns,
        )
    }

    fn partition_ns(&self) -> u64 {
        self.bucket_start_ns
    }

    fn check(&self) -> Result<(), BadRow> {
        check_ns(self.bucket_start_ns)?;
        check_ns(self.emitted_at_ns)
    }

    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                build::timestamps(rows, |r| r.bucket_start_ns),
                build::u32s(rows, |r| r.bucket_s),
                build::strs(rows, |r| &r.client),
                build::strs(rows, |r| &r.server),
                build::u16s(rows, |r| r.server_port),
                build::strs(rows, |r| &r.protocol),
                build::timestamps(rows, |r| r.emitted_at_ns),
                build::u64s(rows, |r| r.connections),
                build::u64s(rows, |r| r.bytes_client_to_server),
                build::u64s(rows, |r| r.bytes_server_to_client),
                build::u64s(rows, |r| r.segments),
                build::u64s(rows, |r| r.retransmits),
                build::u64s(rows, |r| r.failed_connects),
                build::u64s(rows, |r| r.verified),
                build::u64s(rows, |r| r.disagreements),
                build::u64s(rows, |r| r.one_sided),
                build::opt_f64s(rows, |r| r.rtt_p50_us),
                build::opt_f64s(rows, |r| r.rtt_p90_us),
                build::opt_f64s(rows, |r| r.rtt_p99_us),
                build::opt_bytes(rows, |r| r.rtt_sketch.as_deref()),
            ],
        )
    }

    fn keys(batch: &RecordBatch) -> Result<Vec<Self::Key>, ColumnError> {
        let c = Columns(batch);
        let (bucket, client, server) = (c.timestamps("bucket_start")?, c.strs("client")?, c.strs("server")?);
        let (port, protocol, emitted) = (c.u16s("server_port")?, c.strs("protocol")?, c.timestamps("emitted_at")?);
        Ok((0..batch.num_rows())
            .map(|i| {
                (bucket[i], client[i].to_string(), server[i].to_string(), port[i], protocol[i].to_string(), emitted[i])
            })
            .collect())
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, ColumnError> {
        let c = Columns(batch);
        let (bucket, bucket_s, client, server) =
            (c.timestamps("bucket_start")?, c.u32s("bucket_s")?, c.strs("client")?, c.strs("server")?);
        let (port, protocol, emitted) = (c.u16s("server_port")?, c.strs("protocol")?, c.timestamps("emitted_at")?);
        let (connections, c2s, s2c) =
            (c.u64s("connections")?, c.u64s("bytes_client_to_server")?, c.u64s("bytes_server_to_client")?);
        let (segments, retransmits, failed) = (c.u64s("segments")?, c.u64s("retransmits")?, c.u64s("failed_connects")?);
        let (verified, disagreements, one_sided) =
            (c.u64s("verified")?, c.u64s("disagreements")?, c.u64s("one_sided")?);
        let (p50, p90, p99) = (c.opt_f64s("rtt_p50_us")?, c.opt_f64s("rtt_p90_us")?, c.opt_f64s("rtt_p99_us")?);
        let sketch = c.opt_bytes("rtt_sketch")?;
        Ok((0..batch.num_rows())
            .map(|i| EdgeRow {
                bucket_start_ns: bucket[i],
                bucket_s: bucket_s[i],
                client: client[i].to_string(),
                server: server[i].to_string(),
                server_port: port[i],
                protocol: protocol[i].to_string(),
                emitted_at_ns: emitted[i],
                connections: connections[i],
                bytes_client_to_server: c2s[i],
                bytes_server_to_client: s2c[i],
                segments: segments[i],
                retransmits: retransmits[i],
                failed_connects: failed[i],
                verified: verified[i],
                disagreements: disagreements[i],
                one_sided: one_sided[i],
                rtt_p50_us: p50[i],
                rtt_p90_us: p90[i],
                rtt_p99_us: p99[i],
                rtt_sketch: sketch[i].map(<[u8]>::to_vec),
            })
            .collect())
    }
}
