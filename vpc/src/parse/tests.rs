//! Parser tests: the record examples of AWS's VPC Flow Logs documentation (default and custom
//! formats), and the pitfalls (`-`, NODATA/SKIPDATA, IPv6, reordered and unknown fields, bad
//! rows, truncated gzip at every cut, Parquet).

use std::io::{Cursor, Write};
use std::net::IpAddr;

use super::*;
use crate::record::{AddressField, End};
use crate::write::{write_parquet, write_text};

const DEFAULT: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// Parses a whole text (plain), splitting records and errors.
fn parse_all(text: &str) -> (Vec<Record>, Vec<ParseError>, ParseStats) {
    let mut reader = text::open(Cursor::new(text.as_bytes().to_vec())).unwrap();
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for r in &mut reader {
        match r {
            Ok(rec) => ok.push(rec),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad, reader.stats().clone())
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// The default-format examples of AWS's "Flow log record examples" page.
#[test]
fn aws_default_format_examples() {
    let text = format!(
        "{DEFAULT}\n\
         2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK\n\
         2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK\n\
         2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA\n\
         2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA\n\
         2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 ACCEPT OK\n\
         2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK\n"
    );
    let (recs, errs, stats) = parse_all(&text);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(recs.len(), 6);
    let ssh = &recs[0];
    assert_eq!(ssh.line, 2);
    assert_eq!(ssh.version, Some(2));
    assert_eq!(ssh.account_id.as_deref(), Some("123456789010"));
    assert_eq!(ssh.interface_id.as_deref(), Some("eni-1235b8ca123456789"));
    assert_eq!((ssh.srcaddr, ssh.dstaddr), (ip("172.31.16.139"), ip("172.31.16.21")));
    assert_eq!((ssh.srcport, ssh.dstport, ssh.protocol), (Some(20641), Some(22), Some(6)));
    assert_eq!((ssh.packets, ssh.bytes), (Some(20), Some(4249)));
    assert_eq!((ssh.start, ssh.end), (Some(1418530010), Some(1418530070)));
    assert_eq!((ssh.action, ssh.log_status), (Some(Action::Accept), Some(LogStatus::Ok)));
    assert_eq!(recs[1].action, Some(Action::Reject));
    assert_eq!(recs[1].dstport, Some(3389));
    // NODATA / SKIPDATA: counted rows, with "-" fields absent.
    let nodata = &recs[2];
    assert_eq!(nodata.log_status, Some(LogStatus::Nodata));
    assert_eq!((nodata.srcaddr, nodata.srcport, nodata.packets, nodata.action), (None, None, None, None));
    assert_eq!(nodata.start, Some(1431280876));
    assert_eq!(recs[3].log_status, Some(LogStatus::Skipdata));
    assert_eq!(recs[3].interface_id.as_deref(), Some("eni-11111111aaaaaaaaa"));
    assert_eq!(nodata.end_address(End::Src), None);
    // ICMP: ports 0 (not "-").
    assert_eq!((recs[4].srcport, recs[4].protocol), (Some(0), Some(1)));
    // IPv6.
    assert_eq!(recs[5].srcaddr, ip("2001:db8:1234:a100:8d6e:3477:df66:f105"));
    assert_eq!(recs[5].dstaddr, ip("2001:db8:1234:a102:3304:8879:34cf:4071"));
    assert_eq!(
        stats,
        ParseStats { records: 6, ok: 4, nodata: 1, skipdata: 1, no_status: 0, malformed: 0, blank: 0, damaged: false }
    );
}

/// The version 3 custom format of the TCP flag sequence example, including AWS's own line with
/// two spaces between fields.
#[test]
fn aws_custom_format_tcp_flags() {
    let header = "version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags log-status";
    let rows = [
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43416 5001 52.213.180.42 10.0.0.62 6 568 8 1566848875 1566848933 ACCEPT 2 OK",
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43416 10.0.0.62 52.213.180.42 6 376 7 1566848875 1566848933 ACCEPT 18 OK",
        "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43638  10.0.0.62 52.213.180.42 6 967 14 1566933133 1566933193 ACCEPT 19 OK",
    ];
    let (recs, errs, _) = parse_all(&format!("{header}\n{}\n", rows.join("\n")));
    assert!(errs.is_empty(), "{errs:?}");
    let syn = &recs[0];
    assert_eq!(syn.version, Some(3));
    assert_eq!(syn.vpc_id.as_deref(), Some("vpc-abcdefab012345678"));
    assert_eq!(syn.subnet_id.as_deref(), Some("subnet-aaaaaaaa012345678"));
    assert_eq!(syn.instance_id.as_deref(), Some("i-01234567890123456"));
    assert_eq!(syn.traffic_type, Some(TrafficType::IPv4));
    assert_eq!((syn.bytes, syn.packets), (Some(568), Some(8)), "bytes before packets in this format");
    assert_eq!(syn.tcp_flags, Some(2));
    assert_eq!(recs[1].tcp_flags, Some(18));
    assert_eq!(recs[2].tcp_flags, Some(19));
    assert_eq!(recs[2].dstport, Some(43638));
    // Same packet and interface addresses: the interface-level address stands.
    assert_eq!(syn.end_address(End::Src), Some(("52.213.180.42".parse().unwrap(), AddressField::Interface)));
    // Interned: rows share one string.
    assert!(std::sync::Arc::ptr_eq(syn.vpc_id.as_ref().unwrap(), recs[1].vpc_id.as_ref().unwrap()));
}

/// The NAT gateway example: a format without version, ports or status; the packet-level
/// address is the one that stands when it differs.
#[test]
fn aws_custom_format_nat_gateway() {
    let text = "instance-id interface-id srcaddr dstaddr pkt-srcaddr pkt-dstaddr\n\
                - eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5\n\
                - eni-1235b8ca123456789 10.0.0.220 203.0.113.5 10.0.0.220 203.0.113.5\n\
                - eni-1235b8ca123456789 203.0.113.5 10.0.0.220 203.0.113.5 10.0.0.220\n\
                - eni-1235b8ca123456789 10.0.0.220 10.0.1.5 203.0.113.5 10.0.1.5\n\
                i-01234567890123456 eni-1111aaaa2222bbbb3 10.0.1.5 203.0.113.5 10.0.1.5 203.0.113.5\n";
    let (recs, errs, stats) = parse_all(text);
    assert!(errs.is_empty());
    assert_eq!(stats.no_status, 5);
    assert_eq!(recs[0].instance_id, None);
    assert_eq!(recs[0].version, None);
    assert_eq!(recs[0].end_address(End::Dst), Some(("203.0.113.5".parse().unwrap(), AddressField::Packet)));
    assert_eq!(recs[0].end_address(End::Src), Some(("10.0.1.5".parse().unwrap(), AddressField::Interface)));
    assert_eq!(recs[3].end_address(End::Src), Some(("203.0.113.5".parse().unwrap(), AddressField::Packet)));
    assert_eq!(recs[4].instance_id.as_deref(), Some("i-01234567890123456"));
}

/// The transit gateway example (fields in yet another order).
#[test]
fn aws_custom_format_transit_gateway() {
    let text = "version interface-id account-id vpc-id subnet-id instance-id srcaddr dstaddr srcport dstport protocol tcp-flags type pkt-srcaddr pkt-dstaddr action log-status\n\
                3 eni-11111111111111111 123456789010 vpc-abcdefab012345678 subnet-11111111aaaaaaaaa - 10.40.1.175 10.40.2.236 39812 80 6 3 IPv4 10.20.33.164 10.40.2.236 ACCEPT OK\n";
    let (recs, errs, _) = parse_all(text);
    assert!(errs.is_empty());
    let r = &recs[0];
    assert_eq!(r.account_id.as_deref(), Some("123456789010"));
    assert_eq!((r.srcport, r.dstport, r.tcp_flags), (Some(39812), Some(80), Some(3)));
    assert_eq!(r.end_address(End::Src), Some(("10.20.33.164".parse().unwrap(), AddressField::Packet)));
    assert_eq!(r.start, None, "not in this format");
}

/// Version 5 fields, reordered, with an unknown field and a field flowmap ignores.
#[test]
fn version_5_fields_reordered_with_unknown_ones() {
    let text = "log-status flow-direction srcaddr future-field dstaddr traffic-path pkt-src-aws-service pkt-dst-aws-service region az-id sublocation-type sublocation-id ecs-task-id start end\n\
                OK egress 10.0.0.5 whatever 52.94.0.1 8 - S3 us-east-1 use1-az4 - - - 1700000000 1700000060\n\
                OK ingress fd00::1 x fd00::2 - AMAZON - us-east-1 use1-az4 outpost op-1 task 1700000000 1700000060\n";
    let mut reader = text::open(Cursor::new(text.as_bytes())).unwrap();
    assert_eq!(reader.header().unknown, vec!["future-field".to_string()]);
    let recs: Vec<Record> = (&mut reader).map(Result::unwrap).collect();
    assert_eq!(recs[0].flow_direction, Some(FlowDirection::Egress));
    assert_eq!(recs[0].traffic_path, Some(8));
    assert_eq!(recs[0].pkt_src_aws_service, None);
    assert_eq!(recs[0].pkt_dst_aws_service.as_deref(), Some("S3"));
    assert_eq!((recs[0].region.as_deref(), recs[0].az_id.as_deref()), (Some("us-east-1"), Some("use1-az4")));
    assert_eq!(recs[1].flow_direction, Some(FlowDirection::Ingress));
    assert_eq!(recs[1].srcaddr, ip("fd00::1"));
    assert_eq!(recs[1].sublocation_type.as_deref(), Some("outpost"));
    assert_eq!(recs[1].sublocation_id.as_deref(), Some("op-1"));
}

#[test]
fn header_names_match_dashes_and_underscores() {
    assert_eq!(Field::from_name("log_status"), Some(Field::LogStatus));
    assert_eq!(Field::from_name("pkt-src-aws-service"), Some(Field::PktSrcAwsService));
    assert_eq!(Field::from_name("${srcaddr}"), Some(Field::Srcaddr));
    assert_eq!(Field::from_name("reject-reason"), Some(Field::Ignored));
    assert_eq!(Field::from_name("nonsense"), None);
    assert_eq!(Field::from_name(&"x".repeat(100)), None);
}

#[test]
fn bad_headers_are_errors() {
    assert!(matches!(text::open(Cursor::new(b"".to_vec())), Err(HeaderError::Empty)));
    assert!(matches!(text::open(Cursor::new(b"hello world\n1 2\n".to_vec())), Err(HeaderError::NoKnownField(_))));
    assert!(matches!(text::open(Cursor::new(b"srcaddr srcaddr\n".to_vec())), Err(HeaderError::Duplicate("srcaddr"))));
    assert!(matches!(
        text::open(Cursor::new(gz("")[..5].to_vec())),
        Err(HeaderError::Read(_)) | Err(HeaderError::Empty)
    ));
}

/// Bad rows are located, carry their text, and the rest of the file is used.
#[test]
fn malformed_rows_are_counted_and_located() {
    let good = "2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 10 20 ACCEPT OK";
    let text = format!(
        "{DEFAULT}\n{good}\n\
         2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 10 20 ACCEPT\n\
         2 1 eni-1 10.0.0.999 10.0.0.2 1 2 6 1 1 10 20 ACCEPT OK\n\
         \n\
         2 1 eni-1 10.0.0.1 10.0.0.2 70000 2 6 1 1 10 20 ACCEPT OK\n\
         2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 10 20 MAYBE OK\n\
         2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 10 20 ACCEPT OK extra\n\
         {good}\r\n"
    );
    let (recs, errs, stats) = parse_all(&text);
    assert_eq!(recs.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 9]);
    let located: Vec<(u64, LineErrorKind)> = errs
        .into_iter()
        .map(|e| match e {
            ParseError::Line(l) => (l.line, l.kind),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        located,
        vec![
            (3, LineErrorKind::FieldCount { expected: 14, found: 13 }),
            (4, LineErrorKind::BadValue { field: "srcaddr", value: "10.0.0.999".into() }),
            (6, LineErrorKind::BadValue { field: "srcport", value: "70000".into() }),
            (7, LineErrorKind::BadValue { field: "action", value: "MAYBE".into() }),
            (8, LineErrorKind::FieldCount { expected: 14, found: 15 }),
        ]
    );
    assert_eq!((stats.malformed, stats.blank, stats.records), (5, 1, 2));
}

#[test]
fn a_bad_line_keeps_its_text_and_non_utf8_is_an_error() {
    let mut bytes = format!("{DEFAULT}\n").into_bytes();
    bytes.extend_from_slice(b"2 1 eni-\xff 10.0.0.1 10.0.0.2 1 2 6 1 1 10 20 ACCEPT OK\n");
    bytes.extend_from_slice(b"junk line\n");
    let reader = text::open(Cursor::new(bytes)).unwrap();
    let errs: Vec<LineError> = reader
        .filter_map(|r| match r {
            Err(ParseError::Line(l)) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(errs[0].kind, LineErrorKind::NotUtf8);
    assert_eq!(errs[1].text, "junk line");
    assert_eq!(errs[1].line, 3);
}

#[test]
fn an_overlong_line_is_skipped_with_bounded_memory() {
    let good = "2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 10 20 ACCEPT OK";
    let text = format!("{DEFAULT}\n{}\n{good}\n", "x".repeat(3 * MAX_LINE));
    let (recs, errs, _) = parse_all(&text);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].line, 3);
    assert!(matches!(&errs[0], ParseError::Line(LineError { line: 2, kind: LineErrorKind::TooLong, .. })));
}

fn sample_rows(n: usize) -> String {
    let mut s = format!("{DEFAULT}\n");
    for i in 0..n {
        s.push_str(&format!(
            "2 123456789010 eni-{:04} 10.0.{}.{} 10.1.0.1 {} 443 6 {} {} 1700000000 1700000060 ACCEPT OK\n",
            i % 50,
            i / 256 % 256,
            i % 256,
            1024 + i,
            i + 1,
            (i + 1) * 100
        ));
    }
    s
}

#[test]
fn gzip_is_detected_and_read() {
    let text = sample_rows(1000);
    let reader = text::open(Cursor::new(gz(&text))).unwrap();
    let recs: Vec<Record> = reader.map(Result::unwrap).collect();
    assert_eq!(recs.len(), 1000);
    assert_eq!(recs[999].packets, Some(1000));
    // Two gzip members concatenated read as one stream.
    let mut two = gz(&sample_rows(3));
    two.extend(gz("2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 10 20 ACCEPT OK\n"));
    assert_eq!(text::open(Cursor::new(two)).unwrap().count(), 4);
}

/// A gzip file cut anywhere: the rows before the cut are used, the cut is reported as damage
/// exactly once, nothing after it, and never a panic.
#[test]
fn truncated_gzip_at_every_cut() {
    let text = sample_rows(300);
    let full = gz(&text);
    let all: Vec<Record> = text::open(Cursor::new(full.clone())).unwrap().map(Result::unwrap).collect();
    for cut in 1..full.len() {
        let Ok(reader) = text::open(Cursor::new(full[..cut].to_vec())) else { continue };
        let mut recs = Vec::new();
        let mut damage = Vec::new();
        for r in reader {
            match r {
                Ok(rec) => recs.push(rec),
                Err(ParseError::Damaged { after_line, .. }) => damage.push(after_line),
                Err(other) => panic!("cut {cut}: {other}"),
            }
        }
        assert_eq!(damage.len(), 1, "cut at {cut} of {} must be reported", full.len());
        assert_eq!(recs[..], all[..recs.len()], "cut at {cut}: rows before the cut, unchanged");
        assert_eq!(damage[0], 1 + recs.len() as u64, "cut at {cut}: damage after the last whole row");
    }
}

#[test]
fn corrupt_gzip_is_damage() {
    let mut bytes = gz(&sample_rows(2000));
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let reader = text::open(Cursor::new(bytes)).unwrap();
    let results: Vec<_> = reader.collect();
    assert!(matches!(results.last(), Some(Err(ParseError::Damaged { .. }))));
}

#[test]
fn parquet_rows_map_by_column_name() {
    let header = [
        "version",
        "account-id",
        "srcaddr",
        "dstaddr",
        "srcport",
        "dstport",
        "protocol",
        "packets",
        "bytes",
        "start",
        "end",
        "action",
        "log-status",
        "new-thing",
        "pkt-srcaddr",
    ];
    let rows: Vec<Vec<&str>> = vec![
        vec![
            "5",
            "123456789010",
            "172.31.16.139",
            "172.31.16.21",
            "20641",
            "22",
            "6",
            "20",
            "4249",
            "1418530010",
            "1418530070",
            "ACCEPT",
            "OK",
            "x",
            "-",
        ],
        vec![
            "5",
            "123456789010",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "1431280876",
            "1431280934",
            "-",
            "NODATA",
            "-",
            "-",
        ],
        vec![
            "5",
            "123456789010",
            "2001:db8::1",
            "2001:db8::2",
            "1",
            "2",
            "6",
            "1",
            "1",
            "1",
            "2",
            "REJECT",
            "OK",
            "y",
            "2001:db8::9",
        ],
        vec!["5", "123456789010", "10.0.0.1", "10.0.0.2", "1", "2", "6", "1", "1", "1", "2", "BOGUS", "OK", "y", "-"],
    ];
    let bytes = write_parquet(Vec::new(), &header, &rows).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.parquet");
    std::fs::write(&path, bytes).unwrap();
    let mut reader = ParquetReader::open(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(reader.header().unknown, vec!["new_thing".to_string()]);
    let results: Vec<_> = (&mut reader).collect();
    let r0 = results[0].as_ref().unwrap();
    assert_eq!((r0.line, r0.version, r0.srcaddr, r0.dstport), (2, Some(5), ip("172.31.16.139"), Some(22)));
    assert_eq!(r0.account_id.as_deref(), Some("123456789010"));
    assert_eq!((r0.action, r0.log_status), (Some(Action::Accept), Some(LogStatus::Ok)));
    let r1 = results[1].as_ref().unwrap();
    assert_eq!((r1.log_status, r1.srcaddr, r1.packets), (Some(LogStatus::Nodata), None, None));
    let r2 = results[2].as_ref().unwrap();
    assert_eq!(r2.end_address(End::Src), Some(("2001:db8::9".parse().unwrap(), AddressField::Packet)));
    assert!(matches!(&results[3], Err(ParseError::Line(LineError { line: 5, .. }))));
    assert_eq!((reader.stats().records, reader.stats().malformed, reader.stats().nodata), (3, 1, 1));
}

#[test]
fn text_and_parquet_agree() {
    let text = sample_rows(500);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(' ').collect()).collect();
    let from_text: Vec<Record> =
        text::open(Cursor::new(write_text(Vec::new(), &header, &rows).unwrap())).unwrap().map(Result::unwrap).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.parquet");
    std::fs::write(&path, write_parquet(Vec::new(), &header, &rows).unwrap()).unwrap();
    let from_parquet: Vec<Record> =
        ParquetReader::open(std::fs::File::open(&path).unwrap()).unwrap().map(Result::unwrap).collect();
    assert_eq!(from_text, from_parquet);
}

#[test]
fn not_parquet_is_a_header_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.parquet");
    std::fs::write(&path, b"this is not parquet at all").unwrap();
    assert!(matches!(ParquetReader::open(std::fs::File::open(&path).unwrap()), Err(HeaderError::Read(_))));
}
