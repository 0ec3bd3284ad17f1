//! Reading Parquet objects from any store: the footer first, then only the column chunks of
//! the projected columns, one row group at a time, decoded in record batches.
//!
//! A row group's projected chunks are fetched together (concurrently on S3), so memory is
//! bounded by one row group's projected columns per worker, whatever the object's size. On a
//! store behind a network, runs fetch row groups ahead of the workers decoding them
//! ([`FetchAhead`]), a bounded number of them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::basic::Encoding;
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::{
    ColumnChunkMetaData, FooterTail, ParquetMetaData, ParquetMetaDataReader,
};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;

use crate::schema::{FeatureKind, SignatureField};
use crate::storage::{Location, ObjectMeta, StorageError, Uri};

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
        if n as u64 != guess {
            bail!("{uri}: asked for its last {guess} bytes, got {n}");
        }
        // The parquet crate decodes the last 8 bytes (length and magic); the messages are ours,
        // naming the object and what is wrong with it.
        let footer = FooterTail::try_from(&tail[n - 8..]).map_err(|_| {
            anyhow!("{uri} is not a Parquet file, or is cut short (no PAR1 magic at its end)")
        })?;
        if footer.is_encrypted_footer() {
            bail!(
                "{uri} has an encrypted footer (PARE magic at its end), which nightshift cannot \
                 read"
            );
        }
        let metadata_len = footer.metadata_length() as u64;
        // The file starts with PAR1 too: 4 + footer + 4-byte length + 4 for the magic.
        if metadata_len + 12 > size {
            bail!(
                "{uri}: corrupt Parquet footer: its length field says {metadata_len} bytes, more \
                 than the {size}-byte object holds"
            );
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
        .map_err(one_line)
        .with_context(|| format!("reading the Parquet footer of {uri}"))?;
        if let Err(problem) = check_footer(&metadata, size, size - 8 - metadata_len) {
            bail!("{uri}: corrupt Parquet footer: {problem}");
        }
        let reader_meta =
            ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
                .map_err(one_line)
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

    /// Reads one row group, only `columns`, in batches of `batch_rows`: its column chunks are
    /// fetched ([`Self::fetch_row_group`]), then checked and decoded ([`Self::decode_row_group`]).
    pub fn read_row_group(
        &self,
        row_group: usize,
        columns: &[String],
        batch_rows: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
        let chunks = self.fetch_row_group(row_group, columns)?;
        self.decode_row_group(chunks, batch_rows)
    }

    /// Fetches the column chunks of one row group, only `columns` (concurrently on S3). Nothing
    /// is checked or decoded yet: that is [`Self::decode_row_group`], which may run on another
    /// thread, later.
    pub fn fetch_row_group(&self, row_group: usize, columns: &[String]) -> Result<RowGroupChunks> {
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
        let leaves: Vec<usize> = (0..schema_descr.num_columns())
            .filter(|&leaf| roots.contains(&schema_descr.get_column_root_idx(leaf)))
            .collect();
        let ranges: Vec<Range<u64>> = leaves
            .iter()
            .map(|&leaf| {
                let (start, len) = rg.column(leaf).byte_range();
                start..start + len
            })
            .collect();
        let pieces = self.loc.store.get_ranges(&self.loc.key, &ranges)?;
        Ok(RowGroupChunks {
            row_group,
            roots,
            leaves,
            ranges,
            pieces,
        })
    }

    /// Checks the pages of a row group's fetched column chunks and decodes them in batches of
    /// `batch_rows`.
    pub fn decode_row_group(
        &self,
        chunks: RowGroupChunks,
        batch_rows: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
        let uri = self.uri();
        let schema_descr = self.reader_meta.metadata().file_metadata().schema_descr();
        let RowGroupChunks {
            row_group,
            roots,
            leaves,
            ranges,
            pieces,
        } = chunks;
        let rg = self.reader_meta.metadata().row_group(row_group);
        for ((&leaf, piece), range) in leaves.iter().zip(&pieces).zip(&ranges) {
            let column = rg.column(leaf);
            let checked = check_pages(piece, column.uncompressed_size()).and_then(|delta| {
                let chunk = FetchedChunks {
                    len: self.meta.size,
                    pieces: vec![(range.start, piece.clone())],
                };
                match delta {
                    true => check_delta_counts(chunk, column, rg.num_rows()),
                    false => Ok(()),
                }
            });
            if let Err(problem) = checked {
                return Err(one_line(format!(
                    "{uri}: corrupt Parquet pages in column '{}' of row group {row_group}: \
                     {problem}",
                    column.column_path().string()
                )));
            }
        }
        let chunks = FetchedChunks {
            len: self.meta.size,
            pieces: ranges.iter().map(|r| r.start).zip(pieces).collect(),
        };
        // The Parquet decoder panics on some corrupt pages (a division by zero in a plain
        // dictionary, a dictionary page the footer does not announce): a panic is this row
        // group's decoding error, and the reader is not used after it.
        let build = || {
            ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, self.reader_meta.clone())
                .with_row_groups(vec![row_group])
                .with_projection(ProjectionMask::roots(schema_descr, roots))
                .with_batch_size(batch_rows)
                .build()
        };
        let mut reader = Some(
            catch_unwind(AssertUnwindSafe(build))
                .map_err(|panic| decoder_panic(&*panic))?
                .map_err(one_line)
                .with_context(|| format!("reading row group {row_group} of {uri}"))?,
        );
        Ok(std::iter::from_fn(move || {
            let next = catch_unwind(AssertUnwindSafe(|| reader.as_mut()?.next()));
            let batch = match next {
                Ok(batch) => batch?.map_err(one_line),
                Err(panic) => {
                    reader = None;
                    Err(decoder_panic(&*panic))
                }
            };
            Some(batch.with_context(|| format!("decoding row group {row_group} of {uri}")))
        }))
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

/// The projected column chunks of one row group of a [`ParquetObject`], fetched by
/// [`ParquetObject::fetch_row_group`], neither checked nor decoded yet.
#[derive(Debug)]
pub struct RowGroupChunks {
    row_group: usize,
    roots: Vec<usize>,
    leaves: Vec<usize>,
    ranges: Vec<Range<u64>>,
    pieces: Vec<Bytes>,
}

impl RowGroupChunks {
    pub fn row_group(&self) -> usize {
        self.row_group
    }

    /// The bytes fetched.
    pub fn bytes(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }
}

/// How often a wait in [`FetchAhead`] looks at its caller's `stop` condition, which nobody
/// notifies (the daemon's cancel flag is a plain flag).
const FETCH_AHEAD_POLL: Duration = Duration::from_millis(20);

/// Fetches units of work (the column chunks of row groups, on a store behind a network) in
/// order, on fetcher threads of their own, ahead of the consumers that decode them: the network
/// and the cores work at once, instead of each consumer's core waiting for its own fetch.
///
/// Consumers take units in order ([`FetchAhead::take`]). Fetchers start a unit only while it is
/// fewer than `ahead` units past the last one a consumer asked for, so at most `ahead` units
/// are fetched (or being fetched) and not taken: memory stays at about (consumers + `ahead`)
/// units, however many there are. A failed fetch is that unit's result, for the consumer that
/// takes it. Once stopped ([`FetchAhead::stop`], or a caller's `stop` condition seen true),
/// fetchers start nothing more (a fetch in flight ends first) and consumers still waiting are
/// answered `None`; a fetcher that dies does not leave consumers waiting either.
pub struct FetchAhead<T> {
    units: usize,
    ahead: usize,
    state: Mutex<AheadState<T>>,
    changed: Condvar,
}

struct AheadState<T> {
    /// One past the last unit a consumer asked for.
    claimed: usize,
    /// The next unit to fetch.
    next: usize,
    /// Units fetched and not taken yet.
    ready: BTreeMap<usize, Result<T>>,
    /// Fetchers that have not ended.
    fetchers: usize,
    stopped: bool,
}

impl<T> FetchAhead<T> {
    /// For `units` units, at most `ahead` (at least 1) past the consumers, fetched by
    /// `fetchers` threads that each run [`FetchAhead::fetch`].
    pub fn new(units: usize, ahead: usize, fetchers: usize) -> Self {
        Self {
            units,
            ahead: ahead.max(1),
            state: Mutex::new(AheadState {
                claimed: 0,
                next: 0,
                ready: BTreeMap::new(),
                fetchers,
                stopped: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One fetcher, run on its own thread: fetches units in order with `fetch` until every unit
    /// is fetched or fetching stops. `fetch` should not panic: a panic ends this fetcher and
    /// stops all fetching, so every consumer still waiting is answered `None`.
    pub fn fetch(&self, mut fetch: impl FnMut(usize) -> Result<T>, stop: impl Fn() -> bool) {
        /// Counts the fetcher out however it ends, so no consumer waits on it.
        struct Leaving<'a, T>(&'a FetchAhead<T>);
        impl<T> Drop for Leaving<'_, T> {
            fn drop(&mut self) {
                let mut state = self.0.lock();
                state.fetchers -= 1;
                // A fetcher that panicked leaves its unit unfetched while the others may go
                // on: stop them all, so the consumer of that unit is answered (found in review).
                if std::thread::panicking() {
                    state.stopped = true;
                }
                drop(state);
                self.0.changed.notify_all();
            }
        }
        let _leaving = Leaving(self);
        loop {
            let unit = {
                let mut state = self.lock();
                loop {
                    if state.stopped || stop() {
                        state.stopped = true;
                        self.changed.notify_all();
                        return;
                    }
                    if state.next >= self.units {
                        return;
                    }
                    if state.next < state.claimed + self.ahead {
                        break;
                    }
                    state = self
                        .changed
                        .wait_timeout(state, FETCH_AHEAD_POLL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                state.next += 1;
                state.next - 1
            };
            let fetched = fetch(unit);
            self.lock().ready.insert(unit, fetched);
            self.changed.notify_all();
        }
    }

    /// Unit `unit`, once fetched (consumers take units in order, each once); `None` if fetching
    /// stopped, or its fetchers ended, before it was fetched.
    pub fn take(&self, unit: usize, stop: impl Fn() -> bool) -> Option<Result<T>> {
        let mut state = self.lock();
        if state.claimed <= unit {
            state.claimed = unit + 1;
            self.changed.notify_all();
        }
        loop {
            if let Some(fetched) = state.ready.remove(&unit) {
                return Some(fetched);
            }
            if state.stopped || stop() {
                state.stopped = true;
                self.changed.notify_all();
                return None;
            }
            if state.fetchers == 0 {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, FETCH_AHEAD_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops fetching: nothing more is started, and consumers waiting get `None`.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }
}

/// Checks that what a footer says fits the object it came from, so a corrupt or hostile footer
/// is one clear error at open time, not a panic (`byte_range` asserts), a read past the end or
/// a huge allocation later. `data_end` is where the footer starts: column chunks end before it.
fn check_footer(metadata: &ParquetMetaData, size: u64, data_end: u64) -> Result<(), String> {
    let within = |what: &str, at: i64| -> Result<(), String> {
        if at < 0 {
            Err(format!("{what} at byte {at}, a negative offset"))
        } else if at as u64 >= data_end {
            Err(format!(
                "{what} at byte {at}, {}",
                past(at as i128, size, data_end)
            ))
        } else {
            Ok(())
        }
    };
    for (r, rg) in metadata.row_groups().iter().enumerate() {
        if rg.num_rows() < 0 {
            return Err(format!("row group {r} has {} rows", rg.num_rows()));
        }
        for (c, col) in rg.columns().iter().enumerate() {
            let chunk = format!("column chunk {c} of row group {r}");
            within(
                &format!("{chunk} has its first data page"),
                col.data_page_offset(),
            )?;
            if let Some(offset) = col.dictionary_page_offset() {
                within(&format!("{chunk} has its dictionary page"), offset)?;
            }
            let len = col.compressed_size();
            if len < 0 {
                return Err(format!("{chunk} has a negative size ({len} bytes)"));
            }
            // The start `byte_range` reads from; i128, so hostile values cannot overflow.
            let start = col
                .dictionary_page_offset()
                .unwrap_or(col.data_page_offset());
            let end = start as i128 + len as i128;
            if end > data_end as i128 {
                return Err(format!(
                    "{chunk} ends at byte {end}, {}",
                    past(end, size, data_end)
                ));
            }
        }
    }
    let rows = metadata.file_metadata().num_rows();
    if rows < 0 {
        return Err(format!("the file has {rows} rows"));
    }
    // Row numbers (of quarantined rows, of each row group's first) are sums of these.
    let sum = metadata
        .row_groups()
        .iter()
        .try_fold(0i64, |sum, rg| sum.checked_add(rg.num_rows()));
    if sum != Some(rows) {
        let sum = sum.map_or("more than 2^63".to_string(), |s| s.to_string());
        return Err(format!(
            "its row groups hold {sum} rows, but it says the file has {rows}"
        ));
    }
    Ok(())
}

/// Where a byte offset lands beyond the column data.
fn past(at: i128, size: u64, data_end: u64) -> String {
    if at > size as i128 {
        format!("past the end of the {size}-byte object")
    } else {
        format!("inside the footer (which starts at byte {data_end} of the {size}-byte object)")
    }
}

/// Checks the page headers of a fetched column chunk before the decoder allocates what they
/// say: a page never holds more uncompressed bytes than its whole chunk (as the footer gives
/// it), and a dictionary never more values than its page has bytes (each takes at least one),
/// so a header claiming gigabytes in a small chunk is corrupt, not a reason to allocate them.
/// Headers are read as the decoder reads them; one that cannot be read is corrupt too.
///
/// Returns whether the chunk has pages of delta-encoded strings, for [`check_delta_counts`].
fn check_pages(chunk: &[u8], chunk_uncompressed: i64) -> Result<bool, String> {
    let (mut at, mut dictionary, mut delta) = (0, false, false);
    while at < chunk.len() {
        let Some(page) = page_header(&chunk[at..]) else {
            return Err(format!(
                "the page header at byte {at} of the column chunk cannot be read"
            ));
        };
        if i64::from(page.uncompressed) > chunk_uncompressed {
            return Err(format!(
                "a page says it holds {} bytes uncompressed, more than its whole column chunk \
                 ({chunk_uncompressed} bytes)",
                page.uncompressed
            ));
        }
        let values = page.dictionary_values;
        let absurd = |v: i32| v > page.uncompressed || v < 0 || (v == 0 && page.uncompressed > 0);
        if let Some(values) = values.filter(|&v| absurd(v)) {
            return Err(format!(
                "a dictionary page says it holds {values} values in {} bytes",
                page.uncompressed
            ));
        }
        dictionary |= values.is_some();
        // PLAIN_DICTIONARY (2) or RLE_DICTIONARY (8): indices into a dictionary read before.
        if matches!(page.data_encoding, Some(2 | 8)) && !dictionary {
            return Err(
                "a data page is dictionary-encoded, but no dictionary page comes before it".into(),
            );
        }
        // DELTA_LENGTH_BYTE_ARRAY (6) or DELTA_BYTE_ARRAY (7).
        delta |= matches!(page.data_encoding, Some(6 | 7));
        let Ok(compressed) = usize::try_from(page.compressed) else {
            return Ok(delta); // the decoder says what is wrong with it
        };
        at = at
            .saturating_add(page.header_len)
            .saturating_add(compressed);
    }
    Ok(delta)
}

/// Pages of DELTA_LENGTH_BYTE_ARRAY and DELTA_BYTE_ARRAY strings start with counts of lengths
/// that the decoder allocates for before it reads one (the parquet crate's `vec![0; count]`,
/// which aborts the process when the count is absurd); a count above the page's number of
/// values is corrupt. The counts are in the page data, so these chunks' pages are decompressed
/// once more to read them; what cannot be read is left to the decoder.
fn check_delta_counts(
    chunk: FetchedChunks,
    column: &ColumnChunkMetaData,
    rows: i64,
) -> Result<(), String> {
    let descr = column.column_descr();
    let rows = usize::try_from(rows).unwrap_or(0);
    let Ok(mut pages) = SerializedPageReader::new(Arc::new(chunk), column, rows, None) else {
        return Ok(());
    };
    while let Ok(Some(page)) = pages.get_next_page() {
        let (values, num_values, encoding) = match page {
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding,
                rep_level_encoding,
                ..
            } => {
                let mut at = 0;
                for (max, levels) in [
                    (descr.max_rep_level(), rep_level_encoding),
                    (descr.max_def_level(), def_level_encoding),
                ] {
                    if max > 0 {
                        let Some(len) = v1_levels_len(&buf[at..], max, num_values, levels) else {
                            return Ok(());
                        };
                        at += len;
                    }
                }
                (buf.slice(at..), num_values, encoding)
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let at =
                    (def_levels_byte_len as usize).saturating_add(rep_levels_byte_len as usize);
                (buf.slice(at.min(buf.len())..), num_values, encoding)
            }
            _ => continue,
        };
        let counts = match encoding {
            Encoding::DELTA_LENGTH_BYTE_ARRAY => vec![delta_header(&values).map(|h| h.count)],
            // Prefix lengths, then suffix lengths after the prefixes' stream.
            Encoding::DELTA_BYTE_ARRAY => {
                let prefixes = delta_header(&values).map(|h| h.count);
                let suffixes = match prefixes {
                    Some(n) if n <= u64::from(num_values) => delta_end(&values)
                        .and_then(|end| delta_header(&values[end..]))
                        .map(|h| h.count),
                    _ => None,
                };
                vec![prefixes, suffixes]
            }
            _ => continue,
        };
        if let Some(count) = counts
            .into_iter()
            .flatten()
            .find(|&n| n > u64::from(num_values))
        {
            return Err(format!(
                "a page of {num_values} {encoding} values says it holds {count} string lengths"
            ));
        }
    }
    Ok(())
}

/// The length of a data page's (v1) levels of at most `max`, as the decoder reads them.
fn v1_levels_len(buf: &[u8], max: i16, num_values: u32, encoding: Encoding) -> Option<usize> {
    match encoding {
        // A 4-byte length, then the levels.
        Encoding::RLE => {
            let len = i32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
            let end = len.checked_add(4)?;
            (end <= buf.len()).then_some(end)
        }
        #[allow(deprecated)]
        Encoding::BIT_PACKED => {
            let bits = (u16::BITS - (max as u16).leading_zeros()) as usize;
            let end = (num_values as usize * bits).div_ceil(8);
            (end <= buf.len()).then_some(end)
        }
        _ => None,
    }
}

/// The header of a DELTA_BINARY_PACKED stream (as the lengths of delta-encoded strings are).
struct DeltaHeader {
    block_size: u64,
    miniblocks: u64,
    count: u64,
    len: usize,
}

fn delta_header(b: &[u8]) -> Option<DeltaHeader> {
    let mut r = Compact { b, at: 0 };
    let (block_size, miniblocks, count) = (r.varint()?, r.varint()?, r.varint()?);
    r.zigzag()?; // the first value
    Some(DeltaHeader {
        block_size,
        miniblocks,
        count,
        len: r.at,
    })
}

/// Where the DELTA_BINARY_PACKED stream at the start of `b` ends, as the decoder finds it: each
/// block whole, the miniblocks after the last value without data.
fn delta_end(b: &[u8]) -> Option<usize> {
    let h = delta_header(b)?;
    let per_miniblock = h.block_size.checked_div(h.miniblocks)?;
    if per_miniblock == 0 || per_miniblock % 32 != 0 || h.block_size % h.miniblocks != 0 {
        return None;
    }
    let mut r = Compact { b, at: h.len };
    let mut remaining = h.count.saturating_sub(1);
    while remaining > 0 {
        r.zigzag()?; // the block's minimum delta
        let widths = r.at;
        r.bytes(h.miniblocks)?;
        let mut data: u64 = 0;
        for &width in &b[widths..r.at] {
            if remaining == 0 {
                break;
            }
            remaining = remaining.saturating_sub(per_miniblock);
            data = data.checked_add(u64::from(width).checked_mul(per_miniblock)? / 8)?;
        }
        r.bytes(data)?;
    }
    Some(r.at)
}

/// What [`check_pages`] reads of a page header.
#[derive(Debug, PartialEq)]
struct PageHeader {
    header_len: usize,
    uncompressed: i32,
    compressed: i32,
    /// A dictionary page's number of values.
    dictionary_values: Option<i32>,
    /// A data page's encoding (v1 or v2).
    data_encoding: Option<i32>,
}

/// The page header (Thrift compact protocol) at the start of `b`, read as the parquet crate
/// reads it (fields by id whatever their type, integers truncated to 32 bits): its length, its
/// uncompressed and compressed page sizes (fields 2 and 3), a dictionary page's number of
/// values (field 1 of field 7) and a data page's encoding (field 2 of field 5, field 4 of field
/// 8); `None` if it cannot be read.
fn page_header(b: &[u8]) -> Option<PageHeader> {
    let mut r = Compact { b, at: 0 };
    let (mut uncompressed, mut compressed) = (None, None);
    let (mut dictionary_values, mut data_encoding) = (None, None);
    // Field `want` of the struct at hand, as an i32.
    let field_of = |r: &mut Compact, want: i16, into: &mut Option<i32>| {
        r.fields(1, |r, id, kind| {
            match id == want {
                true => *into = Some(r.zigzag()? as i32),
                false => r.skip(kind, 2)?,
            }
            Some(())
        })
    };
    r.fields(0, |r, id, kind| {
        match id {
            2 => uncompressed = Some(r.zigzag()? as i32),
            3 => compressed = Some(r.zigzag()? as i32),
            5 => field_of(r, 2, &mut data_encoding)?,
            7 => field_of(r, 1, &mut dictionary_values)?,
            8 => field_of(r, 4, &mut data_encoding)?,
            _ => r.skip(kind, 1)?,
        }
        Some(())
    })?;
    Some(PageHeader {
        header_len: r.at,
        uncompressed: uncompressed?,
        compressed: compressed?,
        dictionary_values,
        data_encoding,
    })
}

/// A reader of Thrift's compact protocol, just enough to step over a page header. Every value
/// takes at least a byte, so hostile counts run out of input instead of looping.
struct Compact<'a> {
    b: &'a [u8],
    at: usize,
}

impl Compact<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    /// A varint of any length, the bits past 64 dropped (as the parquet crate reads them).
    fn varint(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f).wrapping_shl(shift);
            if b & 0x80 == 0 {
                return Some(v);
            }
            shift = shift.wrapping_add(7);
        }
    }

    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn bytes(&mut self, n: u64) -> Option<()> {
        let n = usize::try_from(n).ok()?;
        if n > self.b.len() - self.at {
            return None;
        }
        self.at += n;
        Some(())
    }

    /// Reads the fields of a struct up to its end, each through `field(reader, id, kind)`.
    fn fields(
        &mut self,
        depth: u8,
        mut field: impl FnMut(&mut Self, i16, u8) -> Option<()>,
    ) -> Option<()> {
        if depth > 64 {
            return None;
        }
        let mut last: i16 = 0;
        loop {
            let header = self.byte()?;
            if header & 0x0f == 0 {
                return Some(());
            }
            last = match header >> 4 {
                0 => self.zigzag()? as i16,
                delta => last.checked_add(i16::from(delta))?,
            };
            field(self, last, header & 0x0f)?;
        }
    }

    /// Steps over a value of compact type `kind` (a field's: booleans are in its header).
    fn skip(&mut self, kind: u8, depth: u8) -> Option<()> {
        if depth > 64 {
            return None;
        }
        match kind {
            1 | 2 => Some(()),
            3 => self.bytes(1),
            4..=6 => self.varint().map(drop),
            7 => self.bytes(8),
            8 => {
                let n = self.varint()?;
                self.bytes(n)
            }
            9 | 10 => {
                let header = self.byte()?;
                let n = match header >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                for _ in 0..n {
                    self.skip_element(header & 0x0f, depth + 1)?;
                }
                Some(())
            }
            11 => {
                let n = self.varint()?;
                if n > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..n {
                        self.skip_element(kinds >> 4, depth + 1)?;
                        self.skip_element(kinds & 0x0f, depth + 1)?;
                    }
                }
                Some(())
            }
            12 => self.fields(depth, |r, _, kind| r.skip(kind, depth + 1)),
            13 => self.bytes(16),
            _ => None,
        }
    }

    /// Steps over an element of a list, set or map (where a boolean is a byte).
    fn skip_element(&mut self, kind: u8, depth: u8) -> Option<()> {
        match kind {
            1 | 2 => self.bytes(1),
            _ => self.skip(kind, depth),
        }
    }
}

/// A Parquet or Arrow error as one line: its message may quote column names or values from
/// the object, which may hold line breaks.
fn one_line(e: impl std::fmt::Display) -> anyhow::Error {
    let text = e.to_string();
    if !text.chars().any(char::is_control) {
        return anyhow!(text);
    }
    anyhow!(text
        .chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect::<String>())
}

/// The error for a panic of the Parquet decoder on corrupt data.
fn decoder_panic(panic: &(dyn std::any::Any + Send)) -> anyhow::Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    one_line(format!(
        "corrupt data: the Parquet decoder failed ({message})"
    ))
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
    // A column the run reads must be one: which of two would the model score?
    let mut read: Vec<&str> = signature.iter().map(|f| f.name.as_str()).collect();
    read.extend(passthrough.iter().map(String::as_str));
    for (i, name) in read.iter().enumerate() {
        let times = schema.fields().iter().filter(|f| f.name() == name).count();
        if times > 1 && !read[..i].contains(name) {
            problems.push(format!("column '{name}' appears {times} times"));
        }
    }
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
                            "a number (boolean, int8..int64, uint8..uint32, float16..float64)"
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
///
/// A URI ending in `.parquet` names one object, unless it is a folder of them (as Spark
/// writes `table.parquet/part-*.parquet`): the folder is listed first, since some servers
/// (s3s-fs) answer a HEAD on a folder with a 500. A named object that does not exist is a
/// [`StorageError`] of kind [`ErrorKind::NotFound`](crate::storage::ErrorKind) naming it, not an
/// empty listing.
pub fn list_data_files(loc: &Location) -> Result<Vec<ObjectMeta>> {
    let all = loc.store.list(&loc.key)?;
    if loc.key.ends_with(".parquet") && all.is_empty() {
        return match loc.store.head(&loc.key)? {
            Some(meta) => Ok(vec![meta]),
            None => Err(StorageError::not_found(loc.uri()).into()),
        };
    }
    Ok(all
        .into_iter()
        .filter(|o| is_data_file(loc.relative(&o.key)))
        .collect())
}

/// A column of a batch by name, cast to the type `schema` gives it: the readers of nightshift's
/// own reports take them back as other tools rewrote them (large strings, say).
pub fn column_as<T: arrow::array::Array + Clone + 'static>(
    batch: &RecordBatch,
    schema: &arrow::datatypes::Schema,
    name: &str,
) -> Result<T> {
    let wanted = schema.field_with_name(name)?.data_type();
    let array = batch
        .column_by_name(name)
        .with_context(|| format!("no column {name}"))?;
    let cast = arrow::compute::cast(array, wanted)?;
    Ok(cast
        .as_any()
        .downcast_ref::<T>()
        .expect("cast to the schema's type")
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found in review: with two fetchers, one panicking on a unit left its consumer waiting
    /// for ever while the other fetcher lived on.
    #[test]
    fn a_fetcher_that_panics_answers_the_waiting_consumer() {
        let ahead: FetchAhead<u32> = FetchAhead::new(10, 4, 2);
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        ahead.fetch(
                            |unit| {
                                if unit == 0 {
                                    panic!("fetching unit 0");
                                }
                                Ok(unit as u32)
                            },
                            || false,
                        )
                    }));
                });
            }
            assert!(ahead.take(0, || false).is_none());
        });
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

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

    use std::path::Path;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::ParquetMetaDataWriter;
    use parquet::file::properties::WriterProperties;

    use crate::storage::{ErrorKind, Stores};

    /// A small Parquet file: 10 rows in two row groups of 5, an int64 and a dictionary
    /// encoded string column.
    fn small_parquet() -> Vec<u8> {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..10).map(|i| ["a", "b"][i % 2]),
        ));
        let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(5))
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out
    }

    /// The file with its footer decoded, changed by `f` and encoded again.
    fn with_footer(file: &[u8], f: impl FnOnce(ParquetMetaData) -> ParquetMetaData) -> Vec<u8> {
        let n = file.len();
        let len = u32::from_le_bytes(file[n - 8..n - 4].try_into().unwrap()) as usize;
        let metadata = ParquetMetaDataReader::decode_metadata(&file[n - 8 - len..n - 8]).unwrap();
        let metadata = f(metadata);
        let mut out = file[..n - 8 - len].to_vec();
        ParquetMetaDataWriter::new(&mut out, &metadata)
            .finish()
            .unwrap();
        out
    }

    /// Changes column chunk `c` of row group `r`.
    fn edit_chunk(
        r: usize,
        c: usize,
        f: impl Fn(ColumnChunkMetaDataBuilder) -> ColumnChunkMetaDataBuilder,
    ) -> impl FnOnce(ParquetMetaData) -> ParquetMetaData {
        move |metadata| {
            edit_row_group(r, |mut rg| {
                let mut columns = rg.take_columns();
                columns[c] = f(columns[c].clone().into_builder()).build().unwrap();
                rg.set_column_metadata(columns)
            })(metadata)
        }
    }

    fn edit_row_group(
        r: usize,
        f: impl FnOnce(RowGroupMetaDataBuilder) -> RowGroupMetaDataBuilder,
    ) -> impl FnOnce(ParquetMetaData) -> ParquetMetaData {
        move |metadata| {
            let mut builder = metadata.into_builder();
            let mut row_groups = builder.take_row_groups();
            row_groups[r] = f(row_groups[r].clone().into_builder()).build().unwrap();
            builder.set_row_groups(row_groups).build()
        }
    }

    use parquet::file::metadata::{ColumnChunkMetaDataBuilder, RowGroupMetaDataBuilder};

    fn location(path: &Path) -> Location {
        Stores::default()
            .locate(&Uri::Local(path.to_path_buf()))
            .unwrap()
    }

    /// Writes `bytes` to a file and opens it.
    fn open_bytes(dir: &Path, bytes: &[u8]) -> (String, Result<ParquetObject>) {
        let path = dir.join("part-0.parquet");
        std::fs::write(&path, bytes).unwrap();
        let loc = location(&path);
        let meta = loc.store.head(&loc.key).unwrap().unwrap();
        (loc.uri().to_string(), ParquetObject::open(loc, meta))
    }

    /// Opening fails with a one-line error that names the object and says `expected`.
    fn assert_corrupt(dir: &Path, bytes: &[u8], expected: &str) {
        let (uri, opened) = open_bytes(dir, bytes);
        let message = format!("{:#}", opened.expect_err(expected));
        assert!(message.starts_with(&uri), "{message}");
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn a_footer_rewritten_unchanged_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = with_footer(&small_parquet(), |m| m);
        let (_, opened) = open_bytes(dir.path(), &file);
        let object = opened.unwrap();
        assert_eq!((object.num_rows(), object.num_row_groups()), (10, 2));
        let batches = object.read_all(&["id".into(), "name".into()]).unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
        // The fixture is as the tests below assume: a dictionary page in the string column.
        let metadata = object.reader_meta.metadata();
        assert!(metadata
            .row_group(0)
            .column(1)
            .dictionary_page_offset()
            .is_some());
    }

    #[test]
    fn column_chunks_past_the_end_are_a_corrupt_footer() {
        let dir = tempfile::tempdir().unwrap();
        let file = small_parquet();
        let size = |f: &[u8]| f.len();

        // A size that would have the reader allocate a terabyte.
        let huge = with_footer(
            &file,
            edit_chunk(0, 1, |c| c.set_total_compressed_size(1 << 40)),
        );
        let (start, _) = {
            let n = huge.len();
            let len = u32::from_le_bytes(huge[n - 8..n - 4].try_into().unwrap()) as usize;
            let m = ParquetMetaDataReader::decode_metadata(&huge[n - 8 - len..n - 8]).unwrap();
            m.row_group(0).column(1).byte_range()
        };
        let end = start + (1 << 40);
        assert_corrupt(
            dir.path(),
            &huge,
            &format!(
                "corrupt Parquet footer: column chunk 1 of row group 0 ends at byte {end}, past \
                 the end of the {}-byte object",
                size(&huge)
            ),
        );

        // A data page beyond the end.
        let far = with_footer(&file, edit_chunk(1, 0, |c| c.set_data_page_offset(1 << 33)));
        assert_corrupt(
            dir.path(),
            &far,
            &format!(
                "column chunk 0 of row group 1 has its first data page at byte {}, past the end",
                1u64 << 33
            ),
        );

        // A dictionary page beyond the end.
        let dict = with_footer(
            &file,
            edit_chunk(1, 1, |c| c.set_dictionary_page_offset(Some(1 << 20))),
        );
        assert_corrupt(
            dir.path(),
            &dict,
            "column chunk 1 of row group 1 has its dictionary page",
        );

        // A chunk running into the footer: its end 4 bytes before the object's (found by
        // trying, as the footer's length depends on the number written into it).
        let start = {
            let (_, opened) = open_bytes(dir.path(), &file);
            opened
                .unwrap()
                .reader_meta
                .metadata()
                .row_group(1)
                .column(1)
                .byte_range()
                .0 as i64
        };
        let mut into = file.clone();
        for _ in 0..4 {
            let target = into.len() as i64 - 4;
            into = with_footer(
                &file,
                edit_chunk(1, 1, |c| c.set_total_compressed_size(target - start)),
            );
            if into.len() as i64 - 4 == target {
                break;
            }
        }
        assert_corrupt(
            dir.path(),
            &into,
            &format!(
                "column chunk 1 of row group 1 ends at byte {}, inside the footer",
                into.len() - 4
            ),
        );
    }

    #[test]
    fn negative_offsets_sizes_and_row_counts_are_a_corrupt_footer() {
        let dir = tempfile::tempdir().unwrap();
        let file = small_parquet();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                with_footer(&file, edit_chunk(0, 0, |c| c.set_data_page_offset(-4))),
                "column chunk 0 of row group 0 has its first data page at byte -4, a negative offset",
            ),
            (
                with_footer(&file, edit_chunk(0, 1, |c| c.set_dictionary_page_offset(Some(-1)))),
                "column chunk 1 of row group 0 has its dictionary page at byte -1, a negative offset",
            ),
            (
                with_footer(&file, edit_chunk(1, 0, |c| c.set_total_compressed_size(-100))),
                "column chunk 0 of row group 1 has a negative size (-100 bytes)",
            ),
            (
                with_footer(&file, edit_row_group(1, |rg| rg.set_num_rows(-7))),
                "row group 1 has -7 rows",
            ),
        ];
        for (bytes, expected) in cases {
            assert_corrupt(dir.path(), &bytes, expected);
        }
    }

    #[test]
    fn truncated_files_and_absurd_footer_lengths_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = small_parquet();
        let n = file.len();

        assert_corrupt(
            dir.path(),
            &file[..n / 2],
            "cut short (no PAR1 magic at its end)",
        );
        assert_corrupt(dir.path(), &file[..5], "is not a Parquet file (5 bytes)");

        // The footer's length field says more than the file holds.
        for len in [n as u32, n as u32 - 8, u32::MAX] {
            let mut bad = file.clone();
            bad[n - 8..n - 4].copy_from_slice(&len.to_le_bytes());
            assert_corrupt(
                dir.path(),
                &bad,
                &format!("corrupt Parquet footer: its length field says {len} bytes, more than the {n}-byte object holds"),
            );
        }

        // The file's start cut off: the footer's offsets now point past its end.
        assert_corrupt(dir.path(), &file[n / 2..], "corrupt Parquet footer");
    }

    /// Every byte of the footer overwritten in turn: opening (and reading what opens) gives a
    /// result, never a panic.
    #[test]
    fn damaged_footers_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = small_parquet();
        let n = file.len();
        let len = u32::from_le_bytes(file[n - 8..n - 4].try_into().unwrap()) as usize;
        for i in n - 8 - len..n - 8 {
            for value in [0x00, 0xff, 0x7f, 0x80, file[i] ^ 0x01] {
                let mut bad = file.clone();
                bad[i] = value;
                let (_, opened) = open_bytes(dir.path(), &bad);
                if let Ok(object) = opened {
                    let columns: Vec<String> = object
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect();
                    let _ = object.read_all(&columns);
                }
            }
        }
    }

    /// The page-header walk steps over every page of real chunks (dictionary and data pages,
    /// v1 and v2, compressed or not) and adds up to the sizes the footer gives.
    #[test]
    fn page_headers_add_up_to_their_chunks() {
        use parquet::basic::Compression;
        use parquet::file::properties::WriterVersion;

        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..3000));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..3000).map(|i| ["a", "b", "ü"][i % 3]),
        ));
        let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
        for (version, compression) in [
            (WriterVersion::PARQUET_1_0, Compression::UNCOMPRESSED),
            (WriterVersion::PARQUET_2_0, Compression::SNAPPY),
        ] {
            let props = WriterProperties::builder()
                .set_writer_version(version)
                .set_compression(compression)
                .set_data_page_row_count_limit(500)
                .set_write_batch_size(500)
                .build();
            let mut file = Vec::new();
            let mut w = ArrowWriter::try_new(&mut file, batch.schema(), Some(props)).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            let n = file.len();
            let len = u32::from_le_bytes(file[n - 8..n - 4].try_into().unwrap()) as usize;
            let m = ParquetMetaDataReader::decode_metadata(&file[n - 8 - len..n - 8]).unwrap();
            for column in m.row_group(0).columns() {
                let (start, len) = column.byte_range();
                let chunk = &file[start as usize..(start + len) as usize];
                let (mut at, mut uncompressed, mut pages) = (0, 0, 0);
                let mut dictionaries = Vec::new();
                while at < chunk.len() {
                    let page = page_header(&chunk[at..]).unwrap();
                    at += page.header_len + page.compressed as usize;
                    uncompressed += (page.header_len + page.uncompressed as usize) as i64;
                    dictionaries.extend(page.dictionary_values);
                    // After the dictionary, data pages of indices into it.
                    let encoding = page.data_encoding;
                    assert_eq!(encoding.is_some(), pages > 0, "{page:?}");
                    assert!(matches!(encoding, None | Some(2 | 8)), "{page:?}");
                    pages += 1;
                }
                let expected = match column.column_path().string().as_str() {
                    "name" => vec![3],
                    _ => vec![3000],
                };
                assert_eq!(dictionaries, expected, "{:?}", column.column_path());
                assert_eq!(at, chunk.len());
                assert_eq!(uncompressed, column.uncompressed_size());
                assert!(pages > 2, "{pages} pages");
                assert_eq!(check_pages(chunk, column.uncompressed_size()), Ok(false));
                assert!(check_pages(chunk, 100).is_err());
            }
        }
    }

    /// Delta-encoded strings, with nulls, in both page versions and compressed: their length
    /// counts are read where the decoder reads them, and files that read are not refused.
    #[test]
    fn delta_encoded_strings_are_checked_and_read() {
        use parquet::basic::Compression;
        use parquet::file::properties::WriterVersion;
        use parquet::schema::types::ColumnPath;

        let names: ArrayRef = Arc::new(StringArray::from_iter((0..3000).map(|i| {
            (i % 7 != 0).then(|| format!("customer-{:05}-{}", i / 3, ["a", "bb", "ccc"][i % 3]))
        })));
        let batch = RecordBatch::try_from_iter([("name", names)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            for encoding in [
                Encoding::DELTA_BYTE_ARRAY,
                Encoding::DELTA_LENGTH_BYTE_ARRAY,
            ] {
                let props = WriterProperties::builder()
                    .set_writer_version(version)
                    .set_compression(Compression::SNAPPY)
                    .set_dictionary_enabled(false)
                    .set_column_encoding(ColumnPath::from("name"), encoding)
                    .set_data_page_row_count_limit(700)
                    .set_write_batch_size(700)
                    .build();
                let mut file = Vec::new();
                let mut w = ArrowWriter::try_new(&mut file, batch.schema(), Some(props)).unwrap();
                w.write(&batch).unwrap();
                w.close().unwrap();
                let (_, opened) = open_bytes(dir.path(), &file);
                let object = opened.unwrap();
                let column = object.reader_meta.metadata().row_group(0).column(0);
                let (start, len) = column.byte_range();
                let piece = Bytes::copy_from_slice(&file[start as usize..(start + len) as usize]);
                assert_eq!(check_pages(&piece, column.uncompressed_size()), Ok(true));
                let chunk = FetchedChunks {
                    len: file.len() as u64,
                    pieces: vec![(start, piece)],
                };
                assert_eq!(check_delta_counts(chunk, column, 3000), Ok(()));
                let batches = object.read_all(&["name".into()]).unwrap();
                assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);
            }
        }

        // Uncompressed, the counts can be changed in place: each length stream's header is
        // block size 128 (0x80 0x01), 4 miniblocks, then the count (two bytes here). The first
        // page's first stream, and for DELTA_BYTE_ARRAY its second (the suffixes').
        for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
            for (encoding, stream) in [
                (Encoding::DELTA_LENGTH_BYTE_ARRAY, 0),
                (Encoding::DELTA_BYTE_ARRAY, 0),
                (Encoding::DELTA_BYTE_ARRAY, 1),
            ] {
                let props = WriterProperties::builder()
                    .set_writer_version(version)
                    .set_dictionary_enabled(false)
                    .set_column_encoding(ColumnPath::from("name"), encoding)
                    .set_data_page_row_count_limit(700)
                    .set_write_batch_size(700)
                    .build();
                let mut file = Vec::new();
                let mut w = ArrowWriter::try_new(&mut file, batch.schema(), Some(props)).unwrap();
                w.write(&batch).unwrap();
                w.close().unwrap();
                let n = file.len();
                let len = u32::from_le_bytes(file[n - 8..n - 4].try_into().unwrap()) as usize;
                let m = ParquetMetaDataReader::decode_metadata(&file[n - 8 - len..n - 8]).unwrap();
                let column = m.row_group(0).column(0);
                let (start, len) = column.byte_range();
                let mut chunk = file[start as usize..(start + len) as usize].to_vec();
                let at = chunk
                    .windows(3)
                    .enumerate()
                    .filter(|(_, w)| *w == [0x80, 0x01, 0x04])
                    .nth(stream)
                    .unwrap()
                    .0;
                assert!(chunk[at + 3] & 0x80 != 0 && chunk[at + 4] & 0x80 == 0);
                chunk[at + 3..at + 5].copy_from_slice(&[0xff, 0x7f]);
                let fetched = FetchedChunks {
                    len: file.len() as u64,
                    pieces: vec![(start, Bytes::from(chunk))],
                };
                assert_eq!(
                    check_delta_counts(fetched, column, 3000),
                    Err(format!(
                        "a page of 700 {encoding} values says it holds 16383 string lengths"
                    )),
                    "{version:?} {encoding} stream {stream}"
                );
            }
        }
    }

    #[test]
    fn a_uri_naming_one_object_lists_it_or_says_it_does_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("dt=1");
        std::fs::create_dir_all(part.join("sub")).unwrap();
        for name in [
            "part-0.parquet",
            "part-1.parquet",
            "sub/part-2.parquet",
            "_SUCCESS",
        ] {
            std::fs::write(part.join(name), b"x").unwrap();
        }

        let one = list_data_files(&location(&part.join("part-1.parquet"))).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(Path::new(&one[0].key), part.join("part-1.parquet"));

        let missing = part.join("part-9.parquet");
        let err = list_data_files(&location(&missing)).unwrap_err();
        assert_eq!(ErrorKind::of(&err), Some(ErrorKind::NotFound), "{err:#}");
        assert_eq!(
            format!("{err:#}"),
            format!("{} does not exist", missing.display())
        );

        // A folder named like an object (Spark's table.parquet/) is listed as a folder.
        let folder = list_data_files(&location(&part)).unwrap();
        assert_eq!(folder.len(), 3);
        let spark = dir.path().join("table.parquet");
        std::fs::create_dir_all(&spark).unwrap();
        std::fs::write(spark.join("part-0.parquet"), b"x").unwrap();
        std::fs::write(spark.join("_SUCCESS"), b"").unwrap();
        assert_eq!(list_data_files(&location(&spark)).unwrap().len(), 1);

        // An empty prefix is an empty list, for the caller to report.
        assert!(list_data_files(&location(&dir.path().join("dt=2")))
            .unwrap()
            .is_empty());
    }
}
