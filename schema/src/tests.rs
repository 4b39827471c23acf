use super::*;

fn sample() -> ExporterBatch {
    ExporterBatch {
        schema_version: SCHEMA_VERSION,
        exporter_id: "host-1".into(),
        seq: 7,
        window_from_ns: 10,
        window_to_ns: 20,
        flows: vec![Flow {
            local_ip: ip_to_bytes("10.0.0.1".parse().unwrap()),
            local_port: 4000,
            remote_ip: ip_to_bytes("fd00::2".parse().unwrap()),
            remote_port: 443,
            direction: Direction::Client as i32,
            start_ns: 11,
            end_ns: 19,
            bytes_sent: 1 << 40,
            local_workload: "api".into(),
            ..Default::default()
        }],
        heartbeats: vec![Ownership { ip: vec![10, 0, 0, 1], workload: "api".into(), from_ns: 10, to_ns: 20, port: 0 }],
        assignments: vec![Assignment { ip: vec![10, 0, 0, 9], workload: String::new(), at_ns: 15 }],
        incarnation: 0x1234_5678_9abc_def0,
    }
}

#[test]
fn round_trip() {
    let batch = sample();
    let decoded = decode_batch(&encode_batch(&batch)).unwrap();
    assert_eq!(decoded, batch);
}

#[test]
fn truncated_batch_is_malformed() {
    let bytes = encode_batch(&sample());
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        assert!(matches!(decode_batch(&bytes[..cut]), Err(DecodeError::Malformed(_))), "cut at {cut}");
    }
}

#[test]
fn unknown_version_is_rejected() {
    let mut batch = sample();
    batch.schema_version = 2;
    let err = decode_batch(&encode_batch(&batch)).unwrap_err();
    assert!(matches!(err, DecodeError::UnsupportedVersion { found: 2 }));
    batch.schema_version = 0;
    assert!(decode_batch(&encode_batch(&batch)).is_err());
}

#[test]
fn ip_wire_form() {
    assert_eq!(ip_from_bytes(&[10, 1, 2, 3]), Some("10.1.2.3".parse().unwrap()));
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(ip_from_bytes(&ip_to_bytes(v6)), Some(v6));
    for len in [0, 1, 3, 5, 15, 17] {
        assert_eq!(ip_from_bytes(&vec![1; len]), None, "length {len}");
    }
}

/// The tags each message of a `.proto` file declares (enum values skipped).
fn declared_tags(proto: &str) -> Vec<(String, u32)> {
    let mut declared = Vec::new();
    let mut message = String::new();
    for line in proto.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("message ") {
            message = rest.trim_end_matches(" {").to_string();
        } else if line.starts_with("enum ") {
            message.clear();
        } else if !line.starts_with("//") && line.ends_with(';') && line.contains(" = ") && !message.is_empty() {
            let (_, tag) = line.trim_end_matches(';').split_once(" = ").unwrap();
            if let Ok(tag) = tag.parse() {
                declared.push((message.clone(), tag));
            }
        }
    }
    declared
}

/// The distinct field tags present in an encoded message.
fn tags_of(bytes: &[u8]) -> Vec<u32> {
    let mut tags = Vec::new();
    let mut buf = bytes;
    while !buf.is_empty() {
        let key = prost::encoding::decode_varint(&mut buf).unwrap();
        let (tag, wire) = ((key >> 3) as u32, (key & 7) as u8);
        tags.push(tag);
        match wire {
            0 => {
                prost::encoding::decode_varint(&mut buf).unwrap();
            }
            1 => buf = &buf[8..],
            2 => {
                let len = prost::encoding::decode_varint(&mut buf).unwrap() as usize;
                buf = &buf[len..];
            }
            other => panic!("unexpected wire type {other}"),
        }
    }
    tags.sort_unstable();
    tags.dedup();
    tags
}

fn expect(declared: &[(String, u32)], msg: &str) -> Vec<u32> {
    let mut tags: Vec<u32> = declared.iter().filter(|(m, _)| m == msg).map(|(_, t)| *t).collect();
    tags.sort_unstable();
    tags
}

/// The `.proto` file is the contract: every field it declares must exist in the Rust mirror
/// with the same tag, and vice versa (checked by comparing the declared tags per message).
#[test]
fn proto_file_matches_rust_mirror() {
    let declared = declared_tags(BATCH_PROTO);
    // Encode a message with every field set to a non-default value and read back the tags.
    let full = sample();
    let all_flow = Flow {
        local_port: 1,
        remote_port: 1,
        direction: 1,
        start_ns: 1,
        end_ns: 1,
        bytes_sent: 1,
        bytes_received: 1,
        segments_sent: 1,
        segments_received: 1,
        retransmits: 1,
        srtt_us: 1,
        local_workload: "w".into(),
        open: true,
        local_scope: 1,
        local_source: 1,
        start_unobserved: true,
        connection_id: 1,
        connect_error: 111,
        ..full.flows[0].clone()
    };
    assert_eq!(tags_of(&full.encode_to_vec()), expect(&declared, "ExporterBatch"));
    assert_eq!(tags_of(&all_flow.encode_to_vec()), expect(&declared, "Flow"));
    let heartbeat = Ownership { port: 8080, ..full.heartbeats[0].clone() };
    assert_eq!(tags_of(&heartbeat.encode_to_vec()), expect(&declared, "Ownership"));
    let assignment = Assignment { workload: "w".into(), ..full.assignments[0].clone() };
    assert_eq!(tags_of(&assignment.encode_to_vec()), expect(&declared, "Assignment"));
}

fn full_attributed() -> AttributedFlow {
    AttributedFlow {
        schema_version: SCHEMA_VERSION,
        flow_id: 7,
        exporter_id: "e".into(),
        local_ip: vec![10, 0, 0, 1],
        local_port: 1,
        remote_ip: vec![10, 0, 0, 2],
        remote_port: 2,
        direction: 1,
        start_ns: 1,
        end_ns: 2,
        bytes_sent: 1,
        bytes_received: 1,
        segments_sent: 1,
        segments_received: 1,
        retransmits: 1,
        srtt_us: 1,
        local_workload: "a".into(),
        remote_workload: "b".into(),
        evidence: 1,
        reason: 1,
        open: true,
        incarnation: 9,
        local_scope: 2,
        local_source: 3,
        start_unobserved: true,
        connect_error: 110,
    }
}

/// The output schema is a contract too.
#[test]
fn attributed_proto_matches_rust_mirror() {
    let declared = declared_tags(ATTRIBUTED_PROTO);
    assert_eq!(tags_of(&full_attributed().encode_to_vec()), expect(&declared, "AttributedFlow"));
    // Enum values agree with the file.
    for (name, value) in [
        ("EVIDENCE_HEARTBEAT", Evidence::Heartbeat as i32),
        ("EVIDENCE_ASSIGNMENT", 3),
        ("REASON_NO_OWNER", Reason::NoOwner as i32),
        ("REASON_EVIDENCE_EXPIRED", Reason::EvidenceExpired as i32),
        ("EVIDENCE_PEER", Evidence::Peer as i32),
        ("REASON_SHARED_IP", Reason::SharedIp as i32),
        ("REASON_SOURCE_GAP", Reason::SourceGap as i32),
    ] {
        assert!(ATTRIBUTED_PROTO.contains(&format!("{name} = {value};")), "{name}");
    }
}

#[test]
fn attributed_round_trip_and_version() {
    let f = full_attributed();
    assert_eq!(decode_attributed(&encode_attributed(&f)).unwrap(), f);
    let old = AttributedFlow { schema_version: 9, ..f };
    assert!(matches!(decode_attributed(&encode_attributed(&old)), Err(DecodeError::UnsupportedVersion { found: 9 })));
    assert!(decode_attributed(&[0xff, 0xff]).is_err());
}

#[test]
fn flow_id_is_stable_and_discriminating() {
    let batch = sample();
    let flow = &batch.flows[0];
    assert_eq!(flow_id("host-1", flow), flow_id("host-1", &flow.clone()));
    let mut other = flow.clone();
    other.start_ns += 1;
    assert_ne!(flow_id("host-1", flow), flow_id("host-1", &other));
    assert_ne!(flow_id("host-1", flow), flow_id("host-2", flow));
    let mut counters_only = flow.clone();
    counters_only.bytes_sent += 1;
    counters_only.end_ns += 5;
    assert_eq!(flow_id("host-1", flow), flow_id("host-1", &counters_only));
}

#[test]
fn batch_enums_agree_with_the_proto_file() {
    for (name, value) in [
        ("SCOPE_UNSPECIFIED", Scope::Unspecified as i32),
        ("SCOPE_IP", Scope::Ip as i32),
        ("SCOPE_PORT", Scope::Port as i32),
        ("WORKLOAD_SOURCE_HOST_IDENTITY", WorkloadSource::HostIdentity as i32),
        ("WORKLOAD_SOURCE_IP_ASSIGNMENT", WorkloadSource::IpAssignment as i32),
        ("WORKLOAD_SOURCE_PORT_ASSIGNMENT", WorkloadSource::PortAssignment as i32),
        ("WORKLOAD_SOURCE_CGROUP_RULE", WorkloadSource::CgroupRule as i32),
    ] {
        assert!(BATCH_PROTO.contains(&format!("{name} = {value};")), "{name}");
    }
}

/// A stated connection id gives one flow id to every record of the connection, whatever its
/// start and direction say (a restarted exporter may not know them), and still tells
/// exporters apart.
#[test]
fn connection_id_keeps_one_flow_id() {
    let batch = sample();
    let mut a = batch.flows[0].clone();
    a.connection_id = 0xfeed;
    let mut b = a.clone();
    b.start_ns += 1_000;
    b.direction = 0;
    b.start_unobserved = true;
    assert_eq!(flow_id("host-1", &a), flow_id("host-1", &b));
    assert_ne!(flow_id("host-1", &a), flow_id("host-2", &a));
    let mut c = a.clone();
    c.connection_id = 0xbeef;
    assert_ne!(flow_id("host-1", &a), flow_id("host-1", &c));
    assert_ne!(flow_id("host-1", &a), flow_id("host-1", &batch.flows[0]), "differs from the 5-tuple form");
}

/// The edges schema is a contract too: every declared tag is in the Rust mirror and back.
#[test]
fn edges_proto_matches_rust_mirror() {
    let declared = declared_tags(EDGES_PROTO);
    let edge = Edge {
        schema_version: SCHEMA_VERSION,
        bucket_start_ns: 1,
        bucket_s: 60,
        client: "a".into(),
        server: "b".into(),
        server_port: 80,
        protocol: "tcp".into(),
        emitted_at_ns: 2,
        connections: 1,
        bytes_client_to_server: 1,
        bytes_server_to_client: 1,
        segments: 1,
        retransmits: 1,
        failed_connects: 1,
        verified: 1,
        disagreements: 1,
        one_sided: 1,
        rtt_p50_us: 1.0,
        rtt_p90_us: 1.0,
        rtt_p99_us: 1.0,
        rtt_sketch: vec![1],
    };
    assert_eq!(tags_of(&edge.encode_to_vec()), expect(&declared, "Edge"));
    let event = Event {
        schema_version: SCHEMA_VERSION,
        kind: EventKind::Disagreement as i32,
        at_ns: 1,
        client: "a".into(),
        server: "b".into(),
        server_port: 80,
        detail: "d".into(),
        flow_id: 7,
        exporter_id: "e".into(),
        peer_workload: "p".into(),
        claims_workload: "c".into(),
        claims_evidence: Evidence::Heartbeat as i32,
    };
    assert_eq!(tags_of(&event.encode_to_vec()), expect(&declared, "Event"));
    for (name, value) in [
        ("EVENT_KIND_NEW_DEPENDENCY", EventKind::NewDependency as i32),
        ("EVENT_KIND_POLICY_VIOLATION", EventKind::PolicyViolation as i32),
        ("EVENT_KIND_DISAGREEMENT", EventKind::Disagreement as i32),
    ] {
        assert!(EDGES_PROTO.contains(&format!("{name} = {value};")), "{name}");
    }
    assert_eq!(decode_edge(&edge.encode_to_vec()).unwrap(), edge);
    assert_eq!(decode_event(&event.encode_to_vec()).unwrap(), event);
    assert!(matches!(decode_edge(&[0x08, 0x02]), Err(DecodeError::UnsupportedVersion { found: 2 })));
}
