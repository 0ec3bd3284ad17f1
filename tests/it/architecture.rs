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

/// The sibling modules a line names: `super::NAME` (and `super::{NAME, ...}`) from a file
/// `depth` levels below the directory, and `crate::PARENT::NAME` from anywhere under it.
fn sibling_uses(
    code: &str,
    parent: &str,
    depth: usize,
    siblings: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut heads: Vec<&str> = Vec::new();
    let supers = "super::".repeat(depth);
    for (i, _) in code.match_indices(&supers) {
        if code[..i].ends_with("super::") {
            continue;
        }
        heads.push(&code[i + supers.len()..]);
    }
    let crate_path = format!("crate::{parent}::");
    for (i, _) in code.match_indices(&crate_path) {
        heads.push(&code[i + crate_path.len()..]);
    }
    for rest in heads {
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .collect(),
            None => vec![rest],
        };
        for n in names {
            let end = n
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(n.len());
            if siblings.contains(&n[..end]) {
                out.push(n[..end].to_string());
            }
        }
    }
    out
}

/// Within a directory module (`src/cli/`, `src/model/` ...), its files and folders use each
/// other without a cycle: the layering test sees only `crate::X` paths between top-level
/// modules, not `super::` imports between siblings. Test modules are left out.
#[test]
fn siblings_in_a_module_use_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![src.clone()];
    let mut cycles = Vec::new();
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        let mut siblings = BTreeSet::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p.clone());
                siblings.insert(p.file_name().unwrap().to_str().unwrap().to_string());
            } else if p.extension().is_some_and(|e| e == "rs") {
                let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
                if !matches!(stem.as_str(), "mod" | "lib" | "main") {
                    siblings.insert(stem);
                }
            }
        }
        if dir == src {
            continue; // top-level modules: the layering test
        }
        let parent = dir
            .strip_prefix(&src)
            .unwrap()
            .to_str()
            .unwrap()
            .replace('/', "::");
        let mut edges: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            let rel = file.strip_prefix(&dir).unwrap();
            let from = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap();
            let from = from.strip_suffix(".rs").unwrap_or(from).to_string();
            if !siblings.contains(&from) {
                continue;
            }
            let depth = rel.components().count();
            let depth = if rel.file_name().is_some_and(|f| f == "mod.rs") {
                depth - 1
            } else {
                depth
            };
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                let code = line.split("//").next().unwrap_or("");
                for to in sibling_uses(code, &parent, depth, &siblings) {
                    if to != from {
                        edges.entry(from.clone()).or_default().insert(to);
                    }
                }
            }
        }
        checked += 1;
        // A cycle: a sibling that reaches itself.
        for start in edges.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((at, path)) = stack.pop() {
                for next in edges.get(&at).into_iter().flatten() {
                    if next == start {
                        let mut c = path.clone();
                        c.push(start.clone());
                        cycles.push(format!("{parent}: {}", c.join(" -> ")));
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
    }
    assert!(checked >= 5, "only {checked} directory modules found");
    cycles.sort();
    cycles.dedup();
    // Known, not broken yet: an imported ensemble keeps its compiled form in a cache field
    // (ensemble -> flat) that is compiled from it (flat -> ensemble); an ONNX tree node's
    // steps are ops (trees -> ops), and the ops compile tree nodes (ops -> trees).
    const KNOWN: &[&str] = &[
        "model::formats: ensemble -> flat -> ensemble",
        "model::formats: flat -> ensemble -> flat",
        "model::formats::onnx: ops -> trees -> ops",
        "model::formats::onnx: trees -> ops -> trees",
    ];
    let known: Vec<&String> = cycles
        .iter()
        .filter(|c| KNOWN.contains(&c.as_str()))
        .collect();
    assert_eq!(
        known.len(),
        KNOWN.len(),
        "a known cycle is gone: take it off KNOWN"
    );
    cycles.retain(|c| !KNOWN.contains(&c.as_str()));
    assert!(
        cycles.is_empty(),
        "cycles between sibling modules:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_sibling_check_sees_single_and_grouped_imports() {
    let siblings: BTreeSet<String> = ["report", "html", "stats"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        sibling_uses("use super::{report, DATASET_ROW};", "drift", 1, &siblings),
        ["report"]
    );
    assert_eq!(
        sibling_uses("use super::html::page;", "drift", 1, &siblings),
        ["html"]
    );
    assert_eq!(
        sibling_uses("use super::super::stats;", "drift", 2, &siblings),
        ["stats"]
    );
    assert!(sibling_uses("use super::super::stats;", "drift", 1, &siblings).is_empty());
    assert_eq!(
        sibling_uses("crate::drift::stats::ks(x)", "drift", 1, &siblings),
        ["stats"]
    );
}
