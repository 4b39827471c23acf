//! Records to the output message, [`flowmap_schema::VpcFlowRecord`]: the row as parsed, its
//! source and id, and both ends with their address chosen ([`Record::end_address`]) but not yet
//! attributed. The job fills each end's `workload` and `evidence`, or its `reason` /
//! `vpc_reason`; an end without an address already carries `VPC_REASON_NO_ADDRESS`.

use flowmap_schema::{
    ip_to_bytes, VpcAction, VpcAddressField, VpcEnd, VpcFlowDirection, VpcFlowRecord, VpcLogStatus, VpcReason,
    VpcTrafficType, SCHEMA_VERSION,
};

use crate::record::{Action, AddressField, End, FlowDirection, LogStatus, Record, TrafficType};
use crate::sink::FileInfo;

fn s(v: &Option<std::sync::Arc<str>>) -> String {
    v.as_deref().unwrap_or_default().to_string()
}

fn ip(v: Option<std::net::IpAddr>) -> Vec<u8> {
    v.map(ip_to_bytes).unwrap_or_default()
}

/// The end `end` of `record`, with its address and no attribution yet.
pub fn end(record: &Record, end: End) -> VpcEnd {
    match record.end_address(end) {
        Some((addr, field)) => VpcEnd {
            ip: ip_to_bytes(addr),
            address_field: match field {
                AddressField::Interface => VpcAddressField::Interface,
                AddressField::Packet => VpcAddressField::Packet,
            } as i32,
            ..VpcEnd::default()
        },
        None => VpcEnd { vpc_reason: VpcReason::NoAddress as i32, ..VpcEnd::default() },
    }
}

/// The output message of `record` of `file`, ends unattributed.
pub fn to_proto(file: &FileInfo, record: &Record) -> VpcFlowRecord {
    VpcFlowRecord {
        schema_version: SCHEMA_VERSION,
        record_id: file.record_id(record.line),
        bucket: file.id.bucket.clone(),
        key: file.id.key.clone(),
        etag: file.id.etag.clone(),
        line: record.line,
        version: record.version.map(u32::from),
        account_id: s(&record.account_id),
        interface_id: s(&record.interface_id),
        srcaddr: ip(record.srcaddr),
        dstaddr: ip(record.dstaddr),
        srcport: record.srcport.map(u32::from),
        dstport: record.dstport.map(u32::from),
        protocol: record.protocol.map(u32::from),
        packets: record.packets,
        bytes: record.bytes,
        start_s: record.start,
        end_s: record.end,
        action: match record.action {
            None => VpcAction::Unspecified,
            Some(Action::Accept) => VpcAction::Accept,
            Some(Action::Reject) => VpcAction::Reject,
        } as i32,
        log_status: match record.log_status {
            None => VpcLogStatus::Unspecified,
            Some(LogStatus::Ok) => VpcLogStatus::Ok,
            Some(LogStatus::Nodata) => VpcLogStatus::Nodata,
            Some(LogStatus::Skipdata) => VpcLogStatus::Skipdata,
        } as i32,
        vpc_id: s(&record.vpc_id),
        subnet_id: s(&record.subnet_id),
        instance_id: s(&record.instance_id),
        tcp_flags: record.tcp_flags.map(u32::from),
        r#type: match record.traffic_type {
            None => VpcTrafficType::Unspecified,
            Some(TrafficType::IPv4) => VpcTrafficType::Ipv4,
            Some(TrafficType::IPv6) => VpcTrafficType::Ipv6,
            Some(TrafficType::Efa) => VpcTrafficType::Efa,
        } as i32,
        pkt_srcaddr: ip(record.pkt_srcaddr),
        pkt_dstaddr: ip(record.pkt_dstaddr),
        region: s(&record.region),
        az_id: s(&record.az_id),
        sublocation_type: s(&record.sublocation_type),
        sublocation_id: s(&record.sublocation_id),
        pkt_src_aws_service: s(&record.pkt_src_aws_service),
        pkt_dst_aws_service: s(&record.pkt_dst_aws_service),
        flow_direction: match record.flow_direction {
            None => VpcFlowDirection::Unspecified,
            Some(FlowDirection::Ingress) => VpcFlowDirection::Ingress,
            Some(FlowDirection::Egress) => VpcFlowDirection::Egress,
        } as i32,
        traffic_path: record.traffic_path.map(u32::from),
        src: Some(end(record, End::Src)),
        dst: Some(end(record, End::Dst)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::ObjectId;

    #[test]
    fn a_nat_row_becomes_a_record_with_packet_level_ends() {
        let file = FileInfo::new(ObjectId { bucket: "b".into(), key: "k.log.gz".into(), etag: "e".into() }, 1);
        let rec = Record {
            line: 7,
            srcaddr: Some("10.0.1.5".parse().unwrap()),
            dstaddr: Some("10.0.0.220".parse().unwrap()),
            pkt_srcaddr: Some("10.0.1.5".parse().unwrap()),
            pkt_dstaddr: Some("203.0.113.5".parse().unwrap()),
            srcport: Some(0),
            log_status: Some(LogStatus::Ok),
            ..Record::default()
        };
        let p = to_proto(&file, &rec);
        assert_eq!(p.record_id, flowmap_schema::vpc_record_id("b", "k.log.gz", "e", 7));
        assert_eq!(p.srcport, Some(0));
        assert_eq!(p.dstport, None);
        let src = p.src.unwrap();
        let dst = p.dst.unwrap();
        assert_eq!((src.ip, src.address_field), (vec![10, 0, 1, 5], VpcAddressField::Interface as i32));
        assert_eq!((dst.ip, dst.address_field), (vec![203, 0, 113, 5], VpcAddressField::Packet as i32));
        let empty = to_proto(&file, &Record { line: 8, log_status: Some(LogStatus::Nodata), ..Record::default() });
        assert_eq!(empty.src.unwrap().vpc_reason, VpcReason::NoAddress as i32);
        assert_eq!(empty.log_status, VpcLogStatus::Nodata as i32);
    }
}
