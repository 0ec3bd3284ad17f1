//! The bottom layer: what a column is to a model, and how models and jobs are named. Every
//! other module may use these; this one uses no other module of the crate.

use anyhow::{bail, Result};
use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

/// The type a model expects of a feature column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    /// Any boolean, integer or floating-point column, read as float64 (true is 1).
    Numeric,
    /// A string column, one-hot encoded.
    Categorical,
}

impl FeatureKind {
    /// The kind an Arrow type can feed, if any. Only safe casts to float64 count as numeric.
    pub fn of(dt: &DataType) -> Option<Self> {
        use DataType::*;
        match dt {
            Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Float16
            | Float32 | Float64 => Some(Self::Numeric),
            Utf8 | LargeUtf8 | Utf8View => Some(Self::Categorical),
            Dictionary(_, v) if matches!(**v, Utf8 | LargeUtf8 | Utf8View) => {
                Some(Self::Categorical)
            }
            _ => None,
        }
    }
}

/// One input column the model needs, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureField {
    pub name: String,
    pub kind: FeatureKind,
}

/// A numeric column as float64 (safe upcasts only; callers checked the type).
pub fn to_f64(col: &ArrayRef) -> Result<ArrayRef> {
    if FeatureKind::of(col.data_type()) != Some(FeatureKind::Numeric) {
        bail!("type {} is not numeric", col.data_type());
    }
    Ok(cast(col, &DataType::Float64)?)
}

/// A pinned model version in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub name: String,
    pub version: u32,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// What a model name (and a job name: the same rule) may be: letters, digits, '_' and '-',
/// not empty. Such a name is one path segment that cannot climb out of the registry (no '/',
/// no '..', nothing a store decodes), which matters where names come from a URL.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
