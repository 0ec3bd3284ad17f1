//! The integration tests, one binary: the real `nightshift` binary and library against the
//! bundled fixtures, local storage in temporary folders, and a real S3-compatible server.

mod architecture;
mod backfill;
mod daemon;
mod deploy;
mod drift;
mod drift_properties;
mod drift_scipy;
mod faults;
mod finite_scores;
mod fuzz;
mod imported;
mod integrity;
mod mlflow;
mod performance;
mod pipeline;
mod prefetch;
mod s3;
mod security;
mod storage_integrity;
mod ui;
mod util;
mod util_s3;
mod validate;
