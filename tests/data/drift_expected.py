#!/usr/bin/env python3
"""Generate tests/data/drift_expected.json: fixed samples plus scipy/numpy results.

The Rust tests (tests/scipy_agreement.rs) read the samples from the JSON, so
Rust never has to reproduce numpy's RNG. Everything is deterministic: each
sample comes from numpy.random.default_rng with a fixed seed.

Evidently's drift tests are reproduced here with the same numpy/scipy calls
Evidently makes (see the comments on each helper) rather than by importing
evidently, which would pull in a large dependency tree for a few lines.

Usage: python3 tests/data/drift_expected.py   (needs numpy and scipy)
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import scipy
from scipy import special, stats
from scipy.spatial import distance

OUT = Path(__file__).resolve().parent / "drift_expected.json"


def f(x):
    """Plain float for JSON (repr round-trips exactly); non-finite values,
    which JSON cannot represent, become the strings "inf", "-inf", "nan"."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def floats(a):
    return [float(v) for v in np.asarray(a, dtype=float)]


# --------------------------------------------------------------------------
# Evidently replicas
# --------------------------------------------------------------------------

def evidently_binned(reference, current, feel_zeroes):
    """Numeric branch of evidently.calculations.stattests.utils.get_binned_data
    (reference has > 20 distinct values): Sturges edges on pooled data."""
    bins = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
    ref = np.histogram(reference, bins)[0] / len(reference)
    cur = np.histogram(current, bins)[0] / len(current)
    if feel_zeroes:
        for p in (ref, cur):
            m = min(p[p != 0])
            np.place(p, p == 0, m / 10**6 if m <= 0.0001 else 0.0001)
    return bins, ref, cur


def evidently_psi_from_percents(ref, cur):
    """Loop of evidently.calculations.stattests.psi.psi."""
    value = 0
    for i, _ in enumerate(ref):
        value += (ref[i] - cur[i]) * np.log(ref[i] / cur[i])
    return value


def fill_zeroes(p):
    p = p.copy()
    m = min(p[p != 0])
    np.place(p, p == 0, m / 10**6 if m <= 0.0001 else 0.0001)
    return p


def evidently_psi_counts(ref_counts, cur_counts):
    ref = np.asarray(ref_counts, float)
    cur = np.asarray(cur_counts, float)
    return evidently_psi_from_percents(fill_zeroes(ref / ref.sum()), fill_zeroes(cur / cur.sum()))


def evidently_chisquare(ref_counts, cur_counts):
    """evidently chisquare_stattest._chi_stat_test on value counts: categories
    seen in either sample, f_exp = ref * (n_cur / n_ref)."""
    keep = [(r, c) for r, c in zip(ref_counts, cur_counts) if r != 0 or c != 0]
    n_ref = sum(r for r, _ in keep)
    n_cur = sum(c for _, c in keep)
    k_norm = n_cur / n_ref
    f_exp = [r * k_norm for r, _ in keep]
    f_obs = [c for _, c in keep]
    with np.errstate(divide="ignore"):
        res = stats.chisquare(f_obs, f_exp)
    return res.statistic, res.pvalue


def evidently_z(ref_succ, ref_n, cur_succ, cur_n):
    """evidently z_stattest.proportions_diff_z_stat_ind / _z_test."""
    p1 = float(ref_succ) / ref_n
    p2 = float(cur_succ) / cur_n
    P = float(p1 * ref_n + p2 * cur_n) / (ref_n + cur_n)
    z = (p1 - p2) / np.sqrt(P * (1 - P) * (1.0 / ref_n + 1.0 / cur_n))
    literal = 2 * (1 - stats.norm.cdf(np.abs(z)))
    accurate = 2 * stats.norm.sf(np.abs(z))
    return z, accurate, literal


# --------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------

def normal(seed, n, loc=0.0, scale=1.0, decimals=None):
    x = np.random.default_rng(seed).normal(loc, scale, n)
    return np.round(x, decimals) if decimals is not None else x


def ks_case(name, a, b):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = stats.ks_2samp(a, b)
    fell_back = any("Exact calculation unsuccessful" in str(w.message) for w in caught)
    method = "exact" if max(len(a), len(b)) <= 10000 and not fell_back else "asymptotic"
    case = {
        "name": name,
        "a": floats(a),
        "b": floats(b),
        "ks_statistic": f(res.statistic),
        "ks_p_value": f(res.pvalue),
        "ks_method": method,
        "wasserstein": f(stats.wasserstein_distance(a, b)),
        "wasserstein_ba": f(stats.wasserstein_distance(b, a)),
        # evidently wasserstein_distance_norm: max(np.std(ref), 0.001)
        "normed_wasserstein": f(stats.wasserstein_distance(a, b) / max(np.std(a), 0.001)),
    }
    if len(np.unique(a)) > 20:
        edges, ref_p, cur_p = evidently_binned(a, b, feel_zeroes=True)
        _, ref_raw, cur_raw = evidently_binned(a, b, feel_zeroes=False)
        case.update(
            sturges_edges=floats(edges),
            hist_a=floats(np.histogram(a, edges)[0]),
            hist_b=floats(np.histogram(b, edges)[0]),
            psi_numeric=f(evidently_psi_from_percents(ref_p, cur_p)),
            js_numeric=f(distance.jensenshannon(ref_raw, cur_raw)),
            js_numeric_base2=f(distance.jensenshannon(ref_raw, cur_raw, 2)),
        )
    return case


def build_ks_cases():
    cases = []
    # exact, n != m
    cases.append(ks_case("n8_vs_11_same", normal(1, 8), normal(2, 11)))
    cases.append(ks_case("n8_vs_11_shift", normal(3, 8), normal(4, 11, loc=1.5)))
    # exact, n == m, heavy ties (one decimal)
    cases.append(ks_case("n50_vs_50_ties_same", normal(5, 50, decimals=1), normal(6, 50, decimals=1)))
    cases.append(ks_case("n50_vs_50_ties_shift", normal(7, 50, decimals=1), normal(8, 50, loc=0.8, decimals=1)))
    # exact, n != m, discrete data (ties across samples everywhere)
    rng = np.random.default_rng(9)
    cases.append(ks_case("n40_vs_60_poisson", rng.poisson(3.0, 40), rng.poisson(3.6, 60)))
    cases.append(ks_case("n300_vs_280_same", normal(10, 300), normal(11, 280)))
    cases.append(ks_case("n300_vs_280_shift", normal(12, 300), normal(13, 280, loc=0.4)))
    # exact, tiny p-value (relative tolerance matters)
    cases.append(ks_case("n300_vs_280_big_shift", normal(14, 300), normal(15, 280, loc=2.0)))
    cases.append(ks_case("n500_vs_500_big_shift", normal(16, 500), normal(17, 500, loc=1.5)))
    # exact, p underflows to 0 in scipy (disjoint samples, D = 1)
    cases.append(ks_case("n1000_vs_1000_disjoint", normal(18, 1000, decimals=5), normal(19, 1000, loc=20.0, decimals=5)))
    # exact at the auto limit, n != m
    cases.append(ks_case("n10000_vs_9000_shift", normal(20, 10000, decimals=5), normal(21, 9000, loc=0.05, decimals=5)))
    # exact attempted but rejected: for n == m and small h scipy's series
    # returns 1.0000000000000002, so it warns and falls back to kstwo
    # (p = 0.9999999999987117 here rather than 1)
    cases.append(ks_case("n60_vs_60_exact_fallback", np.arange(60.0), np.arange(60.0) + 1.5))
    # identical samples
    same = normal(22, 120)
    cases.append(ks_case("n120_identical", same, same.copy()))
    # constant reference (zero variance) for the normed Wasserstein floor
    cases.append(ks_case("n30_constant_ref", np.full(30, 2.5), normal(23, 40, loc=2.5)))
    # asymptotic: kstwo with n = round(12000*15000/27000) = 6667
    cases.append(ks_case("n12000_vs_15000_same", normal(24, 12000, decimals=5), normal(25, 15000, decimals=5)))
    cases.append(ks_case("n12000_vs_15000_shift", normal(26, 12000, decimals=5), normal(27, 15000, loc=0.05, decimals=5)))
    cases.append(ks_case("n12000_vs_15000_big_shift", normal(28, 12000, decimals=5), normal(29, 15000, loc=0.3, decimals=5)))
    # asymptotic with a small effective n (round(10001*100/10101) = 99 <= 140)
    cases.append(ks_case("n10001_vs_100_same", normal(30, 10001, decimals=4), normal(31, 100, decimals=4)))
    cases.append(ks_case("n10001_vs_100_shift", normal(32, 10001, decimals=4), normal(33, 100, loc=0.5, decimals=4)))
    return cases


def build_distribution_grid():
    kstwo = []
    ns = [1, 2, 3, 5, 10, 37, 99, 140, 141, 500, 6667, 100001, 2000000]
    for n in ns:
        ds = {0.4 / n, 0.5 / n, 0.75 / n, 1.0 / n, 1.5 / n, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3,
              0.45, 0.5, 0.7, 0.95, 1 - 1.0 / n, 1 - 0.5 / n, 1.0,
              0.3 / math.sqrt(n), 0.6 / math.sqrt(n), 0.9 / math.sqrt(n),
              1.2 / math.sqrt(n), 1.6 / math.sqrt(n), 3.0 / math.sqrt(n), 10.0 / math.sqrt(n)}
        for d in sorted(ds):
            if 0 < d <= 1:
                kstwo.append({"n": n, "d": f(d), "sf": f(stats.kstwo.sf(d, n))})
    smirnov = []
    for n in [1, 2, 5, 10, 20, 50, 140, 1000, 6667, 100000, 1000001]:
        for x in [0.0, 0.5 / n, 1.0 / n, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1 - 1.0 / n, 0.999, 1.0,
                  0.5 / math.sqrt(n), 1.0 / math.sqrt(n), 2.0 / math.sqrt(n), 5.0 / math.sqrt(n)]:
            if 0 <= x <= 1:
                smirnov.append({"n": n, "x": f(x), "sf": f(special.smirnov(n, x))})
    kolmogorov = [{"x": f(x), "sf": f(special.kolmogorov(x))}
                  for x in [0.0, 0.03, 0.05, 0.1, 0.3, 0.5, 0.8, 0.82, 0.83, 1.0, 1.36, 2.0, 3.0, 5.0, 10.0, 30.0]]
    return kstwo, smirnov, kolmogorov


def build_count_cases():
    count_pairs = [
        ("same", [10, 20, 30, 40], [10, 20, 30, 40]),
        ("scaled_same", [10, 20, 30, 40], [20, 40, 60, 80]),
        ("mild", [120, 340, 280, 160, 100], [100, 300, 330, 170, 100]),
        ("strong", [500, 300, 150, 50], [50, 150, 300, 500]),
        ("empty_bins", [0, 25, 50, 25], [10, 40, 50, 0]),
        ("tiny_min_proportion", [1, 20000, 19999, 0], [0, 15000, 25000, 5]),
        ("new_category", [30, 30, 40, 0], [25, 35, 30, 10]),
        ("both_zero_bin", [30, 0, 30, 40], [25, 0, 45, 30]),
        ("large_shift", [5000, 3000, 1500, 500], [3500, 3300, 2200, 1000]),
        ("huge_shift", [40000, 30000, 20000, 10000], [10000, 20000, 30000, 40000]),
    ]
    psi, js, chi = [], [], []
    for name, r, c in count_pairs:
        psi.append({"name": name, "ref": floats(r), "cur": floats(c), "psi": f(evidently_psi_counts(r, c))})
        js.append({"name": name, "p": floats(r), "q": floats(c),
                   "js": f(distance.jensenshannon(r, c)),
                   "js_base2": f(distance.jensenshannon(r, c, 2))})
        stat, p = evidently_chisquare(r, c)
        chi.append({"name": name, "ref": floats(r), "cur": floats(c), "statistic": f(stat), "p_value": f(p)})
    # JS on unnormalised real weights and disjoint supports
    for name, p, q in [("disjoint", [1, 0, 0], [0, 0, 1]),
                       ("weights", [0.1, 0.25, 0.3, 0.35], [1.0, 0.2, 0.3, 0.5])]:
        js.append({"name": name, "p": floats(p), "q": floats(q),
                   "js": f(distance.jensenshannon(p, q)),
                   "js_base2": f(distance.jensenshannon(p, q, 2))})
    z = []
    for rs, rn, cs, cn in [(50, 100, 50, 100), (30, 100, 45, 120), (480, 1000, 520, 1000),
                           (100, 1000, 300, 1000), (1000, 10000, 2000, 10000),
                           (5000, 100000, 9000, 100000), (1, 7, 6, 9)]:
        stat, p, literal = evidently_z(rs, rn, cs, cn)
        z.append({"ref_successes": rs, "ref_n": rn, "cur_successes": cs, "cur_n": cn,
                  "statistic": f(stat), "p_value": f(p), "evidently_literal_p_value": f(literal)})
    return psi, js, chi, z


def build_edge_cases():
    out = []
    for seed, n, bins, decimals in [(40, 25, 10, None), (41, 1000, 7, None), (42, 333, 4, 1), (43, 64, 3, None)]:
        x = normal(seed, n, decimals=decimals)
        out.append({
            "values": floats(x), "n_bins": bins,
            "uniform_edges": floats(np.histogram_bin_edges(x, bins=bins)),
            "quantile_edges": floats(np.quantile(x, np.linspace(0, 1, bins + 1))),
            "sturges_edges_self": floats(np.histogram_bin_edges(np.concatenate([x, x]), bins="sturges")),
        })
    return out


def main():
    kstwo, smirnov, kolmogorov = build_distribution_grid()
    psi, js, chi, z = build_count_cases()
    doc = {
        "generator": "scripts/drift_expected.py",
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "ks_cases": build_ks_cases(),
        "kstwo": kstwo,
        "smirnov": smirnov,
        "kolmogorov": kolmogorov,
        "psi": psi,
        "js": js,
        "chi_square": chi,
        "z_test": z,
        "edges": build_edge_cases(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({len(text) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
