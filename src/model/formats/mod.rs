//! Models trained elsewhere: LightGBM text models, XGBoost JSON and UBJSON, and ONNX files as
//! skl2onnx and onnxmltools write them. A file is parsed once at import (to check it and to
//! describe it) and again at each load, into [`Compiled`]: nightshift's own tree ensemble or
//! ONNX pipeline, never a general interpreter. The original bytes are what the registry keeps.

pub mod ensemble;
mod flat;
pub mod lightgbm;
pub mod onnx;
mod parsed;
mod ubjson;
pub mod xgboost;

use anyhow::{bail, Result};

pub use ensemble::Ensemble;
pub use flat::Flat;
pub use parsed::{
    Compiled, Format, InputColumn, InputFeature, InputKind, Label, Parsed, Shape, Task,
};

/// Guesses the format from the first bytes: a LightGBM text model starts with `tree`, an
/// XGBoost model with `{` (JSON or UBJSON; the legacy binary format with `binf`, which the
/// XGBoost parser refuses by name), an ONNX model (a protobuf `ModelProto`) with field 1,
/// `ir_version` (`0x08`). Pickles are refused here, with the way to save each library's model
/// in a format nightshift reads: a pickle is code, which loading would run.
pub fn detect(bytes: &[u8]) -> Result<Format> {
    let start = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = start.trim_ascii_start();
    if bytes.first() == Some(&0x80) || bytes.starts_with(b"PK\x03\x04") {
        bail!(
            "this is a pickle (joblib or pickle.dump), which nightshift does not load: a pickle runs \
             code when it is read. Save the model in a format nightshift reads: LightGBM \
             booster.save_model(\"model.txt\"); XGBoost booster.save_model(\"model.json\") (or \
             \"model.ubj\"); scikit-learn skl2onnx.to_onnx(model, X) to an .onnx file"
        );
    }
    if text.starts_with(b"tree") {
        return Ok(Format::Lightgbm);
    }
    if text.starts_with(b"{") || bytes.starts_with(b"binf") {
        return Ok(Format::Xgboost);
    }
    if bytes.first() == Some(&0x08) {
        return Ok(Format::Onnx);
    }
    bail!(
        "not a model file nightshift recognises (LightGBM text model, XGBoost JSON or UBJSON, \
         ONNX); if it is one of them, say which with --format"
    )
}

/// The extension a file of this format is kept under: `txt`, `json` or `ubj`, `onnx`.
pub fn extension(format: Format, bytes: &[u8]) -> &'static str {
    match format {
        Format::Lightgbm => "txt",
        Format::Xgboost if xgboost::sniff(bytes) == xgboost::Encoding::Json => "json",
        Format::Xgboost => "ubj",
        Format::Onnx => "onnx",
    }
}

/// Parses a model file of `format`. `features` names the inputs in order where the file has no
/// names (and replaces the file's names where it has them); a count that differs is refused.
pub fn parse(format: Format, bytes: &[u8], features: Option<&[String]>) -> Result<Parsed> {
    let parsed = match format {
        Format::Lightgbm => lightgbm::parse(bytes),
        Format::Xgboost => xgboost::parse(bytes),
        Format::Onnx => onnx::parse(bytes, features),
    };
    // Errors quote names from the file: a forged one must not break the one line users read.
    parsed
        .and_then(|p| check_names(p, features))
        .map_err(|e| anyhow::anyhow!(one_line(&format!("{e:#}"))))
}

/// `message` with control characters (and Unicode's line and paragraph separators) escaped.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Applies `--features` to a parsed model and checks its names: every input named, once.
fn check_names(mut parsed: Parsed, features: Option<&[String]>) -> Result<Parsed> {
    match features {
        Some(names) => {
            if names.len() != parsed.features.len() {
                bail!(
                    "the model takes {} features; --features names {}",
                    parsed.features.len(),
                    names.len()
                );
            }
            for (f, name) in parsed.features.iter_mut().zip(names) {
                // `--features "a, b"` means columns a and b.
                f.name = name.trim().to_string();
                if f.name.is_empty() {
                    bail!("--features has an empty name");
                }
            }
        }
        None => {
            if parsed.features.iter().any(|f| f.name.is_empty()) {
                bail!(
                    "the model file does not name its {} features; name them in order with \
                     --features a,b,c",
                    parsed.features.len()
                );
            }
        }
    }
    if let Compiled::Trees(e) = &parsed.model {
        e.check()?;
    }
    let mut seen = std::collections::HashSet::new();
    for f in &parsed.features {
        if !seen.insert(f.name.as_str()) {
            bail!("feature '{}' is named twice", f.name);
        }
    }
    Ok(parsed)
}
