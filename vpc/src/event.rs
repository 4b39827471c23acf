//! S3 event notifications, as SQS message bodies: a pure function from the body to the objects
//! it announces.
//!
//! The body is S3's event JSON (`{"Records": [...]}`, possibly several records per message),
//! or the same wrapped in an SNS envelope (`{"Type": "Notification", "Message": "<json>"}`,
//! when the notifications go through a topic), or `s3:TestEvent`, which S3 sends once when
//! notifications are configured and which is ignored. Object keys arrive URL-encoded the way
//! HTML forms encode them (`+` for a space, `%xx` for other bytes) and are decoded here. Records
//! other than `ObjectCreated:*` (a deletion, a restore) are counted by name and ignored.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use serde::Deserialize;

/// An object an event announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// The bucket.
    pub bucket: String,
    /// The key, decoded.
    pub key: String,
    /// Size in bytes (0 when the event does not say).
    pub size: u64,
    /// The ETag without quotes, when the event gives it.
    pub etag: Option<String>,
}

/// What a message body announces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    /// Objects created, in record order.
    pub objects: Vec<ObjectRef>,
    /// The body is `s3:TestEvent`.
    pub test_event: bool,
    /// Records of other event names, counted by name.
    pub ignored: BTreeMap<String, u64>,
}

/// Why a message body is not an S3 event notification.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or not of the expected shape.
    #[error("not an S3 event notification: {0}")]
    Shape(String),
    /// A record's key does not decode to UTF-8.
    #[error("object key {0:?} does not decode to UTF-8")]
    Key(String),
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "Records")]
    records: Option<Vec<EventRecord>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

#[derive(Deserialize)]
struct EventRecord {
    #[serde(rename = "eventName")]
    event_name: String,
    s3: Option<S3Entity>,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: BucketEntity,
    object: ObjectEntity,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: String,
}

#[derive(Deserialize)]
struct ObjectEntity {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
}

/// Decodes an S3 event key: `+` is a space, `%xx` a byte, and the bytes are UTF-8.
///
/// # Errors
/// [`EventError::Key`] when the bytes are not UTF-8.
pub fn decode_key(encoded: &str) -> Result<String, EventError> {
    // `+` first: a literal plus arrives as %2B, which must stay a plus.
    let spaced = encoded.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().map(|k| k.into_owned()).map_err(|_| EventError::Key(encoded.to_string()))
}

/// Reads one SQS message body.
///
/// # Errors
/// [`EventError`] when the body is not an S3 event notification (or an SNS envelope of one), or
/// a key does not decode.
pub fn parse_notification(body: &str) -> Result<Notification, EventError> {
    let parsed: Body = serde_json::from_str(body).map_err(|e| EventError::Shape(e.to_string()))?;
    if parsed.kind.as_deref() == Some("Notification") {
        if let Some(inner) = parsed.message {
            return parse_notification(&inner);
        }
    }
    if parsed.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Notification { test_event: true, ..Notification::default() });
    }
    let records = parsed.records.ok_or_else(|| EventError::Shape("no \"Records\"".into()))?;
    let mut out = Notification::default();
    for record in records {
        if !record.event_name.starts_with("ObjectCreated:") {
            *out.ignored.entry(record.event_name).or_default() += 1;
            continue;
        }
        let s3 = record.s3.ok_or_else(|| EventError::Shape("an ObjectCreated record without \"s3\"".into()))?;
        out.objects.push(ObjectRef {
            bucket: s3.bucket.name,
            key: decode_key(&s3.object.key)?,
            size: s3.object.size.unwrap_or(0),
            etag: s3.object.etag.map(|e| e.trim_matches('"').to_string()).filter(|e| !e.is_empty()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, bucket: &str, key: &str, size: u64, etag: &str) -> String {
        format!(
            r#"{{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
               "eventTime":"2024-05-01T00:00:00.000Z","eventName":"{name}",
               "s3":{{"s3SchemaVersion":"1.0","configurationId":"c","bucket":{{"name":"{bucket}",
               "arn":"arn:aws:s3:::{bucket}"}},"object":{{"key":"{key}","size":{size},"eTag":"{etag}",
               "sequencer":"0055AED6DCD90281E5"}}}}}}"#
        )
    }

    #[test]
    fn one_object() {
        let body = format!(r#"{{"Records":[{}]}}"#, record("ObjectCreated:Put", "logs", "a/b.log.gz", 10, "abc"));
        let n = parse_notification(&body).unwrap();
        assert_eq!(
            n.objects,
            vec![ObjectRef { bucket: "logs".into(), key: "a/b.log.gz".into(), size: 10, etag: Some("abc".into()) }]
        );
        assert!(!n.test_event);
    }

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(decode_key("a+b%2Bc%2Fd%20e").unwrap(), "a b+c/d e");
        assert_eq!(decode_key("AWSLogs/1/vpcflowlogs/x%3Dy.log.gz").unwrap(), "AWSLogs/1/vpcflowlogs/x=y.log.gz");
        assert_eq!(decode_key("caf%C3%A9").unwrap(), "café");
        assert!(matches!(decode_key("bad%FF"), Err(EventError::Key(_))));
        // A stray % that is not an escape stays as it is.
        assert_eq!(decode_key("100%").unwrap(), "100%");
    }

    #[test]
    fn several_records_and_other_events() {
        let body = format!(
            r#"{{"Records":[{},{},{},{}]}}"#,
            record("ObjectCreated:Put", "logs", "one+file.gz", 1, "\\\"e1\\\""),
            record("ObjectRemoved:Delete", "logs", "gone.gz", 0, ""),
            record("ObjectCreated:CompleteMultipartUpload", "logs", "two.gz", 2, "e2-3"),
            record("ObjectRestore:Completed", "logs", "old.gz", 0, ""),
        );
        let n = parse_notification(&body).unwrap();
        let keys: Vec<_> = n.objects.iter().map(|o| (o.key.as_str(), o.etag.as_deref())).collect();
        assert_eq!(keys, vec![("one file.gz", Some("e1")), ("two.gz", Some("e2-3"))]);
        assert_eq!(n.ignored.get("ObjectRemoved:Delete"), Some(&1));
        assert_eq!(n.ignored.get("ObjectRestore:Completed"), Some(&1));
    }

    #[test]
    fn test_event_is_recognised() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-05-01T00:00:00.000Z",
                       "Bucket":"logs","RequestId":"r","HostId":"h"}"#;
        let n = parse_notification(body).unwrap();
        assert!(n.test_event);
        assert!(n.objects.is_empty());
    }

    #[test]
    fn sns_envelope_is_unwrapped() {
        let inner = format!(r#"{{"Records":[{}]}}"#, record("ObjectCreated:Put", "logs", "k.gz", 3, "e"));
        let body = serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": inner}).to_string();
        assert_eq!(parse_notification(&body).unwrap().objects.len(), 1);
    }

    #[test]
    fn bad_bodies_are_errors() {
        for body in ["", "not json", "{}", r#"{"Records": 3}"#, r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#] {
            assert!(parse_notification(body).is_err(), "{body:?}");
        }
        // An empty record list is a valid, empty notification.
        assert_eq!(parse_notification(r#"{"Records":[]}"#).unwrap(), Notification::default());
    }
}
