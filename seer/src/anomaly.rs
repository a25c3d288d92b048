//! `seer anomaly`: a CSV of one home's readings through encryption, encrypted scoring and the
//! key authority's release, printed as per-day JSON.
//!
//! 1. The CSV is read ([`read_csv`]): `day,h00,…,h23` (kWh per hour) or `timestamp,kwh`
//!    (aggregated into hours by the hour the reading starts in; a day missing an hour, or with
//!    an uneven number of readings per hour, is reported and skipped). Malformed rows are
//!    reported with `file:line`.
//! 2. A key authority is started as a separate process with analytics enabled (the deep
//!    N32768_L19 key set, the model registered; see [`crate::authority`]).
//! 3. As the meter (`meter_client::anomaly`): the public key fetched, each run of
//!    consecutive days encrypted as 24 hour planes at its own slot block (a run is one block;
//!    runs are separated where days were skipped), on the chosen lane; the receipt recorded
//!    under a household token.
//! 4. As the utility (`utility_server::anomaly`): the deep keys fetched, the registered
//!    computation evaluated over the planes (one evaluation scores every block), the release
//!    requested with a utility token; the released days stored in `anomaly_scores` of
//!    `WORKDIR/utility.db` and printed.
//!
//! The launcher decrypts nothing: it is built without `seer-ckks/secret-key`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use chrono::{NaiveDate, NaiveDateTime, Timelike as _};
use meter_client::anomaly::{AnomalyLane, HOURS, encrypt_days, lane_days, receipt, record_receipt};
use meter_client::grpc::{BearerToken, fetch_public_key};
use seer_anomaly::AnomalyModel;
use seer_anomaly::release::RegisteredAnomaly;
use seer_ckks::{CkksContext, ParameterSet, PublicKey};
use seer_core::circuits::isolation::Isolation;
use serde::Serialize;
use utility_server::analytics::{
    BlockInputs, MeterInputs, connect, fetch_deep_keys, model_digest, request_release,
};
use utility_server::anomaly::{AnomalyScores, DayScore, day_scores, score};

use crate::authority::{AnalyticsAuthority, RunMeter, progress};
use meter_client::analytics::sign_receipt;

/// Blocks one request may carry (the key authority's limit).
pub const MAX_BLOCKS: usize = 8;

/// Options of `seer anomaly`.
#[derive(Clone, Debug)]
pub struct AnomalyOptions {
    /// The CSV.
    pub csv: PathBuf,
    /// The lane.
    pub lane: LaneChoice,
    /// ε per hourly reading on the analytics lane.
    pub epsilon: f64,
    /// Δ per hourly reading on the analytics lane, Wh.
    pub sensitivity_wh: i64,
    /// The model file.
    pub model: PathBuf,
    /// The z-score window (days, power of two).
    pub zscore_window: usize,
    /// Work directory.
    pub workdir: PathBuf,
    /// Where the programs are.
    pub bin_dir: Option<PathBuf>,
}

/// `--lane`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LaneChoice {
    /// Exact readings (no DP guarantee; the release policy protects them).
    Exact,
    /// Discrete-Laplace-noised readings (ε-DP).
    Analytics,
}

/// One complete day of the CSV.
pub type Day = (NaiveDate, [f64; HOURS]);

/// What [`read_csv`] found.
#[derive(Debug, Default)]
pub struct CsvDays {
    /// Complete days, in date order.
    pub days: Vec<Day>,
    /// Incomplete days skipped, with why.
    pub skipped: Vec<(NaiveDate, String)>,
}

fn parse_kwh(field: &str, at: &str) -> Result<f64> {
    let v: f64 = field
        .trim()
        .parse()
        .with_context(|| format!("{at}: {field:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("{at}: {field:?} is not a finite non-negative kWh value");
    }
    Ok(v)
}

fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let t = text.trim();
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, format) {
            return Some(dt);
        }
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.naive_local())
}

/// Reads `day,h00,…,h23` or `timestamp,kwh` (format from the header).
///
/// # Errors
/// A missing or unknown header, or a malformed row (`file:line: why`).
pub fn read_csv(path: &Path) -> Result<CsvDays> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_csv(&text, &path.display().to_string())
}

/// [`read_csv`] on text; `name` prefixes error locations.
///
/// # Errors
/// As [`read_csv`].
pub fn parse_csv(text: &str, name: &str) -> Result<CsvDays> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("{name}: empty file");
    };
    let columns: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let daily: Vec<String> = std::iter::once("day".to_owned())
        .chain((0..HOURS).map(|h| format!("h{h:02}")))
        .collect();
    if columns == daily {
        let mut days: BTreeMap<NaiveDate, [f64; HOURS]> = BTreeMap::new();
        for (i, line) in lines {
            let at = format!("{name}:{}", i + 1);
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != HOURS + 1 {
                bail!("{at}: {} fields, expected {}", fields.len(), HOURS + 1);
            }
            let day: NaiveDate = fields[0]
                .trim()
                .parse()
                .with_context(|| format!("{at}: {:?} is not a YYYY-MM-DD day", fields[0]))?;
            let mut hours = [0.0; HOURS];
            for (h, f) in fields[1..].iter().enumerate() {
                hours[h] = parse_kwh(f, &at)?;
            }
            if days.insert(day, hours).is_some() {
                bail!("{at}: day {day} appears twice");
            }
        }
        return Ok(CsvDays {
            days: days.into_iter().collect(),
            skipped: Vec::new(),
        });
    }
    if columns != ["timestamp", "kwh"] {
        bail!("{name}:1: unknown header {header:?}: expected `day,h00,...,h23` or `timestamp,kwh`");
    }
    // Per day and hour: energy and reading count.
    let mut acc: BTreeMap<NaiveDate, [(f64, u32); HOURS]> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines {
        let at = format!("{name}:{}", i + 1);
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 2 {
            bail!("{at}: {} fields, expected 2", fields.len());
        }
        let t = parse_timestamp(fields[0])
            .with_context(|| format!("{at}: {:?} is not a timestamp", fields[0]))?;
        if !seen.insert(t) {
            bail!("{at}: timestamp {t} appears twice");
        }
        let kwh = parse_kwh(fields[1], &at)?;
        let slot = &mut acc.entry(t.date()).or_insert([(0.0, 0); HOURS])[t.hour() as usize];
        slot.0 += kwh;
        slot.1 += 1;
    }
    let mut out = CsvDays::default();
    for (day, hours) in acc {
        let max = hours.iter().map(|h| h.1).max().unwrap_or(0);
        if let Some(h) = hours.iter().position(|h| h.1 == 0) {
            out.skipped
                .push((day, format!("no reading in hour {h:02}")));
        } else if let Some(h) = hours.iter().position(|h| h.1 != max) {
            out.skipped.push((
                day,
                format!("hour {h:02} has {} readings, others {max}", hours[h].1),
            ));
        } else {
            out.days.push((day, hours.map(|h| h.0)));
        }
    }
    Ok(out)
}

/// Runs of consecutive days.
#[must_use]
pub fn consecutive_runs(days: &[Day]) -> Vec<Vec<Day>> {
    let mut runs: Vec<Vec<Day>> = Vec::new();
    for d in days {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|l| l.0.succ_opt() == Some(d.0)) => run.push(*d),
            _ => runs.push(vec![*d]),
        }
    }
    runs
}

/// The printed report.
#[derive(Debug, Serialize)]
pub struct AnomalyReport {
    /// The model's BLAKE3.
    pub model_blake3: String,
    /// The lane.
    pub lane: &'static str,
    /// ε per reading (analytics lane).
    pub epsilon_per_reading: f64,
    /// Total ε spent by the meter.
    pub epsilon_spent: f64,
    /// The model's flag threshold.
    pub flag_threshold: f64,
    /// Whether the key authority verified the utility's result byte for byte.
    pub result_verified: bool,
    /// Days skipped while reading the CSV, and blocks left out.
    pub skipped: Vec<String>,
    /// Refusals, per block.
    pub refused: Vec<String>,
    /// Released days.
    pub days: Vec<DayScore>,
}

/// Runs `seer anomaly`.
///
/// # Errors
/// When the CSV, the programs or a step fails.
pub async fn run(options: &AnomalyOptions) -> Result<AnomalyReport> {
    let start = Instant::now();
    let csv = read_csv(&options.csv)?;
    let mut skipped: Vec<String> = csv
        .skipped
        .iter()
        .map(|(d, why)| format!("{d}: incomplete day skipped ({why})"))
        .collect();
    for s in &skipped {
        eprintln!("{s}");
    }
    let model_bytes = std::fs::read(&options.model)
        .with_context(|| format!("reading the model {}", options.model.display()))?;
    let model_blake3 = model_digest(&model_bytes);
    let model = AnomalyModel::from_json(std::str::from_utf8(&model_bytes)?)
        .with_context(|| format!("the model {}", options.model.display()))?;
    let computation = RegisteredAnomaly::try_new(model, options.zscore_window)?;
    let history = computation.history();
    let mut runs: Vec<Vec<Day>> = consecutive_runs(&csv.days)
        .into_iter()
        .filter(|r| {
            let keep = r.len() > history;
            if !keep {
                skipped.push(format!(
                    "{}..{}: {} consecutive days, fewer than the {} needed",
                    r[0].0,
                    r[r.len() - 1].0,
                    r.len(),
                    history + 1
                ));
            }
            keep
        })
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.len()));
    for r in runs.iter().skip(MAX_BLOCKS) {
        skipped.push(format!(
            "{}..{}: more than {MAX_BLOCKS} runs of consecutive days; left out",
            r[0].0,
            r[r.len() - 1].0
        ));
    }
    runs.truncate(MAX_BLOCKS);
    runs.sort_by_key(|r| r[0].0);
    if runs.is_empty() {
        bail!("no run of more than {history} consecutive complete days in the CSV");
    }

    // The key authority, as a separate process.
    let model_path = std::fs::canonicalize(&options.model)?;
    let authority = AnalyticsAuthority::start(
        &options.workdir,
        options.bin_dir.clone(),
        &[
            (
                "ANOMALY_MODELS",
                format!("[{:?}]", model_path.display().to_string()),
            ),
            ("ZSCORE_WINDOW", options.zscore_window.to_string()),
            ("FORECAST_MODELS", "[]".to_owned()),
        ],
        start,
    )
    .await?;
    let result = async {
        // One block per run of consecutive days, each under its own meter id (a meter is named
        // once per request): `csv-home`, or `csv-home-1`, `csv-home-2`, … for several runs.
        let mut households = Vec::with_capacity(runs.len());
        for k in 0..runs.len() {
            let meter_id = if runs.len() == 1 {
                "csv-home".to_owned()
            } else {
                format!("csv-home-{}", k + 1)
            };
            households.push(authority.meter(&meter_id).await?);
        }
        let utility = authority.token("utility", None).await?;
        score_and_release(
            options,
            &computation,
            &model_blake3,
            authority.url(),
            &households,
            &utility,
            runs,
            skipped,
            start,
        )
        .await
    }
    .await;
    authority.stop().await;
    result
}

#[expect(clippy::too_many_arguments, reason = "one internal phase of `run`")]
async fn score_and_release(
    options: &AnomalyOptions,
    computation: &RegisteredAnomaly,
    model_blake3: &str,
    url: &str,
    households: &[RunMeter],
    utility: &str,
    runs: Vec<Vec<Day>>,
    skipped: Vec<String>,
    start: Instant,
) -> Result<AnomalyReport> {
    let params = ParameterSet::N32768_L19_SEC128;
    let ctx = tokio::task::spawn_blocking(move || CkksContext::new(params)).await??;
    // The meter.
    let pk_bytes = fetch_public_key(url, None, ctx.parameter_set_id()).await?;
    let public_key = std::sync::Arc::new(PublicKey::from_bytes(&ctx, &pk_bytes)?);
    let lane = match options.lane {
        LaneChoice::Exact => AnomalyLane::Exact,
        LaneChoice::Analytics => AnomalyLane::Analytics {
            epsilon: seer_core::dp::Epsilon::try_new(options.epsilon)?,
            sensitivity: seer_core::units::Wh::try_new(options.sensitivity_wh)?,
        },
    };
    let hour_range = computation.hour_range();
    let mut offset = 0;
    let mut meters = Vec::new();
    let mut blocks = Vec::new();
    let mut epsilon_spent = 0.0;
    let mut epsilon_per_reading = 0.0;
    for (run, household) in runs.iter().zip(households) {
        let meter_id = &household.meter_id;
        let hours: Vec<[f64; HOURS]> = run.iter().map(|d| d.1).collect();
        let lane_days = lane_days(&hours, lane, hour_range)?;
        epsilon_spent += lane_days.epsilon_spent;
        epsilon_per_reading = lane_days.epsilon_per_reading;
        progress(
            start,
            &format!(
                "meter: encrypting {} days ({}..{}) as 24 hour planes at slots {offset}..{}",
                run.len(),
                run[0].0,
                run[run.len() - 1].0,
                offset + run.len()
            ),
        );
        let (ctx2, pk2, days2, at) = (
            ctx.clone(),
            std::sync::Arc::clone(&public_key),
            lane_days.days.clone(),
            offset,
        );
        let encrypted =
            tokio::task::spawn_blocking(move || encrypt_days(&ctx2, &pk2, &days2, at)).await??;
        let input_id = format!("{}..{}", run[0].0, run[run.len() - 1].0);
        let mut signed = receipt(meter_id, &input_id, run[0].0, &encrypted, &lane_days);
        sign_receipt(&household.identity, &mut signed, model_blake3, 0)?;
        record_receipt(url, BearerToken::try_new(&household.token)?, signed).await?;
        meters.push(MeterInputs {
            meter_id: meter_id.clone(),
            input_id,
            inputs: encrypted.planes,
        });
        blocks.push(offset..offset + run.len());
        offset += run.len();
    }
    progress(start, "meter: receipts recorded with the key authority");
    // The utility.
    let channel = connect(url).await?;
    let (evaluator, key_bytes) =
        fetch_deep_keys(channel.clone(), &ctx, &computation.galois_steps()).await?;
    progress(
        start,
        &format!(
            "utility: deep evaluation keys fetched ({:.0} MB)",
            key_bytes as f64 / 1e6
        ),
    );
    // One evaluation for every run when the model's depth leaves a level to isolate them
    // inside the circuit; otherwise one evaluation (and release) per run.
    let masked = Isolation::for_depth(computation.depth(), ctx.parameter_set().levels())
        == Isolation::Masked;
    let evaluator = std::sync::Arc::new(evaluator);
    let requests: Vec<Vec<(std::ops::Range<usize>, MeterInputs)>> = if masked {
        vec![blocks.into_iter().zip(meters).collect()]
    } else {
        blocks.into_iter().zip(meters).map(|m| vec![m]).collect()
    };
    let mut response = seer_proto::v1::AnalyticsReleaseResponse {
        result_verified: true,
        ..Default::default()
    };
    for request in requests {
        let scoring = Instant::now();
        let (comp, ev) = (computation.clone(), std::sync::Arc::clone(&evaluator));
        let planes: Vec<BlockInputs> = request
            .iter()
            .map(|(block, m)| (block.clone(), m.inputs.clone()))
            .collect();
        let result = tokio::task::spawn_blocking(move || score(&comp, &ev, &planes)).await??;
        progress(
            start,
            &format!(
                "utility: encrypted scoring of {} run(s) done in {:.1} s; asking the key \
                 authority to release (it re-executes the circuit: about as long again)",
                request.len(),
                scoring.elapsed().as_secs_f64()
            ),
        );
        let meters = request.into_iter().map(|(_, m)| m).collect();
        let answer = request_release(
            channel.clone(),
            utility,
            "anomaly",
            model_blake3,
            meters,
            result,
        )
        .await?;
        response.result_verified &= answer.result_verified;
        response.flag_threshold = answer.flag_threshold;
        response.meters.extend(answer.meters);
    }
    progress(start, "key authority answered");
    let store = AnomalyScores::connect(&format!(
        "sqlite://{}",
        options.workdir.join("utility.db").display()
    ))
    .await?;
    // A re-run of the same CSV would repeat (meter, day, model): keep the first stored row.
    if let Err(e) = store.record(model_blake3, &response).await {
        eprintln!("note: released scores not stored ({e})");
    }
    Ok(AnomalyReport {
        model_blake3: model_blake3.to_owned(),
        lane: lane.name(),
        epsilon_per_reading,
        epsilon_spent,
        flag_threshold: response.flag_threshold,
        result_verified: response.result_verified,
        skipped,
        refused: response
            .meters
            .iter()
            .filter(|m| !m.granted)
            .map(|m| format!("{}: {}", m.meter_id, m.refusal))
            .collect(),
        days: day_scores(&response),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_csv_and_errors_with_lines() {
        let header = "day,".to_owned()
            + &(0..24)
                .map(|h| format!("h{h:02}"))
                .collect::<Vec<_>>()
                .join(",");
        let row = |d: &str| format!("{d},{}", vec!["0.5"; 24].join(","));
        let text = format!("{header}\n{}\n{}\n", row("2010-01-02"), row("2010-01-01"));
        let days = parse_csv(&text, "f.csv").unwrap();
        assert_eq!(days.days.len(), 2);
        assert_eq!(days.days[0].0.to_string(), "2010-01-01");
        assert_eq!(days.days[0].1[3], 0.5);
        let bad = format!("{header}\n{}\n2010-01-03,1,2\n", row("2010-01-02"));
        let err = parse_csv(&bad, "f.csv").unwrap_err().to_string();
        assert!(err.starts_with("f.csv:3:"), "{err}");
        let err = parse_csv("a,b\n", "f.csv").unwrap_err().to_string();
        assert!(err.contains("f.csv:1"), "{err}");
    }

    #[test]
    fn timestamp_csv_aggregates_and_skips_incomplete_days() {
        let mut text = String::from("timestamp,kwh\n");
        for h in 0..24 {
            for q in [0, 30] {
                text += &format!("2010-01-01 {h:02}:{q:02}:00,0.25\n");
            }
        }
        for h in 0..23 {
            text += &format!("2010-01-02 {h:02}:00:00,1\n");
        }
        let days = parse_csv(&text, "t.csv").unwrap();
        assert_eq!(days.days.len(), 1);
        assert_eq!(days.days[0].1, [0.5; 24]);
        assert_eq!(days.skipped.len(), 1);
        assert!(days.skipped[0].1.contains("hour 23"));
        let err = parse_csv("timestamp,kwh\nyesterday,1\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.csv:2:"), "{err}");
    }

    #[test]
    fn runs_split_at_gaps() {
        let d = |s: &str| (s.parse().unwrap(), [0.0; 24]);
        let runs = consecutive_runs(&[d("2010-01-01"), d("2010-01-02"), d("2010-01-04")]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].len(), 2);
    }
}
