//! The web pages as a person uses them: served by `nightshift ui` (and the daemon) over the
//! state of fixtures/ui-state.rs, parsed as HTML, and checked for what is on them: each date
//! with its colour, the flagged drift cells, the degraded dates, links that resolve, data
//! that cannot inject markup, and the token on every page.

use std::collections::BTreeSet;
use std::process::Command;

use chrono::NaiveDate;
use scraper::{Html, Selector};

use crate::daemon::{http_full, Daemon};

#[path = "../../fixtures/ui-state.rs"]
#[allow(dead_code)]
mod ui_state;

use ui_state::{Made, HOSTILE_COLUMN, HOSTILE_ERROR, JOB};

const TOKEN: &str = "ui-token-for-tests";

fn made() -> (tempfile::TempDir, Made) {
    let dir = tempfile::tempdir().unwrap();
    let made = ui_state::write(
        std::path::Path::new(env!("CARGO_BIN_EXE_nightshift")),
        dir.path(),
        60,
        8,
        true,
    )
    .unwrap();
    (dir, made)
}

fn serve(made: &Made, command: &str, token: Option<&str>) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
    cmd.args([
        "--log-format",
        "json",
        command,
        "--listen",
        "127.0.0.1:0",
        "--jobs",
    ])
    .arg(&made.jobs)
    .env_remove("NIGHTSHIFT_LOG")
    .env_remove(nightshift::daemon::TOKEN_VAR);
    if let Some(t) = token {
        cmd.env(nightshift::daemon::TOKEN_VAR, t);
    }
    Daemon::spawn(cmd)
}

fn get(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> (u16, String, Html) {
    let (status, head, body) = http_full(d.addr(), "GET", path, headers, "");
    (status, head, Html::parse_document(&body))
}

fn page(d: &Daemon, path: &str) -> Html {
    let (status, _, html) = get(d, path, &[]);
    assert_eq!(status, 200, "GET {path}: {}", html.html());
    html
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

/// `data-date` and `data-status` of each date cell under `scope`.
fn statuses(html: &Html, scope: &str) -> Vec<(NaiveDate, String)> {
    html.select(&sel(&format!("{scope} rect[data-date][data-status]")))
        .map(|e| {
            let v = e.value();
            (
                v.attr("data-date").unwrap().parse().unwrap(),
                v.attr("data-status").unwrap().to_string(),
            )
        })
        .collect()
}

fn expected(made: &Made, date: NaiveDate) -> &'static str {
    if made.running == Some(date) {
        "running"
    } else if made.missing.contains(&date) {
        "missing"
    } else if made.failed.contains(&date) {
        "failed"
    } else if made.stale.contains(&date) {
        "stale"
    } else {
        "committed"
    }
}

#[test]
fn the_pages_show_every_date_in_its_colour_the_flagged_cells_and_links_that_resolve() {
    let (_dir, made) = made();
    let ui = serve(&made, "ui", None);

    // Jobs: one row, the last 30 dates, each in its colour.
    let jobs = page(&ui, "/ui");
    let row = format!("tr[data-job=\"{JOB}\"]");
    let strip = statuses(&jobs, &row);
    assert_eq!(strip.len(), 30, "{}", jobs.html());
    let last30: Vec<NaiveDate> = made.dates[made.dates.len() - 30..].to_vec();
    assert_eq!(strip.iter().map(|s| s.0).collect::<Vec<_>>(), last30);
    for (date, status) in &strip {
        assert_eq!(status, expected(&made, *date), "{date} on the jobs page");
    }
    let text: String = jobs.root_element().text().collect();
    assert!(
        text.contains("degraded"),
        "the latest accuracy is degraded: {text}"
    );
    assert!(text.contains("drift:"), "the latest drift verdict: {text}");

    // A job: every date from the first, in its colour, linking to its page.
    let job = page(&ui, &format!("/ui/jobs/{JOB}"));
    let calendar = statuses(&job, "svg.calendar");
    assert_eq!(
        calendar.iter().map(|s| s.0).collect::<Vec<_>>(),
        made.dates,
        "the calendar shows every date from the first"
    );
    for (date, status) in &calendar {
        assert_eq!(status, expected(&made, *date), "{date} on the calendar");
    }
    for kind in ["stale", "failed", "missing", "running", "committed"] {
        assert!(calendar.iter().any(|c| c.1 == kind), "no {kind} date");
    }
    // The heatmap flags exactly the cells the reports flagged.
    let synthetic: BTreeSet<NaiveDate> = made
        .dates
        .iter()
        .copied()
        .filter(|d| !ui_state::REAL_DATES.contains(&d.to_string().as_str()))
        .collect();
    let flagged: BTreeSet<(NaiveDate, String)> = job
        .select(&sel("svg.heatmap rect.flagged"))
        .map(|e| {
            let v = e.value();
            (
                v.attr("data-date").unwrap().parse().unwrap(),
                v.attr("data-column").unwrap().to_string(),
            )
        })
        .filter(|(d, _)| synthetic.contains(d))
        .collect();
    let drifted: BTreeSet<(NaiveDate, String)> = made.drifted.iter().cloned().collect();
    assert!(!drifted.is_empty());
    assert_eq!(flagged, drifted);
    // The accuracy chart circles the degraded dates.
    let marked: BTreeSet<String> = job
        .select(&sel("circle.marker title"))
        .map(|t| t.text().collect::<String>())
        .filter(|t| t.ends_with("degraded"))
        .filter(|t| synthetic.iter().any(|d| t.starts_with(&d.to_string())))
        .collect();
    let degraded: BTreeSet<String> = made
        .degraded
        .iter()
        .map(|d| format!("{d}: degraded"))
        .collect();
    assert!(!degraded.is_empty());
    assert_eq!(marked, degraded);

    // Every link of the pages resolves, to a page that is itself well formed.
    let mut links = BTreeSet::new();
    for html in [&jobs, &job] {
        for a in html.select(&sel("a[href]")) {
            links.insert(a.value().attr("href").unwrap().to_string());
        }
    }
    let real = ui_state::REAL_DATES[1];
    links.insert(format!("/ui/jobs/{JOB}/{real}/drift"));
    links.insert(format!("/ui/jobs/{JOB}/{real}/performance"));
    links.insert("/ui/models".into());
    for href in &links {
        assert!(href.starts_with("/ui"), "a link out of the pages: {href}");
        let p = page(&ui, href);
        assert!(p.errors.is_empty(), "{href}: {:?}", p.errors);
        // Their links resolve too (one level down: the date pages' reports).
        for a in p.select(&sel("a[href]")) {
            let h = a.value().attr("href").unwrap();
            if !links.contains(h) {
                let (status, _, _) = get(&ui, h, &[]);
                assert_eq!(status, 200, "{h}, linked from {href}");
            }
        }
    }
    // A real run's date: its record's story, its committed files, its reports.
    let date = page(&ui, &format!("/ui/jobs/{JOB}/{real}"));
    let text: String = date.root_element().text().collect();
    for what in [
        "rows scored",
        "Committed files",
        "part-",
        "score",
        "churn@2",
    ] {
        assert!(text.contains(what), "no {what:?} on the date page: {text}");
    }
    let drift = page(&ui, &format!("/ui/jobs/{JOB}/{real}/drift"));
    assert!(
        drift.select(&sel("div.card svg rect")).count() > 10,
        "histograms"
    );
    let models = page(&ui, "/ui/models");
    let text: String = models.root_element().text().collect();
    assert!(
        text.contains("churn@1") && text.contains("churn@2"),
        "{text}"
    );
    assert!(text.contains(JOB), "churn@2 is pinned by the job: {text}");
}

#[test]
fn data_cannot_inject_markup_into_any_page() {
    let (_dir, made) = made();
    let ui = serve(&made, "ui", None);
    let failed = made.failed[0];
    let feature =
        format!("/ui/jobs/{JOB}?feature=%3Cscript%3Ealert(1)%3C%2Fscript%3E&metric=%3Cb%3E");
    for path in [
        "/ui".to_string(),
        format!("/ui/jobs/{JOB}"),
        feature,
        format!("/ui/jobs/{JOB}/{failed}"),
        "/ui/jobs/%3Cscript%3E".to_string(),
        "/ui/jobs/churn_daily/%3Cb%3E".to_string(),
    ] {
        let (_, _, html) = get(&ui, &path, &[]);
        assert_eq!(
            html.select(&sel("script, img, b")).count(),
            0,
            "{path}: an element from data:\n{}",
            html.html()
        );
    }
    // The hostile column is a heatmap row, as text.
    let job = page(&ui, &format!("/ui/jobs/{JOB}"));
    let labels: Vec<String> = job
        .select(&sel("svg.heatmap text.label title"))
        .map(|e| e.text().collect())
        .collect();
    assert!(labels.iter().any(|l| l == HOSTILE_COLUMN), "{labels:?}");
    // The error holding HTML is shown as text, whole.
    let date = page(&ui, &format!("/ui/jobs/{JOB}/{failed}"));
    let shown: String = date
        .select(&sel("pre.error"))
        .flat_map(|e| e.text())
        .collect();
    assert!(shown.contains("<b>part-0.parquet</b>"), "{shown}");
    assert!(shown.contains("<img src=x onerror=alert(2)>"), "{shown}");
    assert!(HOSTILE_ERROR.contains("<img"));
}

fn header<'h>(head: &'h str, name: &str) -> Vec<&'h str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

#[test]
fn with_a_token_every_page_needs_it_and_the_one_action_needs_the_csrf_token_too() {
    let (_dir, made) = made();
    let ui = serve(&made, "daemon", Some(TOKEN));
    let date = ui_state::REAL_DATES[2];
    let pages = [
        "/ui".to_string(),
        format!("/ui/jobs/{JOB}"),
        format!("/ui/jobs/{JOB}/{date}"),
        format!("/ui/jobs/{JOB}/{date}/drift"),
        format!("/ui/jobs/{JOB}/{date}/performance"),
        "/ui/models".to_string(),
    ];
    use base64::Engine;
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let good_basic = basic("anyone", TOKEN);
    let bad_basic = basic("anyone", "wrong");
    let bearer = format!("Bearer {TOKEN}");
    for p in &pages {
        let (status, head, html) = get(&ui, p, &[]);
        assert_eq!(status, 401, "{p} without the token");
        assert!(
            header(&head, "www-authenticate")
                .iter()
                .any(|v| v.starts_with("Basic")),
            "{head}"
        );
        assert_eq!(html.select(&sel("form[action=\"/ui/login\"]")).count(), 1);
        assert_eq!(get(&ui, p, &[("Authorization", &bad_basic)]).0, 401, "{p}");
        assert_eq!(get(&ui, p, &[("Authorization", &good_basic)]).0, 200, "{p}");
        assert_eq!(get(&ui, p, &[("Authorization", &bearer)]).0, 200, "{p}");
    }
    // The login form sets a cookie that is HttpOnly and SameSite=Strict, and not the token.
    let form = |token: &str| format!("token={token}");
    let form_type = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, _, _) = http_full(ui.addr(), "POST", "/ui/login", &form_type, &form("nope"));
    assert_eq!(status, 401);
    let (status, head, _) = http_full(ui.addr(), "POST", "/ui/login", &form_type, &form(TOKEN));
    assert_eq!(status, 303, "{head}");
    let cookie = header(&head, "set-cookie")[0].to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN));
    let pair = cookie.split(';').next().unwrap().to_string();
    for p in &pages {
        assert_eq!(
            get(&ui, p, &[("Cookie", &pair)]).0,
            200,
            "{p} with the cookie"
        );
    }
    assert_eq!(
        get(&ui, "/ui", &[("Cookie", "nightshift_session=forged")]).0,
        401
    );
    // The daemon's JSON API beside the pages is not readable under another name either.
    for path in ["/jobs", "/metrics", "/ui"] {
        assert_eq!(get(&ui, path, &[("Host", "evil.example")]).0, 421, "{path}");
    }
    let (status, head, _) = http_full(ui.addr(), "GET", "/ui/logout", &[], "");
    assert_eq!(status, 303);
    assert!(
        header(&head, "set-cookie")[0].contains("Max-Age=0"),
        "{head}"
    );

    // "Run this date again": the page's form carries the CSRF token.
    let (_, _, html) = get(&ui, &format!("/ui/jobs/{JOB}/{date}"), &[("Cookie", &pair)]);
    let action = format!("/ui/jobs/{JOB}/{date}/run");
    let csrf = html
        .select(&sel(&format!("form[action=\"{action}\"] input[name=csrf]")))
        .next()
        .expect("the form")
        .value()
        .attr("value")
        .unwrap()
        .to_string();
    let with = |h: &[(&'static str, String)], body: &str| {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_full(ui.addr(), "POST", &action, &h, body).0
    };
    let typed = (
        "Content-Type",
        "application/x-www-form-urlencoded".to_string(),
    );
    let cookie = ("Cookie", pair.clone());
    assert_eq!(
        with(std::slice::from_ref(&typed), &format!("csrf={csrf}")),
        401,
        "no token"
    );
    assert_eq!(
        with(&[typed.clone(), cookie.clone()], "csrf=forged"),
        403,
        "forged CSRF"
    );
    assert_eq!(with(&[typed.clone(), cookie.clone()], ""), 422, "no CSRF");
    assert!(!ui.log().contains("Run requested over the API."));
    assert_eq!(with(&[typed, cookie], &format!("csrf={csrf}")), 303);
    ui.wait_for_log("Run requested over the API.");
    ui.wait_for_log("Run succeeded.");
}

#[test]
fn without_a_token_the_pages_are_open_and_the_action_is_off() {
    let (_dir, made) = made();
    let ui = serve(&made, "ui", None);
    let date = ui_state::REAL_DATES[2];
    let html = page(&ui, &format!("/ui/jobs/{JOB}/{date}"));
    assert_eq!(html.select(&sel("form[method=post]")).count(), 0);
    let (status, _, _) = http_full(
        ui.addr(),
        "POST",
        &format!("/ui/jobs/{JOB}/{date}/run"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "csrf=x",
    );
    assert_eq!(status, 403);
    assert_eq!(page(&ui, "/ui").select(&sel("tr[data-job]")).count(), 1);
    // `/` sends a browser to the pages.
    let (status, head, _) = http_full(ui.addr(), "GET", "/", &[], "");
    assert_eq!(status, 303, "{head}");
    // On loopback, a page asked for under another name (DNS rebinding) is refused.
    for host in ["evil.example", "evil.example:9464"] {
        assert_eq!(get(&ui, "/ui", &[("Host", host)]).0, 421, "{host}");
    }
    assert_eq!(get(&ui, "/ui", &[("Host", "localhost:9464")]).0, 200);
}

/// The same state on S3 (every file copied to a bucket, `nightshift.toml` pointing there)
/// shows the same pages: `nightshift ui` on production state needs only the job files.
#[test]
fn the_pages_read_state_on_s3_as_they_read_it_locally() {
    use crate::util_s3::{settings, TestBucket};
    let (dir, made) = made();
    let bucket = TestBucket::new("ui");
    let data = dir.path().join("out");
    for key in crate::util::files_under(&data) {
        bucket.put(&key, std::fs::read(data.join(&key)).unwrap());
    }
    let jobs = dir.path().join("s3-jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let b = &bucket.name;
    let s3 = settings().s3;
    std::fs::write(
        jobs.join("nightshift.toml"),
        format!(
            "registry = \"s3://{b}/registry/\"\nstate = \"s3://{b}/state/\"\n\
             reports = \"s3://{b}/reports/\"\n\n[s3]\nendpoint_url = \"{}\"\n\
             region = \"{}\"\nforce_path_style = true\n",
            s3.endpoint_url.unwrap(),
            s3.region.unwrap()
        ),
    )
    .unwrap();
    std::fs::copy(
        made.jobs.join(format!("{JOB}.toml")),
        jobs.join(format!("{JOB}.toml")),
    )
    .unwrap();
    let local = serve(&made, "ui", None);
    let on_s3 = serve(
        &Made {
            jobs,
            ..Default::default()
        },
        "ui",
        None,
    );
    for path in ["/ui".to_string(), format!("/ui/jobs/{JOB}")] {
        let (a, b) = (page(&local, &path), page(&on_s3, &path));
        assert_eq!(statuses(&a, "svg"), statuses(&b, "svg"), "{path}");
        assert!(!statuses(&b, "svg").is_empty());
        let flagged = |h: &Html| h.select(&sel("rect.flagged")).count();
        assert_eq!(flagged(&a), flagged(&b), "{path}");
    }
    let real = ui_state::REAL_DATES[1];
    for path in [
        format!("/ui/jobs/{JOB}/{real}/drift"),
        format!("/ui/jobs/{JOB}/{real}/performance"),
        "/ui/models".to_string(),
    ] {
        let text: String = page(&on_s3, &path).root_element().text().collect();
        assert!(!text.contains("cannot read"), "{path}: {text}");
    }
}

/// Records the pages must not be misled by: a run of a far-off date (a typo that ran) does
/// not stretch the calendar to it, and a sharded run whose shards are done but none
/// committed shows failed; once a shard commits, committed.
#[test]
fn a_far_off_date_and_an_unfinished_sharded_run_are_shown_as_they_are() {
    let (dir, made) = made();
    let runs = dir.path().join("out/state/runs").join(JOB);
    let date = *made
        .dates
        .iter()
        .rev()
        .find(|d| expected(&made, **d) == "committed")
        .unwrap();
    let template = std::fs::read_dir(runs.join(date.to_string()))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&template).unwrap()).unwrap();
    let write = |date: &str, run_id: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut r = base.clone();
        r["logical_date"] = date.into();
        r["run_id"] = run_id.into();
        edit(&mut r);
        let d = runs.join(date);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{run_id}.json")), r.to_string()).unwrap();
    };
    write("9999-12-31", "29991231T000000Z-far", &|r| {
        r["status"] = "failed".into();
    });
    let shard = |i: u32, state: &'static str, status: &'static str| {
        move |r: &mut serde_json::Value| {
            r["shard"] = serde_json::json!({"index": i, "count": 2, "run": "k"});
            r["date_state"] = state.into();
            r["status"] = status.into();
        }
    };
    let d = date.to_string();
    write(
        &d,
        "29990101T000000Z-shard0",
        &shard(0, "shard_done", "succeeded"),
    );
    write(
        &d,
        "29990101T000001Z-shard1",
        &shard(1, "untouched", "failed"),
    );
    let ui = serve(&made, "ui", None);
    let calendar = statuses(&page(&ui, &format!("/ui/jobs/{JOB}")), "svg.calendar");
    assert_eq!(calendar.last().unwrap().0, *made.dates.last().unwrap());
    assert_eq!(calendar.len(), made.dates.len(), "not stretched to 9999");
    let status_of = |ui: &Daemon| {
        statuses(&page(ui, "/ui"), "svg")
            .into_iter()
            .find(|(x, _)| *x == date)
            .unwrap()
            .1
    };
    assert_eq!(status_of(&ui), "failed", "one shard failed, none committed");
    write(
        &d,
        "29990101T000002Z-shard1",
        &shard(1, "committed", "succeeded"),
    );
    assert_eq!(status_of(&ui), "committed", "a shard committed the date");
}
