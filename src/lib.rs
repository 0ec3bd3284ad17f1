//! nightshift: scheduled batch scoring of machine-learning models over Parquet.
//!
//! A run flows one way, one module per stage:
//! `config` (job files) -> `plan` (which objects for which date) -> `read` (Parquet batches)
//! -> `score` (features -> model -> scores) -> `write` (atomic Parquet outputs)
//! -> `record` (success manifest and run record). `run` drives the stages; `model` holds the
//! registry and training; `storage` hides local files and S3 behind one interface. `daemon`
//! schedules runs and serves the HTTP API. `lease` keeps one writer per job and date.
//! docs/architecture.md draws the layers; a module uses only the layers below its own.

pub mod backfill;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod drift;
pub mod failpoint;
pub mod lease;
pub mod metric;
pub mod mlflow;
pub mod model;
pub mod performance;
pub mod plan;
pub mod profile;
pub mod read;
pub mod record;
pub mod run;
pub mod schema;
pub mod score;
pub mod shard;
mod simd;
pub mod storage;
pub mod timetable;
pub mod ui;
pub mod write;
