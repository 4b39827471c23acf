//! The text format: a header line naming the fields, then one row per line, fields separated
//! by spaces. Gzip-compressed or plain, detected by the gzip magic bytes, so a reader needs no
//! file name. Several gzip members in one file (concatenated uploads) are read as one stream.

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::MultiGzDecoder;

use super::{dead_text, set_text, Header, HeaderError, Interner, LineError, LineErrorKind, ParseError, ParseStats};
use crate::record::Record;

/// Buffer size of the reader over the (decompressed) text.
const BUF: usize = 256 * 1024;

/// Streams the rows of one text flow log file. Yields `Ok(record)` per row, `Err(Line)` per bad
/// row (and goes on), and at most one final `Err(Damaged)`.
pub struct TextReader<R> {
    reader: R,
    header: Header,
    strings: Interner,
    line: u64,
    buf: Vec<u8>,
    stats: ParseStats,
    done: bool,
}

/// A reader of any text flow log stream: gzip or plain.
pub type AnyTextReader<'a> = TextReader<Box<dyn BufRead + Send + 'a>>;

/// Opens a text flow log stream, gzip-compressed or not (detected by the first two bytes), and
/// reads its header.
///
/// # Errors
/// [`HeaderError`] when the stream is empty, damaged before the header ends, or has no usable
/// header.
pub fn open<'a>(input: impl Read + Send + 'a) -> Result<AnyTextReader<'a>, HeaderError> {
    let mut raw = BufReader::with_capacity(BUF, input);
    let head = raw.fill_buf().map_err(|e| HeaderError::Read(e.to_string()))?;
    let reader: Box<dyn BufRead + Send + 'a> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(BufReader::with_capacity(BUF, MultiGzDecoder::new(raw)))
    } else {
        Box::new(raw)
    };
    TextReader::new(reader)
}

impl<R: BufRead> TextReader<R> {
    /// Reads the header line of an already decompressed stream.
    ///
    /// # Errors
    /// [`HeaderError`] as for [`open`].
    pub fn new(mut reader: R) -> Result<Self, HeaderError> {
        let mut buf = Vec::new();
        let n = (&mut reader)
            .take(super::MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|e| HeaderError::Read(e.to_string()))?;
        if n == 0 {
            return Err(HeaderError::Empty);
        }
        let text = std::str::from_utf8(&buf).map_err(|_| HeaderError::Read("header is not UTF-8".into()))?;
        let header = Header::from_names(text.split_ascii_whitespace())?;
        Ok(TextReader {
            reader,
            header,
            strings: Interner::default(),
            line: 1,
            buf,
            stats: ParseStats::default(),
            done: false,
        })
    }

    /// The file's fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Counts so far (final once the iterator returned `None`).
    pub fn stats(&self) -> &ParseStats {
        &self.stats
    }

    /// Reads one line into `self.buf`; `Ok(false)` at the end. A line longer than
    /// [`super::MAX_LINE`] is read in full but only its start kept.
    fn read_line(&mut self) -> io::Result<bool> {
        self.buf.clear();
        let n = (&mut self.reader).take(super::MAX_LINE as u64).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(false);
        }
        if self.buf.last() != Some(&b'\n') && n == super::MAX_LINE {
            // Skip the rest of the overlong line, keeping memory bounded.
            loop {
                let chunk = self.reader.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.reader.consume(i + 1);
                        break;
                    }
                    None => {
                        let len = chunk.len();
                        self.reader.consume(len);
                    }
                }
            }
            self.buf.truncate(super::MAX_LINE + 1); // marks "too long" (no newline, > MAX_LINE)
            self.buf.push(0);
        }
        Ok(true)
    }

    fn parse_row(&mut self) -> Result<Record, LineErrorKind> {
        if self.buf.len() > super::MAX_LINE {
            return Err(LineErrorKind::TooLong);
        }
        let text = std::str::from_utf8(&self.buf).map_err(|_| LineErrorKind::NotUtf8)?;
        let mut record = Record { line: self.line, ..Record::default() };
        let columns = &self.header.columns;
        let mut values = text.split_ascii_whitespace();
        let mut found = 0;
        for (&field, value) in columns.iter().zip(&mut values) {
            found += 1;
            set_text(&mut record, field, value, &mut self.strings)?;
        }
        let extra = values.count();
        if found != columns.len() || extra != 0 {
            return Err(LineErrorKind::FieldCount { expected: columns.len(), found: found + extra });
        }
        Ok(record)
    }
}

impl<R: BufRead> Iterator for TextReader<R> {
    type Item = Result<Record, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let last_whole = self.line;
            match self.read_line() {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => {}
                Err(e) => {
                    // Bytes of a partial line before the damage are not a row.
                    self.done = true;
                    self.stats.damaged = true;
                    let truncated = e.kind() == io::ErrorKind::UnexpectedEof;
                    return Some(Err(ParseError::Damaged { after_line: last_whole, truncated, reason: e.to_string() }));
                }
            }
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                self.stats.blank += 1;
                continue;
            }
            return Some(match self.parse_row() {
                Ok(record) => {
                    self.stats.count(&record);
                    Ok(record)
                }
                Err(kind) => {
                    self.stats.malformed += 1;
                    Err(ParseError::Line(LineError { line: self.line, kind, text: dead_text(&self.buf) }))
                }
            });
        }
    }
}
