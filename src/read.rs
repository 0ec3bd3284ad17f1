//! Reading Parquet objects from any store: the footer first, then only the column chunks of
//! the projected columns, one row group at a time, decoded in record batches.
//!
//! A row group's projected chunks are fetched together (concurrently on S3), so memory is
//! bounded by one row group's projected columns per worker, whatever the object's size.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::reader::{ChunkReader, Length};

use crate::model::{FeatureKind, SignatureField};
use crate::storage::{Location, ObjectMeta, Uri};

/// How much of an object's end to fetch for its footer in one request.
const FOOTER_GUESS: u64 = 64 * 1024;

/// A Parquet object whose footer has been read.
#[derive(Debug, Clone)]
pub struct ParquetObject {
    pub loc: Location,
    pub meta: ObjectMeta,
    pub reader_meta: ArrowReaderMetadata,
}

/// Whether a listed key is a data file: `*.parquet`, and no path segment hidden by `_` or `.`
/// (Hive and Spark conventions: `_SUCCESS`, `_tmp.*`, `.crc`).
pub fn is_data_file(relative_key: &str) -> bool {
    relative_key.ends_with(".parquet")
        && relative_key
            .split('/')
            .all(|seg| !seg.starts_with('_') && !seg.starts_with('.'))
}

impl ParquetObject {
    /// Reads the footer (one ranged request for most files, two for very large footers).
    pub fn open(loc: Location, meta: ObjectMeta) -> Result<Self> {
        let uri = loc.uri();
        let size = meta.size;
        if size < 12 {
            bail!("{uri} is not a Parquet file ({size} bytes)");
        }
        let guess = size.min(FOOTER_GUESS);
        let tail = loc
            .store
            .get_ranges(&loc.key, std::slice::from_ref(&(size - guess..size)))?
            .remove(0);
        let n = tail.len();
        if &tail[n - 4..] != b"PAR1" {
            bail!("{uri} is not a Parquet file (no PAR1 magic at its end)");
        }
        let metadata_len =
            u32::from_le_bytes(tail[n - 8..n - 4].try_into().expect("4 bytes")) as u64;
        if metadata_len + 8 > size {
            bail!("{uri} has a corrupt Parquet footer");
        }
        let metadata = if metadata_len + 8 <= guess {
            ParquetMetaDataReader::decode_metadata(&tail[n - 8 - metadata_len as usize..n - 8])
        } else {
            let start = size - 8 - metadata_len;
            let buf = loc
                .store
                .get_ranges(&loc.key, std::slice::from_ref(&(start..size - 8)))?
                .remove(0);
            ParquetMetaDataReader::decode_metadata(&buf)
        }
        .with_context(|| format!("reading the Parquet footer of {uri}"))?;
        let reader_meta =
            ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
                .with_context(|| format!("reading the Arrow schema of {uri}"))?;
        Ok(Self {
            loc,
            meta,
            reader_meta,
        })
    }

    /// Reads the footers of many objects under one store, several at a time (on S3 each is a
    /// round trip), in the order given.
    pub fn open_all(store_of: &Location, metas: &[ObjectMeta]) -> Result<Vec<Self>> {
        const IN_FLIGHT: usize = 16;
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Result<Self>>>> =
            metas.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..IN_FLIGHT.min(metas.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(meta) = metas.get(i) else { break };
                    let loc = Location {
                        store: store_of.store.clone(),
                        key: meta.key.clone(),
                    };
                    *slots[i].lock().expect("slot lock") = Some(Self::open(loc, meta.clone()));
                });
            }
        });
        slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .expect("slot lock")
                    .expect("every slot is filled")
            })
            .collect()
    }

    pub fn uri(&self) -> Uri {
        self.loc.uri()
    }

    pub fn schema(&self) -> &SchemaRef {
        self.reader_meta.schema()
    }

    pub fn num_rows(&self) -> u64 {
        self.reader_meta
            .metadata()
            .file_metadata()
            .num_rows()
            .max(0) as u64
    }

    pub fn num_row_groups(&self) -> usize {
        self.reader_meta.metadata().num_row_groups()
    }

    /// Reads one row group, only `columns`, in batches of `batch_rows`.
    pub fn read_row_group(
        &self,
        row_group: usize,
        columns: &[String],
        batch_rows: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
        let uri = self.uri();
        let schema_descr = self.reader_meta.metadata().file_metadata().schema_descr();
        let mut roots = Vec::with_capacity(columns.len());
        for c in columns {
            roots.push(
                self.schema()
                    .index_of(c)
                    .with_context(|| format!("column '{c}' is missing from {uri}"))?,
            );
        }
        let rg = self.reader_meta.metadata().row_group(row_group);
        let ranges: Vec<Range<u64>> = (0..schema_descr.num_columns())
            .filter(|&leaf| roots.contains(&schema_descr.get_column_root_idx(leaf)))
            .map(|leaf| {
                let (start, len) = rg.column(leaf).byte_range();
                start..start + len
            })
            .collect();
        let pieces = self.loc.store.get_ranges(&self.loc.key, &ranges)?;
        let chunks = FetchedChunks {
            len: self.meta.size,
            pieces: ranges.iter().map(|r| r.start).zip(pieces).collect(),
        };
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, self.reader_meta.clone())
                .with_row_groups(vec![row_group])
                .with_projection(ProjectionMask::roots(schema_descr, roots))
                .with_batch_size(batch_rows)
                .build()
                .with_context(|| format!("reading row group {row_group} of {uri}"))?;
        Ok(reader.map(move |b| b.with_context(|| format!("decoding {uri}"))))
    }

    /// Reads the whole object (for training data, which is small enough to hold).
    pub fn read_all(&self, columns: &[String]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for rg in 0..self.num_row_groups() {
            for b in self.read_row_group(rg, columns, 65_536)? {
                out.push(b?);
            }
        }
        Ok(out)
    }
}

/// The byte ranges of one row group, fetched ahead, served to the Parquet decoder.
struct FetchedChunks {
    len: u64,
    pieces: Vec<(u64, Bytes)>,
}

impl FetchedChunks {
    fn piece(&self, start: u64) -> parquet::errors::Result<Bytes> {
        self.pieces
            .iter()
            .find(|(s, b)| *s <= start && start < s + b.len() as u64)
            .map(|(s, b)| b.slice((start - s) as usize..))
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!("byte {start} was not fetched"))
            })
    }
}

impl Length for FetchedChunks {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for FetchedChunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.piece(start)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let piece = self.piece(start)?;
        if piece.len() < length {
            return Err(parquet::errors::ParquetError::General(format!(
                "bytes {start}+{length} were not fetched"
            )));
        }
        Ok(piece.slice(..length))
    }
}

/// Checks an object's schema against the model signature and the passthrough columns.
/// Extra columns are fine; missing ones and types the model cannot take are errors naming the
/// column and the object.
pub fn check_schema(
    schema: &Schema,
    signature: &[SignatureField],
    passthrough: &[String],
    uri: &Uri,
) -> Result<()> {
    let mut problems = Vec::new();
    for f in signature {
        match schema.field_with_name(&f.name) {
            Err(_) => problems.push(format!(
                "column '{}' is missing (the model needs it)",
                f.name
            )),
            Ok(field) => {
                if FeatureKind::of(field.data_type()) != Some(f.kind) {
                    let expected = match f.kind {
                        FeatureKind::Numeric => {
                            "a number (int8..int64, uint8..uint32, float16..float64)"
                        }
                        FeatureKind::Categorical => "a string",
                    };
                    problems.push(format!(
                        "column '{}' has type {}, but the model expects {expected}",
                        f.name,
                        field.data_type()
                    ));
                }
            }
        }
    }
    for p in passthrough {
        if schema.field_with_name(p).is_err() {
            problems.push(format!("passthrough column '{p}' is missing"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "{uri} does not match the model signature: {}",
            problems.join("; ")
        )
    }
}

/// Lists the Parquet data files under a URI (a prefix), or the one object it names.
pub fn list_data_files(loc: &Location) -> Result<Vec<ObjectMeta>> {
    if loc.key.ends_with(".parquet") {
        if let Some(meta) = loc.store.head(&loc.key)? {
            return Ok(vec![meta]);
        }
    }
    let all = loc.store.list(&loc.key)?;
    Ok(all
        .into_iter()
        .filter(|o| is_data_file(loc.relative(&o.key)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_skip_hidden_and_markers() {
        assert!(is_data_file("part-0.parquet"));
        assert!(is_data_file("a/b/part-0.parquet"));
        assert!(!is_data_file("_SUCCESS"));
        assert!(!is_data_file("_tmp.part-0.parquet.123"));
        assert!(!is_data_file("_quarantine/part-0.parquet"));
        assert!(!is_data_file(".part-0.parquet.crc"));
        assert!(!is_data_file("part-0.json"));
    }
}
