//! Agreement with scipy/numpy (and Evidently's formulas) on fixed samples.
//!
//! `tests/data/drift_expected.json` is produced by `tests/data/drift_expected.py`;
//! it carries the samples themselves, so these tests do not depend on
//! numpy's RNG. Tolerances:
//! * statistics, distances, edges: `|got - expected| <= 1e-9`;
//! * p-values and survival functions: relative `1e-6 * max(|expected|, 1e-300)`,
//!   and where scipy underflowed to exactly 0 we require `< 1e-300`.

use nightshift::drift::stats::{self, KsMethod};
use serde_json::Value;
use std::sync::OnceLock;

const STAT_TOL: f64 = 1e-9;
const P_REL_TOL: f64 = 1e-6;

fn expected() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/drift_expected.json"
        );
        let text = std::fs::read_to_string(path).expect("run tests/data/drift_expected.py first");
        serde_json::from_str(&text).expect("valid JSON")
    })
}

/// A JSON number, or one of the strings the generator uses for non-finite values.
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => match s.as_str() {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            other => panic!("unexpected numeric string {other:?}"),
        },
        other => panic!("expected a number, got {other}"),
    }
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(num).collect()
}

fn stat_close(got: f64, want: f64) -> bool {
    if want.is_infinite() || want.is_nan() {
        return got == want || (got.is_nan() && want.is_nan());
    }
    (got - want).abs() <= STAT_TOL
}

fn p_close(got: f64, want: f64) -> bool {
    if want == 0.0 {
        return (0.0..1e-300).contains(&got);
    }
    (got - want).abs() <= P_REL_TOL * want.abs().max(1e-300)
}

/// Collects mismatches so one run reports all of them.
#[derive(Default)]
struct Checker {
    failures: Vec<String>,
    checked: usize,
}

impl Checker {
    fn stat(&mut self, what: &str, got: f64, want: f64) {
        self.checked += 1;
        if !stat_close(got, want) {
            self.failures.push(format!(
                "{what}: got {got:e}, expected {want:e} (diff {:e})",
                got - want
            ));
        }
    }

    fn p(&mut self, what: &str, got: f64, want: f64) {
        self.checked += 1;
        if !p_close(got, want) {
            let rel = (got - want).abs() / want.abs().max(1e-300);
            self.failures.push(format!(
                "{what}: got {got:e}, expected {want:e} (rel {rel:e})"
            ));
        }
    }

    fn vec(&mut self, what: &str, got: &[f64], want: &[f64]) {
        self.checked += 1;
        if got.len() != want.len() {
            self.failures.push(format!(
                "{what}: length {} vs expected {}",
                got.len(),
                want.len()
            ));
            return;
        }
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            if !stat_close(*g, *w) {
                self.failures
                    .push(format!("{what}[{i}]: got {g:e}, expected {w:e}"));
            }
        }
    }

    fn finish(self, section: &str) {
        assert!(self.checked > 0, "{section}: nothing was checked");
        assert!(
            self.failures.is_empty(),
            "{section}: {} of {} checks failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
    }
}

fn ks_cases() -> &'static [Value] {
    expected()["ks_cases"].as_array().unwrap()
}

#[test]
fn ks_2samp_matches_scipy() {
    let mut c = Checker::default();
    let (mut exact_equal, mut exact_unequal, mut asymptotic, mut fallback) = (0, 0, 0, 0);
    for case in ks_cases() {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (nums(&case["a"]), nums(&case["b"]));
        let r = stats::ks_2samp(&a, &b);
        c.stat(
            &format!("{name} statistic"),
            r.statistic,
            num(&case["ks_statistic"]),
        );
        c.p(
            &format!("{name} p-value"),
            r.p_value,
            num(&case["ks_p_value"]),
        );
        let want_method = match case["ks_method"].as_str().unwrap() {
            "exact" => KsMethod::Exact,
            _ => KsMethod::Asymptotic,
        };
        c.checked += 1;
        if r.method != want_method {
            c.failures.push(format!(
                "{name}: method {:?}, scipy used {want_method:?}",
                r.method
            ));
        }
        match (want_method, a.len() == b.len()) {
            (KsMethod::Exact, true) => exact_equal += 1,
            (KsMethod::Exact, false) => exact_unequal += 1,
            _ if a.len().max(b.len()) <= stats::KS_MAX_AUTO_N => fallback += 1,
            _ => asymptotic += 1,
        }
        // The statistic is symmetric in its arguments.
        let swapped = stats::ks_2samp(&b, &a);
        c.stat(
            &format!("{name} statistic (swapped)"),
            swapped.statistic,
            r.statistic,
        );
        c.p(
            &format!("{name} p-value (swapped)"),
            swapped.p_value,
            num(&case["ks_p_value"]),
        );
    }
    assert!(
        exact_equal >= 2 && exact_unequal >= 2 && asymptotic >= 2 && fallback >= 1,
        "every KS p-value path (exact n==m, exact n!=m, asymptotic, exact->asymptotic fallback) must be covered"
    );
    c.finish("ks_2samp");
}

#[test]
fn wasserstein_matches_scipy_and_evidently() {
    let mut c = Checker::default();
    for case in ks_cases() {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (nums(&case["a"]), nums(&case["b"]));
        c.stat(
            &format!("{name} wasserstein"),
            stats::wasserstein_distance(&a, &b),
            num(&case["wasserstein"]),
        );
        c.stat(
            &format!("{name} wasserstein(b, a)"),
            stats::wasserstein_distance(&b, &a),
            num(&case["wasserstein_ba"]),
        );
        c.stat(
            &format!("{name} normed"),
            stats::normed_wasserstein(&a, &b),
            num(&case["normed_wasserstein"]),
        );
    }
    c.finish("wasserstein");
}

#[test]
fn numeric_binning_psi_and_js_match_evidently() {
    let mut c = Checker::default();
    for case in ks_cases()
        .iter()
        .filter(|case| case.get("sturges_edges").is_some())
    {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (nums(&case["a"]), nums(&case["b"]));
        let edges = stats::sturges_edges(&a, &b);
        c.vec(
            &format!("{name} sturges edges"),
            &edges,
            &nums(&case["sturges_edges"]),
        );
        let (ha, hb) = (stats::histogram(&a, &edges), stats::histogram(&b, &edges));
        c.vec(&format!("{name} histogram a"), &ha, &nums(&case["hist_a"]));
        c.vec(&format!("{name} histogram b"), &hb, &nums(&case["hist_b"]));
        c.stat(
            &format!("{name} psi_numeric"),
            stats::psi_numeric(&a, &b),
            num(&case["psi_numeric"]),
        );
        c.stat(
            &format!("{name} psi(hist)"),
            stats::psi(&ha, &hb),
            num(&case["psi_numeric"]),
        );
        c.stat(
            &format!("{name} js(hist)"),
            stats::jensen_shannon_distance(&ha, &hb),
            num(&case["js_numeric"]),
        );
        c.stat(
            &format!("{name} js(hist, base 2)"),
            stats::jensen_shannon_distance_base(&ha, &hb, 2.0),
            num(&case["js_numeric_base2"]),
        );
    }
    c.finish("numeric binning");
}

#[test]
fn bin_edge_helpers_match_numpy() {
    let mut c = Checker::default();
    for (i, case) in expected()["edges"].as_array().unwrap().iter().enumerate() {
        let x = nums(&case["values"]);
        let bins = case["n_bins"].as_u64().unwrap() as usize;
        c.vec(
            &format!("case {i} uniform_edges"),
            &stats::uniform_edges(&x, bins),
            &nums(&case["uniform_edges"]),
        );
        c.vec(
            &format!("case {i} quantile_edges"),
            &stats::quantile_edges(&x, bins),
            &nums(&case["quantile_edges"]),
        );
        c.vec(
            &format!("case {i} sturges(x, x)"),
            &stats::sturges_edges(&x, &x),
            &nums(&case["sturges_edges_self"]),
        );
    }
    c.finish("bin edges");
}

#[test]
fn psi_on_counts_matches_evidently() {
    let mut c = Checker::default();
    for case in expected()["psi"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        c.stat(
            &format!("{name} psi"),
            stats::psi(&nums(&case["ref"]), &nums(&case["cur"])),
            num(&case["psi"]),
        );
    }
    c.finish("psi");
}

#[test]
fn jensen_shannon_matches_scipy() {
    let mut c = Checker::default();
    for case in expected()["js"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (p, q) = (nums(&case["p"]), nums(&case["q"]));
        c.stat(
            &format!("{name} js"),
            stats::jensen_shannon_distance(&p, &q),
            num(&case["js"]),
        );
        c.stat(
            &format!("{name} js base 2"),
            stats::jensen_shannon_distance_base(&p, &q, 2.0),
            num(&case["js_base2"]),
        );
    }
    c.finish("jensen-shannon");
}

#[test]
fn chi_square_matches_evidently_scipy() {
    let mut c = Checker::default();
    for case in expected()["chi_square"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let r = stats::chi_square(&nums(&case["ref"]), &nums(&case["cur"]));
        c.stat(
            &format!("{name} statistic"),
            r.statistic,
            num(&case["statistic"]),
        );
        c.p(&format!("{name} p-value"), r.p_value, num(&case["p_value"]));
    }
    c.finish("chi-square");
}

#[test]
fn proportion_z_test_matches_evidently() {
    let mut c = Checker::default();
    for case in expected()["z_test"].as_array().unwrap() {
        let field = |k: &str| case[k].as_u64().unwrap();
        let (rs, rn, cs, cn) = (
            field("ref_successes"),
            field("ref_n"),
            field("cur_successes"),
            field("cur_n"),
        );
        let r = stats::proportion_z_test(rs, rn, cs, cn);
        let what = format!("z({rs}/{rn} vs {cs}/{cn})");
        c.stat(
            &format!("{what} statistic"),
            r.statistic,
            num(&case["statistic"]),
        );
        c.p(&format!("{what} p-value"), r.p_value, num(&case["p_value"]));
        // Evidently's literal 2*(1-cdf) differs only by its cancellation
        // error (absolute ~1e-16) plus statrs' erfc error (relative ~1e-10).
        let literal = num(&case["evidently_literal_p_value"]);
        c.checked += 1;
        if (r.p_value - literal).abs() > 1e-9 {
            c.failures.push(format!(
                "{what}: {} vs Evidently's literal {literal}",
                r.p_value
            ));
        }
    }
    c.finish("z-test");
}

#[test]
fn kolmogorov_distributions_match_scipy() {
    let mut c = Checker::default();
    let doc = expected();
    for row in doc["kstwo"].as_array().unwrap() {
        let (n, d) = (row["n"].as_u64().unwrap(), num(&row["d"]));
        c.p(
            &format!("kstwo.sf({d}, {n})"),
            stats::kstwo_sf(n, d),
            num(&row["sf"]),
        );
    }
    for row in doc["smirnov"].as_array().unwrap() {
        let (n, x) = (row["n"].as_u64().unwrap(), num(&row["x"]));
        c.p(
            &format!("smirnov({n}, {x})"),
            stats::smirnov_sf(n, x),
            num(&row["sf"]),
        );
    }
    for row in doc["kolmogorov"].as_array().unwrap() {
        let x = num(&row["x"]);
        c.p(
            &format!("kolmogorov({x})"),
            stats::kstwobign_sf(x),
            num(&row["sf"]),
        );
    }
    c.finish("kolmogorov distributions");
}
