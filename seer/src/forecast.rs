//! `seer forecast`: one home's readings through encryption, the encrypted LSTM forecaster and
//! the key authority's release, printed as per-hour JSON beside the plaintext model's
//! forecast of the same lane values and, where the file has them, the actual readings.
//!
//! 1. The readings are read: a `timestamp,kwh` CSV (`--csv`, malformed lines reported with
//!    their line numbers) or the UCI minute file (`--uci`), on a 15-minute grid; the window
//!    is `--days` days from `--from` (default: the file's last days).
//! 2. A key authority is started as a separate process with analytics enabled and the model
//!    registered ([`crate::authority`]).
//! 3. As the meter (`meter_client::forecast`): the public key fetched, the window's hourly
//!    series built on the model's lane (exact, or the analytics lane at the model's ε and Δ
//!    per 15-minute reading), encrypted as one ciphertext with the model's horizon reserved
//!    after it, and its receipt recorded under a household token.
//! 4. As the utility (`utility_server::forecast`): the deep keys fetched, the forecaster
//!    evaluated, the release requested with a utility token; the released hours stored in
//!    `forecasts` of `WORKDIR/utility.db` and printed. On the exact lane only the horizon
//!    after the window is released; on the analytics lane the backtest over the window too.
//!
//! The launcher decrypts nothing: it is built without `seer-ckks/secret-key`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use chrono::{NaiveDate, TimeDelta};
use meter_client::forecast::{ForecastLane, encrypt_series, lane_series, receipt, record_receipt};
use meter_client::grpc::{BearerToken, fetch_public_key};
use seer_ckks::{CkksContext, PublicKey};
use seer_forecast::data::{Series, load_quarters_csv, load_uci_quarters};
use seer_forecast::release::{FORECAST_QUANTUM, RegisteredForecast};
use seer_forecast::{ForecastModel, circuit, forecast_series};
use serde::Serialize;
use utility_server::analytics::{
    MeterInputs, connect, fetch_deep_keys, model_digest, request_release,
};
use utility_server::forecast::{ForecastStore, evaluate, hour_forecasts};

use crate::authority::{AnalyticsAuthority, progress};
use meter_client::analytics::sign_receipt;

/// The meter id the CLI's home is released under.
pub const METER_ID: &str = "csv-home";

/// Where the readings come from.
#[derive(Clone, Debug)]
pub enum Readings {
    /// A `timestamp,kwh` file.
    Csv(PathBuf),
    /// The UCI minute file.
    Uci(PathBuf),
}

/// Options of `seer forecast`.
#[derive(Clone, Debug)]
pub struct ForecastOptions {
    /// The readings.
    pub readings: Readings,
    /// First day of the window (default: the last `days` complete days of the file).
    pub from: Option<NaiveDate>,
    /// Days in the window (at least 8: the model reads 171 hours of history).
    pub days: usize,
    /// The registered model file; its metadata decides the lane.
    pub model: PathBuf,
    /// Work directory.
    pub workdir: PathBuf,
    /// Where the programs are.
    pub bin_dir: Option<PathBuf>,
}

/// One released hour.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForecastHour {
    /// `YYYY-MM-DDTHH:00`.
    pub hour: String,
    /// The released forecast, kWh.
    pub forecast_kwh: f64,
    /// The plaintext model's forecast of the same lane values (the oracle), rounded and
    /// clipped like a release.
    pub plaintext_kwh: f64,
    /// The hour's exact reading, when the file has it.
    pub actual_kwh: Option<f64>,
}

/// What `seer forecast` prints.
#[derive(Clone, Debug, Serialize)]
pub struct ForecastReport {
    /// BLAKE3 of the model file.
    pub model_blake3: String,
    /// Hours ahead the model forecasts.
    pub horizon: usize,
    /// `exact` or `analytics`.
    pub lane: &'static str,
    /// ε per 15-minute reading (0 on the exact lane).
    pub epsilon_per_reading: f64,
    /// ε spent on the window (readings × ε).
    pub epsilon_spent: f64,
    /// The window: first and last hour.
    pub window: [String; 2],
    /// Whether the utility's result was byte-identical to the key authority's re-execution.
    pub result_verified: bool,
    /// Refusals, with the key authority's reason.
    pub refused: Vec<String>,
    /// Mean absolute error (kWh) of the released forecasts against the actual readings, over
    /// the hours the file has.
    pub mae_kwh: Option<f64>,
    /// Largest |released − plaintext| (kWh): CKKS noise and rounding only.
    pub max_abs_diff_vs_plaintext: f64,
    /// The released hours.
    pub hours: Vec<ForecastHour>,
}

fn load(readings: &Readings) -> Result<Series> {
    Ok(match readings {
        Readings::Csv(path) => {
            load_quarters_csv(path).with_context(|| format!("reading {}", path.display()))?
        }
        Readings::Uci(path) => {
            load_uci_quarters(path).with_context(|| format!("reading {}", path.display()))?
        }
    })
}

/// The quarter-hour window `[from, from + days)`; `from` defaults to the last complete days.
fn window(series: &Series, from: Option<NaiveDate>, days: usize) -> Result<Series> {
    let per_day = 96;
    let first = match from {
        Some(date) => {
            let t = date.and_time(chrono::NaiveTime::MIN);
            if t < series.start {
                bail!(
                    "--from {date} is before the first reading ({})",
                    series.start
                );
            }
            let quarters = (t - series.start).num_minutes() / 15;
            usize::try_from(quarters).context("--from")?
        }
        None => {
            // The last `days` whole days.
            let end = series.start + TimeDelta::minutes(15 * series.kwh.len() as i64);
            let last_midnight = end.date().and_time(chrono::NaiveTime::MIN);
            let t = last_midnight - TimeDelta::days(days as i64);
            usize::try_from((t - series.start).num_minutes().max(0) / 15).context("window")?
        }
    };
    let end = first + days * per_day;
    if end > series.kwh.len() {
        bail!(
            "the window of {days} days from {} runs past the last reading ({}); choose an \
             earlier --from or fewer --days",
            series.time_of(first.min(series.kwh.len())),
            series.time_of(series.kwh.len().saturating_sub(1))
        );
    }
    Ok(Series {
        start: series.time_of(first),
        interval: series.interval,
        kwh: series.kwh[first..end].to_vec(),
    })
}

/// Runs `seer forecast`.
///
/// # Errors
/// When the readings, the model, the programs or a step fails.
pub async fn run(options: &ForecastOptions) -> Result<ForecastReport> {
    let start = Instant::now();
    let model_bytes = std::fs::read(&options.model)
        .with_context(|| format!("reading the model {}", options.model.display()))?;
    let model_blake3 = model_digest(&model_bytes);
    let model = ForecastModel::from_json(std::str::from_utf8(&model_bytes)?)
        .with_context(|| format!("the model {}", options.model.display()))?;
    let computation = RegisteredForecast::try_new(model.clone())?;
    let all = load(&options.readings)?;
    let quarters = window(&all, options.from, options.days)?;
    let hours_n = quarters.kwh.len() / 4;
    let ctx = tokio::task::spawn_blocking(|| CkksContext::new(circuit::PARAMETER_SET)).await??;
    circuit::check_series_len(&model, hours_n, ctx.slots())?;
    let lane = ForecastLane::of_model(&model)?;
    if computation
        .released_positions(computation.lane(), hours_n + model.horizon())
        .is_empty()
    {
        bail!(
            "{} days give {hours_n} hours; the model needs {} hours of history before the \
             first hour it forecasts",
            options.days,
            computation.history()
        );
    }
    let lane_values = lane_series(&quarters, lane, computation.input_range())?;
    progress(
        start,
        &format!(
            "meter: {} hours from {} on the {} lane (ε spent {})",
            lane_values.hours.len(),
            lane_values.start,
            computation.lane().as_str(),
            lane_values.epsilon_spent
        ),
    );

    let model_path = std::fs::canonicalize(&options.model)?;
    let authority = AnalyticsAuthority::start(
        &options.workdir,
        options.bin_dir.clone(),
        &[
            (
                "FORECAST_MODELS",
                format!("[{:?}]", model_path.display().to_string()),
            ),
            ("ANOMALY_MODELS", "[]".to_owned()),
        ],
        start,
    )
    .await?;
    let result = async {
        let household = authority.meter(METER_ID).await?;
        let utility = authority.token("utility", None).await?;
        let url = authority.url();

        // The meter.
        let pk_bytes = fetch_public_key(url, None, ctx.parameter_set_id()).await?;
        let public_key = PublicKey::from_bytes(&ctx, &pk_bytes)?;
        let (ctx2, hours, horizon) = (ctx.clone(), lane_values.hours.clone(), model.horizon());
        let encrypted = tokio::task::spawn_blocking(move || {
            encrypt_series(&ctx2, &public_key, &hours, 0, horizon)
        })
        .await??;
        let input_id = format!(
            "{}+{}h",
            lane_values.start.format("%Y-%m-%dT%H:00"),
            hours_n
        );
        let mut signed = receipt(METER_ID, &input_id, &encrypted, &lane_values);
        sign_receipt(&household.identity, &mut signed, &model_blake3, 0)?;
        record_receipt(url, BearerToken::try_new(&household.token)?, signed).await?;
        progress(
            start,
            &format!(
                "meter: series encrypted at slots 0..{} ({} hours + {} reserved), receipt \
                 recorded",
                encrypted.slot_count,
                hours_n,
                model.horizon()
            ),
        );

        // The utility.
        let channel = connect(url).await?;
        let (evaluator, key_bytes) =
            fetch_deep_keys(channel.clone(), &ctx, &computation.galois_steps()).await?;
        progress(
            start,
            &format!(
                "utility: deep evaluation keys fetched ({:.0} MB); evaluating the forecaster \
                 (depth 17 at n = 32768)",
                key_bytes as f64 / 1e6
            ),
        );
        let timer = Instant::now();
        let (comp, inputs) = (
            computation.clone(),
            vec![(
                encrypted.slot_offset..encrypted.slot_offset + encrypted.slot_count,
                vec![encrypted.input.clone()],
            )],
        );
        let output =
            tokio::task::spawn_blocking(move || evaluate(&comp, &evaluator, &inputs)).await??;
        progress(
            start,
            &format!(
                "utility: encrypted forecast done in {:.1} s; asking the key authority to \
                 release (it re-executes the circuit: about as long again)",
                timer.elapsed().as_secs_f64()
            ),
        );
        let meters = vec![MeterInputs {
            meter_id: METER_ID.to_owned(),
            input_id,
            inputs: vec![encrypted.input],
        }];
        let response =
            request_release(channel, &utility, "forecast", &model_blake3, meters, output).await?;
        progress(start, "key authority answered");
        let store = ForecastStore::connect(&format!(
            "sqlite://{}",
            options.workdir.join("utility.db").display()
        ))
        .await?;
        // A re-run of the same window would repeat (meter, hour, model): keep the first row.
        if let Err(e) = store.record(&model_blake3, &response).await {
            eprintln!("note: released forecasts not stored ({e})");
        }
        Ok::<_, anyhow::Error>(response)
    }
    .await;
    authority.stop().await;
    let response = result?;

    // The plaintext oracle on the same lane values, and the actual readings.
    let twin = forecast_series(&model, &lane_values.hours);
    let actual_hourly = all.hourly()?;
    let mut hours = Vec::new();
    for f in hour_forecasts(&response) {
        let at = chrono::NaiveDateTime::parse_from_str(&f.hour, "%Y-%m-%dT%H:%M")
            .with_context(|| format!("released hour {:?}", f.hour))?;
        let position = usize::try_from((at - lane_values.start).num_hours())?;
        let plaintext = twin
            .get(position)
            .map(|v| seer_forecast::release::round_kwh(v.max(0.0)))
            .context("a released hour outside the model's forecast positions")?;
        let actual = usize::try_from((at - actual_hourly.start).num_hours())
            .ok()
            .and_then(|i| actual_hourly.kwh.get(i).copied());
        hours.push(ForecastHour {
            hour: f.hour,
            forecast_kwh: f.kwh,
            plaintext_kwh: plaintext,
            actual_kwh: actual,
        });
    }
    let with_actual: Vec<f64> = hours
        .iter()
        .filter_map(|h| h.actual_kwh.map(|a| (h.forecast_kwh - a).abs()))
        .collect();
    let max_abs_diff = hours
        .iter()
        .map(|h| (h.forecast_kwh - h.plaintext_kwh).abs())
        .fold(0.0, f64::max);
    if max_abs_diff > 2.0 * FORECAST_QUANTUM {
        eprintln!(
            "warning: a released forecast differs from the plaintext model by {max_abs_diff} kWh"
        );
    }
    Ok(ForecastReport {
        model_blake3,
        horizon: model.horizon(),
        lane: computation.lane().as_str(),
        epsilon_per_reading: lane_values.epsilon_per_reading,
        epsilon_spent: lane_values.epsilon_spent,
        window: [
            lane_values.start.format("%Y-%m-%dT%H:00").to_string(),
            (lane_values.start + TimeDelta::hours(hours_n as i64 - 1))
                .format("%Y-%m-%dT%H:00")
                .to_string(),
        ],
        result_verified: response.result_verified,
        refused: response
            .meters
            .iter()
            .filter(|m| !m.granted)
            .map(|m| format!("{}: {}", m.meter_id, m.refusal))
            .collect(),
        mae_kwh: (!with_actual.is_empty())
            .then(|| with_actual.iter().sum::<f64>() / with_actual.len() as f64),
        max_abs_diff_vs_plaintext: max_abs_diff,
        hours,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use seer_core::data::Interval;

    #[test]
    fn windows_are_whole_days_inside_the_file() {
        let s = Series {
            start: "2010-01-01T00:00:00".parse().unwrap(),
            interval: Interval::FIFTEEN_MINUTES,
            kwh: (0..96 * 10).map(f64::from).collect(),
        };
        let w = window(&s, Some("2010-01-03".parse().unwrap()), 2).unwrap();
        assert_eq!(w.start.to_string(), "2010-01-03 00:00:00");
        assert_eq!(w.kwh.len(), 192);
        assert_eq!(w.kwh[0], 192.0);
        let last = window(&s, None, 3).unwrap();
        assert_eq!(last.start.to_string(), "2010-01-08 00:00:00");
        assert_eq!(last.kwh.len(), 288);
        let err = window(&s, Some("2010-01-09".parse().unwrap()), 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("runs past the last reading"), "{err}");
        assert!(window(&s, Some("2009-12-31".parse().unwrap()), 1).is_err());
    }
}
