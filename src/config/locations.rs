//! Whether two locations overlap: the same place, or one nested in the other.
//!
//! A job that writes where it reads (or where it keeps models, run records or reports) destroys
//! its own data, so validation refuses any two of a job's locations that overlap, and any two
//! jobs of a folder whose outputs or quarantines do. Locations are compared as they are
//! written, templates included: `{job}` is rendered, `{date}` stays a placeholder that stands
//! for any date, so the answer holds for every logical date.
//!
//! Comparison is per path segment (`out/x/` does not contain `out/x_scores/`). Local paths are
//! made absolute against the working directory and normalized lexically (`.` dropped, `..`
//! resolved, `file://` stripped), without looking at the file system; S3 locations overlap
//! only within one bucket. A local location never overlaps an S3 one.

use std::path::{Component, Path};

use crate::storage::{Uri, UriError};

/// The date templates are rendered with to check that they make valid URIs.
const SAMPLE_DATE: &str = "2026-01-01";

/// A location reduced to what decides overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    s3: bool,
    /// For S3 the bucket, then the key's segments; locally the absolute path's segments.
    /// Empty segments (`a//b`) are dropped. A segment may hold `{date}`.
    segments: Vec<String>,
}

/// How the first of two locations lies against the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    Same,
    /// The first is nested in the second.
    Inside,
    /// The second is nested in the first.
    Contains,
}

impl Overlap {
    /// Words between the two locations' names: "output uri 'x' {is inside} input uri 'y'".
    pub fn phrase(self) -> &'static str {
        match self {
            Overlap::Same => "is the same location as",
            Overlap::Inside => "is inside",
            Overlap::Contains => "contains",
        }
    }
}

impl Location {
    /// A template (with `{date}` and `{job}` placeholders) of job `job`. Fails, with the
    /// reason, when the template rendered for this job and a date is not a valid URI (a bucket
    /// name made invalid by `{job}`, say).
    pub fn of_template(template: &str, job: &str) -> Result<Self, UriError> {
        let s = template.replace("{job}", job);
        Uri::parse(&s.replace("{date}", SAMPLE_DATE))?;
        Ok(Self::of_str(&s))
    }

    /// A location without placeholders (the registry, state and reports).
    pub fn of_uri(uri: &Uri) -> Self {
        match uri {
            Uri::Local(p) => Self::local(p),
            Uri::S3 { bucket, key } => Self::s3(bucket, key),
        }
    }

    fn of_str(s: &str) -> Self {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            return Self::s3(bucket, key);
        }
        Self::local(Path::new(s.strip_prefix("file://").unwrap_or(s)))
    }

    fn s3(bucket: &str, key: &str) -> Self {
        let mut segments = vec![bucket.to_string()];
        segments.extend(key.split('/').filter(|s| !s.is_empty()).map(str::to_string));
        Self { s3: true, segments }
    }

    fn local(path: &Path) -> Self {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut segments: Vec<String> = Vec::new();
        for c in absolute.components() {
            match c {
                Component::Prefix(p) => segments.push(p.as_os_str().to_string_lossy().into()),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    segments.pop();
                }
                Component::Normal(s) => segments.push(s.to_string_lossy().into()),
            }
        }
        Self {
            s3: false,
            segments,
        }
    }

    /// How `self` lies against `other`, if they overlap for some date.
    pub fn overlap(&self, other: &Location) -> Option<Overlap> {
        if self.s3 != other.s3 {
            return None;
        }
        let common = self
            .segments
            .iter()
            .zip(&other.segments)
            .all(|(a, b)| segments_may_match(a, b));
        if !common {
            return None;
        }
        Some(match self.segments.len().cmp(&other.segments.len()) {
            std::cmp::Ordering::Equal => Overlap::Same,
            std::cmp::Ordering::Greater => Overlap::Inside,
            std::cmp::Ordering::Less => Overlap::Contains,
        })
    }
}

/// Whether two path segments can name the same folder on some date. Two templated segments
/// match when they are the same template (both are rendered with the run's date); a literal
/// one matches a templated one it could be a rendering of (`dt=2026-11-03` and `dt={date}`).
fn segments_may_match(a: &str, b: &str) -> bool {
    match (a.contains("{date}"), b.contains("{date}")) {
        (true, false) => renders_to(a, b),
        (false, true) => renders_to(b, a),
        _ => a == b,
    }
}

/// Whether `template` with each `{date}` replaced by some YYYY-MM-DD can give `literal`.
fn renders_to(template: &str, literal: &str) -> bool {
    match template.split_once("{date}") {
        None => template == literal,
        Some((head, tail)) => {
            let Some(rest) = literal.strip_prefix(head) else {
                return false;
            };
            rest.get(..10).is_some_and(is_date) && renders_to(tail, &rest[10..])
        }
    }
}

fn is_date(s: &str) -> bool {
    s.bytes().enumerate().all(|(i, c)| match i {
        4 | 7 => c == b'-',
        _ => c.is_ascii_digit(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(a: &str, b: &str) -> Option<Overlap> {
        let a = Location::of_template(a, "churn").unwrap();
        let b = Location::of_template(b, "churn").unwrap();
        a.overlap(&b)
    }

    #[test]
    fn overlaps() {
        use Overlap::*;
        let cases = [
            ("data/", "data/scores/dt={date}/", Some(Contains)),
            ("data/dt={date}/", "data/dt={date}/scores/", Some(Contains)),
            ("out/a/dt={date}/q/", "out/a/dt={date}/", Some(Inside)),
            ("data/dt={date}/", "data/dt={date}", Some(Same)),
            ("data/dt={date}/", "./data/dt={date}/", Some(Same)),
            ("data/dt={date}/", "x/../data/dt={date}/", Some(Same)),
            ("data/dt={date}/", "file://data/dt={date}/", Some(Same)),
            ("out/{job}/", "out/churn/dt={date}/", Some(Contains)),
            // A literal date matches the template on that date.
            ("in/dt=2026-11-03/", "in/dt={date}/x/", Some(Contains)),
            ("in/dt=latest/", "in/dt={date}/x/", None),
            // Per segment, not per character.
            ("out/x/dt={date}/", "out/x_scores/dt={date}/", None),
            ("out/dt={date}/", "out/state/", None),
            ("in/{date}/", "in/scores-{date}/", None),
            ("s3://bkt/{date}/", "s3://bkt/_quarantine/{date}/", None),
            // An object as input: only what lies under the object itself overlaps.
            ("in/dt={date}/part-0.parquet", "in/dt={date}/scores/", None),
            ("in/dt={date}/part-0.parquet", "in/dt={date}/", Some(Inside)),
            ("s3://bkt/a/", "s3://bkt/a/b/dt={date}/", Some(Contains)),
            ("s3://bkt/", "s3://bkt/a/dt={date}/", Some(Contains)),
            ("s3://bkt/a/", "s3://other/a/dt={date}/", None),
            ("s3://bkt/a/", "bkt/a/", None),
            ("/bkt/a/", "s3://bkt/a/", None),
        ];
        for (a, b, want) in cases {
            assert_eq!(overlap(a, b), want, "{a} against {b}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        let abs = format!("{}/out/x/", cwd.display());
        assert_eq!(overlap(&abs, "out/x/dt={date}/"), Some(Overlap::Contains));
        assert_eq!(overlap("/", "out/x/dt={date}/"), Some(Overlap::Contains));
    }

    #[test]
    fn uris_without_placeholders() {
        let state = Location::of_uri(&Uri::parse("out/state/").unwrap());
        let out = Location::of_template("out/state/{job}/dt={date}/", "a").unwrap();
        assert_eq!(out.overlap(&state), Some(Overlap::Inside));
    }

    #[test]
    fn templates_must_render_to_valid_uris() {
        assert!(Location::of_template("s3://b-{job}/x/", "Churn").is_err());
        assert!(Location::of_template("s3://b-{job}/x/", "churn").is_ok());
    }

    #[test]
    fn date_segments() {
        assert!(renders_to("dt={date}", "dt=2026-11-03"));
        assert!(renders_to("{date}_{date}", "2026-11-03_2026-11-04"));
        assert!(!renders_to("dt={date}", "dt=2026-11-3"));
        assert!(!renders_to("dt={date}", "dt=2026-11-03x"));
        assert!(!renders_to("{date}", "scores"));
    }
}
