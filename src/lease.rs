//! One writer per job and date: a lease object in the state location.
//!
//! Leases live at `STATE/leases/JOB/DATE/GENERATION.json`. Taking one is a conditional create
//! (`If-None-Match: *` on S3, a hard link locally) of the generation after the newest one, and
//! only when the newest one is released or expired; so of any number of racing runners
//! exactly one creates a given generation, and a live lease is never taken over. The holder
//! renews its lease (rewrites its `expires_at`) every third of the ttl while the run goes on;
//! a dead holder blocks the date for at most one ttl. A holder that finds a newer generation
//! than its own has lost the lease (it stalled longer than the ttl) and must not write any
//! more. The newest generation is never deleted (a release marks it released), so generations
//! only grow and a number is never handed out twice.
//!
//! This is not a fencing token: a holder that stalls between its last check and a write (a
//! check comes before every output's commit and before the marker) can still make that one
//! write. With the default ttl of minutes, that takes a stall of minutes at exactly that point.
//!
//! Expiry compares the contender's clock with the holder's: clocks must agree to well within
//! the ttl (NTP gives milliseconds; the default ttl is minutes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::storage::{ErrorKind, Location};

/// How long a lease lasts without renewal, unless the settings say otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);

/// Who holds a lease, for the loser's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub run_id: String,
}

/// The body of a lease object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseBody {
    job: String,
    logical_date: NaiveDate,
    holder: Holder,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    released: bool,
    /// `None` for a run of the whole date; `Some(KEY)` for the shards of sharded run KEY, who
    /// share the date's lease (each also holds its own part's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sharded_run: Option<String>,
}

/// Another runner holds the lease of this job and date.
#[derive(Debug, thiserror::Error)]
#[error(
    "{job} {date} is already being run by {host} (pid {pid}, run {run_id}{part}) since {since}; \
     its lease expires at {expires_at} unless renewed",
    host = holder.host, pid = holder.pid, run_id = holder.run_id,
    part = sharded_run.as_ref().map(|k| format!(", a shard of sharded run {k}")).unwrap_or_default(),
    since = acquired_at.format("%Y-%m-%d %H:%M:%S UTC"),
    expires_at = expires_at.format("%Y-%m-%d %H:%M:%S UTC")
)]
pub struct LeaseHeld {
    pub job: String,
    pub date: NaiveDate,
    pub holder: Holder,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The sharded run whose shards hold the date, if that is who holds it.
    pub sharded_run: Option<String>,
}

impl LeaseHeld {
    /// True when the holder was a process on this host that no longer exists (a runner that
    /// was killed): its lease only waits for its expiry, and the date can be tried again then.
    pub fn holder_is_gone(&self) -> bool {
        self.holder.host == this_host()
            && self.holder.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.holder.pid)).exists()
    }
}

/// The lease was taken over by another runner while this one held it (this runner stalled
/// for longer than the ttl): it must not commit.
#[derive(Debug, thiserror::Error)]
#[error("the lease of {job} {date} was lost (this run stalled longer than the lease ttl of {ttl_secs} s and another runner took the date over)")]
pub struct LeaseLost {
    pub job: String,
    pub date: NaiveDate,
    pub ttl_secs: u64,
}

/// A held lease. Renewed in the background until released or dropped.
pub struct Lease {
    inner: Arc<Inner>,
    renewer: Option<JoinHandle<()>>,
    /// A shard's: the date's lease, which the shards of its sharded run share.
    date: Option<Box<Lease>>,
}

struct Inner {
    dir: Location,
    /// The generation held, and its object. A claim may move to a newer generation of its own
    /// sharded run (see [`Inner::check_newest`]); other leases keep theirs.
    generation: std::sync::atomic::AtomicU64,
    loc: Mutex<Location>,
    body: Mutex<LeaseBody>,
    ttl: Duration,
    lost: AtomicBool,
    stop: (Mutex<bool>, Condvar),
}

fn generation_name(generation: u64) -> String {
    format!("{generation:020}.json")
}

fn generation_of(dir: &Location, key: &str) -> Option<u64> {
    dir.relative(key).strip_suffix(".json")?.parse().ok()
}

/// The newest lease object of a date, if any: (generation, key).
fn newest(dir: &Location) -> Result<Option<(u64, String)>> {
    Ok(dir
        .store
        .list(&dir.key)?
        .into_iter()
        .filter_map(|o| generation_of(dir, &o.key).map(|g| (g, o.key)))
        .max_by_key(|(g, _)| *g))
}

fn this_host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// How long a sharded run's claim holds the date by itself, in lease ttls, while none of its
/// shards runs: Kubernetes may leave minutes between one index's end and the next one's start
/// (a retry's backoff, a pod waiting for room), and a whole-date run must not slip in there.
const CLAIM_TTLS: u32 = 10;

/// Reads a lease object, again (a few times) if the read failed transiently: some
/// S3-compatible servers rewrite an object in place, and a read can race a renewal.
fn read_again_if_torn(dir: &Location, key: &str) -> Result<Bytes> {
    let mut tries = 0;
    loop {
        match dir.store.get(key) {
            Err(e) if ErrorKind::of(&e) == Some(ErrorKind::Transient) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// Who is taking a lease, and for how long.
struct Who<'a> {
    job: &'a str,
    date: NaiveDate,
    run_id: &'a str,
    ttl: Duration,
}

/// What a lease object is.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// The date, for a run of the whole date.
    Whole,
    /// One shard's part of the date (`DATE/LABEL/`), for sharded run KEY.
    Part(&'a str),
    /// The date, claimed for the shards of sharded run KEY.
    Claim(&'a str),
}

/// Who holds a date, as a refused runner is told.
struct Held {
    holder: Holder,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    sharded_run: Option<String>,
}

/// Whether the newest lease object `body` of a date (in `dir`) holds it: unreleased and
/// unexpired; or, for a sharded run's claim, unreleased while any part lease of that run is
/// live (then named as the holder).
fn live_holder(dir: &Location, body: &LeaseBody) -> Result<Option<Held>> {
    if body.released {
        return Ok(None);
    }
    let held = |b: &LeaseBody| Held {
        holder: b.holder.clone(),
        acquired_at: b.acquired_at,
        expires_at: b.expires_at,
        sharded_run: b.sharded_run.clone(),
    };
    let now = Utc::now();
    if body.expires_at > now {
        return Ok(Some(held(body)));
    }
    let Some(key) = &body.sharded_run else {
        return Ok(None);
    };
    // The newest part lease of each shard, by label.
    let mut parts: std::collections::BTreeMap<String, (u64, String)> = Default::default();
    for o in dir.store.list(&dir.key)? {
        let rel = dir.relative(&o.key);
        let Some((label, file)) = rel.split_once('/') else {
            continue;
        };
        let Some(g) = file
            .strip_suffix(".json")
            .and_then(|f| f.parse::<u64>().ok())
        else {
            continue;
        };
        let e = parts.entry(label.to_string()).or_insert((g, o.key.clone()));
        if g > e.0 {
            *e = (g, o.key);
        }
    }
    for (_, (_, part_key)) in parts {
        let bytes = match read_again_if_torn(dir, &part_key) {
            Ok(b) => b,
            // Tidied by its shard's next taker: not live.
            Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => continue,
            // Unreadable for now: the date may be held; say so rather than take it.
            Err(e) => return Err(e.context("reading a shard's lease of the date")),
        };
        if let Ok(part) = serde_json::from_slice::<LeaseBody>(&bytes) {
            if part.sharded_run.as_ref() == Some(key) && !part.released && part.expires_at > now {
                return Ok(Some(held(&part)));
            }
        }
    }
    Ok(None)
}

impl Lease {
    /// Takes the lease of `job` and `date`, or says who holds it ([`LeaseHeld`] in the chain).
    ///
    /// `shard` is `(label, run key)` for a shard of a sharded run. The shard takes its own
    /// part's lease (`DATE/LABEL/`, renewed as any lease, naming its run key), so two copies of
    /// one shard keep each other out; then it claims the date for its sharded run, or joins
    /// the claim another shard of the run made. A claim is never renewed (each lease object
    /// has one writer): it holds the date while it is younger than the ttl, or while any part
    /// lease of its run is live, until the shard that commits the date releases it. A run of
    /// the whole date, or a sharded run with another key, is refused while the claim holds,
    /// and the shards are refused while a whole-date run holds the date.
    pub fn acquire(
        state: &Location,
        job: &str,
        date: NaiveDate,
        shard: Option<(&str, &str)>,
        run_id: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let dir = state.join("leases").join(job).join(&date.to_string());
        let who = Who {
            job,
            date,
            run_id,
            ttl,
        };
        match shard {
            None => Self::take(dir, &who, Kind::Whole),
            Some((label, key)) => {
                let mut own = Self::take(dir.join(label), &who, Kind::Part(key))?;
                // Refused: `own` is dropped, and with it this shard's part lease.
                let claim = Self::take(dir, &who, Kind::Claim(key))?;
                own.date = Some(Box::new(claim));
                Ok(own)
            }
        }
    }

    /// Takes the next generation in `dir` (or, for a claim, joins the live claim of the same
    /// sharded run).
    fn take(dir: Location, who: &Who<'_>, kind: Kind<'_>) -> Result<Lease> {
        // Each round either creates the next generation, joins a live claim of the same
        // sharded run, or finds a live holder; a lost race means someone else created it, and
        // the next round names them. A read that fails transiently (some S3-compatible servers
        // rewrite an object in place, and a read can race a renewal) is tried again.
        let (mut rounds, mut rereads) = (0, 0);
        while rounds < 8 {
            rounds += 1;
            let next = match newest(&dir)? {
                None => 1,
                Some((generation, key)) => match dir.store.get(&key) {
                    Ok(bytes) => {
                        // An unreadable lease (written by hand, or by a future version) must
                        // not block the date for ever: it counts as expired.
                        let body = match serde_json::from_slice::<LeaseBody>(&bytes) {
                            Ok(body) => Some(body),
                            Err(e) => {
                                warn!(lease = %dir.store.uri(&key), error = %e, "Unreadable lease; taken as expired.");
                                None
                            }
                        };
                        let held = match &body {
                            Some(b) => live_holder(&dir, b)?,
                            None => None,
                        };
                        if let (Some(body), Some(held)) = (body, held) {
                            if let Kind::Claim(k) = kind {
                                // A claim past its own expiry (held only by its shards' part
                                // leases) is not joined but renewed by a new generation of the
                                // same run, raced for as any generation: a runner deciding to
                                // take the date over at this instant races for the same one.
                                let fresh = body.expires_at > Utc::now();
                                if body.sharded_run.as_deref() == Some(k) && !fresh {
                                    let next = generation + 1;
                                    if let Some(lease) = Self::create(&dir, who, kind, next)? {
                                        return Ok(lease);
                                    }
                                    continue;
                                }
                                if body.sharded_run.as_deref() == Some(k) {
                                    debug!(lease = %dir.store.uri(&key), "Joined the sharded run's claim on the date.");
                                    let loc = dir.join(&generation_name(generation));
                                    return Self::held(dir, loc, generation, body, who.ttl, false);
                                }
                            }
                            return Err(LeaseHeld {
                                job: who.job.to_string(),
                                date: who.date,
                                holder: held.holder,
                                acquired_at: held.acquired_at,
                                expires_at: held.expires_at,
                                sharded_run: held.sharded_run,
                            }
                            .into());
                        }
                        generation + 1
                    }
                    // Tidied by a new holder between the listing and the read: look again.
                    Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => continue,
                    Err(e) if ErrorKind::of(&e) == Some(ErrorKind::Transient) && rereads < 20 => {
                        debug!(error = %format!("{e:#}"), "Reading a lease failed; reading it again.");
                        rereads += 1;
                        rounds -= 1;
                        std::thread::sleep(Duration::from_millis(25));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            if let Some(lease) = Self::create(&dir, who, kind, next)? {
                return Ok(lease);
            }
        }
        anyhow::bail!(
            "could not take the lease of {} {}: too many racing runners",
            who.job,
            who.date
        )
    }

    /// Creates generation `next` if nobody has (a conditional create); `None` if someone did.
    fn create(dir: &Location, who: &Who<'_>, kind: Kind<'_>, next: u64) -> Result<Option<Lease>> {
        let ttl = match kind {
            Kind::Claim(_) => who.ttl * CLAIM_TTLS,
            Kind::Whole | Kind::Part(_) => who.ttl,
        };
        let now = Utc::now();
        let body = LeaseBody {
            job: who.job.to_string(),
            logical_date: who.date,
            holder: Holder {
                host: this_host(),
                pid: std::process::id(),
                run_id: who.run_id.to_string(),
            },
            acquired_at: now,
            expires_at: now + chrono::Duration::from_std(ttl).context("lease ttl")?,
            released: false,
            sharded_run: match kind {
                Kind::Whole => None,
                Kind::Part(k) | Kind::Claim(k) => Some(k.to_string()),
            },
        };
        let loc = dir.join(&generation_name(next));
        if !loc
            .store
            .put_if_absent(&loc.key, Bytes::from(serde_json::to_vec_pretty(&body)?))?
        {
            return Ok(None);
        }
        debug!(lease = %loc.uri(), "Lease taken.");
        // Older generations are dead (expired or released, or an older claim of the same
        // run): tidy them. Ours, the newest, stays until the next taker tidies it.
        for o in dir.store.list(&dir.key)? {
            if generation_of(dir, &o.key).is_some_and(|g| g < next) {
                let _ = dir.store.delete(&o.key);
            }
        }
        let renewed = !matches!(kind, Kind::Claim(_));
        Self::held(dir.clone(), loc, next, body, who.ttl, renewed).map(Some)
    }

    /// A lease held from now on; renewed in the background unless it is a claim.
    fn held(
        dir: Location,
        loc: Location,
        generation: u64,
        body: LeaseBody,
        ttl: Duration,
        renewed: bool,
    ) -> Result<Lease> {
        let inner = Arc::new(Inner {
            dir,
            loc: Mutex::new(loc),
            generation: std::sync::atomic::AtomicU64::new(generation),
            body: Mutex::new(body),
            ttl,
            lost: AtomicBool::new(false),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let renewer = if renewed {
            let inner = Arc::clone(&inner);
            Some(
                std::thread::Builder::new()
                    .name("nightshift-lease".into())
                    .spawn(move || inner.renew_until_stopped())
                    .context("starting the lease renewer")?,
            )
        } else {
            None
        };
        Ok(Lease {
            inner,
            renewer,
            date: None,
        })
    }

    /// The shard that committed its date: the sharded run is over, so its claim on the date
    /// is released now rather than when its last part lease ends.
    pub fn release_date(&mut self) {
        if let Some(date) = self.date.take() {
            if let Err(e) = date.inner.mark_released() {
                warn!(lease = %date.inner.loc().uri(), error = %format!("{e:#}"), "Could not release the sharded run's claim; it ends by itself.");
            }
        }
    }

    /// Fails with [`LeaseLost`] unless this runner still holds the lease, looking at the
    /// store now (not only at what the renewer saw).
    pub fn ensure_held(&self) -> Result<()> {
        if let Some(date) = &self.date {
            date.inner.check_newest()?;
        }
        let inner = &self.inner;
        if !inner.lost.load(Ordering::SeqCst) {
            // Renewing checks that the newest generation is still ours, and keeps it from
            // expiring while the caller commits.
            return inner.renew();
        }
        Err(inner.lost_error().into())
    }

    /// Like [`Lease::ensure_held`], but without asking the store while the lease is well
    /// within its expiry: nobody can take a lease over before it expires, so until a third of
    /// the ttl before `expires_at` (by this host's clock) the answer is known. For checks on a
    /// hot path, such as before each output's commit; a runner that stalled past that point
    /// asks the store.
    pub fn ensure_held_cheaply(&self) -> Result<()> {
        if let Some(date) = &self.date {
            // A claim has no expiry of its own to trust: look at the store.
            date.inner.check_newest()?;
        }
        let inner = &self.inner;
        if inner.lost.load(Ordering::SeqCst) {
            return Err(inner.lost_error().into());
        }
        let expires_at = inner.body.lock().expect("lease body lock").expires_at;
        let margin = chrono::Duration::from_std(inner.ttl / 3).unwrap_or(chrono::Duration::MAX);
        if Utc::now() + margin < expires_at {
            return Ok(());
        }
        inner.renew()
    }

    /// True once the renewer saw the lease taken over.
    pub fn is_lost(&self) -> bool {
        self.inner.lost.load(Ordering::SeqCst) || self.date.as_ref().is_some_and(|d| d.is_lost())
    }

    /// Gives the date up: stops renewing and marks the lease released (kept, so that its
    /// generation number is never handed out again).
    pub fn release(mut self) -> Result<()> {
        self.stop_renewer();
        self.inner.mark_released()
    }

    fn stop_renewer(&mut self) {
        let (lock, cvar) = &self.inner.stop;
        *lock.lock().expect("lease stop lock") = true;
        cvar.notify_all();
        if let Some(h) = self.renewer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Lease {
    /// A lease dropped without `release` (a failed run) is released too: the date is free for
    /// the next runner at once rather than after the ttl.
    fn drop(&mut self) {
        if self.renewer.is_some() {
            self.stop_renewer();
            if let Err(e) = self.inner.mark_released() {
                let loc = self.inner.loc();
                warn!(lease = %loc.uri(), error = %format!("{e:#}"), "Could not release a lease; it expires by itself.");
            }
        }
    }
}

impl Inner {
    /// Marks the lease released, unless another runner has taken the date since.
    fn mark_released(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst)
            || newest(&self.dir)?.map(|(g, _)| g) != Some(self.generation())
        {
            return Ok(()); // someone else's now
        }
        let bytes = {
            let mut body = self.body.lock().expect("lease body lock");
            body.released = true;
            serde_json::to_vec_pretty(&*body)?
        };
        let loc = self.loc();
        loc.store
            .put(&loc.key, Bytes::from(bytes))
            .with_context(|| format!("releasing lease {}", loc.uri()))
    }

    fn lost_error(&self) -> LeaseLost {
        let body = self.body.lock().expect("lease body lock");
        LeaseLost {
            job: body.job.clone(),
            date: body.logical_date,
            ttl_secs: self.ttl.as_secs(),
        }
    }

    /// Fails with [`LeaseLost`] if a newer generation than ours exists (for a claim: another
    /// runner took the date over, after every part lease of the run had ended).
    fn check_newest(&self) -> Result<()> {
        let ours = self.generation();
        let lost = || {
            self.lost.store(true, Ordering::SeqCst);
            Err(self.lost_error().into())
        };
        match newest(&self.dir)? {
            Some((g, _)) if g == ours => Ok(()),
            // A newer claim of our own sharded run (a shard renewed the run's hold after the
            // old claim expired): it is ours too.
            Some((g, key)) if g > ours => {
                let run = self
                    .body
                    .lock()
                    .expect("lease body lock")
                    .sharded_run
                    .clone();
                let body: Option<LeaseBody> = read_again_if_torn(&self.dir, &key)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                match body {
                    Some(b) if run.is_some() && b.sharded_run == run && !b.released => {
                        self.generation.store(g, Ordering::SeqCst);
                        *self.loc.lock().expect("lease loc lock") =
                            self.dir.join(&generation_name(g));
                        *self.body.lock().expect("lease body lock") = b;
                        Ok(())
                    }
                    _ => lost(),
                }
            }
            _ => lost(),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn loc(&self) -> Location {
        self.loc.lock().expect("lease loc lock").clone()
    }

    /// Rewrites the lease with a new expiry, unless a newer generation exists.
    fn renew(&self) -> Result<()> {
        // Our object is only ever removed by a runner that took a newer generation (and may
        // since have released it): either way the date is no longer ours.
        if newest(&self.dir)?.map(|(g, _)| g) != Some(self.generation()) {
            self.lost.store(true, Ordering::SeqCst);
            return Err(self.lost_error().into());
        }
        let bytes = {
            let mut body = self.body.lock().expect("lease body lock");
            body.expires_at = Utc::now() + chrono::Duration::from_std(self.ttl)?;
            serde_json::to_vec_pretty(&*body)?
        };
        let loc = self.loc();
        loc.store
            .put(&loc.key, Bytes::from(bytes))
            .with_context(|| format!("renewing lease {}", loc.uri()))
    }

    fn renew_until_stopped(&self) {
        let (lock, cvar) = &self.stop;
        let period = self.ttl / 3;
        let mut stopped = lock.lock().expect("lease stop lock");
        loop {
            let (guard, _) = cvar
                .wait_timeout_while(stopped, period, |s| !*s)
                .expect("lease stop lock");
            stopped = guard;
            if *stopped {
                return;
            }
            if let Err(e) = self.renew() {
                if self.lost.load(Ordering::SeqCst) {
                    warn!(lease = %self.loc().uri(), "Lease lost to another runner.");
                    return;
                }
                // A transient failure: the next period tries again, well within the ttl.
                warn!(lease = %self.loc().uri(), error = %format!("{e:#}"), "Could not renew the lease.");
            }
        }
    }
}

/// The holder of a date's live lease, if any (for status pages and tests).
pub fn holder(state: &Location, job: &str, date: NaiveDate) -> Result<Option<Holder>> {
    let dir = state.join("leases").join(job).join(&date.to_string());
    let Some((_, key)) = newest(&dir)? else {
        return Ok(None);
    };
    let body: LeaseBody = match dir.store.get(&key) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(body) => body,
            Err(_) => return Ok(None),
        },
        Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((!body.released && body.expires_at > Utc::now()).then_some(body.holder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Stores, Uri};

    fn state(dir: &std::path::Path) -> Location {
        Stores::default()
            .locate(&Uri::Local(dir.to_path_buf()))
            .unwrap()
    }

    fn held(r: Result<Lease>) -> LeaseHeld {
        match r {
            Ok(_) => panic!("the lease was taken"),
            Err(e) => e.downcast::<LeaseHeld>().expect("refused by a holder"),
        }
    }

    /// Found in review: a shard must not join a claim past its own expiry (a runner deciding
    /// to take the date over at that instant would not see it); it renews the run's hold with
    /// a new generation instead, which the shards already running adopt. Meanwhile a
    /// whole-date run and another sharded run stay refused, and after the commit the date is
    /// free at once.
    #[test]
    fn a_sharded_runs_claim_is_renewed_by_its_shards_and_keeps_others_out() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let date = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        let ttl = Duration::from_millis(60);
        let take = |shard: Option<(&str, &str)>, run: &str| {
            Lease::acquire(&state, "churn", date, shard, run, ttl)
        };
        let mut a = take(Some(("0000-of-0002", "k")), "a").unwrap();
        let whole = held(take(None, "w"));
        assert_eq!(whole.sharded_run.as_deref(), Some("k"));
        held(take(Some(("0001-of-0002", "other")), "o"));
        // Past the claim's own expiry (10 ttls); shard a's part lease keeps it held.
        std::thread::sleep(ttl * 12);
        held(take(None, "w"));
        let b = take(Some(("0001-of-0002", "k")), "b").unwrap();
        assert_eq!(
            newest(&state.join("leases/churn/2026-11-02"))
                .unwrap()
                .unwrap()
                .0,
            2
        );
        a.ensure_held().expect("a adopts its run's newer claim");
        b.ensure_held().unwrap();
        held(take(None, "w"));
        // The shard that commits releases the claim; the parts end with their shards.
        a.release_date();
        a.release().unwrap();
        b.release().unwrap();
        take(None, "w").expect("the date is free once the run committed");
    }
}
