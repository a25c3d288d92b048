//! The command line: `meter-client run …`, `meter-client forecast …`, `meter-client daily …`,
//! `meter-client enrol …`, `meter-client info`, `meter-client privacy` and
//! `meter-client dashboard …`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use seer_core::data::Period;
use seer_core::dp::Epsilon;
use seer_core::tariff::Tariff;
use seer_core::units::Wh;

use crate::app::{RunReport, Settings, run};
use crate::batch::{DEFAULT_EPSILON, DEFAULT_SENSITIVITY_WH, MAX_BATCH_DAYS, PrivacySettings};
use crate::daily::{DailyRunReport, DailySettings, DaySelection, send_days};
use crate::error::Error;
use crate::forecast_upload::{ForecastUploadSettings, upload_days};
use crate::grpc::BearerToken;
use crate::pins::KeyPin;
use crate::queue::StateStore;
use crate::source::{DateRange, MonthShift, SourceSpec};
use crate::upload::Backoff;
use crate::{Event, SOFTWARE_VERSION};

/// Readings of 15 minutes in the longest month: the default monthly budget is ε times this,
/// so an honest 15-minute meter never exhausts it.
pub const MAX_READINGS_PER_MONTH: usize = 31 * 96;

/// The SEER meter client: encrypts a household's readings before they leave it.
#[derive(Debug, Parser)]
#[command(name = "meter-client", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The meter client's subcommands.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// Read a source, build and encrypt both lanes per batch, queue them durably, record each
    /// batch's receipt with the key authority and upload the batches to the utility server.
    Run(Box<RunArgs>),
    /// Forecasting: for each forecast day, encrypt the hourly series a registered model needs
    /// at the home's block, record its receipt with the key authority and upload it to the
    /// utility server, whose `utility-server forecast` job forecasts it.
    Forecast(Box<ForecastArgs>),
    /// The daily lane: for each day not sent yet, encrypt the next day's forecast inputs and
    /// the day's anomaly features (prepared by a registered `seer-daily` model from the day
    /// and the four weeks before it) at the home's block of one small ciphertext, keep it in
    /// the state directory, record its receipt with the key authority and upload it to the
    /// utility server. Prints a JSON summary.
    Daily(Box<DailyArgs>),
    /// Print the software version, and with --state what the state directory holds.
    Info(InfoArgs),
    /// Print, as JSON, what the household's readings have cost in privacy: ε per reading, per
    /// day and lane the readings released and the ε they spent, the month's budget and spend,
    /// and what each lane releases.
    Privacy(PrivacyArgs),
    /// Enrol the meter with the key authority: create the device key in the state directory
    /// (mode 0600), send it with the one-time code from `key-authority enrolment-code`, and
    /// store the key authority's certificate beside it.
    Enrol(EnrolArgs),
    /// Serve the household's own dashboard (readings as batched, the analytics lane as sent,
    /// an ε preview drawn locally, a battery what-if, Green Button export) on loopback,
    /// reading the state directory read-only beside a running `meter-client run`. Prints the
    /// link with a fresh random access key on stderr.
    Dashboard(DashboardArgs),
}

/// `meter-client enrol`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct EnrolArgs {
    /// The meter's id (the one the code was issued for).
    #[arg(long)]
    pub meter_id: String,
    /// The one-time enrolment code.
    #[arg(long)]
    pub code: String,
    /// The key authority's URL.
    #[arg(long)]
    pub key_authority: String,
    /// The state directory (the device key and the certificate are kept there).
    #[arg(long)]
    pub state: PathBuf,
}

/// `meter-client forecast`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ForecastArgs {
    /// The meter's id (the one its household token is bound to).
    #[arg(long)]
    pub meter_id: String,
    /// The readings: uci:FILE, csv:FILE or synthetic:SEED:HOME (as for `run`).
    #[arg(long)]
    pub source: String,
    /// The first day to forecast (YYYY-MM-DD). The exact-lane models read the 8 days before
    /// it (send before the day starts); the analytics-lane models the history and the day
    /// itself (send after it ends).
    #[arg(long)]
    pub day: NaiveDate,
    /// Days to forecast, from --day.
    #[arg(long, default_value_t = 1)]
    pub days: u32,
    /// The model file, as registered with the key authority (its metadata decides the
    /// lane).
    #[arg(long)]
    pub model: PathBuf,
    /// The meter's home number in the deployment (its block); defaults to HOME for a
    /// synthetic source.
    #[arg(long)]
    pub home_index: Option<u64>,
    /// The utility server's URL.
    #[arg(long)]
    pub utility: String,
    /// The key authority's URL.
    #[arg(long)]
    pub key_authority: String,
    /// The key authority's CKKS public key fingerprints, PARAMETER_SET=BLAKE3 as printed by
    /// `key-authority fingerprints` (repeatable, or comma-separated in
    /// SEER_METER_PUBLIC_KEY_PINS): the meter encrypts only under a key that matches one.
    #[arg(
        long = "public-key-pin",
        value_name = "PARAMETER_SET=BLAKE3",
        env = "SEER_METER_PUBLIC_KEY_PINS",
        value_delimiter = ','
    )]
    pub public_key_pins: Vec<KeyPin>,
    /// The environment variable holding the household's bearer token.
    #[arg(long, default_value = "SEER_METER_TOKEN")]
    pub token_env: String,
    /// The state directory (the pinned keys; pending inputs until they are sent; the
    /// analytics lane's draws, each reading noised once, and its monthly budget).
    #[arg(long)]
    pub state: PathBuf,
    /// For a model trained on the analytics lane: the forecast lane's ε budget per calendar
    /// month (default: the model's ε × 2976, one draw per 15-minute reading). Feeding a second
    /// model of another ε noises the readings again and needs a larger budget.
    #[arg(long)]
    pub monthly_budget: Option<f64>,
    /// Print one JSON object per day on stdout instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// `meter-client daily`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct DailyArgs {
    /// The meter's id (the one its household token is bound to).
    #[arg(long)]
    pub meter_id: String,
    /// The readings: uci:FILE, csv:FILE or synthetic:SEED:HOME (as for `run`).
    #[arg(long)]
    pub source: String,
    /// Send only this day (YYYY-MM-DD; after it has ended), unless it was sent already.
    /// Without --day or --through: the days after the last one sent through yesterday (local
    /// time), or only yesterday when none was sent yet.
    #[arg(long, conflicts_with = "through")]
    pub day: Option<NaiveDate>,
    /// Send every day not sent yet from the first one the model can prepare through this one
    /// (YYYY-MM-DD).
    #[arg(long)]
    pub through: Option<NaiveDate>,
    /// With --through: start at this day instead of the source's first day.
    #[arg(long, requires = "through")]
    pub from: Option<NaiveDate>,
    /// The daily model file, as registered with the key authority (by the BLAKE3 of its
    /// bytes), e.g. daily/models/uci-daily.json.
    #[arg(long)]
    pub model: PathBuf,
    /// The meter's home number in the deployment (group home / group size, block home mod
    /// 4); defaults to HOME for a synthetic source.
    #[arg(long)]
    pub home_index: Option<u64>,
    /// Homes per group: the billing group's size (the key authority releases each group's
    /// forecast total; default: the default tariff's billing group, 1024 homes).
    #[arg(long, default_value_t = crate::daily::DEFAULT_GROUP_SIZE)]
    pub group_size: u64,
    /// The utility server's URL.
    #[arg(long)]
    pub utility: String,
    /// The key authority's URL.
    #[arg(long)]
    pub key_authority: String,
    /// The key authority's CKKS public key fingerprints, PARAMETER_SET=BLAKE3 as printed by
    /// `key-authority fingerprints` (repeatable, or comma-separated in
    /// SEER_METER_PUBLIC_KEY_PINS): the meter encrypts only under a key that matches one.
    #[arg(
        long = "public-key-pin",
        value_name = "PARAMETER_SET=BLAKE3",
        env = "SEER_METER_PUBLIC_KEY_PINS",
        value_delimiter = ','
    )]
    pub public_key_pins: Vec<KeyPin>,
    /// The environment variable holding the household's bearer token.
    #[arg(long, default_value = "SEER_METER_TOKEN")]
    pub token_env: String,
    /// The state directory (the pinned keys; the daily inputs in daily-inputs/ until and
    /// after they are sent).
    #[arg(long)]
    pub state: PathBuf,
}

impl DailyArgs {
    /// Validated settings (reads the token variable; the default day is yesterday in local
    /// time).
    ///
    /// # Errors
    /// Invalid values.
    pub fn to_settings(&self) -> Result<DailySettings, Error> {
        let (source, home_index) = source_and_home(&self.source, self.home_index)?;
        let days = match (self.day, self.through) {
            (Some(day), _) => DaySelection::Day(day),
            (None, Some(through)) => match self.from {
                Some(from) => DaySelection::Range(from, through),
                None => DaySelection::Through(through),
            },
            (None, None) => DaySelection::default_pending(),
        };
        Ok(DailySettings {
            meter_id: self.meter_id.clone(),
            source,
            days,
            model: self.model.clone(),
            home_index,
            group_size: self.group_size,
            utility_url: self.utility.clone(),
            key_authority_url: self.key_authority.clone(),
            public_key_pins: self.public_key_pins.clone(),
            token: BearerToken::from_env(&self.token_env).ok(),
            state_dir: self.state.clone(),
        })
    }
}

/// The parsed `--source` and the home index: `--home-index`, or a synthetic source's HOME.
fn source_and_home(source: &str, home_index: Option<u64>) -> Result<(SourceSpec, u64), Error> {
    let source: SourceSpec = source.parse()?;
    let home_index = match (home_index, &source) {
        (Some(i), _) => i,
        (None, SourceSpec::Synthetic { home, .. }) => u64::from(*home),
        (None, _) => {
            return Err(Error::InvalidSetting {
                setting: "home index",
                reason: "--home-index is required for uci: and csv: sources".into(),
            });
        }
    };
    Ok((source, home_index))
}

impl ForecastArgs {
    /// Validated settings (reads the token variable).
    ///
    /// # Errors
    /// Invalid values or a missing token.
    pub fn to_settings(&self) -> Result<ForecastUploadSettings, Error> {
        let (source, home_index) = source_and_home(&self.source, self.home_index)?;
        if !(1..=366).contains(&self.days) {
            return Err(Error::InvalidSetting {
                setting: "days",
                reason: format!("{} is not in 1..=366", self.days),
            });
        }
        Ok(ForecastUploadSettings {
            meter_id: self.meter_id.clone(),
            source,
            first_day: self.day,
            days: self.days,
            model: self.model.clone(),
            home_index,
            utility_url: self.utility.clone(),
            key_authority_url: self.key_authority.clone(),
            public_key_pins: self.public_key_pins.clone(),
            token: BearerToken::from_env(&self.token_env).ok(),
            state_dir: self.state.clone(),
            monthly_budget: self.monthly_budget.map(Epsilon::try_new).transpose()?,
        })
    }
}

/// `meter-client run`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct RunArgs {
    /// The meter's id (the one its household token is bound to).
    #[arg(long)]
    pub meter_id: String,
    /// The readings: uci:FILE (UCI minute data), csv:FILE (timestamp,kwh, any interval),
    /// synthetic:SEED:HOME (a deterministic synthetic home) or mqtt://HOST[:PORT] (a live meter
    /// on an MQTT broker, with --mqtt-topic and --mqtt-format: the run consumes it until SIGINT
    /// or SIGTERM, batching each window when it completes).
    #[arg(long)]
    pub source: String,
    /// With an mqtt:// source: the topic to subscribe to (QoS 1), e.g. tele/plug1/SENSOR or
    /// dsmr/json; for Tasmota a bare device topic `plug1` means tele/plug1/SENSOR.
    #[arg(long, value_name = "TOPIC")]
    pub mqtt_topic: Option<String>,
    /// With an mqtt:// source: the payload format, tasmota (the SENSOR message's ENERGY.Total)
    /// or dsmr (dsmr-reader's JSON telegram, electricity_delivered_1 + _2).
    #[arg(long, value_name = "tasmota|dsmr", default_value = "tasmota")]
    pub mqtt_format: crate::mqtt::Format,
    /// With an mqtt:// source: allow plaintext MQTT to a broker that is not on loopback.
    #[arg(long)]
    pub mqtt_allow_plaintext: bool,
    /// First day to read (YYYY-MM-DD); synthetic sources start on 2024-01-01 by default.
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// First day not to read (YYYY-MM-DD); synthetic sources generate one month by default.
    #[arg(long)]
    pub until: Option<NaiveDate>,
    /// Replay the readings as if taken in another month (YYYY-MM): every reading is re-dated
    /// by whole months so that the month of --from becomes this one, keeping its day of the
    /// month and time of day (not its weekday). E.g. `--from 2008-01-01 --until 2008-02-01
    /// --replay-as 2010-01` bills the UCI household's January 2008 as January 2010. A reading
    /// whose day does not exist in its new month (29 February into a common year) is refused:
    /// end the range before it. Needs --from.
    #[arg(long, value_name = "YYYY-MM")]
    pub replay_as: Option<Period>,
    /// The utility server's URL, e.g. http://127.0.0.1:50051; without it batches are only
    /// queued (a later run records their receipts and uploads them).
    #[arg(long)]
    pub utility: Option<String>,
    /// The key authority's URL, `https://` for mutual TLS (the meter's certificate from
    /// SEER_TLS_CA_FILE, SEER_TLS_CERT_FILE, SEER_TLS_KEY_FILE); the public key is fetched from
    /// it and checked against --public-key-pin; batch receipts are recorded with it.
    #[arg(long)]
    pub key_authority: String,
    /// The key authority's CKKS public key fingerprints, PARAMETER_SET=BLAKE3 as printed by
    /// `key-authority fingerprints` (repeatable, or comma-separated in
    /// SEER_METER_PUBLIC_KEY_PINS): the meter encrypts only under a key that matches one.
    #[arg(
        long = "public-key-pin",
        value_name = "PARAMETER_SET=BLAKE3",
        env = "SEER_METER_PUBLIC_KEY_PINS",
        value_delimiter = ','
    )]
    pub public_key_pins: Vec<KeyPin>,
    /// The environment variable holding the household's bearer token (a JWT from the key
    /// authority).
    #[arg(long, default_value = "SEER_METER_TOKEN")]
    pub token_env: String,
    /// The state directory: the SQLite queue, lane state and pinned key.
    #[arg(long)]
    pub state: PathBuf,
    /// The meter's home number in the deployment (its billing block); defaults to HOME for a
    /// synthetic source.
    #[arg(long)]
    pub home_index: Option<u64>,
    /// ε per reading of the analytics lane: each reading is ε-DP in the one group total it is
    /// released in.
    #[arg(long, default_value_t = DEFAULT_EPSILON)]
    pub epsilon: f64,
    /// The analytics lane's clamp bound Δ (sensitivity) in Wh per reading; the default is 15
    /// minutes at a 230 V, 60 A single-phase connection's 13.8 kW.
    #[arg(long, default_value_t = DEFAULT_SENSITIVITY_WH)]
    pub sensitivity_wh: i64,
    /// Meters in the analytics lane's noise group (the billing group) that the noise shares
    /// are sized for (default: the billing layout's capacity, the homes of a full billing
    /// group). The group's total carries one full draw of noise when all are present.
    #[arg(long)]
    pub noise_group_size: Option<u32>,
    /// Meters of the noise group that may be absent or collude (default: a tenth of the
    /// group, rounded down): shares are sized so that the others alone carry a full draw.
    #[arg(long)]
    pub noise_tolerated: Option<u32>,
    /// The ε budget per calendar month (default: ε × 2976, a month of 15-minute readings).
    #[arg(long)]
    pub monthly_budget: Option<f64>,
    /// Days per batch (1 to 31); batches never span two months. The default, a week, sends
    /// both lanes of days 1–7, 8–14, 15–21 and 22–28 when each week ends and the month's last
    /// days when it closes: the analytics lane arrives weekly (its latency is up to a week),
    /// and the bill needs only the closing batch, which carries the whole month. Fewer days
    /// per batch lower the latency and cost more bytes per reading (two ciphertexts of about
    /// 330 KB per batch, whatever its length).
    #[arg(long, default_value_t = DEFAULT_BATCH_DAYS)]
    pub batch_days: u32,
    /// The tariff as a TOML file (default: the BESCOM slabs); must be the utility's.
    #[arg(long)]
    pub tariff: Option<PathBuf>,
    /// Replay pace as a multiple of real time (86400: a day per second); default: as fast as
    /// possible.
    #[arg(long)]
    pub replay_speed: Option<f64>,
    /// Unacknowledged batches after which the producer waits for the uploader.
    #[arg(long, default_value_t = 64)]
    pub max_queued: u64,
    /// Consecutive failed connection attempts before giving up.
    #[arg(long, default_value_t = 30)]
    pub max_attempts: u32,
    /// Also send the daily lane (`meter-client daily`) with this registered daily model file,
    /// e.g. daily/models/uci-daily.json: each day of the source this run completes is
    /// prepared, kept in the state directory and sent (a day already sent is passed over; one
    /// kept but not acknowledged is resent with the same bytes). Needs --utility, an enrolled
    /// meter and a --public-key-pin for the daily parameter set; not with --replay-as. A
    /// failure of the daily lane is logged and retried on the next day and by the next run:
    /// it never stops the batches.
    #[arg(long, value_name = "FILE", env = "SEER_METER_DAILY_MODEL")]
    pub daily_model: Option<PathBuf>,
    /// Print the run's summary on stdout as one JSON object (meter_id, readings,
    /// skipped_intervals, batches, billing_bytes, analytics_bytes, acknowledged, duplicates,
    /// receipts, still_queued and, with --daily-model, daily) instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// Also serve the household dashboard (as `meter-client dashboard`, loopback only) at
    /// this address while the run lasts, e.g. 127.0.0.1:8080; the link with its access key is
    /// printed on stderr once the state holds the meter's identity.
    #[arg(long)]
    pub dashboard: Option<std::net::SocketAddr>,
}

/// The default days per batch: a week (see `--batch-days`).
pub const DEFAULT_BATCH_DAYS: u32 = 7;

/// `meter-client info`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct InfoArgs {
    /// A state directory to describe.
    #[arg(long)]
    pub state: Option<PathBuf>,
}

/// `meter-client dashboard`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct DashboardArgs {
    /// The state directory (as given to `run`).
    #[arg(long)]
    pub state: PathBuf,
    /// Where to listen; a non-loopback address is refused (the page is served in plaintext).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// The tariff as a TOML file for the battery what-if (default: the BESCOM slabs).
    #[arg(long)]
    pub tariff: Option<PathBuf>,
    /// The analytics lane's ε per reading (as given to `run`): the ε control starts there.
    #[arg(long, default_value_t = DEFAULT_EPSILON)]
    pub epsilon: f64,
    /// The analytics lane's clamp Δ in Wh (as given to `run`).
    #[arg(long, default_value_t = DEFAULT_SENSITIVITY_WH)]
    pub sensitivity_wh: i64,
    /// The month's ε budget (as given to `run`; default ε × 2976).
    #[arg(long)]
    pub monthly_budget: Option<f64>,
    /// The meter's offset from UTC in minutes (its readings are wall-clock times).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub utc_offset_minutes: i32,
    /// The utility server's URL, to show this home's released bills, forecasts and anomaly
    /// flags (read with the household token in --token-env).
    #[arg(long)]
    pub utility: Option<String>,
    /// The environment variable holding the household's token for --utility.
    #[arg(long, default_value = "SEER_METER_TOKEN")]
    pub token_env: String,
}

impl DashboardArgs {
    /// Validated settings (reads the tariff file).
    ///
    /// # Errors
    /// Invalid ε, Δ, offset or an unreadable tariff.
    pub fn to_settings(&self) -> Result<crate::dashboard::DashboardSettings, Error> {
        let epsilon = Epsilon::try_new(self.epsilon)?;
        let monthly_budget = Epsilon::try_new(
            self.monthly_budget
                .unwrap_or(self.epsilon * MAX_READINGS_PER_MONTH as f64),
        )?;
        let tariff = match &self.tariff {
            None => Tariff::bescom(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| Error::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
        };
        let utc_offset = chrono::FixedOffset::east_opt(self.utc_offset_minutes.saturating_mul(60))
            .ok_or_else(|| Error::InvalidSetting {
                setting: "utc offset",
                reason: format!("{} minutes is not a UTC offset", self.utc_offset_minutes),
            })?;
        Ok(crate::dashboard::DashboardSettings {
            state_dir: self.state.clone(),
            listen: self.listen,
            tariff,
            sensitivity: Wh::try_new(self.sensitivity_wh)?,
            epsilon,
            monthly_budget,
            poll: std::time::Duration::from_secs(1),
            utc_offset,
            utility: self
                .utility
                .as_ref()
                .map(|url| -> Result<_, Error> {
                    Ok(crate::dashboard::utility::UtilityAccess {
                        url: url.clone(),
                        token: BearerToken::from_env(&self.token_env)?,
                    })
                })
                .transpose()?,
        })
    }
}

/// `meter-client privacy`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct PrivacyArgs {
    /// The state directory (as given to `run` and `forecast`).
    #[arg(long)]
    pub state: PathBuf,
}

impl RunArgs {
    /// Validated settings (reads the tariff file and the token variable).
    ///
    /// # Errors
    /// Invalid values, an unreadable tariff, a missing token when uploading.
    pub fn to_settings(&self) -> Result<Settings, Error> {
        let (mut source, home_index) = source_and_home(&self.source, self.home_index)?;
        match (&mut source, &self.mqtt_topic) {
            (SourceSpec::Mqtt(live), Some(topic)) => {
                *live =
                    live.clone()
                        .try_with(topic, self.mqtt_format, self.mqtt_allow_plaintext)?;
            }
            (SourceSpec::Mqtt(_), None) => {
                return Err(Error::InvalidSetting {
                    setting: "mqtt topic",
                    reason: "an mqtt:// source needs --mqtt-topic".into(),
                });
            }
            (_, Some(_)) => {
                return Err(Error::InvalidSetting {
                    setting: "mqtt topic",
                    reason: "--mqtt-topic needs an mqtt:// source".into(),
                });
            }
            (_, None) => {}
        }
        if !(1..=MAX_BATCH_DAYS).contains(&self.batch_days) {
            return Err(Error::InvalidSetting {
                setting: "batch days",
                reason: format!("{} is not in 1..={MAX_BATCH_DAYS}", self.batch_days),
            });
        }
        let epsilon = Epsilon::try_new(self.epsilon)?;
        let monthly_budget = match self.monthly_budget {
            Some(b) => Epsilon::try_new(b)?,
            None => Epsilon::try_new(self.epsilon * MAX_READINGS_PER_MONTH as f64)?,
        };
        let privacy = PrivacySettings {
            epsilon,
            sensitivity: Wh::try_new(self.sensitivity_wh)?,
            monthly_budget,
            noise_group_size: self.noise_group_size,
            noise_tolerated: self.noise_tolerated,
        };
        // A given group size is checked now; the default (the billing layout's capacity) when
        // the run builds its layout.
        if let Some(n) = self.noise_group_size {
            privacy.share_plan(usize::try_from(n).unwrap_or(usize::MAX))?;
        }
        let tariff = match &self.tariff {
            None => Tariff::bescom(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| Error::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
        };
        // An enrolled meter renews its own tokens with its device key; a configured token is
        // only for an unenrolled meter (checked when the run loads its identity).
        let token = BearerToken::from_env(&self.token_env).ok();
        if let Some(speed) = self.replay_speed
            && !(speed.is_finite() && speed > 0.0)
        {
            return Err(Error::InvalidSetting {
                setting: "replay speed",
                reason: format!("{speed} is not a positive number"),
            });
        }
        if let (Some(from), Some(until)) = (self.from, self.until)
            && from >= until
        {
            return Err(Error::InvalidSetting {
                setting: "until",
                reason: format!("{until} is not after --from {from}"),
            });
        }
        let mut range = DateRange {
            from: self.from,
            until: self.until,
            shift: MonthShift::NONE,
        };
        if let Some(target) = self.replay_as {
            range = range.try_replay_as(target)?;
        }
        Ok(Settings {
            meter_id: self.meter_id.clone(),
            source,
            range,
            home_index,
            utility_url: self.utility.clone(),
            key_authority_url: self.key_authority.clone(),
            public_key_pins: self.public_key_pins.clone(),
            token,
            state_dir: self.state.clone(),
            privacy,
            batch_days: self.batch_days,
            tariff,
            replay_speed: self.replay_speed,
            max_queued: self.max_queued,
            upload_window: 8,
            backoff: Backoff::default(),
            max_attempts: self.max_attempts,
            daily_model: self.daily_model.clone(),
        })
    }
}

/// Runs `cli`: the command's result goes to `out`, progress lines to `progress`.
///
/// # Errors
/// Any failure, with context.
pub async fn execute(
    cli: &Cli,
    out: &mut (impl Write + Send),
    progress: Box<dyn Write + Send>,
) -> anyhow::Result<()> {
    match &cli.command {
        Command::Enrol(args) => {
            let identity = crate::identity::enrol(
                &args.meter_id,
                &args.code,
                &args.key_authority,
                &args.state,
            )
            .await
            .with_context(|| format!("enrolling meter {}", args.meter_id))?;
            writeln!(
                out,
                "meter {} enrolled; certificate stored in {}",
                identity.meter_id(),
                args.state.join(crate::identity::CERTIFICATE_FILE).display()
            )?;
        }
        Command::Info(args) => {
            writeln!(out, "meter-client {SOFTWARE_VERSION}")?;
            if let Some(dir) = &args.state {
                let store = StateStore::open(dir)
                    .await
                    .with_context(|| format!("opening the state in {}", dir.display()))?;
                let summary = store.summary().await.context("reading the state")?;
                store.close().await;
                write_summary(out, &summary)?;
            }
        }
        Command::Dashboard(args) => {
            let settings = args.to_settings().context("invalid settings")?;
            let mut progress = progress;
            crate::dashboard::serve(settings, |link| {
                let _ = writeln!(progress, "household dashboard: open {link}");
            })
            .await
            .with_context(|| format!("serving the dashboard of {}", args.state.display()))?;
        }
        Command::Privacy(args) => {
            let store = StateStore::open(&args.state)
                .await
                .with_context(|| format!("opening the state in {}", args.state.display()))?;
            let report = crate::privacy::report(&store).await;
            store.close().await;
            let report = report.context("reading the privacy ledger")?;
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        Command::Forecast(args) => {
            let settings = args.to_settings().context("invalid settings")?;
            let mut progress = progress;
            let mut report = move |line: &str| {
                let _ = writeln!(progress, "{line}");
            };
            let uploads = upload_days(&settings, &mut report)
                .await
                .with_context(|| format!("meter {}", settings.meter_id))?;
            for upload in &uploads {
                if args.json {
                    writeln!(out, "{}", serde_json::to_string(upload)?)?;
                } else {
                    writeln!(
                        out,
                        "meter {}: forecast input for {} sent ({} hours, group {}, slots {}..{})",
                        settings.meter_id,
                        upload.day,
                        upload.hours,
                        upload.group,
                        upload.slot_offset,
                        upload.slot_offset + upload.slot_count
                    )?;
                }
            }
        }
        Command::Daily(args) => {
            let settings = args.to_settings().context("invalid settings")?;
            let mut progress = progress;
            let mut report = move |line: &str| {
                let _ = writeln!(progress, "{line}");
            };
            let summary = send_days(&settings, &mut report)
                .await
                .with_context(|| format!("meter {}", settings.meter_id))?;
            writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
        }
        Command::Run(args) => {
            let settings = args.to_settings().context("invalid settings")?;
            let progress = Arc::new(Mutex::new(progress));
            let observer_out = Arc::clone(&progress);
            let observer = Arc::new(move |event: &Event| {
                if let Ok(mut w) = progress.lock() {
                    let _ = writeln!(w, "{}", describe(event));
                }
            });
            let meter = settings.meter_id.clone();
            let dashboard = match args.dashboard {
                Some(listen) => {
                    let dashboard = crate::dashboard::DashboardSettings {
                        state_dir: settings.state_dir.clone(),
                        listen,
                        tariff: settings.tariff.clone(),
                        sensitivity: settings.privacy.sensitivity,
                        epsilon: settings.privacy.epsilon,
                        monthly_budget: settings.privacy.monthly_budget,
                        poll: std::time::Duration::from_secs(1),
                        utc_offset: chrono::FixedOffset::east_opt(0).context("the UTC offset")?,
                        utility: None,
                    };
                    let announce = Arc::clone(&observer_out);
                    Some(tokio::spawn(crate::dashboard::serve_when_ready(
                        dashboard,
                        move |link| {
                            if let Ok(mut w) = announce.lock() {
                                let _ = writeln!(w, "household dashboard: open {link}");
                            }
                        },
                    )))
                }
                None => None,
            };
            let report = run(settings, observer).await;
            if let Some(d) = dashboard {
                d.abort();
            }
            let report = report.with_context(|| format!("meter {meter}"))?;
            if args.json {
                let summary = RunSummary::new(&meter, &report);
                writeln!(out, "{}", serde_json::to_string(&summary)?)?;
            } else {
                write_report(out, &meter, &report)?;
            }
        }
    }
    Ok(())
}

fn describe(event: &Event) -> String {
    match event {
        Event::KeyPinned {
            parameter_set,
            blake3,
            first_use,
        } => format!(
            "public key {parameter_set} blake3 {blake3} {}",
            if *first_use {
                "pinned (first use)"
            } else {
                "matches the pin"
            }
        ),
        Event::SourceLoaded {
            readings,
            skipped_intervals,
            interval,
        } => format!(
            "source: {readings} readings of {interval}, {skipped_intervals} incomplete intervals skipped"
        ),
        Event::Queued {
            sequence,
            start,
            readings,
            billing_bytes,
            analytics_bytes,
            epsilon_spent,
        } => format!(
            "queued batch {sequence}: {start}, {readings} readings, billing {billing_bytes} B, \
             analytics {analytics_bytes} B, ε {epsilon_spent:.4}"
        ),
        Event::Acknowledged {
            sequence,
            duplicate,
        } => format!(
            "sent batch {sequence}{}",
            if *duplicate {
                " (server had it already)"
            } else {
                ""
            }
        ),
        Event::ReceiptRecorded {
            sequence,
            duplicate,
        } => format!(
            "receipt of batch {sequence} recorded{}",
            if *duplicate {
                " (key authority had it already)"
            } else {
                ""
            }
        ),
        Event::Reconnecting {
            attempt,
            delay,
            error,
        } => format!("retrying in {delay:?} (attempt {attempt}): {error}"),
    }
}

/// `meter-client run --json`: what the run did, as one JSON object on stdout.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// The meter.
    pub meter_id: String,
    /// Readings in the source range (15-minute or the source's coarser interval).
    pub readings: usize,
    /// Intervals of the range skipped for missing source readings.
    pub skipped_intervals: usize,
    /// Batches built and queued by this run.
    pub batches: u64,
    /// Bytes of billing-lane ciphertext queued by this run.
    pub billing_bytes: u64,
    /// Bytes of analytics-lane ciphertext queued by this run.
    pub analytics_bytes: u64,
    /// Batches the utility server acknowledged (duplicates included).
    pub acknowledged: u64,
    /// Of those, batches the server had already.
    pub duplicates: u64,
    /// Receipts the key authority recorded (duplicates included).
    pub receipts: u64,
    /// Batches still queued at the end.
    pub still_queued: u64,
    /// The daily lane (with `--daily-model`): the days sent, resent, skipped for too little
    /// history, already sent and pending, and its last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<DailyRunReport>,
    /// A live source (`mqtt://`): samples committed to the inbox by this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_stored: Option<u64>,
    /// A live source: redeliveries of stored samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_duplicates: Option<u64>,
    /// A live source: malformed messages (acknowledged, counted, not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_malformed: Option<u64>,
}

impl RunSummary {
    /// The summary of `report` for `meter_id`.
    pub fn new(meter_id: &str, report: &RunReport) -> Self {
        Self {
            meter_id: meter_id.to_owned(),
            readings: report.readings,
            skipped_intervals: report.skipped_intervals,
            batches: report.queued,
            billing_bytes: report.billing_bytes,
            analytics_bytes: report.analytics_bytes,
            acknowledged: report.upload.map_or(0, |u| u.acknowledged),
            duplicates: report.upload.map_or(0, |u| u.duplicates),
            receipts: report.receipts.map_or(0, |r| r.recorded),
            still_queued: report.still_queued,
            daily: report.daily.clone(),
            mqtt_stored: report.mqtt.as_ref().map(|m| m.stored),
            mqtt_duplicates: report.mqtt.as_ref().map(|m| m.duplicates),
            mqtt_malformed: report.mqtt.as_ref().map(|m| m.malformed),
        }
    }
}

fn write_report(out: &mut impl Write, meter: &str, r: &RunReport) -> std::io::Result<()> {
    let per_batch = |bytes: u64| bytes.checked_div(r.queued).unwrap_or(0);
    writeln!(
        out,
        "meter {meter}: {} readings ({} incomplete intervals skipped), {} batches queued \
         (billing {} B, analytics {} B per batch), {} acknowledged ({} duplicates), {} receipts \
         recorded ({} duplicates), {} still queued",
        r.readings,
        r.skipped_intervals,
        r.queued,
        per_batch(r.billing_bytes),
        per_batch(r.analytics_bytes),
        r.upload.map_or(0, |u| u.acknowledged),
        r.upload.map_or(0, |u| u.duplicates),
        r.receipts.map_or(0, |u| u.recorded),
        r.receipts.map_or(0, |u| u.duplicates),
        r.still_queued
    )?;
    if let Some(d) = &r.daily {
        writeln!(
            out,
            "daily lane: {} days sent ({} resent from the state directory), {} skipped for too \
             little history, {} sent before, {} pending{}",
            d.sent.len(),
            d.resent,
            d.skipped_too_little_history,
            d.already_sent,
            d.pending.len(),
            d.error
                .as_ref()
                .map(|e| format!(" (last failure: {e}; the next run sends them)"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

fn write_summary(out: &mut impl Write, s: &crate::queue::StateSummary) -> std::io::Result<()> {
    match &s.identity {
        Some(id) => writeln!(
            out,
            "meter {} (home index {}), tariff blake3 {}",
            id.meter_id, id.home_index, id.tariff_blake3
        )?,
        None => writeln!(out, "no meter has run in this state directory yet")?,
    }
    for k in &s.pinned_keys {
        writeln!(
            out,
            "pinned public key {}: blake3 {} ({} bytes)",
            k.parameter_set_id, k.public_key_blake3, k.public_key_bytes
        )?;
    }
    writeln!(
        out,
        "batches built {}, acknowledged through {}, queued {} ({} bytes), receipts pending {}",
        s.batches_built, s.acked_through, s.queued, s.queued_bytes, s.receipts_pending
    )?;
    if let Some(last) = s.last_reading {
        writeln!(out, "last reading queued: {last}")?;
    }
    if let Some(a) = &s.accountant {
        writeln!(
            out,
            "privacy budget: ε {} spent of {} in the month from {}",
            a.spent(),
            a.budget(),
            a.period_start()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[tokio::test]
    async fn info_prints_the_version() {
        let cli = Cli::try_parse_from(["meter-client", "info"]).expect("valid arguments");
        let mut out = Vec::new();
        execute(&cli, &mut out, Box::new(std::io::sink()))
            .await
            .expect("writing to a Vec succeeds");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            format!("meter-client {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[tokio::test]
    async fn info_describes_a_fresh_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let cli = Cli::try_parse_from(["meter-client", "info", "--state", path.to_str().unwrap()])
            .unwrap();
        let mut out = Vec::new();
        execute(&cli, &mut out, Box::new(std::io::sink()))
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("no meter has run"), "{text}");
        assert!(text.contains("batches built 0"), "{text}");
    }

    #[test]
    fn a_subcommand_is_required() {
        Cli::try_parse_from(["meter-client"]).expect_err("no subcommand");
    }

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut argv = vec![
            "meter-client",
            "run",
            "--meter-id",
            "m-1",
            "--key-authority",
            "http://127.0.0.1:1",
            "--state",
            "/tmp/x",
            "--token-env",
            "SEER_TEST_TOKEN_THAT_IS_NOT_SET",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => *args,
            Command::Forecast(_)
            | Command::Daily(_)
            | Command::Info(_)
            | Command::Enrol(_)
            | Command::Dashboard(_)
            | Command::Privacy(_) => {
                unreachable!()
            }
        }
    }

    #[test]
    fn forecast_settings_are_validated() {
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "meter-client",
                "forecast",
                "--meter-id",
                "m-1",
                "--day",
                "2024-03-12",
                "--model",
                "m.json",
                "--utility",
                "http://127.0.0.1:1",
                "--key-authority",
                "http://127.0.0.1:2",
                "--state",
                "/tmp/x",
                "--token-env",
                "SEER_TEST_TOKEN_THAT_IS_NOT_SET",
            ];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Forecast(args) => *args,
                Command::Run(_)
                | Command::Daily(_)
                | Command::Info(_)
                | Command::Enrol(_)
                | Command::Dashboard(_)
                | Command::Privacy(_) => {
                    unreachable!()
                }
            }
        };
        // No token is required: the meter renews its own with its device key.
        let s = parse(&["--source", "synthetic:3:17"])
            .to_settings()
            .unwrap();
        assert!(s.token.is_none());
        let err = parse(&["--source", "csv:x.csv"]).to_settings().unwrap_err();
        assert!(err.to_string().contains("--home-index"), "{err}");
        let err = parse(&["--source", "synthetic:1:1", "--days", "0"])
            .to_settings()
            .unwrap_err();
        assert!(err.to_string().contains("days"), "{err}");
        assert!(Cli::try_parse_from(["meter-client", "forecast", "--day", "2024-13-01"]).is_err());
    }

    #[test]
    fn daily_settings_select_the_days() {
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "meter-client",
                "daily",
                "--meter-id",
                "m-1",
                "--model",
                "daily/models/uci-daily.json",
                "--utility",
                "http://127.0.0.1:1",
                "--key-authority",
                "http://127.0.0.1:2",
                "--state",
                "/tmp/x",
                "--token-env",
                "SEER_TEST_TOKEN_THAT_IS_NOT_SET",
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Daily(args) => *args,
                _ => unreachable!("a daily command was parsed"),
            })
        };
        let day = |text: &str| text.parse::<NaiveDate>().unwrap();
        let s = parse(&["--source", "synthetic:3:17", "--day", "2024-03-12"])
            .unwrap()
            .to_settings()
            .unwrap();
        assert_eq!(s.days, DaySelection::Day(day("2024-03-12")));
        assert_eq!(s.home_index, 17);
        assert!(s.token.is_none());
        let s = parse(&["--source", "synthetic:3:17", "--through", "2024-03-12"])
            .unwrap()
            .to_settings()
            .unwrap();
        assert_eq!(s.days, DaySelection::Through(day("2024-03-12")));
        let s = parse(&[
            "--source",
            "synthetic:3:17",
            "--from",
            "2024-03-06",
            "--through",
            "2024-03-12",
        ])
        .unwrap()
        .to_settings()
        .unwrap();
        assert_eq!(
            s.days,
            DaySelection::Range(day("2024-03-06"), day("2024-03-12"))
        );
        assert!(parse(&["--source", "synthetic:3:17", "--from", "2024-03-06"]).is_err());
        let s = parse(&["--source", "synthetic:3:17"])
            .unwrap()
            .to_settings()
            .unwrap();
        assert!(matches!(s.days, DaySelection::Pending(_)));
        assert!(
            parse(&[
                "--source",
                "synthetic:3:17",
                "--day",
                "2024-03-12",
                "--through",
                "2024-03-13"
            ])
            .is_err()
        );
        let err = parse(&["--source", "csv:x.csv"])
            .unwrap()
            .to_settings()
            .unwrap_err();
        assert!(err.to_string().contains("--home-index"), "{err}");
    }

    #[test]
    fn run_settings_are_validated() {
        let s = run_args(&["--source", "synthetic:3:17"])
            .to_settings()
            .unwrap();
        assert_eq!(s.home_index, 17);
        assert_eq!(s.batch_days, 7);
        assert!((s.privacy.monthly_budget.get() - DEFAULT_EPSILON * 2976.0).abs() < 1e-9);
        assert_eq!(s.privacy.sensitivity.get(), 3_450);
        assert_eq!(
            (s.privacy.noise_group_size, s.privacy.noise_tolerated),
            (None, None)
        );
        // The defaults resolve against the layout: n = capacity, t = ⌊n/10⌋.
        let plan = s.privacy.share_plan(512).unwrap();
        assert_eq!((plan.group_size(), plan.tolerated()), (512, 51));
        assert!(s.token.is_none());

        let err = run_args(&["--source", "csv:x.csv"])
            .to_settings()
            .unwrap_err();
        assert!(err.to_string().contains("--home-index"), "{err}");
        let err = run_args(&["--source", "synthetic:1:1", "--batch-days", "32"])
            .to_settings()
            .unwrap_err();
        assert!(err.to_string().contains("batch days"), "{err}");
        let err = run_args(&["--source", "synthetic:1:1", "--epsilon", "0"])
            .to_settings()
            .unwrap_err();
        assert!(err.to_string().contains("epsilon"), "{err}");
        // Noise groups: given sizes are validated at once, with the setting named.
        let s = run_args(&["--source", "synthetic:1:1", "--noise-group-size", "12"])
            .to_settings()
            .unwrap();
        let plan = s.privacy.share_plan(512).unwrap();
        assert_eq!((plan.group_size(), plan.tolerated()), (12, 1));
        let err = run_args(&["--source", "synthetic:1:1", "--noise-group-size", "0"])
            .to_settings()
            .unwrap_err();
        assert!(err.to_string().contains("noise group size"), "{err}");
        let err = run_args(&[
            "--source",
            "synthetic:1:1",
            "--noise-group-size",
            "4",
            "--noise-tolerated",
            "4",
        ])
        .to_settings()
        .unwrap_err();
        assert!(err.to_string().contains("noise tolerated"), "{err}");
        // A group larger than a billing group, or a tolerance that leaves no honest meter of
        // the default group, is refused when the layout is known.
        let s = run_args(&["--source", "synthetic:1:1", "--noise-group-size", "600"])
            .to_settings()
            .unwrap();
        let err = s.privacy.share_plan(512).unwrap_err();
        assert!(err.to_string().contains("at most 512"), "{err}");
        let s = run_args(&["--source", "synthetic:1:1", "--noise-tolerated", "512"])
            .to_settings()
            .unwrap();
        let err = s.privacy.share_plan(512).unwrap_err();
        assert!(err.to_string().contains("noise tolerated"), "{err}");
        // Uploading needs no configured token: an enrolled meter renews its own with its
        // device key, and the run refuses an unenrolled meter without one (`NotEnrolled`).
        let s = run_args(&["--source", "synthetic:1:1", "--utility", "http://x:1"])
            .to_settings()
            .unwrap();
        assert!(s.token.is_none());
        // The daily lane is off unless a model is named.
        assert_eq!(s.daily_model, None);
        let s = run_args(&[
            "--source",
            "synthetic:1:1",
            "--daily-model",
            "daily/models/uci-daily.json",
        ])
        .to_settings()
        .unwrap();
        assert_eq!(
            s.daily_model,
            Some(PathBuf::from("daily/models/uci-daily.json"))
        );
    }
}
