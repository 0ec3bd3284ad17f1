//! The layering of docs/architecture.md, checked: a module of `src/` may use the modules of
//! the layers below its own, never one beside or above it. So the import graph has no cycle,
//! and a change that would make one fails here with the line that does it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// From the bottom up, as docs/architecture.md draws them.
const LAYERS: &[&[&str]] = &[
    // What a column is to a model, names; quality metrics; CPU dispatch of hot loops;
    // test-only faults.
    &["schema", "metric", "simd", "failpoint"],
    &["storage"],
    // Files in, files out, profiles, leases, MLflow's REST API: each on storage alone.
    &["lease", "read", "write", "profile", "mlflow"],
    // The job files, validated.
    &["config"],
    &["model"],
    // The stages of a run that use a model or a job.
    &["plan", "score", "drift"],
    &["record"],
    // Beside each other: sharded runs, evaluating committed dates against their labels, and
    // when a job's schedule fires (pure functions).
    &["shard", "performance", "timetable"],
    &["run"],
    // The web pages: over records and reports; whoever serves them says what is running.
    &["ui"],
    &["backfill", "daemon"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a line of code names as `crate::NAME`, comments left out.
fn used_modules(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .filter(|(i, _)| !code[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            let rest = &code[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// `src/drift/html.rs` belongs to `drift`; `lib.rs`, `main.rs` and `bin/` sit above it all.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_string())
}

#[test]
fn modules_use_only_the_layers_below_their_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut unplaced = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer(&module) else {
            unplaced.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for used in used_modules(line) {
                if used == module {
                    continue;
                }
                match layer(used) {
                    Some(l) if l < own => {}
                    Some(_) => wrong.push(format!(
                        "{}:{}: {module} uses {used}, which is not in a layer below it: {}",
                        file.strip_prefix(&src).unwrap().display(),
                        n + 1,
                        line.trim()
                    )),
                    None => {
                        unplaced.insert(used.to_string());
                    }
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules in no layer: {unplaced:?}; place them in LAYERS and docs/architecture.md"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
    // The check reads something: every layer but the bottom one uses a lower one.
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
}

#[test]
fn the_check_sees_paths_and_ignores_comments() {
    assert_eq!(
        used_modules("use crate::model::{Registry, LoadedModel}; // crate::daemon"),
        ["model"]
    );
    assert_eq!(
        used_modules("    let s = crate::storage::Stores::default();"),
        ["storage"]
    );
    assert!(used_modules("/// See [`crate::daemon::run`].").is_empty());
    assert!(used_modules("use nightshift_crate::x;").is_empty());
}

/// The command line is the top layer's business: no module below `cli` derives or names a
/// clap type (the model's `Algorithm`, for one, is parsed by `cli::train` from strum's names).
#[test]
fn only_the_cli_names_clap() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if module == "cli" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("clap::") || code.contains("use clap") {
                wrong.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(&src).unwrap().display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "clap below the cli layer:\n{}",
        wrong.join("\n")
    );
}
