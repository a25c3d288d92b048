//! The analytics lane's differential privacy, checked statistically against the exact
//! distribution.
//!
//! Every test seeds its generator, so the statistics below are deterministic; the bounds are
//! 5 standard errors (or the χ² equivalent), which a correct sampler fails with probability
//! below 10⁻⁶ for a fresh seed. Run with `--nocapture` to see the observed statistics.

use chrono::NaiveDate;
use rand::SeedableRng;
use rand::rngs::StdRng;
use seer_core::Error;
use seer_core::dp::{
    AnalyticsNoise, BudgetPeriod, DiscreteLaplace, Epsilon, LaplaceMechanism, NoisyWh,
    PrivacyAccountant, SharePlan,
};
use seer_core::units::Wh;

fn eps(v: f64) -> Epsilon {
    Epsilon::try_new(v).expect("valid epsilon")
}

fn wh(v: i64) -> Wh {
    Wh::try_new(v).expect("valid Wh")
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2007, 1, d).expect("valid date")
}

fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn mechanism(sensitivity: i64, epsilon: f64) -> LaplaceMechanism {
    LaplaceMechanism::try_new(wh(sensitivity), eps(epsilon)).expect("valid mechanism")
}

/// An accountant that never runs out in these tests.
fn generous() -> PrivacyAccountant {
    PrivacyAccountant::new("test-meter", BudgetPeriod::Month, Epsilon::MAX, day(1))
}

/// Exact second and fourth moments of the distribution, summed from its PMF.
fn exact_moments(d: &DiscreteLaplace) -> (f64, f64) {
    let bound = (60.0 * d.scale()).ceil() as i64 + 20;
    let (mut m2, mut m4) = (0.0, 0.0);
    for k in -bound..=bound {
        let p = d.pmf(k);
        let k2 = (k as f64) * (k as f64);
        m2 += k2 * p;
        m4 += k2 * k2 * p;
    }
    (m2, m4)
}

#[test]
fn mean_and_variance_match_the_exact_distribution() {
    // (sensitivity Wh, ε): scales 0.5, 1.5 (non-integer rational), 4, 50 and 50 000 (ε = 0.1
    // is not dyadic, so the scale is a large exact fraction).
    let cases = [(1, 2.0), (3, 2.0), (4, 1.0), (5, 0.1), (5000, 0.1)];
    let n = 200_000_usize;
    for (i, (sensitivity, epsilon)) in cases.into_iter().enumerate() {
        let d = DiscreteLaplace::for_mechanism(wh(sensitivity), eps(epsilon)).expect("valid");
        let b = sensitivity as f64 / epsilon;
        assert!((d.scale() / b - 1.0).abs() < 1e-12);
        let q = (-1.0 / b).exp();
        let var = 2.0 * q / ((1.0 - q) * (1.0 - q));
        assert!((d.variance() / var - 1.0).abs() < 1e-9, "closed form");
        let (m2, m4) = exact_moments(&d);
        assert!((m2 / var - 1.0).abs() < 1e-6, "PMF and closed form agree");

        let mut rng = seeded(100 + i as u64);
        let samples: Vec<f64> = (0..n).map(|_| d.sample(&mut rng) as f64).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let sample_var =
            samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
        let mean_se = (var / n as f64).sqrt();
        let var_se = ((m4 - var * var) / n as f64).sqrt();
        eprintln!(
            "b = {b}: mean {mean:.4} (z = {:+.2}), variance {sample_var:.4} vs exact {var:.4} \
             (z = {:+.2})",
            mean / mean_se,
            (sample_var - var) / var_se
        );
        assert!(mean.abs() <= 5.0 * mean_se, "b = {b}: mean {mean}");
        assert!(
            (sample_var - var).abs() <= 5.0 * var_se,
            "b = {b}: variance {sample_var}, exact {var} ± {}",
            5.0 * var_se
        );
    }
}

/// Pearson's χ² of the samples against the PMF, over the central values with an expected
/// count of at least 50 and one bin for each tail. Returns (χ², degrees of freedom).
fn chi_square(d: &DiscreteLaplace, samples: &[i64]) -> (f64, usize) {
    let n = samples.len() as f64;
    let mut k_max = 0_i64;
    while d.pmf(k_max + 1) * n >= 50.0 {
        k_max += 1;
    }
    let width = (2 * k_max + 1) as usize;
    let mut counts = vec![0_u64; width + 2];
    for &z in samples {
        let bin = if z < -k_max {
            width
        } else if z > k_max {
            width + 1
        } else {
            (z + k_max) as usize
        };
        counts[bin] += 1;
    }
    let central: f64 = (-k_max..=k_max).map(|k| d.pmf(k)).sum();
    let tail = (1.0 - central) / 2.0;
    let mut chi2 = 0.0;
    for (bin, &observed) in counts.iter().enumerate() {
        let p = if bin < width {
            d.pmf(bin as i64 - k_max)
        } else {
            tail
        };
        let expected = p * n;
        chi2 += (observed as f64 - expected).powi(2) / expected;
    }
    (chi2, counts.len() - 1)
}

#[test]
fn pmf_fits_by_chi_square() {
    let n = 300_000;
    for (i, (sensitivity, epsilon)) in [(1, 2.0), (3, 2.0), (4, 1.0), (5, 0.1)]
        .into_iter()
        .enumerate()
    {
        let d = DiscreteLaplace::for_mechanism(wh(sensitivity), eps(epsilon)).expect("valid");
        let mut rng = seeded(200 + i as u64);
        let samples: Vec<i64> = (0..n).map(|_| d.sample(&mut rng)).collect();
        let (chi2, df) = chi_square(&d, &samples);
        // χ²_df has mean df and standard deviation √(2 df); 5 of those above the mean is far in
        // the tail (p < 10⁻⁵ for these df).
        let limit = df as f64 + 5.0 * (2.0 * df as f64).sqrt();
        eprintln!(
            "b = {}: chi-square {chi2:.1} on {df} df (limit {limit:.1})",
            d.scale()
        );
        assert!(chi2 <= limit, "b = {}: χ² = {chi2} > {limit}", d.scale());
        // P(Z = k) is symmetric: the sign is fair.
        let positive = samples.iter().filter(|&&z| z > 0).count() as f64;
        let negative = samples.iter().filter(|&&z| z < 0).count() as f64;
        let se = (positive + negative).sqrt();
        assert!((positive - negative).abs() <= 5.0 * se);
    }
}

/// χ² limit: 5 standard deviations above the mean of χ²_df.
fn chi_square_limit(df: usize) -> f64 {
    df as f64 + 5.0 * (2.0 * df as f64).sqrt()
}

/// `rounds` group totals of noise: the shares of `honest` meters of `plan`, plus the key
/// authority's top-up for `present` meters when `top_up`.
fn summed_shares(
    plan: &SharePlan,
    honest: u32,
    present: u32,
    top_up: bool,
    rounds: usize,
    rng: &mut StdRng,
) -> Vec<i64> {
    let share = plan.share();
    let extra = if top_up { plan.top_up(present) } else { None };
    (0..rounds)
        .map(|_| {
            let meters: i64 = (0..honest).map(|_| share.sample(rng)).sum();
            meters + extra.map_or(0, |e| e.sample(rng))
        })
        .collect()
}

#[test]
fn distributed_shares_sum_to_one_discrete_laplace_draw() {
    // Scale b = 4 (Δ = 4 Wh, ε = 1): many bins with ≥ 50 expected counts at 40,000 rounds.
    let rounds = 40_000;
    let cases: [(&str, u32, u32, u32, u32); 6] = [
        // (case, n, tolerated, honest shares summed, meters present)
        ("one meter", 1, 0, 1, 1),
        ("3 meters", 3, 0, 3, 3),
        ("10 meters", 10, 0, 10, 10),
        ("1,000 meters", 1_000, 0, 1_000, 1_000),
        // 5 of 50 collude and remove their own shares: the 45 honest ones still carry it.
        ("50 meters, 5 colluding", 50, 5, 45, 50),
        // 40 of 100 absent (past the tolerated 10): the key authority tops up 30 shares.
        ("100 meters, 40 absent", 100, 10, 60, 60),
    ];
    for (i, (case, n, t, honest, present)) in cases.into_iter().enumerate() {
        let plan = SharePlan::try_new(n, t, wh(4), eps(1.0)).expect("plan");
        let mut rng = seeded(900 + i as u64);
        let totals = summed_shares(&plan, honest, present, true, rounds, &mut rng);
        let (chi2, df) = chi_square(plan.full_noise(), &totals);
        let limit = chi_square_limit(df);
        eprintln!("{case}: chi-square {chi2:.1} on {df} df (limit {limit:.1})");
        assert!(chi2 <= limit, "{case}: χ² = {chi2} > {limit}");
    }
}

#[test]
fn missing_shares_without_the_top_up_fail_the_same_test() {
    // The negative control: half the group absent and no top-up leaves half the noise, and
    // independent local noise at every meter leaves ten times too much; both are rejected.
    let rounds = 40_000;
    let plan = SharePlan::try_new(100, 0, wh(4), eps(1.0)).expect("plan");
    let mut rng = seeded(990);
    let half = summed_shares(&plan, 50, 50, false, rounds, &mut rng);
    let (chi2, df) = chi_square(plan.full_noise(), &half);
    assert!(chi2 > chi_square_limit(df), "half the noise passed: {chi2}");
    let local: Vec<i64> = (0..rounds)
        .map(|_| (0..10).map(|_| plan.full_noise().sample(&mut rng)).sum())
        .collect();
    let (chi2, df) = chi_square(plan.full_noise(), &local);
    assert!(
        chi2 > chi_square_limit(df),
        "ten local draws passed: {chi2}"
    );
}

/// Histogram of noisy outputs.
fn histogram(lane: &[NoisyWh]) -> std::collections::HashMap<i64, u64> {
    let mut h = std::collections::HashMap::new();
    for z in lane {
        *h.entry(z.get()).or_insert(0) += 1;
    }
    h
}

#[test]
fn neighbouring_readings_stay_within_e_to_the_epsilon() {
    let epsilon = 1.0;
    let m = mechanism(4, epsilon);
    let n = 250_000;
    let mut accountant = generous();
    let low = m
        .analytics_lane(&vec![wh(0); n], day(3), &mut accountant, &mut seeded(300))
        .expect("within budget");
    let high = m
        .analytics_lane(&vec![wh(4); n], day(3), &mut accountant, &mut seeded(301))
        .expect("within budget");
    let (h0, h4) = (histogram(low.readings()), histogram(high.readings()));

    let mut largest = 0.0_f64;
    let mut compared = 0;
    for (&z, &c0) in &h0 {
        let Some(&c4) = h4.get(&z) else { continue };
        if c0 < 500 || c4 < 500 {
            continue;
        }
        compared += 1;
        // log of the ratio of empirical probabilities (same n) and its standard error.
        let log_ratio = (c0 as f64 / c4 as f64).ln();
        let se = (1.0 / c0 as f64 + 1.0 / c4 as f64).sqrt();
        assert!(
            log_ratio.abs() <= epsilon + 5.0 * se,
            "output {z}: ln ratio {log_ratio} > ε = {epsilon} + 5·{se}"
        );
        largest = largest.max(log_ratio.abs());
        // The exact ratio is e^{(|z − 4| − |z|)/4}; outside [0, 4] it is e^{±ε}: the bound is
        // attained, so the noise is not larger than it needs to be.
        let exact = ((z - 4).abs() - z.abs()) as f64 / 4.0;
        assert!(
            (log_ratio - exact).abs() <= 5.0 * se,
            "output {z}: ln ratio {log_ratio}, exact {exact}"
        );
    }
    eprintln!(
        "neighbour ratio: {compared} outputs compared, largest |ln ratio| {largest:.4} \
         (ε = {epsilon})"
    );
    assert!(compared >= 20, "enough outputs compared: {compared}");

    // Pooled over every output ≤ 0 the exact ratio is e^ε (and e^−ε over outputs ≥ 4): a
    // tight check that the privacy loss is ε, no more.
    for (range, exact) in [(i64::MIN..=0, epsilon), (4..=i64::MAX, -epsilon)] {
        let count = |h: &std::collections::HashMap<i64, u64>| {
            h.iter()
                .filter(|(z, _)| range.contains(z))
                .map(|(_, c)| *c)
                .sum::<u64>() as f64
        };
        let (c0, c4) = (count(&h0), count(&h4));
        let log_ratio = (c0 / c4).ln();
        let se = (1.0 / c0 + 1.0 / c4).sqrt();
        eprintln!("pooled ln ratio over {range:?}: {log_ratio:.4} ± {se:.4} (exact {exact})");
        assert!(
            (log_ratio - exact).abs() <= 5.0 * se,
            "{range:?}: {log_ratio}"
        );
    }
}

#[test]
fn readings_above_the_sensitivity_are_clamped() {
    let m = mechanism(4, 1.0);
    let mut accountant = generous();
    let at_bound = m
        .analytics_lane(&vec![wh(4); 1000], day(2), &mut accountant, &mut seeded(7))
        .expect("within budget");
    let above = m
        .analytics_lane(
            &vec![wh(10_000); 1000],
            day(2),
            &mut accountant,
            &mut seeded(7),
        )
        .expect("within budget");
    // Same seed, same noise: a clamped reading is indistinguishable from one at the bound.
    assert_eq!(at_bound.readings(), above.readings());
    assert_eq!(at_bound.clamped(), 0);
    assert_eq!(above.clamped(), 1000);
    assert_eq!(m.clamp(wh(3)), wh(3));
    assert_eq!(m.clamp(wh(5)), wh(4));
}

#[test]
fn noisy_sums_are_unbiased_near_zero() {
    // Readings of 0 Wh: noise is not clamped, so the lane's mean estimates 0 (clamping noisy
    // values at 0 would give a mean of about b/2 here, far outside the bound).
    let m = mechanism(100, 1.0);
    let n = 100_000;
    let lane = m
        .analytics_lane(&vec![wh(0); n], day(4), &mut generous(), &mut seeded(400))
        .expect("within budget");
    assert!(lane.readings().iter().any(|z| z.get() < 0));
    let mean = lane.readings().iter().map(|z| z.get() as f64).sum::<f64>() / n as f64;
    let se = (m.noise().variance() / n as f64).sqrt();
    assert!(mean.abs() <= 5.0 * se, "mean {mean} ± {}", 5.0 * se);
    let clamped_mean = lane
        .readings()
        .iter()
        .map(|z| z.get().max(0) as f64)
        .sum::<f64>()
        / n as f64;
    assert!(
        clamped_mean > 40.0,
        "clamping after noise biases: {clamped_mean}"
    );
}

#[test]
fn budget_refuses_past_the_limit_and_leaves_everything_untouched() {
    let m = mechanism(1000, 0.25);
    let mut accountant = PrivacyAccountant::new("meter-42", BudgetPeriod::Day, eps(1.0), day(5));
    let mut rng = seeded(500);
    let lane = m
        .analytics_lane(&[wh(1); 4], day(5), &mut accountant, &mut rng)
        .expect("4 × 0.25 = 1 fits");
    assert_eq!(lane.epsilon_spent(), 1.0);
    assert_eq!(accountant.spent(), 1.0);
    assert_eq!(accountant.remaining(), 0.0);

    let before = accountant.clone();
    let err = m
        .analytics_lane(&[wh(1)], day(5), &mut accountant, &mut rng)
        .expect_err("budget exhausted");
    match &err {
        Error::BudgetExhausted {
            meter,
            period_start,
            spent,
            requested,
            budget,
        } => {
            assert_eq!(meter, "meter-42");
            assert_eq!(*period_start, day(5));
            assert_eq!((*spent, *requested, *budget), (1.0, 0.25, 1.0));
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(
        err.to_string(),
        "privacy budget exhausted for meter meter-42: spent 1, requested 0.25, budget 1 for \
         the period starting 2007-01-05"
    );
    assert_eq!(accountant, before, "a refusal charges nothing");
    // A refusal draws no randomness: the next draw equals a fresh generator's 5th batch.
    let mut reference = seeded(500);
    m.analytics_lane(&[wh(1); 4], day(5), &mut generous(), &mut reference)
        .expect("within budget");
    let next = m
        .analytics_lane(&[wh(1); 3], day(6), &mut accountant, &mut rng)
        .expect("a new day has a new budget");
    let expected = m
        .analytics_lane(&[wh(1); 3], day(6), &mut generous(), &mut reference)
        .expect("within budget");
    assert_eq!(next.readings(), expected.readings());
    assert_eq!(accountant.spent(), 0.75, "3 × 0.25 on day 6");
    assert_eq!(accountant.period_start(), day(6));
    // Bigger than the whole budget at once: refused even in a fresh period.
    assert!(matches!(
        m.analytics_lane(&[wh(1); 5], day(7), &mut accountant, &mut rng),
        Err(Error::BudgetExhausted { .. })
    ));
    // Going back to a closed day is refused.
    assert!(matches!(
        m.analytics_lane(&[wh(1)], day(5), &mut accountant, &mut rng),
        Err(Error::PeriodRegression { .. })
    ));
}

#[test]
fn try_spend_and_empty_batches() {
    let mut a = PrivacyAccountant::new("m", BudgetPeriod::Month, eps(1.0), day(20));
    assert_eq!(a.period_start(), day(1));
    assert_eq!(a.try_spend(eps(0.5)).ok(), Some(0.5));
    assert_eq!(a.try_spend(eps(0.5)).ok(), Some(1.0));
    assert!(matches!(
        a.try_spend(Epsilon::MIN),
        Err(Error::BudgetExhausted { .. })
    ));
    // An empty batch spends nothing, even with the budget exhausted.
    let lane = mechanism(10, 1.0)
        .analytics_lane(&[], day(21), &mut a, &mut seeded(1))
        .expect("empty batch");
    assert!(lane.readings().is_empty());
    assert_eq!(lane.epsilon_spent(), 0.0);
    // February starts afresh.
    let feb = NaiveDate::from_ymd_opt(2007, 2, 14).expect("valid");
    assert_eq!(a.try_spend_at(feb, eps(0.75), 1).ok(), Some(0.75));
}

#[test]
fn accountant_state_round_trips_and_corruption_is_refused() {
    let mut a = PrivacyAccountant::new("meter-9", BudgetPeriod::Month, eps(30.0), day(17));
    a.try_spend_repeated(eps(0.05), 96).expect("fits");
    let json = serde_json::to_string(&a).expect("serialises");
    assert!(json.contains(r#""period":"month""#), "{json}");
    assert!(json.contains(r#""period_start":"2007-01-01""#), "{json}");
    let back: PrivacyAccountant = serde_json::from_str(&json).expect("round trip");
    assert_eq!(back, a);

    let good =
        r#"{"meter":"m","period":"day","budget":2.0,"period_start":"2007-01-05","spent":1.5}"#;
    assert!(serde_json::from_str::<PrivacyAccountant>(good).is_ok());
    for bad in [
        // spent above the budget
        r#"{"meter":"m","period":"day","budget":2.0,"period_start":"2007-01-05","spent":2.5}"#,
        // negative spend
        r#"{"meter":"m","period":"day","budget":2.0,"period_start":"2007-01-05","spent":-1}"#,
        // a month period must start on the 1st
        r#"{"meter":"m","period":"month","budget":2.0,"period_start":"2007-01-05","spent":0}"#,
        // invalid budget
        r#"{"meter":"m","period":"day","budget":0,"period_start":"2007-01-05","spent":0}"#,
        // unknown field, unknown period, missing field, wrong type
        r#"{"meter":"m","period":"day","budget":2.0,"period_start":"2007-01-05","spent":0,"x":1}"#,
        r#"{"meter":"m","period":"week","budget":2.0,"period_start":"2007-01-05","spent":0}"#,
        r#"{"meter":"m","period":"day","budget":2.0,"period_start":"2007-01-05"}"#,
        r#"{"meter":"m","period":"day","budget":2.0,"period_start":"2007-01-05","spent":"0"}"#,
        r#"{"meter":"m","period":"day","budget":2.0,"period_start":"2007-13-05","spent":0}"#,
        "",
    ] {
        assert!(
            serde_json::from_str::<PrivacyAccountant>(bad).is_err(),
            "accepted {bad}"
        );
    }
}

#[test]
fn epsilon_is_validated() {
    for bad in [0.0, -0.5, f64::NAN, f64::INFINITY, 1e-9, 2e6] {
        assert!(matches!(
            Epsilon::try_new(bad),
            Err(Error::InvalidEpsilon { .. })
        ));
    }
    assert_eq!(
        Epsilon::try_new(-0.5).expect_err("negative").to_string(),
        "invalid epsilon -0.5: epsilon must be positive"
    );
    assert!(serde_json::from_str::<Epsilon>("1e300").is_err());
    assert!(serde_json::from_str::<Epsilon>("null").is_err());
    assert_eq!(" 0.5 ".parse::<Epsilon>().ok(), Some(eps(0.5)));
    // The sensitivity must be positive and bounded.
    assert!(matches!(
        LaplaceMechanism::try_new(Wh::ZERO, eps(1.0)),
        Err(Error::InvalidOption { .. })
    ));
}

#[test]
fn seeded_generators_are_deterministic() {
    let m = mechanism(2500, 0.05);
    let readings: Vec<Wh> = (0..96).map(|i| wh(i * 20)).collect();
    let lane = |seed| {
        let mut noise = AnalyticsNoise::with_rng(m, seeded(seed));
        noise
            .analytics_lane(&readings, day(8), &mut generous())
            .expect("within budget")
    };
    assert_eq!(lane(1), lane(1));
    assert_ne!(lane(1).readings(), lane(2).readings());
}

#[test]
fn os_seeded_noise_differs_between_instances() {
    let m = mechanism(2500, 0.05);
    let readings = vec![wh(300); 64];
    let mut a = AnalyticsNoise::from_os_entropy(m).expect("os entropy");
    let mut b = AnalyticsNoise::from_os_entropy(m).expect("os entropy");
    let la = a
        .analytics_lane(&readings, day(9), &mut generous())
        .expect("within budget");
    let lb = b
        .analytics_lane(&readings, day(9), &mut generous())
        .expect("within budget");
    // Scale 50 000 Wh: 64 equal noises by chance is impossible in practice.
    assert_ne!(la.readings(), lb.readings());
    // Debug output shows the mechanism, never the generator's state.
    let debug = format!("{a:?}");
    assert!(
        debug.starts_with("AnalyticsNoise { mechanism: LaplaceMechanism"),
        "{debug}"
    );
    assert!(!debug.contains("rng"), "{debug}");
}
