//! Building a batch: readings → billing lane and analytics lane → two serialized ciphertexts.
//!
//! # Windows
//!
//! Batches are cut on a calendar grid anchored at the first day of each month: with
//! `batch_days = N`, the windows of a month are days `1 ..= N`, `N+1 ..= 2N`, … and the last
//! one is cut short at the month's end (with `N = 10`, January's windows are 1–10, 11–20,
//! 21–30 and 31). A batch therefore never spans two billing periods, and the same
//! readings always fall into the same windows. A window without readings produces no batch.
//! The last window of a finite source is sent when the source ends, even if incomplete; if the
//! source later continues, the rest of that window becomes the next batch.
//!
//! # The billing lane: period-to-date cells
//!
//! Each reading's exact energy (integer joules) goes through the meter's
//! [`WhRegister`](seer_core::tariff::WhRegister), which turns it into whole Wh and carries the
//! sub-Wh remainder to the next reading, and then into the period's
//! [`SlabAccumulator`](seer_core::tariff::SlabAccumulator), which splits it into (slab, band)
//! cells by the period's running total and restarts at each calendar month. The billing lane
//! of a batch encrypts the meter's **period-to-date** cells
//! ([`SlabAccumulator::period_cells`](seer_core::tariff::SlabAccumulator::period_cells) after
//! the batch's last reading: every Wh from the start of the billing period through the end of
//! the batch), not the batch's own cells, at the meter's block with
//! [`BillingLayout::encrypt_batch`](seer_core::circuits::billing::BillingLayout::encrypt_batch).
//! The batch with the highest sequence of a period therefore carries the whole period, and
//! the bill needs exactly one ciphertext per home and period (two batches of one home must
//! never be added: they overlap). The register's remainder, the period and its cells so far
//! are part of [`LaneState`].
//!
//! A batch **closes its period** ([`SealedBatch::closes_period`]) when its end is the period's
//! end, the first instant of the next month: its lane then holds the whole period. The utility
//! bills only closing batches, and the key authority releases a bill only against the closing
//! batch's receipt ([`Receipt`]). A period whose last interval has no reading (a gap at the
//! very end of the month) is never closed by this meter.
//!
//! # Receipts
//!
//! Every batch has a [`Receipt`] (its sequence, period, the BLAKE3 digest of its billing-lane
//! bytes, its packing group and position, and whether it closes its period), fixed when the
//! batch is built and recorded with the key authority before the batch may leave the queue
//! (see [`crate::receipts`]).
//!
//! # The analytics lane
//!
//! The same whole-Wh readings, clamped to the sensitivity Δ, with distributed noise: the
//! meter adds only its **share** of one discrete Laplace draw per interval of its noise group
//! (the batch's billing group; [`SharePlan`], Ács–Castelluccia's DREAM), so that the group's
//! summed lane of a window carries one full draw of scale Δ/ε per interval whatever the
//! group's size. The key authority sums the group's lanes of one window, adds the shares of
//! absent meters itself, decrypts only that sum and releases hourly totals; no single lane is
//! ever decrypted.
//!
//! So that the lanes of a group add up slot by slot, every meter uses the same layout: slot
//! `i` of the ciphertext is interval `i` of the batch's **window** (see [Windows](#windows),
//! which every meter of the group cuts alike), not of the batch. A batch covers the **span**
//! `[first_slot, first_slot + slot_count)` from its first reading's interval to its last's;
//! every slot of the span holds min(reading, Δ) (0 for an interval without a reading) plus
//! one fresh share, and every slot outside it holds exactly 0. A meter's batches of one
//! window have disjoint spans (each starts after the last reading queued), so no slot ever
//! carries two of its shares. The plan — group size n, tolerated absent or colluding meters
//! t, Δ, ε, the window's start, interval and length, and the span — travels signed with the
//! batch ([`SealedBatch::noise`], `seer.v1.NoisePlan`).
//!
//! Each reading is a term of exactly one released interval total, which is ε-DP for it: the
//! batch is charged ε × readings (slots without a reading cost nothing) to the meter's
//! [`PrivacyAccountant`] (budget per calendar month, the billing period, so a batch never
//! straddles two budget periods either), and the charge of each day is written to the
//! meter's privacy ledger ([`crate::privacy`]) with the batch.
//!
//! # Atomicity
//!
//! [`BatchBuilder::build`] never modifies the state it is given: it returns the batch together
//! with the state after it and its ledger entries ([`BuiltBatch`]), and the caller commits
//! them in one transaction
//! ([`StateStore::commit_batch`](crate::queue::StateStore::commit_batch)). Noise drawn for a
//! batch that is never committed is never sent and never drawn again.

use chrono::{Datelike, FixedOffset, NaiveDate, NaiveDateTime, Offset as _, TimeDelta, Utc};
use seer_auth::device::NoisePlanStatement;
use seer_ckks::{CkksContext, Encryptor};
use seer_core::circuits::billing::{BillingLayout, HomeSlot};
use seer_core::data::{Interval, Period};
use seer_core::dp::{
    AnalyticsNoise, BudgetPeriod, Epsilon, LaplaceMechanism, MAX_GROUP_SIZE, PrivacyAccountant,
    SharePlan,
};
use seer_core::tariff::{CellEnergy, SlabAccumulator, WhRegister};
use seer_core::units::{Joules, Wh};

use crate::error::Error;
use crate::privacy::{LedgerEntry, PrivacyLane};
use crate::source::MeterReading;
use crate::upload::wire_time;

/// The most days a batch window may span (a whole month: windows are cut at month ends).
pub const MAX_BATCH_DAYS: u32 = 31;

/// The window `[start, end)` of the batch containing `t`; see the [module docs](self#windows).
pub fn window_of(
    t: NaiveDateTime,
    batch_days: u32,
) -> Result<(NaiveDateTime, NaiveDateTime), Error> {
    let month = Period::containing(t.date())?;
    let days = i64::from(batch_days.clamp(1, MAX_BATCH_DAYS));
    let k = i64::from(t.date().day0()) / days;
    let start = month.start() + TimeDelta::days(k * days);
    let end = (start + TimeDelta::days(days)).min(month.end());
    Ok((start, end))
}

/// Splits readings into consecutive runs, one per batch window (readings in time order).
pub fn split_windows(
    readings: &[MeterReading],
    batch_days: u32,
) -> Result<Vec<&[MeterReading]>, Error> {
    let mut out = Vec::new();
    let mut rest = readings;
    while let Some(first) = rest.first() {
        let (_, end) = window_of(first.start, batch_days)?;
        let n = rest.partition_point(|r| r.start < end);
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    Ok(out)
}

/// The meter's lane state between batches: everything that must survive a restart so that the
/// next batch continues exactly where the last committed one stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct LaneState {
    /// The sequence the next batch gets (1 for the first).
    pub next_sequence: u64,
    /// The start of the last reading put in a committed batch.
    pub last_reading: Option<NaiveDateTime>,
    /// The Wh register's sub-Wh remainder.
    pub register: WhRegister,
    /// The billing period of `period_cells`.
    pub period: Option<Period>,
    /// The period's cells so far (the sum of its committed batches' cells).
    pub period_cells: Option<CellEnergy>,
    /// The privacy accountant (created with the first batch).
    pub accountant: Option<PrivacyAccountant>,
}

impl Default for LaneState {
    fn default() -> Self {
        Self {
            next_sequence: 1,
            last_reading: None,
            register: WhRegister::new(),
            period: None,
            period_cells: None,
            accountant: None,
        }
    }
}

/// One batch, fully built: what is queued and then sent as an `UploadBatch`.
#[derive(Clone, Debug, PartialEq)]
pub struct SealedBatch {
    /// 1, 2, 3, … per meter.
    pub sequence: u64,
    /// The billing period.
    pub period: Period,
    /// Start of the first reading.
    pub start: NaiveDateTime,
    /// End (exclusive) of the last reading.
    pub end: NaiveDateTime,
    /// The UTC offset of `start` and `end` (UTC when the source's offset is unknown, as for
    /// the UCI data: the meter's wall-clock time is then sent as if it were UTC).
    pub utc_offset: FixedOffset,
    /// Readings in the batch.
    pub readings: u32,
    /// The billing packing group.
    pub billing_group: u32,
    /// The meter's block position in its group.
    pub billing_position: u32,
    /// The billing lane ciphertext (the period-to-date cells), serialized.
    pub billing_lane: Vec<u8>,
    /// The analytics lane ciphertext, serialized.
    pub analytics_lane: Vec<u8>,
    /// ε charged for the analytics lane.
    pub epsilon_spent: f64,
    /// The analytics lane's distributed-noise plan, signed with the batch.
    pub noise: Option<NoisePlanStatement>,
}

impl SealedBatch {
    /// Whether this batch closes its billing period: its end is the period's end (the first
    /// instant of the next month), so its billing lane holds the whole period.
    pub fn closes_period(&self) -> bool {
        self.end == self.period.end()
    }

    /// The BLAKE3 digest of the billing lane's bytes, as recorded in the batch's receipt.
    pub fn billing_lane_blake3(&self) -> [u8; 32] {
        *blake3::hash(&self.billing_lane).as_bytes()
    }

    /// The batch's receipt; see the [module docs](self#receipts).
    pub fn receipt(&self) -> Receipt {
        Receipt {
            sequence: self.sequence,
            period: self.period,
            billing_lane_blake3: self.billing_lane_blake3(),
            billing_group: self.billing_group,
            billing_position: self.billing_position,
            closes_period: self.closes_period(),
        }
    }

    /// The BLAKE3 digest of the batch's content (every field but the sequence; the noise plan
    /// only when there is one), hex: the queue stores it and checks it before sending.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.period.to_string().as_bytes());
        h.update(self.start.to_string().as_bytes());
        h.update(self.end.to_string().as_bytes());
        h.update(&self.utc_offset.local_minus_utc().to_le_bytes());
        h.update(&self.readings.to_le_bytes());
        h.update(&self.billing_group.to_le_bytes());
        h.update(&self.billing_position.to_le_bytes());
        h.update(&(self.billing_lane.len() as u64).to_le_bytes());
        h.update(&self.billing_lane);
        h.update(&(self.analytics_lane.len() as u64).to_le_bytes());
        h.update(&self.analytics_lane);
        h.update(&self.epsilon_spent.to_le_bytes());
        // Only when present, so that digests stored before plans existed still verify.
        if let Some(plan) = &self.noise {
            h.update(b"noise plan");
            h.update(&plan.group_size.to_le_bytes());
            h.update(&plan.tolerated.to_le_bytes());
            h.update(&plan.sensitivity_wh.to_le_bytes());
            h.update(&plan.epsilon.to_le_bytes());
            h.update(&(plan.window_start.len() as u64).to_le_bytes());
            h.update(plan.window_start.as_bytes());
            h.update(&plan.interval_seconds.to_le_bytes());
            h.update(&plan.window_slots.to_le_bytes());
            h.update(&plan.first_slot.to_le_bytes());
            h.update(&plan.slot_count.to_le_bytes());
        }
        h.finalize().to_hex().to_string()
    }
}

/// What [`BatchBuilder::build`] returns: the batch, the lane state after it and the privacy
/// ledger's entries for its readings, committed together
/// ([`StateStore::commit_batch`](crate::queue::StateStore::commit_batch)).
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltBatch {
    /// The batch.
    pub batch: SealedBatch,
    /// The lane state after it.
    pub next: LaneState,
    /// Its readings per day at the analytics lane's ε (see [`crate::privacy`]).
    pub ledger: Vec<LedgerEntry>,
    /// Its readings as queued, stored with it for the household's own views (table
    /// `readings`, read by [`StateReader`](crate::dashboard::store::StateReader)).
    pub readings: Vec<QueuedReading>,
}

/// One reading as a batch carried it: what the household dashboard and the Green Button export
/// show (table `readings` of the state database, written with the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedReading {
    /// The interval's start (the meter's wall-clock time).
    pub start: NaiveDateTime,
    /// Whole Wh after the meter's register (the billing lane's energy).
    pub energy: Wh,
    /// The interval's length in seconds.
    pub interval_s: u32,
    /// What the analytics lane carried for it: min(energy, Δ) plus this meter's noise share.
    pub analytics: Option<i64>,
    /// The batch's sequence.
    pub sequence: u64,
}

/// What the key authority records for a batch (`seer.v1.Receipts/Record`, with the meter id):
/// the batch's billing lane, by digest, and where it belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The batch's sequence.
    pub sequence: u64,
    /// The billing period.
    pub period: Period,
    /// BLAKE3 of the billing lane's serialized ciphertext.
    pub billing_lane_blake3: [u8; 32],
    /// The billing packing group.
    pub billing_group: u32,
    /// The meter's block position in its group.
    pub billing_position: u32,
    /// Whether the batch closes its period ([`SealedBatch::closes_period`]).
    pub closes_period: bool,
}

/// The default ε per reading of the analytics lane (`--epsilon`, and the default monthly
/// budgets, ε × 2976): [`seer_core::dp::DEFAULT_EPSILON_PER_READING`], the ε at which a
/// 1,000-home group's released hourly total is within ±2 % of its load in 95 % of hours under
/// the default plan (derivation and measurements in `seer_core::dp::defaults`).
pub const DEFAULT_EPSILON: f64 = seer_core::dp::DEFAULT_EPSILON_PER_READING;

/// The default clamp Δ of the analytics lane (`--sensitivity-wh`), in Wh per 15-minute
/// reading: the most a household connection can deliver in 15 minutes. A single-phase 230 V
/// supply with a 60 A main fuse (the 10–60 A whole-current meter of Indian single-phase
/// homes) delivers at most 230 V × 60 A = 13.8 kW, i.e. 3450 Wh in a quarter hour; a reading
/// above it is clamped. The value is [`seer_core::dp::DEFAULT_SENSITIVITY_WH`], where the
/// derivation is checked.
pub const DEFAULT_SENSITIVITY_WH: i64 = seer_core::dp::DEFAULT_SENSITIVITY_WH;

/// The privacy settings of the analytics lane.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrivacySettings {
    /// ε per reading (of the group's released total).
    pub epsilon: Epsilon,
    /// The clamp bound Δ (the sensitivity), Wh per reading.
    pub sensitivity: Wh,
    /// The ε budget per calendar month.
    pub monthly_budget: Epsilon,
    /// Meters in the noise group (the billing group) the shares are sized for; `None`: the
    /// billing layout's capacity, the homes of a full billing group.
    pub noise_group_size: Option<u32>,
    /// Meters of the noise group that may be absent or collude; `None`: a tenth of the group,
    /// rounded down.
    pub noise_tolerated: Option<u32>,
}

impl PrivacySettings {
    /// The share plan of these settings for billing groups of `capacity` homes: the group size
    /// (default `capacity`; at most `capacity`, since the noise group is the billing group)
    /// and the tolerance (default ⌊n/10⌋), validated by [`SharePlan::try_new`].
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] naming the group size or the tolerance.
    pub fn share_plan(&self, capacity: usize) -> Result<SharePlan, Error> {
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
        let n = self.noise_group_size.unwrap_or(capacity);
        if n > capacity {
            return Err(Error::InvalidSetting {
                setting: "noise group size",
                reason: format!(
                    "{n} meters: the noise group is the billing group, which holds at most \
                     {capacity} homes"
                ),
            });
        }
        let t = self.noise_tolerated.unwrap_or(n / 10);
        let setting = if !(1..=MAX_GROUP_SIZE).contains(&n) {
            "noise group size"
        } else if t >= n {
            "noise tolerated"
        } else {
            "sensitivity"
        };
        SharePlan::try_new(n, t, self.sensitivity, self.epsilon).map_err(|e| {
            Error::InvalidSetting {
                setting,
                reason: e.to_string(),
            }
        })
    }
}

/// What a [`BatchBuilder`] needs to know about the meter.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchConfig {
    /// The meter's id (the privacy accountant's owner).
    pub meter_id: String,
    /// The meter's home number in the deployment (its billing block: see
    /// [`BillingLayout::locate`]).
    pub home_index: usize,
    /// The grid of the readings.
    pub interval: Interval,
    /// The UTC offset of the readings' wall-clock times, if known.
    pub utc_offset: Option<FixedOffset>,
    /// Days per batch window, `1 ..= 31`.
    pub batch_days: u32,
    /// The analytics lane's privacy settings.
    pub privacy: PrivacySettings,
}

/// Builds batches for one meter: holds the encryptor, the billing layout and the noise.
pub struct BatchBuilder {
    config: BatchConfig,
    ctx: CkksContext,
    encryptor: Encryptor,
    layout: BillingLayout,
    home: HomeSlot,
    noise: AnalyticsNoise,
    plan: SharePlan,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("config", &self.config)
            .field("home", &self.home)
            .field("noise", &self.noise)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl BatchBuilder {
    /// A builder for the meter of `config`. `noise` is [`BatchBuilder::os_noise`] in
    /// production (tests inject a seeded generator); its mechanism must use `config`'s ε and
    /// sensitivity.
    ///
    /// # Errors
    /// When the home index does not fit the wire format, the batch length is out of range, the
    /// mechanism does not match the settings, or the noise group is invalid
    /// ([`PrivacySettings::share_plan`]).
    pub fn try_new(
        config: BatchConfig,
        ctx: &CkksContext,
        encryptor: Encryptor,
        layout: BillingLayout,
        noise: AnalyticsNoise,
    ) -> Result<Self, Error> {
        let home = layout.locate(config.home_index);
        if u32::try_from(home.group).is_err() {
            return Err(Error::InvalidSetting {
                setting: "home index",
                reason: format!(
                    "{} is beyond the wire format's packing groups",
                    config.home_index
                ),
            });
        }
        if !(1..=MAX_BATCH_DAYS).contains(&config.batch_days) {
            return Err(Error::InvalidSetting {
                setting: "batch days",
                reason: format!("{} is not in 1..={MAX_BATCH_DAYS}", config.batch_days),
            });
        }
        let m = noise.mechanism();
        if m.epsilon() != config.privacy.epsilon || m.sensitivity() != config.privacy.sensitivity {
            return Err(Error::InvalidSetting {
                setting: "noise",
                reason: "the noise mechanism does not match the privacy settings".into(),
            });
        }
        let plan = config.privacy.share_plan(layout.capacity())?;
        Ok(Self {
            config,
            ctx: ctx.clone(),
            encryptor,
            layout,
            home,
            noise,
            plan,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// The noise mechanism for `privacy`, seeded from the operating system.
    ///
    /// # Errors
    /// An invalid sensitivity, or no operating-system randomness.
    pub fn os_noise(privacy: &PrivacySettings) -> Result<AnalyticsNoise, Error> {
        let mechanism = LaplaceMechanism::try_new(privacy.sensitivity, privacy.epsilon)?;
        Ok(AnalyticsNoise::from_os_entropy(mechanism)?)
    }

    /// The meter's block.
    pub fn home(&self) -> HomeSlot {
        self.home
    }

    /// The billing layout.
    pub fn layout(&self) -> &BillingLayout {
        &self.layout
    }

    /// The analytics lane's share plan.
    pub fn plan(&self) -> &SharePlan {
        &self.plan
    }

    /// Builds the batch of `readings` (one window's, all after `state.last_reading`), the
    /// state after it and its ledger entries. `state` is not modified; see the
    /// [module docs](self#atomicity).
    ///
    /// CPU-bound (two encryptions): call it from a blocking task in async code.
    ///
    /// # Errors
    /// Readings that are empty, out of order, span two windows or precede the state; a
    /// privacy budget that would be exceeded (nothing is charged or drawn then); a window
    /// beyond the context's slots or readings off its interval grid; a batch beyond the billing
    /// circuit's range.
    pub fn build(
        &mut self,
        state: &LaneState,
        readings: &[MeterReading],
    ) -> Result<BuiltBatch, Error> {
        let batch_days = self.config.batch_days;
        let (first, last) = match (readings.first(), readings.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => {
                return Err(Error::InvalidSetting {
                    setting: "readings",
                    reason: "a batch needs at least one reading".into(),
                });
            }
        };
        let window = window_of(first.start, batch_days)?;
        if last.start >= window.1 {
            return Err(Error::InvalidSetting {
                setting: "readings",
                reason: format!(
                    "readings from {} to {} span more than the window ending {}",
                    first.start, last.start, window.1
                ),
            });
        }
        if let Some(previous) = state.last_reading
            && first.start <= previous
        {
            return Err(Error::InvalidSetting {
                setting: "readings",
                reason: format!(
                    "reading at {} is not after the last one queued, at {previous}",
                    first.start
                ),
            });
        }
        let tariff = self.layout.tariff();
        let period = Period::containing(first.start.date())?;
        let mut accumulator = match (&state.period, &state.period_cells) {
            (Some(p), Some(cells)) if *p == period => {
                SlabAccumulator::resume(tariff, cells.clone(), state.last_reading)?
            }
            _ => SlabAccumulator::new(tariff),
        };
        let mut register = state.register;
        let step = self.config.interval.as_time_delta();
        let step_s = step.num_seconds();
        let end = last.start + step;
        // The analytics lane's layout: interval i of the window in slot i (module docs).
        let window_intervals = (window.1 - window.0).num_seconds() / step_s;
        let window_slots = usize::try_from(window_intervals)
            .ok()
            .filter(|w| *w <= self.ctx.slots())
            .ok_or_else(|| Error::InvalidSetting {
                setting: "batch days",
                reason: format!(
                    "a window of {window_intervals} intervals does not fit {} slots",
                    self.ctx.slots()
                ),
            })?;
        let interval = self.config.interval;
        let slot_of = |t: NaiveDateTime| -> Result<usize, Error> {
            let offset = (t - window.0).num_seconds();
            if offset < 0 || offset % step_s != 0 {
                return Err(Error::InvalidSetting {
                    setting: "readings",
                    reason: format!(
                        "reading at {t} is not on the {interval} grid of the window from {}",
                        window.0
                    ),
                });
            }
            // 0 ≤ offset / step_s < window_slots (a usize).
            Ok(usize::try_from(offset / step_s).unwrap_or(usize::MAX))
        };
        let out_of_order = |t: NaiveDateTime| Error::InvalidSetting {
            setting: "readings",
            reason: format!("reading at {t} is out of order"),
        };
        let first_slot = slot_of(first.start)?;
        let slot_count = slot_of(last.start)?
            .checked_sub(first_slot)
            .ok_or_else(|| out_of_order(last.start))?
            + 1;
        let mut span: Vec<Option<Wh>> = vec![None; slot_count];
        let mut days: Vec<NaiveDate> = Vec::with_capacity(readings.len());
        for r in readings {
            let e = register.advance(r.energy);
            accumulator.push(r.start, e)?;
            let slot = slot_of(r.start)?
                .checked_sub(first_slot)
                .and_then(|j| span.get_mut(j))
                .filter(|slot| slot.is_none())
                .ok_or_else(|| out_of_order(r.start))?;
            *slot = Some(e);
            days.push(r.start.date());
        }
        // The billing lane carries the period to date (see the module docs), not the batch's
        // own cells.
        let cells = accumulator.period_cells().clone();

        // The analytics lane: charge and noise (the accountant is a copy until committed).
        let mut accountant = match &state.accountant {
            Some(a) => a.clone(),
            None => PrivacyAccountant::new(
                self.config.meter_id.clone(),
                BudgetPeriod::Month,
                self.config.privacy.monthly_budget,
                period.first_day(),
            ),
        };
        let lane =
            self.noise
                .shared_lane(&self.plan, &span, first.start.date(), &mut accountant)?;
        // Slots outside the span stay exactly 0.
        let mut analytics = vec![0.0; window_slots];
        for (slot, noisy) in analytics[first_slot..].iter_mut().zip(lane.readings()) {
            // |noisy| is far below 2^53 for any sensible sensitivity and ε.
            *slot = noisy.get() as f64;
        }
        let utc_offset = self.config.utc_offset.unwrap_or_else(|| Utc.fix());
        let to_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let noise = NoisePlanStatement {
            group_size: self.plan.group_size(),
            tolerated: self.plan.tolerated(),
            sensitivity_wh: self.plan.sensitivity().get(),
            epsilon: self.plan.epsilon().get(),
            window_start: wire_time(window.0, utc_offset),
            interval_seconds: self.config.interval.as_secs(),
            window_slots: to_u32(window_slots),
            first_slot: to_u32(first_slot),
            slot_count: to_u32(slot_count),
        };

        let billing_ct = self
            .layout
            .encrypt_batch(&self.encryptor, self.home.position, &cells)?;
        let analytics_ct = self.encryptor.encrypt_values(&analytics)?;
        let batch = SealedBatch {
            sequence: state.next_sequence,
            period,
            start: first.start,
            end,
            utc_offset,
            readings: u32::try_from(readings.len()).unwrap_or(u32::MAX),
            billing_group: u32::try_from(self.home.group).unwrap_or(u32::MAX),
            billing_position: u32::try_from(self.home.position).unwrap_or(u32::MAX),
            // Uncompressed: the utility and the key authority parse every closing lane at each
            // billing run, and an uncompressed lane loads as a copy (≈ 15 % more bytes).
            billing_lane: billing_ct.to_bytes_uncompressed(&self.ctx)?,
            analytics_lane: analytics_ct.to_bytes(&self.ctx)?,
            epsilon_spent: lane.epsilon_spent(),
            noise: Some(noise),
        };
        let next = LaneState {
            next_sequence: state.next_sequence + 1,
            last_reading: Some(last.start),
            register,
            period: Some(period),
            period_cells: Some(accumulator.period_cells().clone()),
            accountant: Some(accountant),
        };
        let ledger =
            LedgerEntry::per_day(PrivacyLane::Analytics, self.config.privacy.epsilon, days);
        let queued = span
            .iter()
            .zip(lane.readings())
            .enumerate()
            .filter_map(|(j, (wh, noisy))| {
                let start = first.start + step * i32::try_from(j).ok()?;
                wh.map(|energy| QueuedReading {
                    start,
                    energy,
                    interval_s: interval.as_secs(),
                    analytics: Some(noisy.get()),
                    sequence: batch.sequence,
                })
            })
            .collect();
        Ok(BuiltBatch {
            batch,
            next,
            ledger,
            readings: queued,
        })
    }
}

/// The first day of the month of `date` (for messages and budgets).
pub fn month_start(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

/// The register remainder as stored (joules below one Wh).
pub(crate) fn register_remainder(register: &WhRegister) -> i64 {
    register.remainder().get()
}

/// A register from its stored remainder.
pub(crate) fn register_from(remainder: i64) -> Result<WhRegister, Error> {
    Ok(WhRegister::resume(Joules::try_new(remainder)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn windows_are_days_by_default_and_stop_at_month_ends() {
        assert_eq!(
            window_of(at("2024-01-31 23:45"), 1).unwrap(),
            (at("2024-01-31 00:00"), at("2024-02-01 00:00"))
        );
        // Seven-day windows: the month's fifth window is cut at its end.
        assert_eq!(
            window_of(at("2024-01-30 12:00"), 7).unwrap(),
            (at("2024-01-29 00:00"), at("2024-02-01 00:00"))
        );
        assert_eq!(
            window_of(at("2024-02-29 12:00"), 31).unwrap(),
            (at("2024-02-01 00:00"), at("2024-03-01 00:00"))
        );
    }

    #[test]
    fn only_a_batch_ending_at_the_month_end_closes_its_period() {
        let batch = |start: &str, end: &str| SealedBatch {
            sequence: 1,
            period: Period::containing(at(start).date()).unwrap(),
            start: at(start),
            end: at(end),
            utc_offset: Utc.fix(),
            readings: 1,
            billing_group: 0,
            billing_position: 5,
            billing_lane: vec![1, 2, 3],
            analytics_lane: vec![4],
            epsilon_spent: 0.05,
            noise: None,
        };
        assert!(batch("2024-02-29 00:00", "2024-03-01 00:00").closes_period());
        assert!(batch("2024-12-31 23:45", "2025-01-01 00:00").closes_period());
        // Ends 15 minutes early (a missing last reading) or mid-month: not closing.
        assert!(!batch("2024-02-29 00:00", "2024-02-29 23:45").closes_period());
        assert!(!batch("2024-02-01 00:00", "2024-02-02 00:00").closes_period());
        let b = batch("2024-01-31 00:00", "2024-02-01 00:00");
        let r = b.receipt();
        assert_eq!(r.sequence, 1);
        assert_eq!(r.period.to_string(), "2024-01");
        assert_eq!(r.billing_lane_blake3, *blake3::hash(&[1, 2, 3]).as_bytes());
        assert_eq!((r.billing_group, r.billing_position), (0, 5));
        assert!(r.closes_period);
    }

    #[test]
    fn split_windows_never_spans_months() {
        let mut t = at("2024-01-25 00:00");
        let mut readings = Vec::new();
        while t < at("2024-02-10 00:00") {
            readings.push(MeterReading {
                start: t,
                energy: Joules::try_new(3_600).unwrap(),
            });
            t += TimeDelta::hours(6);
        }
        let runs = split_windows(&readings, 10).unwrap();
        // Jan 21–30 (from the 25th), Jan 31 (the month's short last window), Feb 1–10.
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].last().unwrap().start, at("2024-01-30 18:00"));
        assert_eq!(runs[1].len(), 4);
        assert_eq!(runs[2][0].start, at("2024-02-01 00:00"));
        let total: usize = runs.iter().map(|r| r.len()).sum();
        assert_eq!(total, readings.len());
    }
}
