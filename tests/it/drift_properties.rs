//! Property tests: invariants every drift statistic must satisfy for any
//! input, independent of the scipy reference values.

use nightshift::drift::stats::{self, KsMethod};
use proptest::prelude::*;

/// Finite values, mixing a small integer lattice (to force ties within and
/// across samples) with continuous values.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![(-20i32..20).prop_map(f64::from), -1e3f64..1e3]
}

fn sample(max_len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(value(), 1..max_len)
}

/// Paired bin counts of equal length with a positive total on each side.
fn count_pair() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1usize..12).prop_flat_map(|k| {
        let counts = prop::collection::vec((0u32..500).prop_map(f64::from), k)
            .prop_filter("needs a positive total", |c| c.iter().sum::<f64>() > 0.0);
        (counts.clone(), counts)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ks_identical_samples_give_zero_and_one(a in sample(300)) {
        let r = stats::ks_2samp(&a, &a);
        prop_assert_eq!(r.statistic, 0.0);
        prop_assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn ks_statistic_and_p_value_in_unit_interval(a in sample(300), b in sample(300)) {
        let r = stats::ks_2samp(&a, &b);
        prop_assert!((0.0..=1.0).contains(&r.statistic), "statistic {}", r.statistic);
        prop_assert!((0.0..=1.0).contains(&r.p_value), "p-value {}", r.p_value);
        prop_assert_eq!(r.method, KsMethod::Exact);
        let swapped = stats::ks_2samp(&b, &a);
        prop_assert_eq!(swapped.statistic, r.statistic);
    }

    #[test]
    fn ks_permutation_invariant(mut a in sample(100), b in sample(100)) {
        let before = stats::ks_2samp(&a, &b);
        a.reverse();
        prop_assert_eq!(stats::ks_2samp(&a, &b), before);
    }

    #[test]
    fn psi_of_identical_distributions_is_zero((r, _c) in count_pair(), scale in 1u32..5) {
        prop_assert_eq!(stats::psi(&r, &r), 0.0);
        // Only proportions matter.
        let scaled: Vec<f64> = r.iter().map(|x| x * f64::from(scale)).collect();
        prop_assert!(stats::psi(&r, &scaled).abs() < 1e-12);
    }

    #[test]
    fn psi_is_non_negative((r, c) in count_pair()) {
        let v = stats::psi(&r, &c);
        prop_assert!(v >= 0.0, "psi {}", v);
    }

    #[test]
    fn psi_numeric_is_non_negative_and_zero_on_identical(a in sample(200), b in sample(200)) {
        let v = stats::psi_numeric(&a, &b);
        prop_assert!(v >= 0.0, "psi {}", v);
        prop_assert_eq!(stats::psi_numeric(&a, &a), 0.0);
    }

    #[test]
    fn js_distance_in_range((p, q) in count_pair()) {
        let d = stats::jensen_shannon_distance(&p, &q);
        prop_assert!((0.0..=std::f64::consts::LN_2.sqrt()).contains(&d), "js {}", d);
        prop_assert_eq!(stats::jensen_shannon_distance(&p, &p), 0.0);
        let d2 = stats::jensen_shannon_distance_base(&p, &q, 2.0);
        prop_assert!((0.0..=1.0).contains(&d2), "js base 2 {}", d2);
    }

    #[test]
    fn wasserstein_symmetric_and_non_negative(a in sample(200), b in sample(200)) {
        let ab = stats::wasserstein_distance(&a, &b);
        let ba = stats::wasserstein_distance(&b, &a);
        prop_assert!(ab >= 0.0, "w {}", ab);
        prop_assert_eq!(ab, ba);
        prop_assert_eq!(stats::wasserstein_distance(&a, &a), 0.0);
        prop_assert!(stats::normed_wasserstein(&a, &b) >= 0.0);
    }

    #[test]
    fn wasserstein_of_a_shift_is_the_shift(a in sample(100), shift in -50.0f64..50.0) {
        let b: Vec<f64> = a.iter().map(|x| x + shift).collect();
        let w = stats::wasserstein_distance(&a, &b);
        prop_assert!((w - shift.abs()).abs() <= 1e-9 * (1.0 + shift.abs() + 1e3), "w {} shift {}", w, shift);
    }

    #[test]
    fn chi_square_p_value_in_unit_interval((r, c) in count_pair()) {
        let res = stats::chi_square(&r, &c);
        prop_assert!(res.statistic >= 0.0);
        prop_assert!((0.0..=1.0).contains(&res.p_value), "p {}", res.p_value);
        let same = stats::chi_square(&r, &r);
        prop_assert!(same.statistic.abs() < 1e-9);
        prop_assert!(same.p_value > 1.0 - 1e-9);
    }

    #[test]
    fn z_test_p_value_in_unit_interval(rn in 1u64..10_000, cn in 1u64..10_000, rf in 0.0f64..=1.0, cf in 0.0f64..=1.0) {
        let (rs, cs) = ((rn as f64 * rf) as u64, (cn as f64 * cf) as u64);
        let r = stats::proportion_z_test(rs, rn, cs, cn);
        prop_assert!((0.0..=1.0).contains(&r.p_value), "p {}", r.p_value);
        // Swapping the samples flips the sign only.
        let s = stats::proportion_z_test(cs, cn, rs, rn);
        prop_assert!((s.statistic + r.statistic).abs() <= 1e-12 * (1.0 + r.statistic.abs()));
    }

    #[test]
    fn histogram_counts_every_value_inside_the_edges(a in sample(200), b in sample(200)) {
        let edges = stats::sturges_edges(&a, &b);
        let total: f64 = stats::histogram(&a, &edges).iter().sum();
        prop_assert_eq!(total, a.len() as f64);
    }

    #[test]
    fn kstwo_sf_is_a_survival_function(n in 1u64..2_000, d1 in 0.0f64..=1.0, d2 in 0.0f64..=1.0) {
        let (lo, hi) = if d1 <= d2 { (d1, d2) } else { (d2, d1) };
        let (s_lo, s_hi) = (stats::kstwo_sf(n, lo), stats::kstwo_sf(n, hi));
        prop_assert!((0.0..=1.0).contains(&s_lo) && (0.0..=1.0).contains(&s_hi));
        // Non-increasing, allowing for the approximations' rounding.
        prop_assert!(s_hi <= s_lo + 1e-9, "sf({}) = {} > sf({}) = {}", hi, s_hi, lo, s_lo);
    }
}

#[test]
fn ks_identical_large_samples_use_asymptotic_path_and_give_one() {
    let a: Vec<f64> = (0..12_000)
        .map(|i| ((i * 7919) % 12_007) as f64 / 100.0)
        .collect();
    let r = stats::ks_2samp(&a, &a);
    assert_eq!(r.method, KsMethod::Asymptotic);
    assert_eq!(r.statistic, 0.0);
    assert_eq!(r.p_value, 1.0);
}

#[test]
fn degenerate_inputs_are_nan_or_documented_values() {
    let r = stats::ks_2samp(&[], &[1.0]);
    assert!(r.statistic.is_nan() && r.p_value.is_nan());
    assert_eq!(r.method, KsMethod::Undefined);
    assert!(stats::ks_2samp(&[f64::NAN, 1.0], &[1.0]).p_value.is_nan());
    assert!(stats::wasserstein_distance(&[], &[1.0]).is_nan());
    assert!(stats::normed_wasserstein(&[1.0], &[]).is_nan());
    // Constant reference: normalised by the 0.001 floor, not by zero.
    assert!((stats::normed_wasserstein(&[2.0; 5], &[3.0; 5]) - 1000.0).abs() < 1e-9);
    assert!(stats::psi(&[0.0, 0.0], &[1.0, 2.0]).is_nan());
    assert!(stats::psi(&[], &[]).is_nan());
    assert!(stats::jensen_shannon_distance(&[0.0, 0.0], &[1.0, 0.0]).is_nan());
    let single = stats::chi_square(&[10.0, 0.0], &[4.0, 0.0]);
    assert_eq!((single.statistic, single.p_value), (0.0, 1.0));
    let unseen = stats::chi_square(&[10.0, 0.0], &[4.0, 1.0]);
    assert!(unseen.statistic.is_infinite() && unseen.p_value == 0.0);
    let z = stats::proportion_z_test(0, 10, 0, 20);
    assert_eq!((z.statistic, z.p_value), (0.0, 1.0));
    assert!(stats::proportion_z_test(3, 0, 1, 2).p_value.is_nan());
    assert!(stats::proportion_z_test(3, 2, 1, 2).p_value.is_nan());
    assert_eq!(stats::sturges_edges(&[], &[]), vec![0.0, 1.0]);
    assert_eq!(stats::sturges_edges(&[2.0], &[2.0]), vec![1.5, 2.5]);
    assert!(stats::sturges_edges(&[f64::INFINITY], &[1.0]).is_empty());
    assert!(stats::psi_numeric(&[f64::NAN, 1.0], &[1.0]).is_nan());
}
