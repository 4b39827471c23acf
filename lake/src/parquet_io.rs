//! Rows to Parquet bytes and back, with arrow-rs (`parquet`'s `ArrowWriter` and record batch
//! reader). A data file is one row group (a file holds at most `max_rows_per_file` rows), so a
//! reader's row group statistics describe the whole file.

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression as Codec, GzipLevel};
use parquet::file::properties::WriterProperties;

use crate::config::Compression;
use crate::row::LakeRow;

/// Encodes checked rows as one Parquet file (one row group).
///
/// # Errors
/// The Arrow or Parquet error, as text.
pub(crate) fn encode<R: LakeRow>(rows: &[&R], compression: Compression) -> Result<Vec<u8>, String> {
    let batch = R::to_batch(rows).map_err(|e| e.to_string())?;
    let codec = match compression {
        Compression::Snappy => Codec::SNAPPY,
        Compression::Gzip => Codec::GZIP(GzipLevel::default()),
        Compression::None => Codec::UNCOMPRESSED,
    };
    let props = WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(Some(rows.len().max(1)))
        .set_created_by(format!("flowmap-lake {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), R::schema(), Some(props)).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.into_inner().map_err(|e| e.to_string())
}

/// The keys of the rows of a data file (reads the key columns only).
///
/// # Errors
/// Not Parquet, or key columns missing or of another type.
pub(crate) fn keys<R: LakeRow>(bytes: Bytes) -> Result<Vec<R::Key>, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), R::KEY_COLUMNS.iter().copied());
    let reader = builder.with_projection(mask).build().map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        keys.extend(R::keys(&batch).map_err(|e| e.to_string())?);
    }
    Ok(keys)
}

/// Every row of a data file.
///
/// # Errors
/// Not Parquet, or columns missing or of another type.
pub(crate) fn rows<R: LakeRow>(bytes: Bytes) -> Result<Vec<R>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        rows.extend(R::from_batch(&batch).map_err(|e| e.to_string())?);
    }
    Ok(rows)
}
