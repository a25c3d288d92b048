//! Which homes a run bills, where their readings come from, and their plaintext bills.
//!
//! # Homes from real data
//!
//! The UCI data set holds one household's minutes from 2006-12-16 to 2010-11-26. A run bills
//! one period, `--month` (2010-01 by default), and its `--homes` UCI homes are that calendar
//! month of the household in consecutive years ending with the period's year, each replayed as
//! the period: by default the household's January of 2010, 2009, 2008 and 2007, re-dated
//! by whole years (`meter-client run --replay-as`) so that all four share one billing period
//! and one packing group. Labels say so ("UCI household, 2008-01 replayed as 2010-01"). A
//! 29 February has no day in a common year's February: it is left out of the replay and the
//! label says so. `--synthetic N` adds N deterministic synthetic homes (meter-client's
//! `synthetic:SEED:HOME`) for the same period, e.g. to show many homes packed into one
//! ciphertext.
//!
//! # The plaintext twin
//!
//! Each home's plaintext bill is computed from the very readings its meter encrypts: the
//! launcher selects them with meter-client's own source code
//! ([`OpenedSource::select`](meter_client::source::OpenedSource::select), the same range and
//! re-dating the meter is given), turns them into whole Wh with the meter's
//! [`WhRegister`] and bills them with seer-core's exact tariff ([`Tariff::bill`]). The same
//! whole-Wh readings, clamped to the analytics lane's Δ and summed per hour over a group's
//! homes ([`Home::hourly_clamped_wh`]), are the plaintext twin of the group's released hourly
//! totals. Nothing of it reaches the three programs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset as _, TimeDelta, Timelike as _, Utc};
use meter_client::source::{DateRange, MonthShift, OpenedSource, SourceSpec, open};
use seer_core::data::Period;
use seer_core::tariff::{Bill, Tariff, WhRegister};
use seer_core::units::Wh;

/// Where a home's readings come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HomeSource {
    /// The UCI household's readings of `month`, replayed as the run's period.
    Uci {
        /// The source month.
        month: Period,
        /// Whether a 29 February was left out (replayed into a common year).
        leap_day_left_out: bool,
    },
    /// Synthetic home `home` of population `seed`.
    Synthetic {
        /// The population seed.
        seed: u64,
        /// The home number in the population.
        home: u32,
    },
}

/// One home of the run.
#[derive(Clone, Debug)]
pub struct Home {
    /// The home's number in the deployment (its billing block, from 0).
    pub index: u64,
    /// Its meter id.
    pub meter_id: String,
    /// Where its readings come from.
    pub source: HomeSource,
    /// The meter's `--source`.
    pub spec: SourceSpec,
    /// The source dates read, and the re-dating into the period.
    pub range: DateRange,
    /// The meter's `--replay-as`, when the source month is not the period.
    pub replay_as: Option<Period>,
    /// Readings (15-minute intervals) the meter sends.
    pub readings: usize,
    /// Intervals skipped for missing source minutes.
    pub skipped_intervals: usize,
    /// The plaintext bill of those readings.
    pub plaintext: Bill,
    /// Those readings as the meter's register turns them into whole Wh, in time order: (the
    /// interval's start in the meter's wall-clock time, its energy).
    pub energy: Vec<(NaiveDateTime, Wh)>,
    /// The UTC offset of those wall-clock times (UTC when the source states none, as the
    /// meter assumes).
    pub utc_offset: FixedOffset,
}

impl Home {
    /// The home's readings clamped to `sensitivity` (as its analytics lane carries them before
    /// noise) and summed per hour of its wall-clock time, keyed by the hour's start in UTC.
    /// Hours without a reading are absent.
    pub fn hourly_clamped_wh(&self, sensitivity: Wh) -> BTreeMap<DateTime<Utc>, i64> {
        let mut hours = BTreeMap::new();
        for (start, wh) in &self.energy {
            let Some(hour) = start.with_minute(0).and_then(|t| t.with_second(0)) else {
                continue;
            };
            let utc = hour
                .and_local_timezone(self.utc_offset)
                .single()
                .map_or_else(|| hour.and_utc(), |t| t.with_timezone(&Utc));
            *hours.entry(utc).or_insert(0) += wh.get().min(sensitivity.get());
        }
        hours
    }

    /// A human description of the home's readings.
    pub fn label(&self, period: Period) -> String {
        match &self.source {
            HomeSource::Uci {
                month,
                leap_day_left_out,
            } => {
                let leap = if *leap_day_left_out {
                    " (its 29 February left out)"
                } else {
                    ""
                };
                if *month == period {
                    format!("UCI household, {month}{leap}")
                } else {
                    format!("UCI household, {month} replayed as {period}{leap}")
                }
            }
            HomeSource::Synthetic { seed, home } => {
                format!("synthetic home {home} (seed {seed}), {period}")
            }
        }
    }
}

/// What a run bills.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The billing period.
    pub period: Period,
    /// The homes, in home-index order.
    pub homes: Vec<Home>,
    /// The tariff the plaintext bills use (the programs' default).
    pub tariff: Tariff,
}

/// The homes to plan.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// The UCI file.
    pub data: PathBuf,
    /// The billing period.
    pub period: Period,
    /// UCI homes: the period's calendar month in this many consecutive years ending with the
    /// period's year.
    pub uci_homes: usize,
    /// Synthetic homes after the UCI ones.
    pub synthetic_homes: usize,
    /// The synthetic population's seed.
    pub seed: u64,
}

/// The meter id of home `index`.
pub fn meter_id(index: u64) -> String {
    format!("M-{index:04}")
}

/// Plans the homes and computes their plaintext bills (blocking: reads the UCI file once).
///
/// # Errors
/// When there are no homes, the data cannot be read, a source month is not in the data, or
/// the data does not reach the end of a month (its meter could not close it).
pub fn plan(options: &PlanOptions) -> Result<Plan> {
    if options.uci_homes + options.synthetic_homes == 0 {
        bail!("nothing to run: ask for at least one home (--homes or --synthetic)");
    }
    let tariff = Tariff::bescom();
    let period = options.period;
    let mut homes = Vec::new();
    if options.uci_homes > 0 {
        let spec = SourceSpec::Uci(options.data.clone());
        let opened = open(&spec).with_context(|| {
            format!(
                "loading {} (scripts/fetch-data.sh fetches the UCI data set)",
                options.data.display()
            )
        })?;
        for k in 0..options.uci_homes {
            let index = homes.len() as u64;
            let years_back = i32::try_from(k).context("too many homes")?;
            let month = Period::try_new(period.year() - years_back, period.month())
                .with_context(|| format!("--homes {} goes back too far", options.uci_homes))?;
            homes.push(uci_home(
                &opened,
                &spec,
                &options.data,
                month,
                period,
                index,
                &tariff,
            )?);
        }
    }
    for k in 0..options.synthetic_homes {
        let index = homes.len() as u64;
        let home = u32::try_from(index).context("too many homes")?;
        let spec = SourceSpec::Synthetic {
            seed: options.seed,
            home,
        };
        let range = DateRange {
            from: Some(period.first_day()),
            until: Some(period.end().date()),
            shift: MonthShift::NONE,
        };
        let opened = open(&spec)?;
        let stream = opened.select(range)?;
        let (energy, plaintext) =
            bill(&stream, &tariff).with_context(|| format!("synthetic home {k}"))?;
        homes.push(Home {
            index,
            meter_id: meter_id(index),
            source: HomeSource::Synthetic {
                seed: options.seed,
                home,
            },
            spec,
            range,
            replay_as: None,
            readings: stream.readings().len(),
            skipped_intervals: stream.skipped_intervals(),
            plaintext,
            energy,
            utc_offset: utc_offset(&stream),
        });
    }
    Ok(Plan {
        period,
        homes,
        tariff,
    })
}

fn uci_home(
    opened: &OpenedSource,
    spec: &SourceSpec,
    data: &Path,
    month: Period,
    period: Period,
    index: u64,
    tariff: &Tariff,
) -> Result<Home> {
    // A 29 February cannot be replayed into a common year: read the source month only as far
    // as the period has days.
    let days = month.num_days().min(period.num_days());
    let until = month.first_day() + TimeDelta::days(i64::from(days));
    let leap_day_left_out = days < month.num_days();
    let mut range = DateRange {
        from: Some(month.first_day()),
        until: Some(until),
        shift: MonthShift::NONE,
    };
    let replay_as = (month != period).then_some(period);
    if let Some(target) = replay_as {
        range = range.try_replay_as(target)?;
    }
    let stream = opened.select(range)?;
    let coverage = || match opened {
        OpenedSource::Series(series) => format!(
            "{} covers {} to {}",
            data.display(),
            series
                .readings()
                .first()
                .map(|r| r.start.to_string())
                .unwrap_or_default(),
            series
                .readings()
                .last()
                .map(|r| r.start.to_string())
                .unwrap_or_default()
        ),
        OpenedSource::Synthetic(_) => String::new(),
    };
    let Some(last) = stream.readings().last() else {
        bail!(
            "the UCI household has no complete 15-minute reading in {month} ({}): choose \
             another --month or fewer --homes",
            coverage()
        );
    };
    if last.start + stream.interval().as_time_delta() != period.end() {
        bail!(
            "the UCI household's readings of {month} stop before the end of {period} (the \
             last complete quarter hour replayed starts at {}; {}): its meter could not close \
             the billing period; choose another --month or fewer --homes",
            last.start,
            coverage()
        );
    }
    let readings = stream.readings().len();
    let skipped = stream.skipped_intervals();
    let (energy, plaintext) = bill(&stream, tariff)?;
    Ok(Home {
        index,
        meter_id: meter_id(index),
        source: HomeSource::Uci {
            month,
            leap_day_left_out,
        },
        spec: spec.clone(),
        range,
        replay_as,
        readings,
        skipped_intervals: skipped,
        plaintext,
        energy,
        utc_offset: utc_offset(&stream),
    })
}

/// The UTC offset of a stream's wall-clock times, UTC when it states none (as the meter
/// assumes).
fn utc_offset(stream: &meter_client::source::ReadingStream) -> FixedOffset {
    stream.utc_offset().unwrap_or_else(|| Utc.fix())
}

/// The plaintext bill of a stream's readings: whole Wh through the meter's register (the
/// sub-Wh remainder carried from reading to reading, as the meter does), then the exact
/// tariff. The stream must hold one billing period. Returns the whole-Wh readings with the
/// bill.
fn bill(
    stream: &meter_client::source::ReadingStream,
    tariff: &Tariff,
) -> Result<(Vec<(NaiveDateTime, Wh)>, Bill)> {
    let mut register = WhRegister::new();
    let readings = stream
        .readings()
        .iter()
        .map(|r| (r.start, register.advance(r.energy)))
        .collect::<Vec<_>>();
    let bill = tariff
        .bill(readings.iter().copied())
        .context("computing the plaintext bill")?;
    Ok((readings, bill))
}
