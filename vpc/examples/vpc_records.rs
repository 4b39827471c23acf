//! The VPC output schema across languages (used by `tests/python/test_vpc_schema.py`):
//!
//! - `vpc_records encode FILE --bucket B --key K --etag E`: parses a flow log file (text, gzip or
//!   not; or Parquet when FILE ends in `.parquet`) and writes one `flowmap.v1.VpcFlowRecord` per
//!   row to stdout, each preceded by its length as a Protobuf varint (ends unattributed).
//! - `vpc_records decode`: reads such a stream from stdin and prints one JSON line per record
//!   (`decode_vpc_record`, version checked), so that records written elsewhere are read by
//!   flowmap's own types.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flowmap_schema::{decode_vpc_record, encode_vpc_record, ip_from_bytes};
use flowmap_vpc::output::to_proto;
use flowmap_vpc::{FileInfo, ObjectId, Record};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Encode {
        file: PathBuf,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        etag: String,
    },
    Decode,
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Encode { file, bucket, key, etag } => {
            let info = FileInfo::new(ObjectId { bucket, key, etag }, std::fs::metadata(&file)?.len());
            let records: Vec<Record> = if file.extension().is_some_and(|e| e == "parquet") {
                flowmap_vpc::parse::ParquetReader::open(std::fs::File::open(&file)?)?.filter_map(Result::ok).collect()
            } else {
                flowmap_vpc::parse::text::open(std::fs::File::open(&file)?)?.filter_map(Result::ok).collect()
            };
            let mut out = Vec::new();
            for r in &records {
                let bytes = encode_vpc_record(&to_proto(&info, r));
                varint(bytes.len() as u64, &mut out);
                out.extend_from_slice(&bytes);
            }
            std::io::stdout().write_all(&out)?;
        }
        Cmd::Decode => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input)?;
            let mut buf = input.as_slice();
            while !buf.is_empty() {
                let len = prost::encoding::decode_varint(&mut buf).context("length")? as usize;
                anyhow::ensure!(len <= buf.len(), "record cut short");
                let r = decode_vpc_record(&buf[..len])?;
                buf = &buf[len..];
                let ip = |b: &[u8]| ip_from_bytes(b).map(|a| a.to_string());
                let end = |e: &Option<flowmap_schema::VpcEnd>| {
                    e.as_ref().map(|e| {
                        serde_json::json!({
                            "ip": ip(&e.ip), "address_field": e.address_field, "workload": e.workload,
                            "evidence": e.evidence, "reason": e.reason, "vpc_reason": e.vpc_reason,
                        })
                    })
                };
                let line = serde_json::json!({
                    "record_id": r.record_id, "bucket": r.bucket, "key": r.key, "etag": r.etag, "line": r.line,
                    "version": r.version, "srcaddr": ip(&r.srcaddr), "dstaddr": ip(&r.dstaddr),
                    "srcport": r.srcport, "dstport": r.dstport, "protocol": r.protocol, "packets": r.packets,
                    "bytes": r.bytes, "start_s": r.start_s, "end_s": r.end_s, "action": r.action,
                    "log_status": r.log_status, "tcp_flags": r.tcp_flags, "pkt_srcaddr": ip(&r.pkt_srcaddr),
                    "pkt_dstaddr": ip(&r.pkt_dstaddr), "traffic_path": r.traffic_path,
                    "flow_direction": r.flow_direction, "src": end(&r.src), "dst": end(&r.dst),
                });
                println!("{line}");
            }
        }
    }
    Ok(())
}
