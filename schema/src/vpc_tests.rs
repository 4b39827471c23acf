//! The VPC output schema against its `.proto` file, and the record id.

use prost::Message;

use crate::vpc::*;
use crate::{DecodeError, Evidence, Reason, SCHEMA_VERSION};

/// The tags each message of a `.proto` file declares (enum values skipped).
fn declared_tags(proto: &str, message: &str) -> Vec<u32> {
    let mut tags = Vec::new();
    let mut current = String::new();
    for line in proto.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("message ") {
            current = rest.trim_end_matches(" {").to_string();
        } else if line.starts_with("enum ") || line == "}" {
            current.clear();
        } else if current == message && !line.starts_with("//") && line.ends_with(';') {
            if let Some((_, tag)) = line.trim_end_matches(';').split_once(" = ") {
                tags.push(tag.parse().unwrap());
            }
        }
    }
    tags.sort_unstable();
    tags
}

/// The distinct field tags present in an encoded message.
fn tags_of(bytes: &[u8]) -> Vec<u32> {
    let mut tags = Vec::new();
    let mut buf = bytes;
    while !buf.is_empty() {
        let key = prost::encoding::decode_varint(&mut buf).unwrap();
        tags.push((key >> 3) as u32);
        match key & 7 {
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

fn full_end() -> VpcEnd {
    VpcEnd {
        ip: vec![10, 0, 0, 1],
        address_field: VpcAddressField::Packet as i32,
        workload: "w".into(),
        evidence: Evidence::Heartbeat as i32,
        reason: Reason::NoOwner as i32,
        vpc_reason: VpcReason::IntervalNotCovered as i32,
    }
}

fn full_record() -> VpcFlowRecord {
    VpcFlowRecord {
        schema_version: SCHEMA_VERSION,
        record_id: vpc_record_id("b", "k", "e", 2),
        bucket: "b".into(),
        key: "k".into(),
        etag: "e".into(),
        line: 2,
        version: Some(5),
        account_id: "123456789010".into(),
        interface_id: "eni-1".into(),
        srcaddr: vec![10, 0, 0, 1],
        dstaddr: vec![0; 16],
        srcport: Some(0),
        dstport: Some(443),
        protocol: Some(6),
        packets: Some(0),
        bytes: Some(1 << 40),
        start_s: Some(1),
        end_s: Some(2),
        action: VpcAction::Reject as i32,
        log_status: VpcLogStatus::Skipdata as i32,
        vpc_id: "vpc-1".into(),
        subnet_id: "subnet-1".into(),
        instance_id: "i-1".into(),
        tcp_flags: Some(18),
        r#type: VpcTrafficType::Efa as i32,
        pkt_srcaddr: vec![1, 2, 3, 4],
        pkt_dstaddr: vec![5, 6, 7, 8],
        region: "us-east-1".into(),
        az_id: "use1-az1".into(),
        sublocation_type: "wavelength".into(),
        sublocation_id: "x".into(),
        pkt_src_aws_service: "S3".into(),
        pkt_dst_aws_service: "EC2".into(),
        flow_direction: VpcFlowDirection::Egress as i32,
        traffic_path: Some(8),
        src: Some(full_end()),
        dst: Some(VpcEnd::default()),
    }
}

/// The `.proto` file is the contract: every field it declares exists in the Rust mirror with
/// the same tag, and vice versa.
#[test]
fn vpc_proto_matches_rust_mirror() {
    assert_eq!(tags_of(&full_record().encode_to_vec()), declared_tags(VPC_PROTO, "VpcFlowRecord"));
    assert_eq!(tags_of(&full_end().encode_to_vec()), declared_tags(VPC_PROTO, "VpcEnd"));
    for (name, value) in [
        ("VPC_ACTION_ACCEPT", VpcAction::Accept as i32),
        ("VPC_ACTION_REJECT", VpcAction::Reject as i32),
        ("VPC_LOG_STATUS_OK", VpcLogStatus::Ok as i32),
        ("VPC_LOG_STATUS_NODATA", VpcLogStatus::Nodata as i32),
        ("VPC_LOG_STATUS_SKIPDATA", VpcLogStatus::Skipdata as i32),
        ("VPC_TRAFFIC_TYPE_IPV4", VpcTrafficType::Ipv4 as i32),
        ("VPC_TRAFFIC_TYPE_IPV6", VpcTrafficType::Ipv6 as i32),
        ("VPC_TRAFFIC_TYPE_EFA", VpcTrafficType::Efa as i32),
        ("VPC_FLOW_DIRECTION_INGRESS", VpcFlowDirection::Ingress as i32),
        ("VPC_FLOW_DIRECTION_EGRESS", VpcFlowDirection::Egress as i32),
        ("VPC_REASON_INTERVAL_NOT_COVERED", VpcReason::IntervalNotCovered as i32),
        ("VPC_REASON_NO_ADDRESS", VpcReason::NoAddress as i32),
        ("VPC_ADDRESS_FIELD_INTERFACE", VpcAddressField::Interface as i32),
        ("VPC_ADDRESS_FIELD_PACKET", VpcAddressField::Packet as i32),
    ] {
        assert!(VPC_PROTO.contains(&format!("{name} = {value};")), "{name}");
    }
}

#[test]
fn vpc_round_trip_and_version() {
    let r = full_record();
    assert_eq!(decode_vpc_record(&encode_vpc_record(&r)).unwrap(), r);
    let other = VpcFlowRecord { schema_version: 2, ..r.clone() };
    assert!(matches!(decode_vpc_record(&encode_vpc_record(&other)), Err(DecodeError::UnsupportedVersion { found: 2 })));
    // Cut inside the last field (a non-empty message).
    let last_full = VpcFlowRecord { dst: Some(full_end()), ..r.clone() };
    let bytes = encode_vpc_record(&last_full);
    assert!(matches!(decode_vpc_record(&bytes[..bytes.len() - 1]), Err(DecodeError::Malformed(_))));
    // "-" (absent) and 0 stay apart.
    let absent = VpcFlowRecord { srcport: None, ..r };
    assert_eq!(decode_vpc_record(&encode_vpc_record(&absent)).unwrap().srcport, None);
}

/// The documented algorithm, written out independently of the hasher.
fn reference_id(bucket: &str, key: &str, etag: &str, line: u64) -> u64 {
    let mut bytes = Vec::new();
    for part in [bucket, key, etag] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part.as_bytes());
    }
    bytes.extend_from_slice(&line.to_le_bytes());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h ^ (h >> 29)
}

#[test]
fn record_id_is_stable_and_discriminating() {
    let id = vpc_record_id("logs", "AWSLogs/1/vpcflowlogs/a.log.gz", "d41d8cd98f00b204e9800998ecf8427e", 2);
    assert_eq!(id, reference_id("logs", "AWSLogs/1/vpcflowlogs/a.log.gz", "d41d8cd98f00b204e9800998ecf8427e", 2));
    assert_eq!(
        id,
        VpcRecordIdHasher::new("logs", "AWSLogs/1/vpcflowlogs/a.log.gz", "d41d8cd98f00b204e9800998ecf8427e").id(2)
    );
    assert_ne!(id, vpc_record_id("logs", "AWSLogs/1/vpcflowlogs/a.log.gz", "d41d8cd98f00b204e9800998ecf8427e", 3));
    assert_ne!(id, vpc_record_id("logs", "AWSLogs/1/vpcflowlogs/a.log.gz", "other-etag", 2));
    // Length prefixes keep the parts apart.
    assert_ne!(vpc_record_id("ab", "c", "e", 1), vpc_record_id("a", "bc", "e", 1));
    assert_ne!(vpc_record_id("a", "", "e", 1), vpc_record_id("", "a", "e", 1));
}
