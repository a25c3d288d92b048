//! `seer audit serve`: the auditor's web view of the key authority's audit log.
//!
//! Every load of `/` fetches the log and verifies it on the auditor's side exactly as
//! `seer audit verify` does ([`crate::audit::verify_collecting`]: every entry hash recomputed,
//! the chain, the head signature with the key authority's public key alone, the saved anchor,
//! which is then advanced), then shows the verdict — head sequence and hash, signature, anchor
//! status, or the first problem — and every entry fetched as a table, filterable by kind and by
//! outcome (`/?kind=bill&outcome=refused`). The "Re-verify" button reloads, so each view is a
//! fresh verification. Nothing is cached: the page never shows a verdict older than itself.
//!
//! Element ids for browser tests: `data-testid="audit-verdict"` (its text starts with
//! `verified` or `NOT verified`), `audit-head-sequence`, `audit-head-hash`,
//! `audit-signature`, `audit-anchor`, `audit-problem`, and one row per entry,
//! `data-testid="audit-entry-SEQ"`, with `data-outcome="granted|refused"` and
//! `data-kind="KIND"`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Html;
use seer_proto::v1;
use seer_web::{Layout, NavItem, escape};
use tokio::sync::Mutex;

use crate::audit::{AuditTarget, Verified, verify_collecting};

/// What the view verifies against.
#[derive(Debug)]
pub struct AuditView {
    target: AuditTarget,
    public_key_pem: String,
    anchor: Option<PathBuf>,
    /// One verification at a time: each may advance the anchor file.
    verifying: Mutex<()>,
}

impl AuditView {
    /// A view of `target`'s log, verified with the key authority's JWT public key
    /// `public_key_pem` (already checked against its fingerprint) and, when given, the
    /// auditor's `anchor` file.
    #[must_use]
    pub fn new(target: AuditTarget, public_key_pem: String, anchor: Option<PathBuf>) -> Self {
        Self {
            target,
            public_key_pem,
            anchor,
            verifying: Mutex::new(()),
        }
    }
}

/// The page's filters: `kind` (exact) and `outcome` (`granted` or `refused`); empty means all.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Filters {
    /// Only entries of this kind.
    #[serde(default)]
    pub kind: String,
    /// Only `granted` or only `refused` entries.
    #[serde(default)]
    pub outcome: String,
}

/// The view's routes (`GET /` and the static stylesheet and script), with the security
/// headers.
pub fn router(view: Arc<AuditView>) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(page))
        .with_state(view)
        .merge(seer_web::page::static_routes())
        .layer(axum::middleware::from_fn(seer_web::headers::secure))
}

const NAV: &[NavItem] = &[NavItem {
    href: "/",
    label: "Audit log",
}];

/// Whether an entry granted what it records.
fn granted(entry: &v1::AuditEntry) -> bool {
    entry.decision == v1::AuditDecision::Granted as i32
}

/// `GET /`.
#[tracing::instrument(skip(view))]
async fn page(State(view): State<Arc<AuditView>>, Query(filters): Query<Filters>) -> Html<String> {
    let mut entries = Vec::new();
    let verdict = {
        let _one_at_a_time = view.verifying.lock().await;
        verify_collecting(
            &view.target,
            &view.public_key_pem,
            view.anchor.as_deref(),
            &mut entries,
        )
        .await
    };
    if let Err(problem) = &verdict {
        tracing::warn!(problem = %format!("{problem:#}"), "the audit log does not verify");
    }
    let body = render(&verdict, view.anchor.is_some(), &entries, &filters);
    Layout {
        app: "SEER auditor",
        nav: NAV,
        active: "/",
        viewer: None,
    }
    .render("Audit log", &body)
}

/// The verdict, the filter form and the entry table.
fn render(
    verdict: &anyhow::Result<Verified>,
    anchored: bool,
    entries: &[v1::AuditEntry],
    filters: &Filters,
) -> String {
    let mut html = String::new();
    match verdict {
        Ok(verified) => {
            let anchor = match (anchored, verified.previous_anchor) {
                (false, _) => "not checked (no --anchor file)".to_owned(),
                (true, None) => format!(
                    "first verification: head {} saved as the anchor",
                    verified.head_sequence
                ),
                (true, Some(previous)) => format!(
                    "saved anchor at sequence {previous} is in the log unchanged; head {} \
                     saved as the new anchor",
                    verified.head_sequence
                ),
            };
            html.push_str(&format!(
                "<section class=\"card\" data-testid=\"audit-verdict\" data-verified=\"true\">\
                 <p><span class=\"badge ok\">verified</span> {entries} entries recomputed \
                 and chained to the signed head.</p>\
                 <table><tbody>\
                 <tr><th>Head sequence</th><td data-testid=\"audit-head-sequence\">{seq}</td></tr>\
                 <tr><th>Head hash</th><td data-testid=\"audit-head-hash\"><code>{hash}</code></td></tr>\
                 <tr><th>Head signature</th><td data-testid=\"audit-signature\">valid \
                 (the key authority's public key)</td></tr>\
                 <tr><th>Anchor</th><td data-testid=\"audit-anchor\">{anchor}</td></tr>\
                 </tbody></table></section>",
                entries = verified.entries_checked,
                seq = verified.head_sequence,
                hash = escape(&verified.head_hash),
                anchor = escape(&anchor),
            ));
        }
        Err(problem) => {
            html.push_str(&format!(
                "<section class=\"card\" data-testid=\"audit-verdict\" data-verified=\"false\">\
                 <p><span class=\"badge alert\">NOT verified</span></p>\
                 <p class=\"alert\" data-testid=\"audit-problem\">{}</p>\
                 <p class=\"muted\">The entries below are those fetched up to the problem; \
                 they are not vouched for.</p></section>",
                escape(&format!("{problem:#}"))
            ));
        }
    }

    // Filters and the re-verify button: a GET form, so the view's URL names its filters.
    let mut kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut kind_options = String::from("<option value=\"\">all kinds</option>");
    for kind in &kinds {
        let selected = if *kind == filters.kind {
            " selected"
        } else {
            ""
        };
        kind_options.push_str(&format!(
            "<option value=\"{k}\"{selected}>{k}</option>",
            k = escape(kind)
        ));
    }
    let mut outcome_options = String::new();
    for (value, label) in [
        ("", "granted and refused"),
        ("granted", "granted"),
        ("refused", "refused"),
    ] {
        let selected = if value == filters.outcome {
            " selected"
        } else {
            ""
        };
        outcome_options.push_str(&format!(
            "<option value=\"{value}\"{selected}>{label}</option>"
        ));
    }
    html.push_str(&format!(
        "<form method=\"get\" action=\"/\" class=\"pager\">\
         <label>Kind <select name=\"kind\" id=\"filter-kind\">{kind_options}</select></label>\
         <label>Outcome <select name=\"outcome\" id=\"filter-outcome\">{outcome_options}</select></label>\
         <button type=\"submit\" id=\"reverify\">Re-verify</button></form>"
    ));

    let shown: Vec<&v1::AuditEntry> = entries
        .iter()
        .filter(|e| filters.kind.is_empty() || e.kind == filters.kind)
        .filter(|e| match filters.outcome.as_str() {
            "granted" => granted(e),
            "refused" => !granted(e),
            _ => true,
        })
        .collect();
    html.push_str(&format!(
        "<p class=\"muted\" data-testid=\"audit-shown\">{} of {} entries shown</p>",
        shown.len(),
        entries.len()
    ));
    html.push_str(
        "<table data-testid=\"audit-entries\"><thead><tr><th class=\"num\">Sequence</th>\
         <th>Time</th><th>Kind</th><th>Caller</th><th>Meter / period</th><th>Outcome</th>\
         <th>Reason</th></tr></thead><tbody>",
    );
    for entry in shown {
        let caller = entry
            .caller
            .as_ref()
            .map_or_else(String::new, |c| format!("{} ({})", c.subject, c.role));
        let subject = match (&entry.meter_id, &entry.period) {
            (Some(meter), Some(period)) => format!("{meter} · {period}"),
            (Some(meter), None) => meter.clone(),
            (None, Some(period)) => period.clone(),
            (None, None) => String::new(),
        };
        let (outcome, badge) = if granted(entry) {
            ("granted", "ok")
        } else {
            ("refused", "alert")
        };
        html.push_str(&format!(
            "<tr data-testid=\"audit-entry-{seq}\" data-outcome=\"{outcome}\" data-kind=\"{kind}\">\
             <td class=\"num\">{seq}</td><td>{time}</td><td>{kind}</td><td>{caller}</td>\
             <td>{subject}</td><td><span class=\"badge {badge}\">{outcome}</span></td>\
             <td>{reason}</td></tr>",
            seq = entry.sequence,
            time = escape(&entry.recorded_at),
            kind = escape(&entry.kind),
            caller = escape(&caller),
            subject = escape(&subject),
            reason = escape(&entry.reason),
        ));
    }
    html.push_str("</tbody></table>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sequence: u64, kind: &str, granted: bool) -> v1::AuditEntry {
        v1::AuditEntry {
            sequence,
            kind: kind.to_owned(),
            decision: if granted {
                v1::AuditDecision::Granted as i32
            } else {
                v1::AuditDecision::Refused as i32
            },
            reason: if granted {
                String::new()
            } else {
                "<wrong lane>".to_owned()
            },
            meter_id: Some("home-1".to_owned()),
            period: Some("2026-11".to_owned()),
            ..Default::default()
        }
    }

    fn verified() -> anyhow::Result<Verified> {
        Ok(Verified {
            entries_checked: 3,
            head_sequence: 3,
            head_hash: "ab".repeat(32),
            previous_anchor: Some(2),
        })
    }

    #[test]
    fn rows_filter_by_kind_and_outcome_and_escape() {
        let entries = [
            entry(1, "bill", true),
            entry(2, "bill", false),
            entry(3, "forecast", true),
        ];
        let all = render(&verified(), true, &entries, &Filters::default());
        assert!(all.contains("data-testid=\"audit-verdict\" data-verified=\"true\""));
        assert!(all.contains("<td data-testid=\"audit-head-sequence\">3</td>"));
        assert!(all.contains("saved anchor at sequence 2"));
        for seq in 1..=3 {
            assert!(
                all.contains(&format!("data-testid=\"audit-entry-{seq}\"")),
                "{all}"
            );
        }
        assert!(all.contains("&lt;wrong lane&gt;") && !all.contains("<wrong lane>"));

        let refused_bills = Filters {
            kind: "bill".into(),
            outcome: "refused".into(),
        };
        let html = render(&verified(), true, &entries, &refused_bills);
        assert!(html.contains("audit-entry-2"));
        assert!(!html.contains("audit-entry-1\"") && !html.contains("audit-entry-3\""));
        assert!(html.contains("1 of 3 entries shown"));
        assert!(html.contains("<option value=\"bill\" selected>"));
    }

    #[test]
    fn a_failed_verification_shows_the_problem() {
        let failed = Err(anyhow::anyhow!(
            "entry 2: stored hash 00 but its fields hash to 11"
        ));
        let html = render(
            &failed,
            false,
            &[entry(1, "bill", true)],
            &Filters::default(),
        );
        assert!(html.contains("data-verified=\"false\""));
        assert!(html.contains("NOT verified"));
        assert!(html.contains("entry 2: stored hash"));
        assert!(html.contains("audit-entry-1"));
    }
}
