use proptest::prelude::*;

use super::*;
use crate::{encode_batch, Assignment, ExporterBatch, Flow, Ownership};

fn owned(view: &BatchView<'_>) -> ExporterBatch {
    ExporterBatch {
        schema_version: view.schema_version,
        exporter_id: view.exporter_id.to_string(),
        seq: view.seq,
        window_from_ns: view.window_from_ns,
        window_to_ns: view.window_to_ns,
        flows: view
            .flows()
            .map(|f| {
                let f = f.unwrap();
                Flow {
                    local_ip: f.local_ip.to_vec(),
                    local_port: f.local_port,
                    remote_ip: f.remote_ip.to_vec(),
                    remote_port: f.remote_port,
                    direction: f.direction,
                    start_ns: f.start_ns,
                    end_ns: f.end_ns,
                    bytes_sent: f.bytes_sent,
                    bytes_received: f.bytes_received,
                    segments_sent: f.segments_sent,
                    segments_received: f.segments_received,
                    retransmits: f.retransmits,
                    srtt_us: f.srtt_us,
                    local_workload: f.local_workload.to_string(),
                    open: f.open,
                    local_scope: f.local_scope,
                    local_source: f.local_source,
                    start_unobserved: f.start_unobserved,
                    connection_id: f.connection_id,
                    connect_error: f.connect_error,
                }
            })
            .collect(),
        heartbeats: view
            .heartbeats()
            .map(|o| {
                let o = o.unwrap();
                Ownership {
                    ip: o.ip.to_vec(),
                    workload: o.workload.to_string(),
                    from_ns: o.from_ns,
                    to_ns: o.to_ns,
                    port: o.port,
                }
            })
            .collect(),
        assignments: view
            .assignments()
            .map(|a| {
                let a = a.unwrap();
                Assignment { ip: a.ip.to_vec(), workload: a.workload.to_string(), at_ns: a.at_ns }
            })
            .collect(),
        incarnation: view.incarnation,
    }
}

fn arb_flow() -> impl Strategy<Value = Flow> {
    (
        proptest::collection::vec(any::<u8>(), 0..17),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..17),
        (any::<u32>(), 0..3i32, any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()),
        "[a-z/0-9-]{0,12}",
        any::<bool>(),
        (0..3i32, 0..5i32, any::<bool>(), any::<u64>(), any::<u32>()),
    )
        .prop_map(
            |(
                local_ip,
                local_port,
                remote_ip,
                (remote_port, direction, start_ns, end_ns),
                (bytes_sent, segments_sent, retransmits, srtt_us),
                local_workload,
                open,
                (local_scope, local_source, start_unobserved, connection_id, connect_error),
            )| Flow {
                local_ip,
                local_port,
                remote_ip,
                remote_port,
                direction,
                start_ns,
                end_ns,
                bytes_sent,
                bytes_received: bytes_sent / 3,
                segments_sent,
                segments_received: segments_sent ^ 5,
                retransmits,
                srtt_us,
                local_workload,
                open,
                local_scope,
                local_source,
                start_unobserved,
                connection_id,
                connect_error,
            },
        )
}

fn arb_batch() -> impl Strategy<Value = ExporterBatch> {
    (
        "[a-z0-9-]{0,10}",
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(arb_flow(), 0..6),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..17), "[a-z]{0,6}", any::<u64>(), any::<u64>(), any::<u16>())
                .prop_map(|(ip, workload, from_ns, to_ns, port)| Ownership {
                    ip,
                    workload,
                    from_ns,
                    to_ns,
                    port: u32::from(port),
                }),
            0..4,
        ),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..17), "[a-z]{0,6}", any::<u64>())
                .prop_map(|(ip, workload, at_ns)| Assignment { ip, workload, at_ns }),
            0..4,
        ),
        any::<u64>(),
    )
        .prop_map(
            |(exporter_id, seq, window_from_ns, window_to_ns, flows, heartbeats, assignments, incarnation)| {
                ExporterBatch {
                    schema_version: SCHEMA_VERSION,
                    exporter_id,
                    seq,
                    window_from_ns,
                    window_to_ns,
                    flows,
                    heartbeats,
                    assignments,
                    incarnation,
                }
            },
        )
}

proptest! {
    /// The view reads exactly what the generated decoder reads.
    #[test]
    fn view_matches_prost(batch in arb_batch()) {
        let bytes = encode_batch(&batch);
        let view = view_batch(&bytes).unwrap();
        prop_assert_eq!(owned(&view), batch);
    }

    /// Any truncation or corruption is an error or a different valid message, never a panic.
    #[test]
    fn view_never_panics(batch in arb_batch(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
        let mut bytes = encode_batch(&batch);
        if !bytes.is_empty() {
            let i = cut.index(bytes.len());
            bytes[i] ^= flip;
            if let Ok(view) = view_batch(&bytes[..i.max(1)]) {
                for f in view.flows() { let _ = f; }
                for h in view.heartbeats() { let _ = h; }
                for a in view.assignments() { let _ = a; }
            }
        }
    }
}

#[test]
fn unknown_fields_are_skipped_and_bad_input_is_an_error() {
    let batch = ExporterBatch { schema_version: SCHEMA_VERSION, exporter_id: "e".into(), ..Default::default() };
    let mut bytes = encode_batch(&batch);
    // Field 99, varint 7; field 98, fixed32; field 97, fixed64; field 96, bytes "xy".
    bytes.extend_from_slice(&[0x98, 0x06, 0x07]);
    bytes.extend_from_slice(&[0x95, 0x06, 1, 2, 3, 4]);
    bytes.extend_from_slice(&[0x89, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
    bytes.extend_from_slice(&[0x82, 0x06, 2, b'x', b'y']);
    assert_eq!(view_batch(&bytes).unwrap().exporter_id, "e");
    assert!(view_batch(&[0x12, 0x05, b'a']).is_err(), "truncated string");
    assert!(view_batch(&[0x12, 0x01, 0xff]).is_err(), "invalid UTF-8");
    assert!(view_batch(&[0x08; 11]).is_err(), "overlong varint");
    assert!(view_batch(&[0x0a, 0x00]).is_err(), "field 1 with the wrong wire type");
    assert!(matches!(view_batch(&[]), Err(DecodeError::UnsupportedVersion { found: 0 })));
}
