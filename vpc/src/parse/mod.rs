//! Parsing VPC flow log files: the text format (plain or gzip, one header line naming the
//! fields) and the Parquet delivery format, into [`Record`]s.
//!
//! Fields are mapped by the header's names, never by position: a custom format chooses its
//! fields and their order, and the file's first line (text) or its schema (Parquet) names them.
//! Names are matched with `-` and `_` alike (the text format writes `log-status`, Parquet
//! `log_status`). A field flowmap does not know is ignored and reported
//! ([`Header::unknown`]), never fatal: AWS adds fields in new format versions.
//!
//! A row that cannot be read (wrong number of fields, a value that does not parse) is a
//! [`LineError`] with its line number and text: counted, handed on for dead-lettering, and the
//! rest of the file is used. A file that ends early (a truncated or corrupt gzip stream) yields
//! the rows before the damage and then one [`ParseError::Damaged`]: never a panic, never silent.
//!
//! Memory does not grow with the file: the text reader holds one line and the decompressor's
//! window; the Parquet reader one row group.
//!
//! # Layout
//! - this module: [`Field`], [`Header`], [`LineError`], [`ParseError`], [`ParseStats`], the
//!   value parsers shared by both formats.
//! - [`text`]: [`TextReader`] over any `Read` (gzip detected by its magic bytes).
//! - [`parquet`]: [`ParquetReader`] over a Parquet file.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::record::{Action, FlowDirection, LogStatus, Record, TrafficType};

pub mod parquet;
pub mod text;

#[cfg(test)]
mod tests;

pub use self::parquet::ParquetReader;
pub use text::TextReader;

/// The fields flowmap knows (versions 2 to 8 of the format). Fields it knows but does not keep
/// (for example the ECS fields of version 7) are [`Field::Ignored`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // named after the flow log's fields
pub enum Field {
    Version,
    AccountId,
    InterfaceId,
    Srcaddr,
    Dstaddr,
    Srcport,
    Dstport,
    Protocol,
    Packets,
    Bytes,
    Start,
    End,
    Action,
    LogStatus,
    VpcId,
    SubnetId,
    InstanceId,
    TcpFlags,
    Type,
    PktSrcaddr,
    PktDstaddr,
    Region,
    AzId,
    SublocationType,
    SublocationId,
    PktSrcAwsService,
    PktDstAwsService,
    FlowDirection,
    TrafficPath,
    /// A field of the format that flowmap does not keep, or does not know.
    Ignored,
}

impl Field {
    /// The field of a header name (`log-status` and `log_status` alike); `None` for a name
    /// flowmap does not know.
    pub fn from_name(name: &str) -> Option<Field> {
        let name = name.trim_start_matches("${").trim_end_matches('}');
        let mut buf = [0u8; 32];
        if name.len() > buf.len() {
            return None;
        }
        for (b, c) in buf.iter_mut().zip(name.bytes()) {
            *b = if c == b'_' { b'-' } else { c.to_ascii_lowercase() };
        }
        let norm = std::str::from_utf8(&buf[..name.len()]).ok()?;
        Some(match norm {
            "version" => Field::Version,
            "account-id" => Field::AccountId,
            "interface-id" => Field::InterfaceId,
            "srcaddr" => Field::Srcaddr,
            "dstaddr" => Field::Dstaddr,
            "srcport" => Field::Srcport,
            "dstport" => Field::Dstport,
            "protocol" => Field::Protocol,
            "packets" => Field::Packets,
            "bytes" => Field::Bytes,
            "start" => Field::Start,
            "end" => Field::End,
            "action" => Field::Action,
            "log-status" => Field::LogStatus,
            "vpc-id" => Field::VpcId,
            "subnet-id" => Field::SubnetId,
            "instance-id" => Field::InstanceId,
            "tcp-flags" => Field::TcpFlags,
            "type" => Field::Type,
            "pkt-srcaddr" => Field::PktSrcaddr,
            "pkt-dstaddr" => Field::PktDstaddr,
            "region" => Field::Region,
            "az-id" => Field::AzId,
            "sublocation-type" => Field::SublocationType,
            "sublocation-id" => Field::SublocationId,
            "pkt-src-aws-service" => Field::PktSrcAwsService,
            "pkt-dst-aws-service" => Field::PktDstAwsService,
            "flow-direction" => Field::FlowDirection,
            "traffic-path" => Field::TrafficPath,
            // Known fields of later versions that flowmap does not keep.
            "ecs-cluster-arn"
            | "ecs-cluster-name"
            | "ecs-container-instance-arn"
            | "ecs-container-instance-id"
            | "ecs-container-id"
            | "ecs-second-container-id"
            | "ecs-service-name"
            | "ecs-task-definition-arn"
            | "ecs-task-arn"
            | "ecs-task-id"
            | "reject-reason"
            | "resource-id"
            | "encryption-status" => Field::Ignored,
            _ => return None,
        })
    }

    /// The field's name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            Field::Version => "version",
            Field::AccountId => "account-id",
            Field::InterfaceId => "interface-id",
            Field::Srcaddr => "srcaddr",
            Field::Dstaddr => "dstaddr",
            Field::Srcport => "srcport",
            Field::Dstport => "dstport",
            Field::Protocol => "protocol",
            Field::Packets => "packets",
            Field::Bytes => "bytes",
            Field::Start => "start",
            Field::End => "end",
            Field::Action => "action",
            Field::LogStatus => "log-status",
            Field::VpcId => "vpc-id",
            Field::SubnetId => "subnet-id",
            Field::InstanceId => "instance-id",
            Field::TcpFlags => "tcp-flags",
            Field::Type => "type",
            Field::PktSrcaddr => "pkt-srcaddr",
            Field::PktDstaddr => "pkt-dstaddr",
            Field::Region => "region",
            Field::AzId => "az-id",
            Field::SublocationType => "sublocation-type",
            Field::SublocationId => "sublocation-id",
            Field::PktSrcAwsService => "pkt-src-aws-service",
            Field::PktDstAwsService => "pkt-dst-aws-service",
            Field::FlowDirection => "flow-direction",
            Field::TrafficPath => "traffic-path",
            Field::Ignored => "(ignored)",
        }
    }
}

/// The fields of one file, in its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// One entry per column: the field, [`Field::Ignored`] for a column flowmap does not keep.
    pub columns: Vec<Field>,
    /// Names of the columns flowmap does not know (ignored), in file order.
    pub unknown: Vec<String>,
}

/// Why a file has no usable header.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The file is empty (no header line).
    #[error("empty file: no header line")]
    Empty,
    /// The header names no field flowmap knows: not a flow log.
    #[error("the header names no flow log field: {0:?}")]
    NoKnownField(String),
    /// A field is named twice.
    #[error("the header names {0} twice")]
    Duplicate(&'static str),
    /// Reading the header failed (I/O, a damaged gzip stream, not UTF-8, not Parquet).
    #[error("reading the header: {0}")]
    Read(String),
}

impl Header {
    /// Builds the header from the column names.
    ///
    /// # Errors
    /// [`HeaderError::NoKnownField`] when no name is a known field, [`HeaderError::Duplicate`]
    /// when a field is named twice.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Header, HeaderError> {
        let mut columns = Vec::new();
        let mut unknown = Vec::new();
        let mut all = Vec::new();
        for name in names {
            all.push(name);
            match Field::from_name(name) {
                Some(Field::Ignored) => columns.push(Field::Ignored),
                Some(field) => {
                    if columns.contains(&field) {
                        return Err(HeaderError::Duplicate(field.name()));
                    }
                    columns.push(field);
                }
                None => {
                    unknown.push(name.to_string());
                    columns.push(Field::Ignored);
                }
            }
        }
        if columns.iter().all(|f| *f == Field::Ignored) {
            return Err(HeaderError::NoKnownField(all.join(" ")));
        }
        Ok(Header { columns, unknown })
    }
}

/// Why one row could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineErrorKind {
    /// The row has a different number of fields than the header.
    #[error("{found} fields, the header names {expected}")]
    FieldCount {
        /// Fields in the header.
        expected: usize,
        /// Fields in the row.
        found: usize,
    },
    /// A value does not parse as its field's type.
    #[error("bad {field} {value:?}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value (at most 64 bytes of it).
        value: String,
    },
    /// The row is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The row is longer than [`MAX_LINE`] bytes.
    #[error("longer than {MAX_LINE} bytes")]
    TooLong,
}

/// The longest row read (a real row is under 1 KiB; a longer one is damage, and reading it
/// whole would let one bad file grow memory without bound).
pub const MAX_LINE: usize = 64 * 1024;

/// A row that could not be read: where, why, and its text (at most [`MAX_DEAD_TEXT`] bytes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct LineError {
    /// Its line number (see [`Record::line`]).
    pub line: u64,
    /// Why.
    pub kind: LineErrorKind,
    /// The row's text, cut to [`MAX_DEAD_TEXT`] bytes (lossy UTF-8).
    pub text: String,
}

/// How much of a bad row's text is kept for its dead letter.
pub const MAX_DEAD_TEXT: usize = 1024;

/// What a reader yields instead of a record.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// One bad row; reading goes on.
    #[error(transparent)]
    Line(#[from] LineError),
    /// The file ends in damage (a truncated or corrupt gzip stream, an I/O error, a bad Parquet
    /// page) after `after_line`: the rows before it were yielded, nothing after. Reading stops.
    #[error("file damaged after line {after_line}: {reason}")]
    Damaged {
        /// The last line read whole (see [`Record::line`]).
        after_line: u64,
        /// True when the stream simply stopped early (a truncated upload or download).
        truncated: bool,
        /// What the decoder said.
        reason: String,
    },
}

/// Counts of one file's rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ParseStats {
    /// Rows read as records.
    pub records: u64,
    /// Records with `log-status` OK.
    pub ok: u64,
    /// Records with `log-status` NODATA.
    pub nodata: u64,
    /// Records with `log-status` SKIPDATA.
    pub skipdata: u64,
    /// Records of a format without `log-status`.
    pub no_status: u64,
    /// Rows that could not be read.
    pub malformed: u64,
    /// Empty lines (skipped, counted).
    pub blank: u64,
    /// The file ended in damage.
    pub damaged: bool,
}

impl ParseStats {
    pub(crate) fn count(&mut self, record: &Record) {
        self.records += 1;
        match record.log_status {
            Some(LogStatus::Ok) => self.ok += 1,
            Some(LogStatus::Nodata) => self.nodata += 1,
            Some(LogStatus::Skipdata) => self.skipdata += 1,
            None => self.no_status += 1,
        }
    }
}

/// Shares repeated strings within a file. Bounded: past [`Interner::CAP`] distinct strings it
/// starts over, so a file of unique values cannot grow it.
#[derive(Default)]
pub(crate) struct Interner {
    map: HashMap<Box<str>, Arc<str>>,
}

impl Interner {
    const CAP: usize = 16 * 1024;

    pub(crate) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.map.get(s) {
            return a.clone();
        }
        if self.map.len() >= Self::CAP {
            self.map.clear();
        }
        let a: Arc<str> = Arc::from(s);
        self.map.insert(Box::from(s), a.clone());
        a
    }
}

fn bad(field: Field, value: &str) -> LineErrorKind {
    let mut end = value.len().min(64);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    LineErrorKind::BadValue { field: field.name(), value: value[..end].to_string() }
}

fn num<T: std::str::FromStr>(field: Field, v: &str) -> Result<T, LineErrorKind> {
    v.parse().map_err(|_| bad(field, v))
}

fn ip(field: Field, v: &str) -> Result<IpAddr, LineErrorKind> {
    v.parse().map_err(|_| bad(field, v))
}

/// Sets `field` of `record` from its text value; `-` leaves it `None`.
pub(crate) fn set_text(
    record: &mut Record,
    field: Field,
    v: &str,
    strings: &mut Interner,
) -> Result<(), LineErrorKind> {
    if v == "-" {
        return Ok(());
    }
    match field {
        Field::Version => record.version = Some(num(field, v)?),
        Field::AccountId => record.account_id = Some(strings.get(v)),
        Field::InterfaceId => record.interface_id = Some(strings.get(v)),
        Field::Srcaddr => record.srcaddr = Some(ip(field, v)?),
        Field::Dstaddr => record.dstaddr = Some(ip(field, v)?),
        Field::Srcport => record.srcport = Some(num(field, v)?),
        Field::Dstport => record.dstport = Some(num(field, v)?),
        Field::Protocol => record.protocol = Some(num(field, v)?),
        Field::Packets => record.packets = Some(num(field, v)?),
        Field::Bytes => record.bytes = Some(num(field, v)?),
        Field::Start => record.start = Some(num(field, v)?),
        Field::End => record.end = Some(num(field, v)?),
        Field::Action => {
            record.action = Some(match v {
                "ACCEPT" => Action::Accept,
                "REJECT" => Action::Reject,
                _ => return Err(bad(field, v)),
            })
        }
        Field::LogStatus => {
            record.log_status = Some(match v {
                "OK" => LogStatus::Ok,
                "NODATA" => LogStatus::Nodata,
                "SKIPDATA" => LogStatus::Skipdata,
                _ => return Err(bad(field, v)),
            })
        }
        Field::VpcId => record.vpc_id = Some(strings.get(v)),
        Field::SubnetId => record.subnet_id = Some(strings.get(v)),
        Field::InstanceId => record.instance_id = Some(strings.get(v)),
        Field::TcpFlags => record.tcp_flags = Some(num(field, v)?),
        Field::Type => {
            record.traffic_type = Some(match v {
                "IPv4" => TrafficType::IPv4,
                "IPv6" => TrafficType::IPv6,
                "EFA" => TrafficType::Efa,
                _ => return Err(bad(field, v)),
            })
        }
        Field::PktSrcaddr => record.pkt_srcaddr = Some(ip(field, v)?),
        Field::PktDstaddr => record.pkt_dstaddr = Some(ip(field, v)?),
        Field::Region => record.region = Some(strings.get(v)),
        Field::AzId => record.az_id = Some(strings.get(v)),
        Field::SublocationType => record.sublocation_type = Some(strings.get(v)),
        Field::SublocationId => record.sublocation_id = Some(strings.get(v)),
        Field::PktSrcAwsService => record.pkt_src_aws_service = Some(strings.get(v)),
        Field::PktDstAwsService => record.pkt_dst_aws_service = Some(strings.get(v)),
        Field::FlowDirection => {
            record.flow_direction = Some(match v {
                "ingress" => FlowDirection::Ingress,
                "egress" => FlowDirection::Egress,
                _ => return Err(bad(field, v)),
            })
        }
        Field::TrafficPath => record.traffic_path = Some(num(field, v)?),
        Field::Ignored => {}
    }
    Ok(())
}

/// Sets a numeric `field` of `record` from an integer (Parquet's integer columns). A field that
/// is text in the format takes the number's decimal form (an account id stored as a number).
pub(crate) fn set_int(record: &mut Record, field: Field, v: i64, strings: &mut Interner) -> Result<(), LineErrorKind> {
    fn conv<T: TryFrom<i64>>(field: Field, v: i64) -> Result<T, LineErrorKind> {
        T::try_from(v).map_err(|_| bad(field, &v.to_string()))
    }
    match field {
        Field::Version => record.version = Some(conv(field, v)?),
        Field::Srcport => record.srcport = Some(conv(field, v)?),
        Field::Dstport => record.dstport = Some(conv(field, v)?),
        Field::Protocol => record.protocol = Some(conv(field, v)?),
        Field::Packets => record.packets = Some(conv(field, v)?),
        Field::Bytes => record.bytes = Some(conv(field, v)?),
        Field::Start => record.start = Some(conv(field, v)?),
        Field::End => record.end = Some(conv(field, v)?),
        Field::TcpFlags => record.tcp_flags = Some(conv(field, v)?),
        Field::TrafficPath => record.traffic_path = Some(conv(field, v)?),
        _ => return set_text(record, field, &v.to_string(), strings),
    }
    Ok(())
}

/// `text` cut to [`MAX_DEAD_TEXT`] bytes, lossy UTF-8, without the line end.
pub(crate) fn dead_text(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(MAX_DEAD_TEXT)];
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}
