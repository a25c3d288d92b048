//! The key authority's audit log read straight from its SQLite database (read-only): what the
//! end-to-end tests check every refusal and grant against.

use std::path::Path;

use anyhow::Context as _;

/// One audit entry: request kind, meter id, decision (`granted` / `refused`), reason.
pub type AuditRow = (String, Option<String>, String, Option<String>);

/// Every entry of the audit database at `path`, in sequence order.
///
/// # Errors
/// When the database cannot be opened or read.
pub async fn audit_entries(path: &Path) -> anyhow::Result<Vec<AuditRow>> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(path).read_only(true))
        .await
        .with_context(|| format!("opening the audit database {}", path.display()))?;
    let rows = sqlx::query_as(
        "SELECT request_kind, meter_id, decision, reason FROM audit_entries ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .context("reading the audit entries")?;
    pool.close().await;
    Ok(rows)
}

/// Whether `audit` holds a refusal of `kind` for `meter` (any meter when `None`) whose reason
/// contains `needle`.
#[must_use]
pub fn has_refusal(audit: &[AuditRow], kind: &str, meter: Option<&str>, needle: &str) -> bool {
    audit.iter().any(|(k, m, decision, reason)| {
        k == kind
            && decision == "refused"
            && (meter.is_none() || m.as_deref() == meter)
            && reason.as_deref().is_some_and(|r| r.contains(needle))
    })
}

/// Number of granted entries of `kind` in `audit`.
#[must_use]
pub fn grants(audit: &[AuditRow], kind: &str) -> usize {
    audit
        .iter()
        .filter(|(k, _, decision, _)| k == kind && decision == "granted")
        .count()
}
