//! Monthly statements as PDFs (`seer-statement`) from what the utility holds: a home's released
//! bill (its Wh per tariff cell, priced with the tariff in force, and the amount the key
//! authority released), the ε its batches of the month declared, and when the bill was
//! released. One home's statement is served by the dashboard (`/homes/{meter}/statement.pdf`);
//! `utility-server statements --period P --group G --out DIR` writes one per home of a billing
//! group with a released bill.

use std::path::{Path, PathBuf};

use chrono::Utc;
use seer_core::tariff::Tariff;
use seer_core::{MeterId, Period};
use serde::Serialize;

use crate::store::{Store, StoreError};

/// Why statements could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The statement could not be rendered.
    #[error("rendering the statement of {meter_id} for {period}: {source}")]
    Render {
        /// The home.
        meter_id: String,
        /// The month.
        period: Period,
        /// The renderer's error.
        source: seer_statement::StatementError,
    },
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// The statement PDF of `meter_id` for `period`, or `None` when no bill of that month was
/// released.
///
/// # Errors
/// [`StatementError::Store`], [`StatementError::Render`].
pub async fn home_statement(
    store: &Store,
    tariff: &Tariff,
    meter_id: &MeterId,
    period: Period,
) -> Result<Option<Vec<u8>>, StatementError> {
    let Some(bill) = store
        .meter_bills(meter_id, Some(period))
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let summary = store.usage_summary(meter_id, period).await?;
    let cells = bill.slabs.iter().map(|s| (s.label.clone(), s.wh));
    let slabs = seer_statement::SlabLine::priced_or_unpriced(tariff, cells);
    let released = chrono::DateTime::from_timestamp_micros(bill.released_at_us).unwrap_or_default();
    let document = seer_statement::Statement {
        meter_id: meter_id.clone(),
        period,
        tariff_name: tariff.name().to_owned(),
        slabs,
        total_paise: bill.amount_paise,
        // The utility holds no reading: no daily usage (the household's own dashboard has it).
        daily_kwh: Vec::new(),
        privacy: seer_statement::PrivacyFacts {
            epsilon_spent: summary.epsilon_spent,
            epsilon_budget: None,
            releases: vec![seer_statement::ReleaseFact {
                what: format!("bill {period}"),
                when: released,
            }],
        },
        issued_at: Utc::now(),
    };
    seer_statement::render_pdf(&document)
        .map(Some)
        .map_err(|source| StatementError::Render {
            meter_id: meter_id.as_str().to_owned(),
            period,
            source,
        })
}

/// One statement written by [`group_statements`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WrittenStatement {
    /// The home.
    pub meter_id: String,
    /// The file.
    pub file: PathBuf,
    /// The released amount it states, paise.
    pub amount_paise: i64,
}

/// What [`group_statements`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupStatements {
    /// The month.
    pub period: String,
    /// The billing group.
    pub group: u32,
    /// One per home with a released bill, by meter.
    pub written: Vec<WrittenStatement>,
    /// Homes of the group with batches in the month but no released bill (no statement).
    pub without_bill: Vec<String>,
}

/// Writes `statement-METER-PERIOD.pdf` into `out` (created if missing) for every home of
/// billing group `group` with batches in `period` and a released bill; files are created
/// private (0600: a statement is personal data) and an existing one is replaced.
///
/// # Errors
/// [`StatementError`].
pub async fn group_statements(
    store: &Store,
    tariff: &Tariff,
    period: Period,
    group: u32,
    out: &Path,
) -> Result<GroupStatements, StatementError> {
    std::fs::create_dir_all(out).map_err(|source| StatementError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut report = GroupStatements {
        period: period.to_string(),
        group,
        written: Vec::new(),
        without_bill: Vec::new(),
    };
    for meter_id in store.group_meters(period, group).await? {
        let Some(pdf) = home_statement(store, tariff, &meter_id, period).await? else {
            report.without_bill.push(meter_id.as_str().to_owned());
            continue;
        };
        let amount_paise = store
            .meter_bills(&meter_id, Some(period))
            .await?
            .first()
            .map_or(0, |bill| bill.amount_paise);
        let file = out.join(format!("statement-{}-{period}.pdf", meter_id.as_str()));
        write_private(&file, &pdf)?;
        tracing::info!(meter = meter_id.as_str(), file = %file.display(), "statement written");
        report.written.push(WrittenStatement {
            meter_id: meter_id.as_str().to_owned(),
            file,
            amount_paise,
        });
    }
    Ok(report)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StatementError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let error = |source| StatementError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)
}
