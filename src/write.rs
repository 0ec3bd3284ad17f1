//! Writing Parquet outputs: zstd, streamed to the store, visible only when complete.
//!
//! Output keys are derived from input keys, so a rerun of a date writes the same names and
//! replaces them instead of adding new ones.

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::storage::{Location, ObjectSink};

/// Rows per row group in outputs.
const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// zstd (level 1, as pyarrow writes it: higher levels cost more time than they save space on
/// scores); dictionaries only for string columns, where values repeat (model name, run id,
/// labels). Ids and scores are mostly distinct: a dictionary would be built to be dropped.
fn properties(schema: &Schema) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid zstd level"),
        ))
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("nightshift {}", env!("CARGO_PKG_VERSION")));
    for f in schema.fields() {
        if matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..)
        ) {
            b = b.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    b.build()
}

/// One Parquet object being written. Dropped without [`ParquetOutput::finish`], it is aborted:
/// nothing appears under its key.
pub struct ParquetOutput {
    writer: ArrowWriter<Box<dyn ObjectSink>>,
    loc: Location,
    rows: u64,
}

impl ParquetOutput {
    pub fn create(loc: Location, schema: SchemaRef) -> Result<Self> {
        let sink = loc.store.create(&loc.key)?;
        let writer = ArrowWriter::try_new(sink, schema.clone(), Some(properties(&schema)))
            .with_context(|| format!("starting {}", loc.uri()))?;
        Ok(Self {
            writer,
            loc,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .with_context(|| format!("writing {}", self.loc.uri()))
    }

    /// Writes the footer and makes the object visible. Returns its row count.
    pub fn finish(self) -> Result<u64> {
        let uri = self.loc.uri();
        let sink = self
            .writer
            .into_inner()
            .with_context(|| format!("finishing {uri}"))?;
        sink.commit().with_context(|| format!("committing {uri}"))?;
        Ok(self.rows)
    }
}

/// The output key for an input object: its path relative to the input prefix, so
/// `features/dt=D/part-0.parquet` becomes `OUT/part-0.parquet`. An input URI that names one
/// object gives that object's file name.
pub fn output_name(input_prefix: &Location, input_key: &str) -> String {
    match input_prefix.relative(input_key) {
        "" => input_key
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(input_key)
            .to_string(),
        relative => relative.to_string(),
    }
}
