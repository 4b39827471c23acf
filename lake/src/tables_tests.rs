//! The two tables: column names and types exactly as specified, rows through Parquet and back,
//! the conversion from the job's output record.

use arrow_schema::DataType;
use flowmap_schema::{AttributedFlow, Direction, Evidence, Reason, Scope, WorkloadSource};

use crate::config::Compression;
use crate::error::BadRow;
use crate::flows::{direction_name, evidence_name, reason_name, FromWireError};
use crate::parquet_io;
use crate::sample::SampleInput;
use crate::{EdgeRow, FlowRow, LakeRow, Verification};

fn columns<R: LakeRow>() -> Vec<(String, String, bool)> {
    R::schema().fields().iter().map(|f| (f.name().clone(), format!("{}", f.data_type()), f.is_nullable())).collect()
}

fn ts() -> String {
    format!("{}", crate::row::timestamp_type())
}

#[test]
fn flows_columns_are_the_specified_ones() {
    let want: Vec<(&str, String, bool)> = vec![
        ("flow_id", "UInt64".into(), false),
        ("exporter", "Utf8".into(), false),
        ("incarnation", "UInt64".into(), false),
        ("local_ip", "Utf8".into(), false),
        ("local_port", "UInt16".into(), false),
        ("remote_ip", "Utf8".into(), false),
        ("remote_port", "UInt16".into(), false),
        ("direction", "Utf8".into(), false),
        ("start_ns", ts(), false),
        ("end_ns", ts(), false),
        ("open", "Boolean".into(), false),
        ("start_unobserved", "Boolean".into(), false),
        ("connect_error", "UInt32".into(), false),
        ("bytes_sent", "UInt64".into(), false),
        ("bytes_received", "UInt64".into(), false),
        ("segments_sent", "UInt64".into(), false),
        ("segments_received", "UInt64".into(), false),
        ("retransmits", "UInt32".into(), false),
        ("srtt_us", "UInt32".into(), false),
        ("local_workload", "Utf8".into(), true),
        ("local_scope", "Utf8".into(), false),
        ("local_source", "Utf8".into(), false),
        ("remote_workload", "Utf8".into(), true),
        ("evidence", "Utf8".into(), true),
        ("reason", "Utf8".into(), true),
        ("counted", "Boolean".into(), false),
        ("verification", "Utf8".into(), false),
    ];
    let want: Vec<(String, String, bool)> = want.into_iter().map(|(n, t, z)| (n.to_string(), t, z)).collect();
    assert_eq!(columns::<FlowRow>(), want);
    assert_eq!(
        crate::row::timestamp_type(),
        DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, Some("UTC".into()))
    );
}

#[test]
fn edges_columns_are_the_specified_ones() {
    let u64s = [
        "connections",
        "bytes_client_to_server",
        "bytes_server_to_client",
        "segments",
        "retransmits",
        "failed_connects",
        "verified",
        "disagreements",
        "one_sided",
    ];
    let mut want: Vec<(String, String, bool)> = vec![
        ("bucket_start".into(), ts(), false),
        ("bucket_s".into(), "UInt32".into(), false),
        ("client".into(), "Utf8".into(), false),
        ("server".into(), "Utf8".into(), false),
        ("server_port".into(), "UInt16".into(), false),
        ("protocol".into(), "Utf8".into(), false),
        ("emitted_at".into(), ts(), false),
    ];
    want.extend(u64s.iter().map(|n| (n.to_string(), "UInt64".to_string(), false)));
    for p in ["rtt_p50_us", "rtt_p90_us", "rtt_p99_us"] {
        want.push((p.into(), "Float64".into(), true));
    }
    want.push(("rtt_sketch".into(), "Binary".into(), true));
    assert_eq!(columns::<EdgeRow>(), want);
}

#[test]
fn key_columns_are_columns() {
    for (keys, cols) in [(FlowRow::KEY_COLUMNS, columns::<FlowRow>()), (EdgeRow::KEY_COLUMNS, columns::<EdgeRow>())] {
        for k in keys {
            assert!(cols.iter().any(|c| c.0 == *k), "{k}");
        }
    }
}

fn sample() -> SampleInput {
    SampleInput { base_ns: 1_795_955_045_000_000_000, messages: 50, rows_per_message: 7, step_ns: 1, spread: 3 }
}

#[test]
fn rows_survive_parquet_with_every_codec() {
    let input = sample();
    let flows: Vec<FlowRow> = (0..input.messages).flat_map(|i| input.flows(i)).map(|(_, r)| r).collect();
    let edges: Vec<EdgeRow> = (0..input.messages).flat_map(|i| input.edges(i)).map(|(_, r)| r).collect();
    // The sample covers the optional columns both ways, and both address families.
    assert!(flows.iter().any(|f| f.remote_workload.is_none()) && flows.iter().any(|f| f.reason.is_none()));
    assert!(flows.iter().any(|f| f.remote_ip.is_ipv6()) && flows.iter().any(|f| f.local_workload.is_none()));
    assert!(edges.iter().any(|e| e.rtt_sketch.is_some()) && edges.iter().any(|e| e.rtt_p50_us.is_none()));
    for codec in [Compression::Snappy, Compression::Gzip, Compression::None] {
        let bytes = parquet_io::encode(&flows.iter().collect::<Vec<_>>(), codec).unwrap();
        assert_eq!(parquet_io::rows::<FlowRow>(bytes.clone().into()).unwrap(), flows);
        let keys = parquet_io::keys::<FlowRow>(bytes.into()).unwrap();
        assert_eq!(keys, flows.iter().map(LakeRow::key).collect::<Vec<_>>());
        let bytes = parquet_io::encode(&edges.iter().collect::<Vec<_>>(), codec).unwrap();
        assert_eq!(parquet_io::rows::<EdgeRow>(bytes.clone().into()).unwrap(), edges);
        assert_eq!(
            parquet_io::keys::<EdgeRow>(bytes.into()).unwrap(),
            edges.iter().map(LakeRow::key).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_file_of_another_table_is_an_error_not_a_row() {
    let input = sample();
    let edges: Vec<EdgeRow> = input.edges(0).into_iter().map(|(_, r)| r).collect();
    let bytes = parquet_io::encode(&edges.iter().collect::<Vec<_>>(), Compression::Snappy).unwrap();
    let err = parquet_io::rows::<FlowRow>(bytes.clone().into()).unwrap_err();
    assert!(err.contains("flow_id"), "{err}");
    assert!(parquet_io::keys::<FlowRow>(bytes.into()).is_err());
    assert!(parquet_io::keys::<FlowRow>(bytes::Bytes::from_static(b"not parquet")).is_err());
}

#[test]
fn timestamps_beyond_2262_are_bad_rows() {
    let (_, mut f) = sample().flows(0).remove(0);
    assert_eq!(f.check(), Ok(()));
    f.end_ns = i64::MAX as u64;
    assert_eq!(f.check(), Ok(()));
    f.end_ns = i64::MAX as u64 + 1;
    assert_eq!(f.check(), Err(BadRow::TimestampOutOfRange));
    let (_, mut e) = sample().edges(0).remove(0);
    e.emitted_at_ns = u64::MAX;
    assert_eq!(e.check(), Err(BadRow::TimestampOutOfRange));
}

#[test]
fn enumerations_have_names_for_every_value() {
    for d in [Direction::Unspecified, Direction::Client, Direction::Server] {
        assert_ne!(direction_name(d), "");
    }
    assert_eq!(direction_name(Direction::Unspecified), "unknown");
    let reasons: Vec<&str> = (0..8).map(|v| reason_name(Reason::try_from(v).unwrap())).collect();
    assert_eq!(
        reasons,
        [
            "unspecified",
            "no_owner",
            "conflict",
            "near_boundary",
            "external",
            "evidence_expired",
            "shared_ip",
            "source_gap"
        ]
    );
    let evidence: Vec<&str> = (0..5).map(|v| evidence_name(Evidence::try_from(v).unwrap())).collect();
    assert_eq!(evidence, ["unspecified", "heartbeat", "flow", "assignment", "peer"]);
    let v: Vec<&str> = [Verification::Agree, Verification::Disagree, Verification::PeerOnly, Verification::OneSided]
        .iter()
        .map(|v| v.name())
        .collect();
    assert_eq!(v, ["agree", "disagree", "peer_only", "one_sided"]);
}

fn wire() -> AttributedFlow {
    AttributedFlow {
        schema_version: 1,
        flow_id: 42,
        exporter_id: "host-1".into(),
        local_ip: vec![10, 0, 0, 1],
        local_port: 40_000,
        remote_ip: vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2],
        remote_port: 443,
        direction: Direction::Client as i32,
        start_ns: 5,
        end_ns: 9,
        bytes_sent: 1,
        bytes_received: 2,
        segments_sent: 3,
        segments_received: 4,
        retransmits: 5,
        srtt_us: 6,
        local_workload: "checkout".into(),
        remote_workload: "payments".into(),
        evidence: Evidence::Peer as i32,
        reason: Reason::Unspecified as i32,
        open: true,
        incarnation: 7,
        local_scope: Scope::Port as i32,
        local_source: WorkloadSource::CgroupRule as i32,
        start_unobserved: true,
        connect_error: 0,
    }
}

#[test]
fn an_output_record_becomes_a_row() {
    let row = FlowRow::from_attributed(&wire(), true, Verification::Agree).unwrap();
    assert_eq!(row.local_ip.to_string(), "10.0.0.1");
    assert_eq!(row.remote_ip.to_string(), "::ffff:10.0.0.2", "an IPv4-mapped address stays IPv6");
    assert_eq!((row.local_port, row.remote_port, row.direction), (40_000, 443, Direction::Client));
    assert_eq!((row.start_ns, row.end_ns, row.open, row.start_unobserved), (5, 9, true, true));
    assert_eq!((row.local_workload.as_deref(), row.remote_workload.as_deref()), (Some("checkout"), Some("payments")));
    assert_eq!((row.evidence, row.reason), (Some(Evidence::Peer), None));
    assert_eq!((row.local_scope, row.local_source), (Scope::Port, WorkloadSource::CgroupRule));
    assert_eq!((row.counted, row.verification, row.incarnation), (true, Verification::Agree, 7));

    let mut unattributed = wire();
    unattributed.remote_workload.clear();
    unattributed.local_workload.clear();
    unattributed.evidence = 0;
    unattributed.reason = Reason::SharedIp as i32;
    let row = FlowRow::from_attributed(&unattributed, false, Verification::OneSided).unwrap();
    assert_eq!((row.local_workload, row.remote_workload, row.evidence), (None, None, None));
    assert_eq!(row.reason, Some(Reason::SharedIp));
}

#[test]
fn a_malformed_output_record_is_an_error() {
    let mut w = wire();
    w.local_ip = vec![1, 2, 3];
    assert_eq!(
        FlowRow::from_attributed(&w, true, Verification::Agree),
        Err(FromWireError::Address { end: "local", len: 3 })
    );
    let mut w = wire();
    w.remote_port = 65_536;
    assert_eq!(
        FlowRow::from_attributed(&w, true, Verification::Agree),
        Err(FromWireError::Port { end: "remote", port: 65_536 })
    );
    let mut w = wire();
    w.reason = 99;
    assert_eq!(
        FlowRow::from_attributed(&w, true, Verification::Agree),
        Err(FromWireError::Enum { field: "reason", value: 99 })
    );
}
