//! `meter-client forecast`: the meter's daily part of streamed forecasting. For each forecast
//! day `D` and a registered model:
//!
//! 1. the window of hours the model needs for `D` (`RegisteredForecast::day_window`: on the
//!    exact lane the 8 days before `D`, on the analytics lane the history and `D` itself) is
//!    read from the source and brought onto the model's lane ([`lane_series`]);
//! 2. it is encrypted under the key authority's deep public key (fetched and pinned in the
//!    state directory) at the home's fixed block (`RegisteredForecast::block`: group
//!    `home / 8`, offset `(home mod 8) × block`), with the model's horizon reserved;
//! 3. the ciphertext and its receipt are written to the state directory
//!    (`forecast-inputs/`) before anything leaves, so that a rerun after a crash or a failed
//!    upload resends the same ciphertext (never a second noising of the same readings, never
//!    a conflicting receipt);
//! 4. the receipt is recorded with the key authority, then the ciphertext uploaded to the
//!    utility server (`AnalyticsIngest.UploadInput`), where the utility's forecasting job
//!    takes it up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use prost::Message as _;
use seer_ckks::{CkksContext, PublicKey};
use seer_core::data::Interval;
use seer_core::dp::{Epsilon, os_seeded_rng};
use seer_forecast::ForecastModel;
use seer_forecast::circuit::PARAMETER_SET;
use seer_forecast::data::Series;
use seer_forecast::release::{DayWindow, RegisteredForecast};
use seer_proto::v1::AnalyticsReceiptRequest;
use serde::Serialize;

use crate::analytics::{record_receipt, sign_receipt, signed_header, upload_input};
use crate::error::Error;
use crate::forecast::{
    ForecastLane, LaneSeries, analytics_series, encrypt_series, lane_series, receipt,
};
use crate::forecast_lane::ForecastNoise;
use crate::grpc::{BearerToken, fetch_public_key, pin_and_load};
use crate::identity::DeviceIdentity;
use crate::queue::StateStore;
use crate::source::{self, DateRange, MeterReading, MonthShift, OpenedSource, SourceSpec};
use crate::tokens::TokenSource;
use seer_auth::{AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER};

/// What `meter-client forecast` needs.
#[derive(Clone, Debug)]
pub struct ForecastUploadSettings {
    /// The meter.
    pub meter_id: String,
    /// The readings.
    pub source: SourceSpec,
    /// The first forecast day.
    pub first_day: NaiveDate,
    /// Forecast days, from `first_day`.
    pub days: u32,
    /// The registered model file.
    pub model: PathBuf,
    /// The home's number in the deployment (its block).
    pub home_index: u64,
    /// The utility server.
    pub utility_url: String,
    /// The key authority.
    pub key_authority_url: String,
    /// The configured fingerprints of the key authority's public keys: only a key matching
    /// one is used (see [`crate::pins`]).
    pub public_key_pins: Vec<crate::pins::KeyPin>,
    /// A household token for fetching the public key (optional: the key authority serves
    /// public keys without one). Receipts and uploads use tokens the meter renews with its
    /// device key, one per audience.
    pub token: Option<BearerToken>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The forecast lane's ε budget per calendar month (analytics-lane models; default: the
    /// model's ε × 2976, one draw per reading).
    pub monthly_budget: Option<Epsilon>,
}

/// What one day's upload did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayUpload {
    /// The forecast day.
    pub day: NaiveDate,
    /// The receipt's input id.
    pub input_id: String,
    /// The series' first hour, `YYYY-MM-DDTHH:00`.
    pub first_hour: String,
    /// Hours in the series.
    pub hours: usize,
    /// The evaluation group.
    pub group: u32,
    /// First slot of the block.
    pub slot_offset: u32,
    /// Slots of the block (series and horizon).
    pub slot_count: u32,
    /// `exact` or `analytics`.
    pub lane: String,
    /// Readings noised for this upload (analytics lane), each charged ε once.
    pub readings_drawn: usize,
    /// Readings whose earlier draw was reused (analytics lane): an earlier window carried
    /// them, and they cost nothing more.
    pub readings_reused: usize,
    /// ε charged for this upload: readings drawn × ε per reading (0 on the exact lane, and
    /// for a resend).
    pub epsilon_charged: f64,
    /// Bytes of the ciphertext.
    pub bytes: u64,
    /// True when the ciphertext came from the state directory (an earlier run built it).
    pub resent: bool,
    /// True when the key authority had the receipt already.
    pub receipt_duplicate: bool,
    /// True when the utility had the ciphertext already.
    pub upload_duplicate: bool,
}

impl ForecastLane {
    /// The lane a model forecasts from: exact, or the analytics lane at the ε and clamp bound
    /// it was trained with.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for a model with an ε but no sensitivity, or invalid ones.
    pub fn of_model(model: &ForecastModel) -> Result<Self, Error> {
        match (model.meta.epsilon, model.meta.sensitivity_wh) {
            (None, _) => Ok(Self::Exact),
            (Some(epsilon), Some(wh)) => Ok(Self::Analytics {
                epsilon: seer_core::dp::Epsilon::try_new(epsilon)?,
                sensitivity: seer_core::units::Wh::try_new(wh)?,
            }),
            (Some(_), None) => Err(Error::InvalidSetting {
                setting: "model",
                reason: "the model records an ε but no sensitivity".into(),
            }),
        }
    }
}

/// The readings of `[first, first + hours)` from `source`, checked whole and contiguous, and
/// their interval.
///
/// # Errors
/// [`Error::InvalidSetting`] when a reading of the window is missing.
pub fn window_readings(
    source: &OpenedSource,
    first: NaiveDateTime,
    hours: usize,
) -> Result<(Interval, Vec<MeterReading>), Error> {
    let end = first + TimeDelta::hours(hours as i64);
    let stream = source.select(DateRange {
        from: Some(first.date()),
        until: Some(end.date() + TimeDelta::days(1)),
        shift: MonthShift::NONE,
    })?;
    let interval: Interval = stream.interval();
    let step = interval.as_time_delta();
    let wanted = hours * 3600 / interval.as_secs() as usize;
    let readings: Vec<MeterReading> = stream
        .readings()
        .iter()
        .filter(|r| r.start >= first && r.start < end)
        .cloned()
        .collect();
    let contiguous = readings
        .iter()
        .enumerate()
        .all(|(i, r)| r.start == first + step * i as i32);
    if readings.len() != wanted || !contiguous {
        return Err(Error::InvalidSetting {
            setting: "readings",
            reason: format!(
                "the source has {} of the {wanted} readings from {first} to {end} (some are \
                 missing); forecasting needs the whole window: choose another day",
                readings.len()
            ),
        });
    }
    Ok((interval, readings))
}

/// The readings of `[first, first + hours)` from `source` as one contiguous series.
///
/// # Errors
/// [`Error::InvalidSetting`] when a reading of the window is missing.
pub fn window_series(
    source: &OpenedSource,
    first: NaiveDateTime,
    hours: usize,
) -> Result<Series, Error> {
    let (interval, readings) = window_readings(source, first, hours)?;
    Ok(Series {
        start: first,
        interval,
        kwh: readings.iter().map(|r| r.energy.to_kwh().get()).collect(),
    })
}

/// The window's values on the model's lane: exact hourly kWh without `noise`, or the analytics
/// lane built from the meter's stored draws ([`ForecastNoise::noised_window`]: each reading
/// noised once, charged to its month), summed per hour and clamped to the model's input range;
/// with the readings drawn now and those whose stored draw was reused.
async fn window_lane(
    opened: &OpenedSource,
    window: DayWindow,
    noise: Option<&ForecastNoise>,
    store: &StateStore,
    input_range: (f64, f64),
) -> Result<(LaneSeries, usize, usize), Error> {
    let Some(noise) = noise else {
        let series = window_series(opened, window.first_hour, window.hours)?;
        return Ok((
            lane_series(&series, ForecastLane::Exact, input_range)?,
            0,
            0,
        ));
    };
    let (interval, readings) = window_readings(opened, window.first_hour, window.hours)?;
    if interval != Interval::FIFTEEN_MINUTES {
        return Err(Error::InvalidSetting {
            setting: "readings",
            reason: format!(
                "the analytics lane noises 15-minute readings; the source has {}-second \
                 readings",
                interval.as_secs()
            ),
        });
    }
    let readings: Vec<_> = readings
        .iter()
        .map(|r| (r.start, r.energy.round_to_wh()))
        .collect();
    let mut rng = os_seeded_rng()?;
    let noised = noise.noised_window(store, &readings, &mut rng).await?;
    let series = analytics_series(
        window.first_hour,
        &noised.noisy,
        noise.epsilon(),
        noised.epsilon_charged,
        input_range,
    )?;
    Ok((series, noised.drawn, noised.reused))
}

/// What a day's upload is built from, kept in the state directory until it is sent.
struct Prepared {
    ciphertext: Vec<u8>,
    receipt: AnalyticsReceiptRequest,
    resent: bool,
    drawn: usize,
    reused: usize,
    epsilon_charged: f64,
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |e: std::io::Error| Error::StateDirectory {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Runs `meter-client forecast`; `progress` receives a line per step.
///
/// # Errors
/// A missing reading, an unreadable model or source, a refused receipt or upload.
pub async fn upload_days(
    settings: &ForecastUploadSettings,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Vec<DayUpload>, Error> {
    let file_err = |e: &dyn std::fmt::Display| Error::File {
        path: settings.model.clone(),
        reason: e.to_string(),
    };
    let model_bytes = std::fs::read(&settings.model).map_err(|e| file_err(&e))?;
    let digest = blake3::hash(&model_bytes).to_hex().to_string();
    let model =
        ForecastModel::from_json(std::str::from_utf8(&model_bytes).map_err(|e| file_err(&e))?)
            .map_err(|e| file_err(&e))?;
    let lane = ForecastLane::of_model(&model)?;
    let horizon = model.horizon();
    let computation = RegisteredForecast::try_new(model).map_err(|e| file_err(&e))?;
    let ctx = tokio::task::spawn_blocking(|| CkksContext::new(PARAMETER_SET))
        .await
        .map_err(|e| Error::CorruptState {
            reason: format!("context task: {e}"),
        })??;
    let identity = Arc::new(DeviceIdentity::load(
        &settings.state_dir,
        &settings.meter_id,
    )?);
    let ka_tokens = TokenSource::new(
        &settings.key_authority_url,
        Arc::clone(&identity),
        AUDIENCE_KEY_AUTHORITY,
    );
    let utility_tokens = TokenSource::new(
        &settings.key_authority_url,
        Arc::clone(&identity),
        AUDIENCE_UTILITY_SERVER,
    );
    let state = StateStore::open(&settings.state_dir).await?;
    let pk_bytes = fetch_public_key(
        &settings.key_authority_url,
        settings.token.clone(),
        ctx.parameter_set_id(),
    )
    .await?;
    let (public_key, _) = pin_and_load(&state, &ctx, &pk_bytes, &settings.public_key_pins).await?;
    let noise = match lane {
        ForecastLane::Exact => None,
        ForecastLane::Analytics {
            epsilon,
            sensitivity,
        } => Some(ForecastNoise::new(
            &settings.meter_id,
            sensitivity,
            epsilon,
            settings.monthly_budget,
        )?),
    };
    let mut public_key: Option<PublicKey> = Some(public_key);
    let spec = settings.source.clone();
    let opened = tokio::task::spawn_blocking(move || source::open(&spec))
        .await
        .map_err(|e| Error::CorruptState {
            reason: format!("source task: {e}"),
        })??;
    let dir = settings.state_dir.join("forecast-inputs");
    std::fs::create_dir_all(&dir).map_err(|e| Error::StateDirectory {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    let (group, offset) = computation.block(settings.home_index, ctx.slots());
    let group = u32::try_from(group).map_err(|_| Error::InvalidSetting {
        setting: "home index",
        reason: format!("{} is too large", settings.home_index),
    })?;
    let mut uploads = Vec::new();
    for d in 0..settings.days {
        let day = settings.first_day + TimeDelta::days(i64::from(d));
        let window = computation.day_window(day);
        let input_id = format!("{day}@{}", &digest[..16]);
        let stem = dir.join(format!("{day}-{}", &digest[..16]));
        let (ct_path, receipt_path) = (stem.with_extension("ct"), stem.with_extension("receipt"));
        let prepared = if ct_path.exists() && receipt_path.exists() {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| Error::StateDirectory {
                    path: p.to_owned(),
                    reason: e.to_string(),
                })
            };
            Prepared {
                ciphertext: read(&ct_path)?,
                receipt: AnalyticsReceiptRequest::decode(read(&receipt_path)?.as_slice()).map_err(
                    |e| Error::CorruptState {
                        reason: format!("{}: {e}", receipt_path.display()),
                    },
                )?,
                resent: true,
                drawn: 0,
                reused: 0,
                epsilon_charged: 0.0,
            }
        } else {
            let (values, drawn, reused) = window_lane(
                &opened,
                window,
                noise.as_ref(),
                &state,
                computation.input_range(),
            )
            .await?;
            let (ctx2, pk) = (
                ctx.clone(),
                public_key.take().ok_or_else(|| Error::CorruptState {
                    reason: "no public key".into(),
                })?,
            );
            let hours = values.hours.clone();
            let (pk, encrypted) = tokio::task::spawn_blocking(move || {
                let encrypted = encrypt_series(&ctx2, &pk, &hours, offset, horizon);
                (pk, encrypted)
            })
            .await
            .map_err(|e| Error::CorruptState {
                reason: format!("encryption task: {e}"),
            })?;
            public_key = Some(pk);
            let encrypted = encrypted?;
            let receipt = receipt(&settings.meter_id, &input_id, &encrypted, &values);
            // The receipt last: its presence marks the pair complete.
            write_atomically(&ct_path, &encrypted.input)?;
            write_atomically(&receipt_path, &receipt.encode_to_vec())?;
            Prepared {
                ciphertext: encrypted.input,
                receipt,
                resent: false,
                drawn,
                reused,
                epsilon_charged: values.epsilon_spent,
            }
        };
        // Signed now (a receipt stored by an earlier version is signed here too; signing is
        // deterministic, so a resend carries the same bytes).
        let mut signed = prepared.receipt.clone();
        sign_receipt(&identity, &mut signed, &digest, group)?;
        let r = &signed;
        let receipt_duplicate = record_receipt(
            &settings.key_authority_url,
            ka_tokens.token().await?,
            r.clone(),
        )
        .await?;
        let header = signed_header(&identity, r);
        let ack = upload_input(
            &settings.utility_url,
            utility_tokens.token().await?,
            header,
            std::slice::from_ref(&prepared.ciphertext),
        )
        .await?;
        let upload = DayUpload {
            day,
            input_id: r.input_id.clone(),
            first_hour: r.first_period.clone(),
            hours: window.hours,
            group,
            slot_offset: r.slot_offset,
            slot_count: r.slot_count,
            lane: r.lane.clone(),
            readings_drawn: prepared.drawn,
            readings_reused: prepared.reused,
            epsilon_charged: prepared.epsilon_charged,
            bytes: prepared.ciphertext.len() as u64,
            resent: prepared.resent,
            receipt_duplicate,
            upload_duplicate: ack.duplicate,
        };
        progress(&format!(
            "forecast input for {day}: {} hours from {} on the {} lane at slots {}..{} of \
             group {group}, {} bytes{}{}{}",
            upload.hours,
            upload.first_hour,
            upload.lane,
            upload.slot_offset,
            upload.slot_offset + upload.slot_count,
            upload.bytes,
            if upload.resent {
                ", resent from the state directory"
            } else {
                ""
            },
            if upload.readings_drawn + upload.readings_reused > 0 {
                format!(
                    "; ε {} charged for {} readings noised now, {} earlier draws reused",
                    upload.epsilon_charged, upload.readings_drawn, upload.readings_reused
                )
            } else {
                String::new()
            },
            if upload.upload_duplicate {
                " (the utility had it)"
            } else {
                ""
            },
        ));
        uploads.push(upload);
    }
    state.close().await;
    Ok(uploads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticHome;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").expect("time")
    }

    #[test]
    fn windows_are_whole_and_contiguous() {
        let home = SyntheticHome::new(5, 2);
        let source = OpenedSource::Synthetic(home);
        let first = at("2024-03-04T05:00");
        let series = window_series(&source, first, 30).expect("window");
        assert_eq!(series.start, first);
        assert_eq!(series.kwh.len(), 30 * 4);
        // The generator's own readings of those quarter hours, converted independently.
        let from = NaiveDate::from_ymd_opt(2024, 3, 4).expect("date");
        let readings = home.readings(from, from + TimeDelta::days(2));
        let want: Vec<f64> = readings
            .iter()
            .filter(|r| r.start >= first)
            .take(120)
            .map(|r| r.energy.get() as f64 / 3_600_000.0)
            .collect();
        assert_eq!(series.kwh.len(), want.len());
        for (a, b) in series.kwh.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12);
        }

        // A file with one quarter hour missing cannot serve a window across it.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gap.csv");
        let mut text = String::from("timestamp,kwh\n");
        let start = at("2024-03-04T00:00");
        for q in 0..(2 * 96) {
            if q == 50 {
                continue;
            }
            let t = start + TimeDelta::minutes(15 * q);
            text.push_str(&format!("{},0.25\n", t.format("%Y-%m-%d %H:%M:%S")));
        }
        std::fs::write(&path, text).expect("write");
        let source = source::open(&SourceSpec::Csv(path)).expect("csv");
        let error = window_series(&source, start, 24).expect_err("a reading is missing");
        assert!(error.to_string().contains("some are missing"), "{error}");
        let after = window_series(&source, at("2024-03-04T13:00"), 24).expect("after the gap");
        assert!(after.kwh.iter().all(|v| (v - 0.25).abs() < 1e-12));
    }

    #[test]
    fn the_model_decides_the_lane() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../forecast/models");
        let lane = |name: &str| {
            ForecastLane::of_model(&ForecastModel::load(dir.join(name)).expect("model"))
                .expect("lane")
        };
        assert_eq!(lane("uci-lstm-day-ahead.json"), ForecastLane::Exact);
        match lane("uci-lstm-eps5.json") {
            ForecastLane::Analytics {
                epsilon,
                sensitivity,
            } => {
                assert_eq!(epsilon.get(), 5.0);
                assert_eq!(sensitivity.get(), 2500);
            }
            ForecastLane::Exact => panic!("the ε = 5 model reads the analytics lane"),
        }
    }
}
