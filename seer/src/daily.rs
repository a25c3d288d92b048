//! `seer daily` (and `seer forecast` / `seer anomaly` with a daily model, their default): one
//! home's file through the daily lane — every day's forecast of the next day and anomaly
//! score, encrypted, evaluated and released by a key authority — printed beside the plaintext
//! model on the same readings and the actual next-day readings.
//!
//! 1. The readings are read as the meter reads its source (`timestamp,kwh` CSV with malformed
//!    lines reported by line number, or the UCI minute file), gaps left as gaps.
//! 2. A key authority is started as a separate process with the model registered
//!    ([`crate::authority`]; the deep key set stays off: the daily lane runs at n = 4096).
//! 3. As the meter, for each day of the range: the model prepares the day's block from the
//!    28 days before it and the day (`meter_client::daily::read_window`, as `meter-client
//!    daily` does), it is encrypted at block 0 under the key authority's public key and its
//!    signed receipt recorded. A day the model cannot see (too little history) is skipped,
//!    with the reason.
//! 4. As the utility: the Galois keys fetched once (cached under the work directory), each
//!    home-day evaluated and released (`utility_server::daily::evaluate`, then
//!    `Analytics.Release` with kind `daily`).
//!
//! The launcher decrypts nothing: it is built without `seer-ckks/secret-key`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use chrono::{NaiveDate, TimeDelta};
use meter_client::analytics::{record_receipt, sign_receipt};
use meter_client::daily::{DailyLane, input_id, read_window, receipt};
use meter_client::grpc::{BearerToken, fetch_public_key};
use meter_client::source::{DateRange, MonthShift, OpenedSource, SourceSpec, open};
use seer_ckks::{CkksContext, Encryptor, Evaluator, PublicKey};
use seer_daily::history::HomeHistory;
use serde::Serialize;
use utility_server::analytics::{MeterInputs, connect, request_release};
use utility_server::daily::{evaluate, load_or_fetch_galois_keys};

use crate::authority::{AnalyticsAuthority, progress};

/// The meter id the CLI's home is released under.
pub const METER_ID: &str = "csv-home";

/// Options of `seer daily`.
#[derive(Clone, Debug)]
pub struct DailyOptions {
    /// The readings (`csv:` or `uci:`).
    pub source: SourceSpec,
    /// First day prepared (default: the last `days` days of the file, or without `days` the
    /// day a week after the first).
    pub from: Option<NaiveDate>,
    /// Days prepared (default: through the file's last day).
    pub days: Option<usize>,
    /// The registered daily model file.
    pub model: PathBuf,
    /// Work directory.
    pub workdir: PathBuf,
    /// Where the programs are.
    pub bin_dir: Option<PathBuf>,
}

/// One released home-day.
#[derive(Clone, Debug, Serialize)]
pub struct DailyDay {
    /// The day the meter prepared (the anomaly score's day).
    pub day: NaiveDate,
    /// The released forecast of the next day, kWh per hour.
    pub forecast_kwh: Option<Vec<f64>>,
    /// The plaintext model's forecast of the same readings (the oracle).
    pub plaintext_forecast_kwh: Option<Vec<f64>>,
    /// The next day's actual hours, when the file has that day whole.
    pub actual_kwh: Option<Vec<f64>>,
    /// The released anomaly score.
    pub score: Option<f64>,
    /// The plaintext model's score.
    pub plaintext_score: Option<f64>,
    /// Whether the day was flagged.
    pub flagged: bool,
    /// A flagged day's explanation, one sentence per leading feature.
    pub explanation: Vec<String>,
}

/// A day not released, with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct DailySkip {
    /// The day.
    pub day: NaiveDate,
    /// Why.
    pub reason: String,
}

/// What `seer daily` prints.
#[derive(Clone, Debug, Serialize)]
pub struct DailyReport {
    /// BLAKE3 of the model file.
    pub model_blake3: String,
    /// Home-days released.
    pub released: usize,
    /// Days skipped or refused, with the reason.
    pub skipped: Vec<DailySkip>,
    /// Whether every utility result was byte-identical to the key authority's re-execution.
    pub all_verified: bool,
    /// Mean absolute error (kWh per hour) of the released forecasts against the actual
    /// readings, over the hours the file has.
    pub forecast_mae_kwh: Option<f64>,
    /// Largest |released − plaintext| over every forecast hour and score: CKKS noise and
    /// rounding only.
    pub max_abs_diff_vs_plaintext: f64,
    /// Days flagged.
    pub flagged: usize,
    /// Bytes of one day's ciphertext (what a meter uploads), and per 15-minute reading.
    pub bytes_per_upload: usize,
    /// Median milliseconds per home-day: the meter's preparation and encryption, the
    /// utility's evaluation, the release round trip (the key authority's checks,
    /// re-execution and decryption).
    pub median_ms: MedianMs,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// The released days.
    pub days: Vec<DailyDay>,
}

/// Median milliseconds per home-day.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MedianMs {
    /// The meter: prepare + encrypt + serialize.
    pub meter: f64,
    /// The utility: evaluate + serialize.
    pub utility: f64,
    /// The release round trip.
    pub release: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every usable day of `source` as one history (the oracle's actual readings).
fn whole_history(source: &OpenedSource) -> Result<(HomeHistory, NaiveDate, NaiveDate)> {
    history_of(
        source,
        DateRange {
            from: None,
            until: None,
            shift: MonthShift::NONE,
        },
    )
}

/// The readings of `source` in `range` as one history, with the first and last day read
/// (readings the history refuses are left out, never invented, as the meter does).
pub(crate) fn history_of(
    source: &OpenedSource,
    range: DateRange,
) -> Result<(HomeHistory, NaiveDate, NaiveDate)> {
    let stream = source.select(range)?;
    let minutes = stream.interval().as_secs() / 60;
    let readings = stream.readings();
    let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
        bail!("the source holds no readings in the range read");
    };
    let (first, last) = (first.start.date(), last.start.date());
    let mut history = HomeHistory::new();
    for r in readings {
        // Left out, never invented (as the meter does).
        let _ = history.add(r.start, minutes, r.energy.to_kwh().get());
    }
    Ok((history, first, last))
}

/// Runs `seer daily`.
///
/// # Errors
/// When the readings, the model, the programs or a step fails.
pub async fn run(options: &DailyOptions) -> Result<DailyReport> {
    let start = Instant::now();
    let model_bytes = std::fs::read(&options.model)
        .with_context(|| format!("reading the model {}", options.model.display()))?;
    let lane = DailyLane::try_new(&model_bytes, 0, meter_client::daily::DEFAULT_GROUP_SIZE)
        .with_context(|| format!("the daily model {}", options.model.display()))?;
    let model = lane.model().clone();
    let spec = options.source.clone();
    let source = tokio::task::spawn_blocking(move || open(&spec)).await??;
    let (whole, first, last) = whole_history(&source)?;
    let days = options
        .days
        .map(|n| i64::try_from(n).context("--days"))
        .transpose()?;
    if days == Some(0) {
        bail!("--days must be at least 1");
    }
    // Without --from: the last --days days, or every day after the first week.
    let from = match (options.from, days) {
        (Some(from), _) => from,
        (None, Some(n)) => (last - TimeDelta::days(n - 1)).max(first),
        (None, None) => first + TimeDelta::days(7),
    };
    let until = match days {
        Some(n) => (from + TimeDelta::days(n - 1)).min(last),
        None => last,
    };
    if until < from {
        bail!("no day to prepare: the range {from} … {until} is empty");
    }
    progress(
        start,
        &format!("meter: readings {first} … {last}; preparing {from} … {until}"),
    );
    let ctx = tokio::task::spawn_blocking(|| CkksContext::new(seer_daily::PARAMETERS)).await??;

    let model_path = std::fs::canonicalize(&options.model)?;
    let authority = AnalyticsAuthority::start(
        &options.workdir,
        options.bin_dir.clone(),
        &[
            ("ENABLED", "false".to_owned()),
            (
                "DAILY_MODELS",
                format!("[{:?}]", model_path.display().to_string()),
            ),
            ("ANOMALY_MODELS", "[]".to_owned()),
            ("FORECAST_MODELS", "[]".to_owned()),
        ],
        start,
    )
    .await?;
    let source = std::sync::Arc::new(source);
    let result = async {
        let household = authority.meter(METER_ID).await?;
        let utility = authority.token("utility", None).await?;
        let url = authority.url().to_owned();
        let pk_bytes = fetch_public_key(&url, None, ctx.parameter_set_id()).await?;
        let public_key = PublicKey::from_bytes(&ctx, &pk_bytes)?;
        let encryptor = std::sync::Arc::new(Encryptor::new(&ctx, &public_key)?);
        let channel = connect(&url).await?;
        let (galois, keys) = load_or_fetch_galois_keys(
            channel.clone(),
            &ctx,
            &seer_daily::circuit::galois_steps(&model),
            &options.workdir.join("key-cache"),
        )
        .await?;
        let evaluator = std::sync::Arc::new(Evaluator::new(&ctx, None, Some(galois)));
        progress(
            start,
            &format!(
                "utility: Galois keys ready ({} B fetched, {} B from the cache)",
                keys.bytes_fetched, keys.bytes_cached
            ),
        );
        let mut released = Vec::new();
        let mut skipped = Vec::new();
        let (mut meter_ms, mut utility_ms, mut release_ms) = (Vec::new(), Vec::new(), Vec::new());
        let mut all_verified = true;
        let mut bytes_per_upload = 0;
        let mut day = from;
        while day <= until {
            // The meter.
            let timer = Instant::now();
            let (src, m, enc, c) = (
                source.clone(),
                model.clone(),
                encryptor.clone(),
                ctx.clone(),
            );
            let prepared = tokio::task::spawn_blocking(move || {
                let window = read_window(&src, day)?;
                let input = match m.prepare(&window.history, day) {
                    Ok(input) => input,
                    Err(e) => return Ok::<_, anyhow::Error>(Err(e.to_string())),
                };
                let ct = seer_daily::circuit::encrypt(&enc, &input, 0)?;
                let bytes = ct.to_bytes(&c)?;
                Ok(Ok((input, bytes)))
            })
            .await??;
            let (input, bytes) = match prepared {
                Ok(p) => p,
                Err(reason) => {
                    skipped.push(DailySkip { day, reason });
                    day += TimeDelta::days(1);
                    continue;
                }
            };
            meter_ms.push(timer.elapsed().as_secs_f64() * 1000.0);
            bytes_per_upload = bytes.len();
            let mut signed = receipt(METER_ID, day, &lane, &bytes);
            sign_receipt(&household.identity, &mut signed, lane.model_blake3(), 0)?;
            record_receipt(&url, BearerToken::try_new(&household.token)?, signed).await?;

            // The utility.
            let timer = Instant::now();
            let (m, ev, b) = (model.clone(), evaluator.clone(), bytes.clone());
            let result =
                tokio::task::spawn_blocking(move || evaluate(&m, &ev, &[(0, b.as_slice())]))
                    .await??;
            utility_ms.push(timer.elapsed().as_secs_f64() * 1000.0);
            let timer = Instant::now();
            let response = request_release(
                channel.clone(),
                &utility,
                "daily",
                lane.model_blake3(),
                vec![MeterInputs {
                    meter_id: METER_ID.to_owned(),
                    input_id: input_id(day),
                    inputs: vec![bytes],
                }],
                vec![result],
            )
            .await?;
            release_ms.push(timer.elapsed().as_secs_f64() * 1000.0);
            all_verified &= response.result_verified;
            let outcome = response
                .meters
                .first()
                .context("the key authority answered for no meter")?;
            if !outcome.granted {
                skipped.push(DailySkip {
                    day,
                    reason: format!("refused: {}", outcome.refusal),
                });
                day += TimeDelta::days(1);
                continue;
            }
            // The oracle: the plaintext model on the same block.
            let twin = model
                .release(day, &model.evaluate_plain(&input))
                .map_err(|e| anyhow::anyhow!("the plaintext model refuses its own day: {e}"))?;
            let forecast_kwh = (!outcome.forecasts.is_empty())
                .then(|| outcome.forecasts.iter().map(|f| f.kwh).collect::<Vec<_>>());
            let anomaly = outcome.days.first();
            released.push(DailyDay {
                day,
                forecast_kwh,
                plaintext_forecast_kwh: twin.forecast.clone(),
                actual_kwh: whole.day(day + TimeDelta::days(1)).map(|h| h.to_vec()),
                score: anomaly.map(|a| a.score),
                plaintext_score: twin.anomaly.as_ref().map(|a| a.score),
                flagged: anomaly.is_some_and(|a| a.flagged),
                explanation: anomaly
                    .map(|a| a.explanation.iter().map(|e| e.text.clone()).collect())
                    .unwrap_or_default(),
            });
            if released.len() % 30 == 0 {
                progress(
                    start,
                    &format!("{} home-days released (through {day})", released.len()),
                );
            }
            day += TimeDelta::days(1);
        }
        Ok::<_, anyhow::Error>((
            released,
            skipped,
            all_verified,
            bytes_per_upload,
            MedianMs {
                meter: median(meter_ms),
                utility: median(utility_ms),
                release: median(release_ms),
            },
        ))
    }
    .await;
    authority.stop().await;
    let (days, skipped, all_verified, bytes_per_upload, median_ms) = result?;

    let mut errors = Vec::new();
    let mut max_abs_diff = 0.0f64;
    for d in &days {
        if let (Some(f), Some(a)) = (&d.forecast_kwh, &d.actual_kwh) {
            errors.extend(f.iter().zip(a).map(|(x, y)| (x - y).abs()));
        }
        if let (Some(f), Some(p)) = (&d.forecast_kwh, &d.plaintext_forecast_kwh) {
            for (x, y) in f.iter().zip(p) {
                max_abs_diff = max_abs_diff.max((x - y).abs());
            }
        }
        if let (Some(s), Some(p)) = (d.score, d.plaintext_score) {
            max_abs_diff = max_abs_diff.max((s - p).abs());
        }
    }
    Ok(DailyReport {
        model_blake3: lane.model_blake3().to_owned(),
        released: days.len(),
        skipped,
        all_verified,
        forecast_mae_kwh: (!errors.is_empty())
            .then(|| errors.iter().sum::<f64>() / errors.len() as f64),
        max_abs_diff_vs_plaintext: max_abs_diff,
        flagged: days.iter().filter(|d| d.flagged).count(),
        bytes_per_upload,
        median_ms,
        seconds: start.elapsed().as_secs_f64(),
        days,
    })
}
