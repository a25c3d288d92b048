//! `seer.v1.Audit`: auditors list and verify the log over gRPC. Both calls require the
//! `auditor` or `admin` role (from the [`Caller`](crate::auth::Caller) that
//! [`AuthInterceptor`](crate::auth::AuthInterceptor) put into the request).
//!
//! The audit log's types belong to the key authority, so their wire conversions live here
//! rather than in `seer-proto` (which cannot depend on this crate).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use seer_proto::v1;
use seer_proto::v1::audit_server::{Audit, AuditServer};
use tonic::{Request, Response, Status};

use super::entry::{AuditEntry, Decision, EntryHash, RequestKind};
use super::store::{AuditLog, ListQuery};
use super::verify::{Anchor, ProblemKind, VerifyReport};
use crate::auth::{Role, authorize};

/// The roles that may read the audit log.
pub const AUDIT_READERS: &[Role] = &[Role::Auditor, Role::Admin];

/// Serves `seer.v1.Audit` over an [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditService {
    log: Arc<AuditLog>,
}

impl AuditService {
    /// A service reading `log`.
    #[must_use]
    pub fn new(log: Arc<AuditLog>) -> Self {
        Self { log }
    }

    /// The tonic server for this service (wrap it with an interceptor, e.g.
    /// `AuditServer::with_interceptor(service, auth)`, to authenticate callers).
    #[must_use]
    pub fn into_server(self) -> AuditServer<Self> {
        AuditServer::new(self)
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    #[tracing::instrument(name = "Audit.ListEntries", skip_all, fields(subject))]
    async fn list_entries(
        &self,
        request: Request<v1::ListAuditEntriesRequest>,
    ) -> Result<Response<v1::ListAuditEntriesResponse>, Status> {
        let caller = authorize(&request, AUDIT_READERS)?;
        tracing::Span::current().record("subject", caller.subject());
        let query = list_query_from_wire(request.into_inner())?;
        let page = self.log.list(&query).await?;
        Ok(Response::new(v1::ListAuditEntriesResponse {
            entries: page.entries.iter().map(entry_to_wire).collect(),
            next_after_sequence: page.next_after_sequence,
        }))
    }

    #[tracing::instrument(name = "Audit.Verify", skip_all, fields(subject))]
    async fn verify(
        &self,
        request: Request<v1::VerifyAuditLogRequest>,
    ) -> Result<Response<v1::VerifyAuditLogResponse>, Status> {
        let caller = authorize(&request, AUDIT_READERS)?;
        tracing::Span::current().record("subject", caller.subject());
        let request = request.into_inner();
        let anchor = request
            .anchor
            .map(|anchor| anchor_from_wire(&anchor))
            .transpose()?;
        let report = self.log.verify(anchor).await?;
        if let Some(problem) = &report.problem {
            tracing::warn!(%problem, "audit log verification found damage");
        }
        let mut response = report_to_wire(&report);
        if request.page_size > 0 {
            let page = self
                .log
                .list(&ListQuery {
                    after_sequence: request.after_sequence,
                    limit: request.page_size,
                    ..ListQuery::default()
                })
                .await?;
            response.entries = page.entries.iter().map(entry_to_wire).collect();
            response.next_after_sequence = page.next_after_sequence;
        }
        Ok(Response::new(response))
    }
}

pub(crate) fn list_query_from_wire(
    request: v1::ListAuditEntriesRequest,
) -> Result<ListQuery, Status> {
    let instant = |micros: Option<i64>, name: &str| -> Result<Option<DateTime<Utc>>, Status> {
        micros
            .map(|micros| {
                DateTime::from_timestamp_micros(micros)
                    .ok_or_else(|| Status::invalid_argument(format!("{name} out of range")))
            })
            .transpose()
    };
    Ok(ListQuery {
        meter_id: request.meter_id,
        kind: request
            .kind
            .map(RequestKind::try_new)
            .transpose()
            .map_err(Status::from)?,
        from: instant(request.from_unix_micros, "from_unix_micros")?,
        to: instant(request.to_unix_micros, "to_unix_micros")?,
        after_sequence: request.after_sequence,
        limit: request.page_size,
    })
}

pub(crate) fn anchor_from_wire(anchor: &v1::AuditAnchor) -> Result<Anchor, Status> {
    let entry_hash: [u8; 32] = anchor
        .entry_hash
        .as_slice()
        .try_into()
        .map_err(|_| Status::invalid_argument("anchor entry_hash must be 32 bytes"))?;
    Ok(Anchor {
        sequence: anchor.sequence,
        entry_hash: EntryHash(entry_hash),
    })
}

/// The wire form of an entry.
#[must_use]
pub fn entry_to_wire(entry: &AuditEntry) -> v1::AuditEntry {
    v1::AuditEntry {
        sequence: entry.sequence,
        recorded_at_unix_micros: entry.recorded_at.timestamp_micros(),
        recorded_at: entry
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        caller: entry.caller.as_ref().map(|caller| v1::AuditCaller {
            subject: caller.subject.clone(),
            role: caller.role.as_str().to_owned(),
        }),
        kind: entry.kind.as_str().to_owned(),
        meter_id: entry.meter_id.clone(),
        period: entry.period.clone(),
        input_digest: entry
            .input_digest
            .map(|digest| digest.as_bytes().to_vec())
            .unwrap_or_default(),
        decision: match entry.decision {
            Decision::Granted => v1::AuditDecision::Granted,
            Decision::Refused { .. } => v1::AuditDecision::Refused,
        }
        .into(),
        reason: entry.decision.reason().unwrap_or_default().to_owned(),
        previous_hash: entry.previous_hash.as_bytes().to_vec(),
        entry_hash: entry.entry_hash.as_bytes().to_vec(),
    }
}

/// The wire form of a verification report.
#[must_use]
pub fn report_to_wire(report: &VerifyReport) -> v1::VerifyAuditLogResponse {
    v1::VerifyAuditLogResponse {
        intact: report.is_intact(),
        entries_checked: report.entries_checked,
        head: report.head.as_ref().map(|head| v1::AuditAnchor {
            sequence: head.sequence,
            entry_hash: head.entry_hash.as_bytes().to_vec(),
        }),
        head_key_id: report
            .head
            .as_ref()
            .and_then(|head| head.key_id.clone())
            .unwrap_or_default(),
        head_signature: report
            .head
            .as_ref()
            .and_then(|head| head.signature.as_deref())
            .and_then(|signature| hex::decode(signature).ok())
            .unwrap_or_default(),
        entries: Vec::new(),
        next_after_sequence: None,
        problem: report
            .problem
            .as_ref()
            .map(|problem| v1::AuditChainProblem {
                kind: problem_kind_to_wire(&problem.kind).into(),
                row: problem.row,
                sequence: problem.sequence,
                detail: problem.kind.to_string(),
            }),
    }
}

fn problem_kind_to_wire(kind: &ProblemKind) -> v1::AuditProblemKind {
    use v1::AuditProblemKind as Wire;
    match kind {
        ProblemKind::MalformedRow { .. } => Wire::MalformedRow,
        ProblemKind::SequenceGap { .. } => Wire::SequenceGap,
        ProblemKind::PreviousHashMismatch { .. } => Wire::PreviousHashMismatch,
        ProblemKind::EntryHashMismatch { .. } => Wire::EntryHashMismatch,
        ProblemKind::HeadMissing => Wire::HeadMissing,
        ProblemKind::HeadSignatureInvalid { .. } => Wire::HeadSignatureInvalid,
        ProblemKind::HeadHashMismatch { .. } => Wire::HeadHashMismatch,
        ProblemKind::Truncated { .. } => Wire::Truncated,
        ProblemKind::EntriesBeyondHead { .. } => Wire::EntriesBeyondHead,
        ProblemKind::AnchorMismatch { .. } => Wire::AnchorMismatch,
        ProblemKind::ReleaseNotInChain { .. } => Wire::ReleaseNotInChain,
        ProblemKind::ReceiptNotInChain { .. } => Wire::ReceiptNotInChain,
        ProblemKind::ReleaseMissing { .. } => Wire::ReleaseMissing,
    }
}
