//! `meter-client daily`: the meter's side of the daily lane (`seer-daily`), one small
//! ciphertext per home per day.
//!
//! For each day `D` to send, after `D` has ended in the meter's local time:
//!
//! 1. the readings of [`window`]`(D)` — the [`HISTORY_DAYS`] days before `D` and `D` itself —
//!    are read from the source ([`read_window`]) into a [`HomeHistory`], gaps included;
//! 2. the registered model prepares the block ([`DailyModel::prepare`]: the forecast inputs of
//!    `D + 1` and the anomaly features of `D`). A day it cannot prepare
//!    ([`DailyError::NotEnoughHistory`]) is **skipped** and reported, not an error;
//! 3. the block is encrypted at the home's block ([`Placement`]: group `home / group size`,
//!    the billing group; block `home mod 4`, slots `512·block ..`) of one `N4096_L1` ciphertext under the key
//!    authority's public key of [`seer_daily::PARAMETERS`] (fetched and pinned as for every
//!    other lane, [`crate::pins`]), serialized compressed (`Ciphertext::to_bytes`, as the
//!    forecast lane sends its inputs);
//! 4. the ciphertext and its receipt are written to the state directory ([`InputStore`],
//!    `daily-inputs/`) **before either leaves**, so that a rerun after a crash or a failed call
//!    resends the same bytes under the same receipt instead of encrypting again;
//! 5. the receipt (kind `daily`, input id `daily-YYYY-MM-DD`, first period `YYYY-MM-DD`, one
//!    input digest, the exact lane with ε 0 and no noised readings per day, the model's
//!    BLAKE3, the group) is signed with the
//!    device key and recorded with the key authority, then the ciphertext is uploaded to the
//!    utility server under a header with the same signature ([`crate::analytics`]);
//! 6. the day is marked sent (`daily-inputs/YYYY-MM-DD.sent`, the [`DaySent`] record), so
//!    later runs pass over it.
//!
//! The readings never leave in the clear and no ε is spent: the key authority releases only
//! what the registered computation derives from a home-day (`seer_daily::release`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use prost::Message as _;
use seer_auth::{AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER};
use seer_ckks::{CkksContext, Encryptor, PublicKey};
use seer_core::data::Interval;
use seer_daily::history::HomeHistory;
use seer_daily::layout::{BLOCK, BLOCKS_PER_CIPHERTEXT, block_offset};
use seer_daily::{DailyError, DailyModel};
use seer_proto::v1::AnalyticsReceiptRequest;
use serde::{Deserialize, Serialize};

use crate::analytics::{record_receipt, sign_receipt, signed_header, upload_input};
use crate::error::Error;
use crate::forecast_upload::write_atomically;
use crate::grpc::{BearerToken, fetch_public_key, pin_and_load};
use crate::identity::DeviceIdentity;
use crate::queue::StateStore;
use crate::source::{self, DateRange, MonthShift, OpenedSource, SourceSpec};
use crate::tokens::TokenSource;

/// The analytics kind of the daily lane's receipts and uploads.
pub const KIND: &str = "daily";

/// Days of history before the day that the preparation reads.
pub const HISTORY_DAYS: u32 = 28;

/// The state directory's folder of daily inputs.
pub const INPUTS_DIR: &str = "daily-inputs";

/// The receipt's input id of `day`: `daily-YYYY-MM-DD`.
#[must_use]
pub fn input_id(day: NaiveDate) -> String {
    format!("daily-{day}")
}

/// The homes of a billing group in the default layout (the BESCOM slabs at n = 8192:
/// [`BillingLayout::capacity`](seer_core::circuits::billing::BillingLayout::capacity)), the
/// daily lane's group when the meter is given no tariff (`meter-client daily`): the key
/// authority releases each group's forecast total, so it covers the same homes as the group's
/// noised actual totals (the noise group is the billing group).
pub const DEFAULT_GROUP_SIZE: u64 = 1024;

/// Where a home's block sits: its group (the home's billing group, whose forecast total the
/// key authority releases as its own aggregate) and its block of the ciphertext (`home mod
/// 4`: [`BLOCKS_PER_CIPHERTEXT`] homes of different blocks share one evaluation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The group, `home / group size` (the billing group).
    pub group: u32,
    /// The block, `home mod 4`.
    pub block: usize,
}

impl Placement {
    /// The placement of home `home_index` in groups of `group_size` homes.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] when the group size is 0 or the group does not fit 32 bits.
    pub fn of_home(home_index: u64, group_size: u64) -> Result<Self, Error> {
        if group_size == 0 {
            return Err(Error::InvalidSetting {
                setting: "group size",
                reason: "a group holds at least one home".into(),
            });
        }
        let per = BLOCKS_PER_CIPHERTEXT as u64;
        let group = u32::try_from(home_index / group_size).map_err(|_| Error::InvalidSetting {
            setting: "home index",
            reason: format!("{home_index} is too large"),
        })?;
        Ok(Self {
            group,
            block: usize::try_from(home_index % per).unwrap_or(0),
        })
    }

    /// The block's first slot, `512 · block`.
    #[must_use]
    pub fn slot_offset(&self) -> u32 {
        u32::try_from(block_offset(self.block)).unwrap_or(u32::MAX)
    }
}

/// The registered model (with the BLAKE3 of its file's bytes) and the home's placement.
#[derive(Clone, Debug)]
pub struct DailyLane {
    model: Arc<DailyModel>,
    model_blake3: String,
    placement: Placement,
}

impl DailyLane {
    /// The lane of the model file `bytes` for home `home_index` in groups of `group_size`
    /// homes ([`Placement::of_home`]).
    ///
    /// # Errors
    /// [`Error::Daily`] for a file that is not a valid model; [`Error::InvalidSetting`] for a
    /// home index too large or a group size of 0.
    pub fn try_new(bytes: &[u8], home_index: u64, group_size: u64) -> Result<Self, Error> {
        let text = std::str::from_utf8(bytes).map_err(|e| DailyError::InvalidModel {
            reason: e.to_string(),
        })?;
        Ok(Self {
            model: Arc::new(DailyModel::from_json(text)?),
            model_blake3: blake3::hash(bytes).to_hex().to_string(),
            placement: Placement::of_home(home_index, group_size)?,
        })
    }

    /// [`try_new`](Self::try_new) of the model file at `path`.
    ///
    /// # Errors
    /// [`Error::File`] when it cannot be read or is not a valid model.
    pub fn load(path: &Path, home_index: u64, group_size: u64) -> Result<Self, Error> {
        let file_err = |reason: String| Error::File {
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
        Self::try_new(&bytes, home_index, group_size).map_err(|e| match e {
            Error::Daily(e) => file_err(e.to_string()),
            e => e,
        })
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &DailyModel {
        &self.model
    }

    /// The BLAKE3 of the model file (hex), as registered with the key authority.
    #[must_use]
    pub fn model_blake3(&self) -> &str {
        &self.model_blake3
    }

    /// The home's placement.
    #[must_use]
    pub fn placement(&self) -> Placement {
        self.placement
    }
}

/// The readings day `day`'s preparation reads: `[day − HISTORY_DAYS, day + 1)`, local midnight
/// to local midnight.
#[must_use]
pub fn window(day: NaiveDate) -> (NaiveDateTime, NaiveDateTime) {
    (
        (day - TimeDelta::days(i64::from(HISTORY_DAYS))).and_time(NaiveTime::MIN),
        (day + TimeDelta::days(1)).and_time(NaiveTime::MIN),
    )
}

/// A day's window of readings, as the model's history.
#[derive(Clone, Debug)]
pub struct DayWindow {
    /// The day.
    pub day: NaiveDate,
    /// The window's readings by local hour.
    pub history: HomeHistory,
    /// Readings in the window.
    pub readings: usize,
    /// Of those, readings of the day itself.
    pub readings_of_day: usize,
    /// The readings' interval.
    pub interval: Interval,
}

impl DayWindow {
    /// Readings per whole day at the source's interval (96 for 15-minute readings).
    #[must_use]
    pub fn readings_per_day(&self) -> u32 {
        86_400 / self.interval.as_secs()
    }
}

/// Reads [`window`]`(day)` from `source` as the forecast lane reads its windows (the source's
/// readings on the client's grid; missing intervals stay missing, the history decides what it
/// can use). Blocking for file sources (call it off the async runtime).
///
/// A reading the history refuses is left out (logged), never invented.
///
/// # Errors
/// A source that cannot be read; [`Error::InvalidSetting`] for readings of neither 15 nor 60
/// minutes.
pub fn read_window(source: &OpenedSource, day: NaiveDate) -> Result<DayWindow, Error> {
    let (first, end) = window(day);
    let stream = source.select(DateRange {
        from: Some(first.date()),
        until: Some(end.date()),
        shift: MonthShift::NONE,
    })?;
    let interval = stream.interval();
    let minutes = interval.as_secs() / 60;
    if minutes != 15 && minutes != 60 {
        return Err(Error::InvalidSetting {
            setting: "readings",
            reason: format!(
                "the daily lane reads 15-minute or hourly readings; the source gives {interval}"
            ),
        });
    }
    let mut history = HomeHistory::new();
    let (mut readings, mut readings_of_day) = (0, 0);
    for r in stream
        .readings()
        .iter()
        .filter(|r| r.start >= first && r.start < end)
    {
        if let Err(e) = history.add(r.start, minutes, r.energy.to_kwh().get()) {
            // Left out, never invented: the history decides whether its day stays usable.
            tracing::warn!(start = %r.start, error = %e, "reading left out of the daily history");
            continue;
        }
        readings += 1;
        if r.start.date() == day {
            readings_of_day += 1;
        }
    }
    Ok(DayWindow {
        day,
        history,
        readings,
        readings_of_day,
        interval,
    })
}

/// `readings_per_day` of a daily receipt: the exact lane's convention (as the forecast lane's
/// exact receipts), no reading is noised; the key authority refuses a daily receipt with any
/// other value.
pub const RECEIPT_READINGS_PER_DAY: u32 = 0;

/// The (unsigned) receipt of `ciphertext`, day `day`'s input on `lane`: kind `daily`, input id
/// `daily-YYYY-MM-DD`, the home's block of 512 slots, first period `YYYY-MM-DD`, one input
/// digest (BLAKE3 of the serialized ciphertext), the exact lane with ε 0 and
/// [`RECEIPT_READINGS_PER_DAY`], the model's BLAKE3 and the group.
#[must_use]
pub fn receipt(
    meter_id: &str,
    day: NaiveDate,
    lane: &DailyLane,
    ciphertext: &[u8],
) -> AnalyticsReceiptRequest {
    let placement = lane.placement();
    AnalyticsReceiptRequest {
        kind: KIND.into(),
        meter_id: meter_id.to_owned(),
        input_id: input_id(day),
        model_blake3: lane.model_blake3().to_owned(),
        slot_offset: placement.slot_offset(),
        slot_count: BLOCK as u32,
        first_period: day.format("%Y-%m-%d").to_string(),
        group: placement.group,
        input_blake3: vec![blake3::hash(ciphertext).as_bytes().to_vec()],
        lane: "exact".into(),
        epsilon: 0.0,
        readings_per_day: RECEIPT_READINGS_PER_DAY,
        ..AnalyticsReceiptRequest::default()
    }
}

/// A day's ciphertext and its receipt, as kept until both are sent.
#[derive(Clone, PartialEq)]
pub struct StoredInput {
    /// The serialized ciphertext.
    pub ciphertext: Vec<u8>,
    /// Its receipt (unsigned: it is signed when sent; Ed25519 is deterministic, so every
    /// resend carries the same signature).
    pub receipt: AnalyticsReceiptRequest,
}

impl std::fmt::Debug for StoredInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredInput")
            .field("bytes", &self.ciphertext.len())
            .field("input_id", &self.receipt.input_id)
            .finish_non_exhaustive()
    }
}

impl StoredInput {
    /// The BLAKE3 of the ciphertext.
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.ciphertext).as_bytes()
    }
}

/// What one sent day did (also the `daily-inputs/YYYY-MM-DD.sent` record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaySent {
    /// The day whose readings were prepared (its forecast is of the next day).
    pub day: NaiveDate,
    /// The receipt's input id.
    pub input_id: String,
    /// The evaluation group.
    pub group: u32,
    /// First slot of the home's block.
    pub slot_offset: u32,
    /// Bytes of the uploaded ciphertext.
    pub bytes: u64,
    /// Readings of the day.
    pub readings: usize,
    /// Ciphertext bytes per reading of the day.
    pub bytes_per_reading: Option<f64>,
    /// Milliseconds spent encrypting and serializing (none when the stored input was resent).
    pub encrypt_ms: Option<f64>,
    /// Whether the input was read back from the state directory (an earlier run built it).
    pub resent: bool,
    /// Whether the key authority had the receipt already.
    pub receipt_duplicate: bool,
    /// Whether the utility server had the input already.
    pub upload_duplicate: bool,
}

/// The state directory's `daily-inputs/`: per day `YYYY-MM-DD.ct` (the ciphertext),
/// `YYYY-MM-DD.receipt` (its receipt in wire encoding, written last: its presence marks the
/// pair complete) and, once both parties acknowledged, `YYYY-MM-DD.sent` (the [`DaySent`]
/// record, JSON).
#[derive(Clone, Debug)]
pub struct InputStore {
    dir: PathBuf,
}

impl InputStore {
    /// The store of state directory `state_dir` (created if needed).
    ///
    /// # Errors
    /// [`Error::StateDirectory`] when it cannot be created.
    pub fn open(state_dir: &Path) -> Result<Self, Error> {
        let dir = state_dir.join(INPUTS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::StateDirectory {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self { dir })
    }

    /// The folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, day: NaiveDate, extension: &str) -> PathBuf {
        self.dir.join(format!("{day}.{extension}"))
    }

    fn read(path: &Path) -> Result<Option<Vec<u8>>, Error> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::StateDirectory {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// The stored input of `day`, if both files are there; its ciphertext checked against the
    /// receipt's digest.
    ///
    /// # Errors
    /// Unreadable files; [`Error::CorruptState`] for a receipt that does not decode or does not
    /// match the ciphertext.
    pub fn load(&self, day: NaiveDate) -> Result<Option<StoredInput>, Error> {
        let receipt_path = self.path(day, "receipt");
        let (Some(receipt), Some(ciphertext)) = (
            Self::read(&receipt_path)?,
            Self::read(&self.path(day, "ct"))?,
        ) else {
            return Ok(None);
        };
        let corrupt = |reason: String| Error::CorruptState {
            reason: format!("{}: {reason}", receipt_path.display()),
        };
        let receipt = AnalyticsReceiptRequest::decode(receipt.as_slice())
            .map_err(|e| corrupt(e.to_string()))?;
        let input = StoredInput {
            ciphertext,
            receipt,
        };
        if input.receipt.input_blake3 != [input.digest().to_vec()] {
            return Err(corrupt(
                "the stored ciphertext does not match its receipt's digest".into(),
            ));
        }
        Ok(Some(input))
    }

    /// Stores `input` as `day`'s (the ciphertext first, the receipt last).
    ///
    /// # Errors
    /// [`Error::StateDirectory`] when a file cannot be written.
    pub fn save(&self, day: NaiveDate, input: &StoredInput) -> Result<(), Error> {
        write_atomically(&self.path(day, "ct"), &input.ciphertext)?;
        write_atomically(&self.path(day, "receipt"), &input.receipt.encode_to_vec())
    }

    /// The record of `day` if it was sent.
    ///
    /// # Errors
    /// Unreadable files; [`Error::CorruptState`] for a record that does not parse.
    pub fn sent(&self, day: NaiveDate) -> Result<Option<DaySent>, Error> {
        let path = self.path(day, "sent");
        Self::read(&path)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
                    reason: format!("{}: {e}", path.display()),
                })
            })
            .transpose()
    }

    /// Marks `sent.day` sent.
    ///
    /// # Errors
    /// [`Error::StateDirectory`] when the record cannot be written.
    pub fn mark_sent(&self, sent: &DaySent) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(sent).map_err(|e| Error::CorruptState {
            reason: format!("sent record: {e}"),
        })?;
        write_atomically(&self.path(sent.day, "sent"), &json)
    }

    /// The days marked sent, in order.
    ///
    /// # Errors
    /// [`Error::StateDirectory`] when the folder cannot be listed.
    pub fn sent_days(&self) -> Result<Vec<NaiveDate>, Error> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::StateDirectory {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        let mut days: Vec<NaiveDate> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let stem = name.to_str()?.strip_suffix(".sent")?.to_owned();
                stem.parse().ok()
            })
            .collect();
        days.sort_unstable();
        Ok(days)
    }
}

/// The meter's encryptor of the daily parameter set.
pub struct DailyEncryptor {
    ctx: CkksContext,
    encryptor: Encryptor,
}

impl DailyEncryptor {
    /// An encryptor under `public_key` (of [`seer_daily::PARAMETERS`]).
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for a context of another parameter set; [`Error::Ckks`] for a
    /// key of another one.
    pub fn new(ctx: &CkksContext, public_key: &PublicKey) -> Result<Self, Error> {
        if ctx.parameter_set() != seer_daily::PARAMETERS {
            return Err(Error::InvalidSetting {
                setting: "parameter set",
                reason: format!(
                    "the daily lane encrypts at {}, not {}",
                    seer_daily::PARAMETERS,
                    ctx.parameter_set_id()
                ),
            });
        }
        Ok(Self {
            ctx: ctx.clone(),
            encryptor: Encryptor::new(ctx, public_key)?,
        })
    }
}

/// What preparing a day gave.
#[derive(Debug)]
pub enum Prepared {
    /// The day's input, ready to send.
    Ready {
        /// The ciphertext and its receipt (already in the state directory).
        input: Box<StoredInput>,
        /// Whether it was read back from the state directory instead of built now.
        resent: bool,
        /// Milliseconds spent encrypting and serializing (built now only).
        encrypt_ms: Option<f64>,
        /// Readings of the day in the source.
        readings_of_day: usize,
    },
    /// The model cannot prepare the day (too little history); nothing was stored.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// Checks that a stored input is `day`'s for this meter and lane (a model or home changed
/// since it was built cannot be sent under it).
fn check_stored(
    stored: &StoredInput,
    meter_id: &str,
    day: NaiveDate,
    lane: &DailyLane,
) -> Result<(), Error> {
    let r = &stored.receipt;
    let placement = lane.placement();
    let problem = if r.kind != KIND || r.input_id != input_id(day) || r.meter_id != meter_id {
        Some(format!(
            "it is {} input {} of meter {}",
            r.kind, r.input_id, r.meter_id
        ))
    } else if r.model_blake3 != lane.model_blake3() {
        Some(format!("it was built for model {}", r.model_blake3))
    } else if r.group != placement.group || r.slot_offset != placement.slot_offset() {
        Some(format!(
            "it sits at group {} slot {}, the home now at group {} slot {}",
            r.group,
            r.slot_offset,
            placement.group,
            placement.slot_offset()
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::InvalidSetting {
            setting: "daily model",
            reason: format!(
                "the state directory holds an unsent daily input for {day} ({problem}); its \
                 receipt may already be recorded, so it is never replaced: send it with the \
                 same model and home index"
            ),
        }),
    }
}

/// Prepares `day` without any network call: reads its window, then either reads back the
/// input stored by an earlier run (the same bytes, never encrypted twice) or prepares,
/// encrypts at the home's block and stores it. Source reading and encryption run off the
/// async runtime.
///
/// # Errors
/// An unreadable source or state, a stored input of another model or home, a CKKS failure.
pub async fn prepare_day(
    meter_id: &str,
    lane: &DailyLane,
    encryptor: &Arc<DailyEncryptor>,
    source: &Arc<OpenedSource>,
    store: &InputStore,
    day: NaiveDate,
) -> Result<Prepared, Error> {
    let opened = Arc::clone(source);
    let window = tokio::task::spawn_blocking(move || read_window(&opened, day)).await??;
    if let Some(input) = store.load(day)? {
        check_stored(&input, meter_id, day, lane)?;
        return Ok(Prepared::Ready {
            input: Box::new(input),
            resent: true,
            encrypt_ms: None,
            readings_of_day: window.readings_of_day,
        });
    }
    let prepared = match lane.model().prepare(&window.history, day) {
        Ok(prepared) => prepared,
        Err(e @ DailyError::NotEnoughHistory { .. }) => {
            return Ok(Prepared::Skipped {
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let (enc, block) = (Arc::clone(encryptor), lane.placement().block);
    let (ciphertext, ms) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let ct = seer_daily::circuit::encrypt(&enc.encryptor, &prepared, block)?;
        let bytes = ct.to_bytes(&enc.ctx)?;
        Ok::<_, Error>((bytes, started.elapsed().as_secs_f64() * 1000.0))
    })
    .await??;
    let input = StoredInput {
        receipt: receipt(meter_id, day, lane, &ciphertext),
        ciphertext,
    };
    store.save(day, &input)?;
    Ok(Prepared::Ready {
        input: Box::new(input),
        resent: false,
        encrypt_ms: Some(ms),
        readings_of_day: window.readings_of_day,
    })
}

/// Signs `input`'s receipt with the device key, records it with the key authority, then
/// uploads the ciphertext to the utility server. Returns whether each had it already
/// (`(receipt, upload)`).
///
/// # Errors
/// A refused or failed call.
pub async fn send_input(
    identity: &DeviceIdentity,
    key_authority: (&str, &TokenSource),
    utility: (&str, &TokenSource),
    input: &StoredInput,
) -> Result<(bool, bool), Error> {
    let mut signed = input.receipt.clone();
    let (model, group) = (signed.model_blake3.clone(), signed.group);
    sign_receipt(identity, &mut signed, &model, group)?;
    let receipt_duplicate = record_receipt(
        key_authority.0,
        key_authority.1.token().await?,
        signed.clone(),
    )
    .await?;
    let ack = upload_input(
        utility.0,
        utility.1.token().await?,
        signed_header(identity, &signed),
        std::slice::from_ref(&input.ciphertext),
    )
    .await?;
    Ok((receipt_duplicate, ack.duplicate))
}

/// Which days `meter-client daily` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaySelection {
    /// Only this day (`--day`), unless it was sent already.
    Day(NaiveDate),
    /// Every day not sent yet from the first one the model can prepare through this one
    /// (`--through`); the days before the first usable one are counted, not listed.
    Through(NaiveDate),
    /// Every day not sent yet from the first through the second (`--from` with
    /// `--through`), e.g. a week after the history the model reads.
    Range(NaiveDate, NaiveDate),
    /// The days after the last one sent through this one, or only this one when none was
    /// sent yet (the default, through yesterday).
    Pending(NaiveDate),
}

impl DaySelection {
    /// The default: the days pending through yesterday in the meter's local time.
    #[must_use]
    pub fn default_pending() -> Self {
        Self::Pending(chrono::Local::now().date_naive() - TimeDelta::days(1))
    }
}

/// What `meter-client daily` needs.
#[derive(Clone, Debug)]
pub struct DailySettings {
    /// The meter.
    pub meter_id: String,
    /// The readings.
    pub source: SourceSpec,
    /// The days to send.
    pub days: DaySelection,
    /// The registered model file.
    pub model: PathBuf,
    /// The home's number in the deployment (its group and block).
    pub home_index: u64,
    /// Homes per group (the billing group's size: [`DEFAULT_GROUP_SIZE`] without a tariff).
    pub group_size: u64,
    /// The utility server.
    pub utility_url: String,
    /// The key authority.
    pub key_authority_url: String,
    /// The configured fingerprints of the key authority's public keys (see [`crate::pins`]).
    pub public_key_pins: Vec<crate::pins::KeyPin>,
    /// A token for fetching the public key (optional); receipts and uploads use tokens the
    /// meter renews with its device key.
    pub token: Option<BearerToken>,
    /// The state directory.
    pub state_dir: PathBuf,
}

/// A day not sent, with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaySkipped {
    /// The day.
    pub day: NaiveDate,
    /// Why.
    pub reason: String,
}

/// `meter-client daily`'s summary (printed as JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DailySummary {
    /// The meter.
    pub meter_id: String,
    /// The model's BLAKE3 (hex).
    pub model_blake3: String,
    /// The home's placement.
    pub placement: Placement,
    /// The days sent by this run.
    pub sent: Vec<DaySent>,
    /// The days the model could not prepare.
    pub skipped: Vec<DaySkipped>,
    /// Days passed over because an earlier run sent them.
    pub already_sent: usize,
    /// With [`DaySelection::Through`]: days before the first one the model could prepare.
    pub before_first_usable: usize,
    /// Mean ciphertext bytes per upload.
    pub bytes_per_upload: Option<f64>,
    /// Mean ciphertext bytes per reading of the day.
    pub bytes_per_reading: Option<f64>,
    /// Mean milliseconds per encryption (inputs built by this run).
    pub encrypt_ms: Option<f64>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0_u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

impl DailySummary {
    /// Fills in the means over the days sent.
    #[must_use]
    pub fn finish(mut self) -> Self {
        self.bytes_per_upload = mean(self.sent.iter().map(|s| s.bytes as f64));
        self.bytes_per_reading = mean(self.sent.iter().filter_map(|s| s.bytes_per_reading));
        self.encrypt_ms = mean(self.sent.iter().filter_map(|s| s.encrypt_ms));
        self
    }
}

/// The first day `source` has readings of (a synthetic home: its default first day).
fn first_source_day(source: &OpenedSource) -> Option<NaiveDate> {
    match source {
        OpenedSource::Series(series) => series.readings().first().map(|r| r.start.date()),
        OpenedSource::Synthetic(_) => Some(source::SYNTHETIC_DEFAULT_FROM),
    }
}

/// The days `selection` asks for, in order.
fn candidate_days(
    selection: DaySelection,
    source: &OpenedSource,
    store: &InputStore,
) -> Result<Vec<NaiveDate>, Error> {
    let range = |from: NaiveDate, through: NaiveDate| {
        from.iter_days()
            .take_while(|d| *d <= through)
            .collect::<Vec<_>>()
    };
    Ok(match selection {
        DaySelection::Day(day) => vec![day],
        DaySelection::Through(through) => match first_source_day(source) {
            Some(first) => range(first, through),
            None => Vec::new(),
        },
        DaySelection::Range(from, through) => range(from, through),
        DaySelection::Pending(through) => match store.sent_days()?.last() {
            Some(last) => range(*last + TimeDelta::days(1), through),
            None => vec![through],
        },
    })
}

/// An open daily lane: the model, the pinned public key of [`seer_daily::PARAMETERS`], the
/// opened source, the device identity with its tokens and the state directory's
/// [`InputStore`]. `meter-client daily` opens one per command ([`send_days`]); `meter-client
/// run --daily-model` opens one per run and sends each day when it is complete
/// ([`send`](Self::send)): one code path for both.
pub struct DailySender {
    meter_id: String,
    utility_url: String,
    key_authority_url: String,
    lane: DailyLane,
    identity: Arc<DeviceIdentity>,
    ka_tokens: TokenSource,
    utility_tokens: TokenSource,
    encryptor: Arc<DailyEncryptor>,
    source: Arc<OpenedSource>,
    store: InputStore,
}

impl std::fmt::Debug for DailySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DailySender")
            .field("meter_id", &self.meter_id)
            .field("model_blake3", &self.lane.model_blake3())
            .field("placement", &self.lane.placement())
            .finish_non_exhaustive()
    }
}

impl DailySender {
    /// Opens the lane of `settings` (its `days` are not used: see [`send`](Self::send)) with
    /// the model `lane` and the opened `source`: loads the device identity, fetches the public
    /// key of [`seer_daily::PARAMETERS`] and checks it against the pins and the key recorded
    /// in `state` (the caller's open state store: the directory is locked while it is open).
    ///
    /// # Errors
    /// An unenrolled meter, an unreachable key authority, an unpinned or changed key, an
    /// unreadable state directory.
    pub async fn open(
        settings: &DailySettings,
        lane: DailyLane,
        source: Arc<OpenedSource>,
        state: &StateStore,
    ) -> Result<Self, Error> {
        let ctx =
            tokio::task::spawn_blocking(|| CkksContext::new(seer_daily::PARAMETERS)).await??;
        let identity = Arc::new(DeviceIdentity::load(
            &settings.state_dir,
            &settings.meter_id,
        )?);
        let pk_bytes = fetch_public_key(
            &settings.key_authority_url,
            settings.token.clone(),
            ctx.parameter_set_id(),
        )
        .await?;
        let (public_key, _) =
            pin_and_load(state, &ctx, &pk_bytes, &settings.public_key_pins).await?;
        Ok(Self {
            meter_id: settings.meter_id.clone(),
            utility_url: settings.utility_url.clone(),
            key_authority_url: settings.key_authority_url.clone(),
            ka_tokens: TokenSource::new(
                &settings.key_authority_url,
                Arc::clone(&identity),
                AUDIENCE_KEY_AUTHORITY,
            ),
            utility_tokens: TokenSource::new(
                &settings.key_authority_url,
                Arc::clone(&identity),
                AUDIENCE_UTILITY_SERVER,
            ),
            identity,
            encryptor: Arc::new(DailyEncryptor::new(&ctx, &public_key)?),
            lane,
            source,
            store: InputStore::open(&settings.state_dir)?,
        })
    }

    /// The lane (model and placement).
    #[must_use]
    pub fn lane(&self) -> &DailyLane {
        &self.lane
    }

    /// The state directory's daily inputs.
    #[must_use]
    pub fn store(&self) -> &InputStore {
        &self.store
    }

    /// An empty summary of this lane.
    #[must_use]
    pub fn summary(&self) -> DailySummary {
        DailySummary {
            meter_id: self.meter_id.clone(),
            model_blake3: self.lane.model_blake3().to_owned(),
            placement: self.lane.placement(),
            sent: Vec::new(),
            skipped: Vec::new(),
            already_sent: 0,
            before_first_usable: 0,
            bytes_per_upload: None,
            bytes_per_reading: None,
            encrypt_ms: None,
        }
    }

    /// Sends each day of `selection` not sent yet (see the [module docs](self)), adding what
    /// it did to `summary` as it goes (so that the days sent before a failure are counted);
    /// `progress` receives a line per day.
    ///
    /// # Errors
    /// An unreadable source or state, a stored input of another model or home, a refused or
    /// failed receipt or upload: the day that failed stays in the state directory (kept
    /// before it left) and is resent, byte for byte, by the next call or run.
    pub async fn send(
        &self,
        selection: DaySelection,
        summary: &mut DailySummary,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), Error> {
        let through_mode = matches!(selection, DaySelection::Through(_));
        let mut usable_seen = false;
        for day in candidate_days(selection, &self.source, &self.store)? {
            if self.store.sent(day)?.is_some() {
                summary.already_sent += 1;
                usable_seen = true;
                if !through_mode {
                    progress(&format!("daily input for {day}: sent before"));
                }
                continue;
            }
            let prepared = prepare_day(
                &self.meter_id,
                &self.lane,
                &self.encryptor,
                &self.source,
                &self.store,
                day,
            )
            .await?;
            let (input, resent, encrypt_ms, readings) = match prepared {
                Prepared::Skipped { reason } => {
                    if through_mode && !usable_seen {
                        summary.before_first_usable += 1;
                    } else {
                        tracing::info!(%day, %reason, "daily input skipped");
                        progress(&format!("daily input for {day} skipped: {reason}"));
                        summary.skipped.push(DaySkipped { day, reason });
                    }
                    continue;
                }
                Prepared::Ready {
                    input,
                    resent,
                    encrypt_ms,
                    readings_of_day,
                } => (input, resent, encrypt_ms, readings_of_day),
            };
            usable_seen = true;
            let (receipt_duplicate, upload_duplicate) = send_input(
                &self.identity,
                (&self.key_authority_url, &self.ka_tokens),
                (&self.utility_url, &self.utility_tokens),
                &input,
            )
            .await?;
            let bytes = input.ciphertext.len() as u64;
            let sent = DaySent {
                day,
                input_id: input.receipt.input_id.clone(),
                group: input.receipt.group,
                slot_offset: input.receipt.slot_offset,
                bytes,
                readings,
                bytes_per_reading: (readings > 0).then(|| bytes as f64 / readings as f64),
                encrypt_ms,
                resent,
                receipt_duplicate,
                upload_duplicate,
            };
            self.store.mark_sent(&sent)?;
            progress(&format!(
                "daily input for {day}: group {} slots {}..{}, {bytes} bytes for {readings} \
                 readings{}{}",
                sent.group,
                sent.slot_offset,
                sent.slot_offset + BLOCK as u32,
                if resent {
                    ", resent from the state directory"
                } else {
                    ""
                },
                if upload_duplicate {
                    " (the utility had it)"
                } else {
                    ""
                },
            ));
            summary.sent.push(sent);
        }
        if through_mode && summary.before_first_usable > 0 {
            progress(&format!(
                "{} days before the first the model could prepare were passed over",
                summary.before_first_usable
            ));
        }
        Ok(())
    }
}

/// Runs `meter-client daily`: sends each selected day not sent yet (see the
/// [module docs](self)); `progress` receives a line per day. Also the entry point of a fleet
/// simulator or test that drives meters without the command line.
///
/// # Errors
/// An unreadable model, source or state, an unpinned key, a refused receipt or upload (the
/// days prepared stay in the state directory and are resent by the next run).
pub async fn send_days(
    settings: &DailySettings,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<DailySummary, Error> {
    let lane = DailyLane::load(&settings.model, settings.home_index, settings.group_size)?;
    let spec = settings.source.clone();
    let source = Arc::new(tokio::task::spawn_blocking(move || source::open(&spec)).await??);
    let state = StateStore::open(&settings.state_dir).await?;
    let sender = DailySender::open(settings, lane, source, &state).await;
    state.close().await;
    let sender = sender?;
    let mut summary = sender.summary();
    sender.send(settings.days, &mut summary, progress).await?;
    Ok(summary.finish())
}

/// What the daily lane of `meter-client run --daily-model` did (part of `run`'s summary).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DailyRunReport {
    /// The days this run sent, in order (each acknowledged by the key authority and the
    /// utility server, and marked sent).
    pub sent: Vec<NaiveDate>,
    /// Of those, days read back from the state directory: kept by an earlier run that did
    /// not get both acknowledgements, resent byte for byte.
    pub resent: usize,
    /// Complete days the model could not prepare (too little history before them): not sent.
    pub skipped_too_little_history: usize,
    /// Complete days an earlier run had sent (passed over).
    pub already_sent: usize,
    /// Complete days left unsent by a failure of the lane: the next run sends them.
    pub pending: Vec<NaiveDate>,
    /// Failures of the lane during this run (each logged; the batches went on).
    pub failures: usize,
    /// The last failure, when the lane ended the run with days pending.
    pub error: Option<String>,
}

/// The daily lane inside `meter-client run`: told each time the readings complete a day
/// ([`complete_through`](Self::complete_through)), it sends every complete day not sent yet
/// through [`DailySender::send`] (the code path of `meter-client daily`), so each day's input
/// is kept in the state directory before it leaves and a day is never sent twice. A failure
/// (key authority or utility unreachable, a refused receipt or upload) is logged with what to
/// do and ends nothing: the failed day and those after it are retried when the next day is
/// complete, and by the next run.
#[derive(Debug)]
pub struct DailyFollower {
    settings: DailySettings,
    lane: DailyLane,
    source: Arc<OpenedSource>,
    sender: Option<DailySender>,
    next: NaiveDate,
    through: Option<NaiveDate>,
    report: DailyRunReport,
}

impl DailyFollower {
    /// A follower of `settings`' lane (its `days` are not used) with the model `lane` over
    /// the opened `source`, whose first day to send is `first_day`.
    #[must_use]
    pub fn new(
        settings: DailySettings,
        lane: DailyLane,
        source: Arc<OpenedSource>,
        first_day: NaiveDate,
    ) -> Self {
        Self {
            settings,
            lane,
            source,
            sender: None,
            next: first_day,
            through: None,
            report: DailyRunReport::default(),
        }
    }

    /// The readings are complete through the end of `through`: sends every day from the first
    /// not handled yet through it. `state` is the run's open state store (the public key of
    /// the daily parameter set is pinned in it when the lane opens).
    pub async fn complete_through(&mut self, through: NaiveDate, state: &StateStore) {
        self.through = self.through.max(Some(through));
        if through < self.next {
            return;
        }
        if self.sender.is_none() {
            match DailySender::open(
                &self.settings,
                self.lane.clone(),
                Arc::clone(&self.source),
                state,
            )
            .await
            {
                Ok(sender) => self.sender = Some(sender),
                Err(e) => return self.failed(self.next, &e),
            }
        }
        let Some(sender) = self.sender.as_ref() else {
            return;
        };
        let meter = self.settings.meter_id.clone();
        let mut progress = move |line: &str| tracing::info!(meter = %meter, "{line}");
        while self.next <= through {
            let day = self.next;
            let mut summary = sender.summary();
            if let Err(e) = sender
                .send(DaySelection::Day(day), &mut summary, &mut progress)
                .await
            {
                return self.failed(day, &e);
            }
            for sent in &summary.sent {
                self.report.sent.push(sent.day);
                self.report.resent += usize::from(sent.resent);
            }
            self.report.skipped_too_little_history += summary.skipped.len();
            self.report.already_sent += summary.already_sent;
            self.report.error = None;
            self.next = day + TimeDelta::days(1);
        }
    }

    fn failed(&mut self, day: NaiveDate, error: &Error) {
        self.report.failures += 1;
        self.report.error = Some(format!("{day}: {error}"));
        tracing::warn!(
            meter = %self.settings.meter_id,
            %day,
            %error,
            "the daily lane could not send {day}; the batches go on. The day (kept in {} if it \
             was prepared) is sent, with the same bytes, when the next day is complete or by \
             the next run: check that the key authority ({}) and the utility server ({}) are \
             reachable and accept this meter (enrolment, --public-key-pin for {}, the \
             registered --daily-model)",
            self.settings.state_dir.join(INPUTS_DIR).display(),
            self.settings.key_authority_url,
            self.settings.utility_url,
            seer_daily::PARAMETERS,
        );
    }

    /// What the lane did; the complete days not sent are listed as pending.
    #[must_use]
    pub fn finish(mut self) -> DailyRunReport {
        if let Some(through) = self.through {
            self.report.pending = self
                .next
                .iter_days()
                .take_while(|d| *d <= through)
                .collect();
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_follows_the_home_index() {
        assert_eq!(
            Placement::of_home(0, DEFAULT_GROUP_SIZE).unwrap(),
            Placement { group: 0, block: 0 }
        );
        let p = Placement::of_home(11, DEFAULT_GROUP_SIZE).unwrap();
        assert_eq!((p.group, p.block, p.slot_offset()), (0, 3, 1536));
        let p = Placement::of_home(2049, DEFAULT_GROUP_SIZE).unwrap();
        assert_eq!((p.group, p.block, p.slot_offset()), (2, 1, 512));
        let p = Placement::of_home(11, 4).unwrap();
        assert_eq!((p.group, p.block), (2, 3));
        assert!(Placement::of_home(u64::MAX, 1).is_err());
        assert!(Placement::of_home(1, 0).is_err());
    }

    #[test]
    fn the_default_group_is_the_default_billing_group() {
        let ctx = seer_ckks::CkksContext::new(seer_core::circuits::billing::PARAMETER_SET)
            .expect("context");
        let layout = seer_core::circuits::billing::BillingLayout::try_new(
            &seer_core::tariff::Tariff::default(),
            &ctx,
        )
        .expect("layout");
        assert_eq!(layout.capacity() as u64, DEFAULT_GROUP_SIZE);
    }

    #[test]
    fn the_window_is_four_weeks_and_the_day() {
        let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let (first, end) = window(day);
        assert_eq!(first.to_string(), "2024-02-02 00:00:00");
        assert_eq!(end.to_string(), "2024-03-02 00:00:00");
        assert_eq!(input_id(day), "daily-2024-03-01");
    }

    fn sent(day: NaiveDate) -> DaySent {
        DaySent {
            day,
            input_id: input_id(day),
            group: 0,
            slot_offset: 0,
            bytes: 1,
            readings: 96,
            bytes_per_reading: Some(1.0 / 96.0),
            encrypt_ms: None,
            resent: false,
            receipt_duplicate: false,
            upload_duplicate: false,
        }
    }

    #[test]
    fn the_selection_names_the_pending_days() {
        let d = |text: &str| text.parse::<NaiveDate>().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = InputStore::open(dir.path()).unwrap();
        let source = OpenedSource::Synthetic(crate::synthetic::SyntheticHome::new(1, 1));
        let days = |s| candidate_days(s, &source, &store).unwrap();
        // Nothing sent yet: the default sends only the day given (yesterday).
        assert_eq!(
            days(DaySelection::Pending(d("2024-03-05"))),
            [d("2024-03-05")]
        );
        assert_eq!(days(DaySelection::Day(d("2024-02-01"))), [d("2024-02-01")]);
        // --through starts at the source's first day (the model skips what it cannot prepare).
        let through = days(DaySelection::Through(d("2024-01-10")));
        assert_eq!(through.first(), Some(&source::SYNTHETIC_DEFAULT_FROM));
        assert_eq!(through.len(), 10);
        assert!(days(DaySelection::Through(d("2023-12-31"))).is_empty());
        // After a day was sent, the default catches up from the day after the last one sent.
        store.mark_sent(&sent(d("2024-03-01"))).unwrap();
        store.mark_sent(&sent(d("2024-02-20"))).unwrap();
        assert_eq!(
            store.sent_days().unwrap(),
            [d("2024-02-20"), d("2024-03-01")]
        );
        assert_eq!(
            store.sent(d("2024-03-01")).unwrap(),
            Some(sent(d("2024-03-01")))
        );
        assert_eq!(store.sent(d("2024-03-02")).unwrap(), None);
        assert_eq!(
            days(DaySelection::Pending(d("2024-03-04"))),
            [d("2024-03-02"), d("2024-03-03"), d("2024-03-04")]
        );
        assert!(days(DaySelection::Pending(d("2024-03-01"))).is_empty());
    }
}
