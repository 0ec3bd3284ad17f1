//! `nightshift ui`: the daemon's web pages, read-only, from the job files alone: someone on a
//! laptop looks at production state (local or S3) without scheduling anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::load_config;
use crate::daemon::{http::Api, TOKEN_VAR};
use crate::storage::Stores;
use crate::ui::{self, ReadOnly, Ui};

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Folder of job files (its nightshift.toml says where the state and reports are).
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
    /// Address to serve the pages on. Keep it on loopback unless something in front guards
    /// it; with NIGHTSHIFT_API_TOKEN set, every page needs the token.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
}

pub(super) fn execute(args: UiArgs) -> Result<ExitCode> {
    let cfg = load_config(&args.jobs)?;
    // Made out here and dropped after the runtime, as the daemon does (the S3 client owns a
    // runtime of its own).
    let stores = Stores::new(cfg.settings.s3.clone());
    let settings = Arc::new(cfg.settings.clone());
    let pages = Ui {
        activity: Arc::new(ReadOnly {
            jobs: cfg.jobs.into_iter().map(Arc::new).collect(),
            settings: settings.clone(),
            stores: stores.clone(),
        }),
        settings,
        stores: stores.clone(),
        caches: Default::default(),
        token_sha256: Api::token_from_env(TOKEN_VAR),
        loopback: args.listen.ip().is_loopback(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, "Serving the pages read-only: http://{addr}/ui");
        let loopback = pages.loopback;
        axum::serve(listener, ui::local_names_only(ui::router(pages), loopback))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving the pages")
    });
    drop(rt);
    drop(stores);
    result.map(|_| ExitCode::SUCCESS)
}
