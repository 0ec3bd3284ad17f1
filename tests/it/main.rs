//! The integration tests, one binary: the real `nightshift` binary and library against the
//! bundled fixtures, local storage in temporary folders, and a real S3-compatible server.

mod daemon;
mod drift;
mod drift_properties;
mod drift_scipy;
mod pipeline;
mod s3;
mod util;
mod util_s3;
mod validate;
