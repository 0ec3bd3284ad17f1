//! Stopping a command-line run cleanly on SIGTERM or Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

/// A flag set by the first SIGTERM or SIGINT (Ctrl-C), after printing `why` on stderr: the
/// run (or backfill) in flight aborts as the daemon's runs do at shutdown, removing what it
/// wrote and releasing its lease, instead of being killed mid-write. In a container the
/// process is PID 1, which gets no default handler for SIGTERM.
pub(super) fn stop_on_signals(why: &'static str) -> Result<Arc<AtomicBool>> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    // Registered before this returns, so a signal from now on is never the default (fatal).
    let (mut term, mut int) = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("nightshift-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            eprintln!("{why}");
            flag.store(true, Ordering::SeqCst);
        })
        .context("starting the signal handler")?;
    Ok(cancel)
}
