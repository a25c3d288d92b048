//! Receipts are recorded only when signed by the meter's enrolled, unrevoked device key, each
//! recorded receipt is an audit entry bound to its signed statement, and each refusal is
//! logged (`key_authority::signed_receipts`, on a real SQLite audit log): billing receipts
//! (unsigned, another key, an altered field, a revoked meter, an unenrolled meter) and
//! analytics receipts (an exact-lane input relabelled "analytics", another ε, another block).

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use key_authority::analytics::{
    AnalyticsReceipt, AnalyticsStore, InputLane, Recorded, SlotBlock, SlotPeriod,
    analytics_statement,
};
use key_authority::audit::{AuditLog, Decision, InputDigest, ListQuery, ProblemKind, RequestKind};
use key_authority::auth::device::{DeviceKey, Statement as _};
use key_authority::auth::{
    AUDIENCE_KEY_AUTHORITY, Caller, DEFAULT_ISSUER, Identity, JwtSigningKey, TokenIssuer,
    TokenRequest,
};
use key_authority::enrolment::EnrolmentStore;
use key_authority::release::{Period, Receipt, RecordOutcome, ReleaseError, billing_statement};
use key_authority::signed_receipts::{ANALYTICS_RECEIPT_KIND, RECEIPT_KIND, SignedReceipts};
use seer_core::circuits::billing;
use seer_proto::v1;

struct Fixture {
    _dir: tempfile::TempDir,
    log: Arc<AuditLog>,
    enrolment: EnrolmentStore,
    issuer: TokenIssuer,
    recorder: SignedReceipts,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let key = Arc::new(JwtSigningKey::generate().expect("key"));
    let url = format!("sqlite://{}", dir.path().join("ka.db").display());
    let log = Arc::new(
        AuditLog::connect(&url, Arc::clone(&key))
            .await
            .expect("log"),
    );
    Fixture {
        enrolment: EnrolmentStore::new(Arc::clone(&log), Arc::clone(&key)),
        issuer: TokenIssuer::new(key, DEFAULT_ISSUER),
        recorder: SignedReceipts::new(Arc::clone(&log)),
        log,
        _dir: dir,
    }
}

impl Fixture {
    async fn enrol(&self, meter: &str) -> DeviceKey {
        let key = DeviceKey::generate().expect("device key");
        self.enrolment
            .enrol_device(meter, &key)
            .await
            .expect("enrolled");
        key
    }

    fn caller(&self, meter: &str) -> Caller {
        let mut request = TokenRequest::new(
            Identity::Household {
                meter_id: meter.to_owned(),
            },
            Duration::from_secs(600),
        );
        request.audience = vec![AUDIENCE_KEY_AUTHORITY.to_owned()];
        let token = self.issuer.issue(&request).expect("token").token;
        self.issuer
            .verifier(AUDIENCE_KEY_AUTHORITY)
            .verify(&token)
            .expect("verifies")
    }

    /// (kind, meter, decision, reason, input digest) of every entry.
    async fn entries(&self) -> Vec<(String, Option<String>, Decision, Option<InputDigest>)> {
        self.log
            .list(&ListQuery {
                limit: 1000,
                ..ListQuery::default()
            })
            .await
            .expect("list")
            .entries
            .into_iter()
            .map(|e| {
                (
                    e.kind.as_str().to_owned(),
                    e.meter_id,
                    e.decision,
                    e.input_digest,
                )
            })
            .collect()
    }
}

fn receipt(meter: &str, sequence: u64, closes: bool) -> Receipt {
    Receipt {
        meter_id: meter.to_owned(),
        sequence,
        period: "2024-01".parse::<Period>().expect("period"),
        billing_digest: [sequence as u8; 32],
        billing_group: 0,
        billing_position: 3,
        closes_period: closes,
    }
}

fn refused_kind(
    entries: &[(String, Option<String>, Decision, Option<InputDigest>)],
    kind: &str,
) -> usize {
    entries
        .iter()
        .filter(|(k, _, d, _)| k == kind && matches!(d, Decision::Refused { .. }))
        .count()
}

#[tokio::test]
async fn billing_receipts_need_the_enrolled_keys_signature_and_are_audited() {
    let f = fixture().await;
    let params = billing::PARAMETER_SET.id();
    let device = f.enrol("M-1").await;
    let caller = f.caller("M-1");

    // Signed by the enrolled key: recorded, with a granted entry bound to the statement.
    let first = receipt("M-1", 1, false);
    let statement = billing_statement(&first, &params);
    let signature = device.sign(&statement);
    assert_eq!(
        f.recorder
            .record_billing(&caller, &first, &statement, &signature)
            .await
            .expect("recorded"),
        RecordOutcome::Recorded
    );
    let entries = f.entries().await;
    let granted: Vec<_> = entries
        .iter()
        .filter(|(k, _, d, _)| k == RECEIPT_KIND && *d == Decision::Granted)
        .collect();
    assert_eq!(granted.len(), 1);
    assert_eq!(
        granted[0].3,
        Some(InputDigest::sha256(&statement.encode())),
        "the entry names the signed statement"
    );
    // An identical resend: a duplicate, no new entry.
    assert_eq!(
        f.recorder
            .record_billing(&caller, &first, &statement, &signature)
            .await
            .expect("duplicate"),
        RecordOutcome::Duplicate
    );
    assert_eq!(f.entries().await.len(), entries.len());

    // Refused, each logged: unsigned; another key's signature; the genuine signature over an
    // altered receipt (closing flipped, another sequence, another position).
    let closing = receipt("M-1", 2, true);
    let closing_statement = billing_statement(&closing, &params);
    let stranger = DeviceKey::generate().expect("key");
    let altered = [
        receipt("M-1", 2, false),
        Receipt {
            sequence: 3,
            ..closing.clone()
        },
        Receipt {
            billing_position: 4,
            ..closing.clone()
        },
    ];
    let mut attempts: Vec<(Receipt, Vec<u8>)> = vec![
        (closing.clone(), Vec::new()),
        (closing.clone(), stranger.sign(&closing_statement).to_vec()),
        (closing.clone(), vec![7; 63]),
    ];
    for receipt in altered {
        attempts.push((receipt, device.sign(&closing_statement).to_vec()));
    }
    let count = attempts.len();
    for (receipt, signature) in attempts {
        let statement = billing_statement(&receipt, &params);
        let error = f
            .recorder
            .record_billing(&caller, &receipt, &statement, &signature)
            .await
            .expect_err("refused");
        assert!(matches!(error, ReleaseError::Unsigned(_)), "{error}");
    }
    let entries = f.entries().await;
    assert_eq!(refused_kind(&entries, RECEIPT_KIND), count);

    // The genuine closing receipt is recorded; after revocation, nothing more is.
    f.recorder
        .record_billing(
            &caller,
            &closing,
            &closing_statement,
            &device.sign(&closing_statement),
        )
        .await
        .expect("recorded");
    assert!(f.enrolment.revoke("M-1").await.expect("revoked"));
    let late = receipt("M-1", 3, false);
    let late_statement = billing_statement(&late, &params);
    let error = f
        .recorder
        .record_billing(
            &caller,
            &late,
            &late_statement,
            &device.sign(&late_statement),
        )
        .await
        .expect_err("revoked");
    assert!(error.to_string().contains("revoked"), "{error}");
    // A meter that never enrolled.
    let never = receipt("M-2", 1, true);
    let never_statement = billing_statement(&never, &params);
    let error = f
        .recorder
        .record_billing(
            &f.caller("M-2"),
            &never,
            &never_statement,
            &device.sign(&never_statement),
        )
        .await
        .expect_err("not enrolled");
    assert!(error.to_string().contains("not enrolled"), "{error}");
    let entries = f.entries().await;
    assert_eq!(refused_kind(&entries, RECEIPT_KIND), count + 2);
    assert!(f.log.verify(None).await.expect("verify").is_intact());
}

#[tokio::test]
async fn an_analytics_input_relabelled_to_another_lane_or_epsilon_is_refused() {
    let f = fixture().await;
    let device = f.enrol("M-1").await;
    let caller = f.caller("M-1");
    let request = v1::AnalyticsReceiptRequest {
        kind: "forecast".into(),
        meter_id: "M-1".into(),
        input_id: "2024-01-15@abc".into(),
        slot_offset: 24,
        slot_count: 24,
        first_period: "2024-01-15T00:00".into(),
        input_blake3: vec![vec![9; 32]],
        lane: "exact".into(),
        epsilon: 0.0,
        readings_per_day: 0,
        model_blake3: "ab".repeat(32),
        group: 0,
        signature: Vec::new(),
    };
    let as_receipt = |r: &v1::AnalyticsReceiptRequest| AnalyticsReceipt {
        kind: r.kind.clone(),
        meter_id: r.meter_id.clone(),
        input_id: r.input_id.clone(),
        block: SlotBlock {
            offset: r.slot_offset as usize,
            count: r.slot_count as usize,
        },
        slot_period: SlotPeriod::Hour,
        first_period: NaiveDateTime::parse_from_str(&r.first_period, "%Y-%m-%dT%H:%M")
            .expect("hour"),
        input_digests: vec![[9; 32]],
        lane: InputLane::try_new(&r.lane, r.epsilon, r.readings_per_day).expect("lane"),
    };
    let signature = device.sign(&analytics_statement(&request, vec![[9; 32]]));

    // The exact lane, as signed: recorded once, then a duplicate.
    let exact = as_receipt(&request);
    let statement = analytics_statement(&request, vec![[9; 32]]);
    assert_eq!(
        f.recorder
            .record_analytics(&caller, &exact, &statement, &signature)
            .await
            .expect("recorded"),
        Recorded::New
    );
    // Relabelled "analytics" at ε 0.5 (another input id, so the store would otherwise take
    // it), another ε, another block: the signature no longer verifies.
    let relabelled = [
        v1::AnalyticsReceiptRequest {
            input_id: "2024-01-15@relabelled".into(),
            lane: "analytics".into(),
            epsilon: 0.5,
            readings_per_day: 96,
            ..request.clone()
        },
        v1::AnalyticsReceiptRequest {
            input_id: "2024-01-15@abc".into(),
            lane: "analytics".into(),
            epsilon: 1.0,
            readings_per_day: 96,
            ..request.clone()
        },
        v1::AnalyticsReceiptRequest {
            slot_offset: 48,
            ..request.clone()
        },
    ];
    for altered in &relabelled {
        let statement = analytics_statement(altered, vec![[9; 32]]);
        let error = f
            .recorder
            .record_analytics(&caller, &as_receipt(altered), &statement, &signature)
            .await
            .expect_err("refused");
        assert!(matches!(error, ReleaseError::Unsigned(_)), "{error}");
    }
    let entries = f.entries().await;
    assert_eq!(
        refused_kind(&entries, ANALYTICS_RECEIPT_KIND),
        relabelled.len()
    );
    assert_eq!(
        entries
            .iter()
            .filter(|(k, _, d, _)| k == ANALYTICS_RECEIPT_KIND && *d == Decision::Granted)
            .count(),
        1
    );
    let _ = RequestKind::try_new(ANALYTICS_RECEIPT_KIND).expect("a valid kind");
}

/// An insider with the key authority's database (not its process) writes or alters analytics
/// receipt rows: a copy of M-1's receipt under M-2, M-1's receipt relabelled to another lane,
/// ε, block, model or group. None is the receipt the audit chain recorded, so none is bound
/// (and the release policy refuses the meter before anything is evaluated); the untouched row
/// is, and so is the altered one once restored.
#[tokio::test]
async fn analytics_receipt_rows_written_outside_the_key_authority_are_not_bound() {
    let f = fixture().await;
    let device = f.enrol("M-1").await;
    f.enrol("M-2").await;
    let request = v1::AnalyticsReceiptRequest {
        kind: "anomaly".into(),
        meter_id: "M-1".into(),
        input_id: "2010-03-01@w".into(),
        slot_offset: 216,
        slot_count: 30,
        first_period: "2010-03-01".into(),
        input_blake3: vec![vec![7; 32]],
        lane: "analytics".into(),
        epsilon: 0.5,
        readings_per_day: 96,
        model_blake3: "cd".repeat(32),
        group: 3,
        signature: Vec::new(),
    };
    let statement = analytics_statement(&request, vec![[7; 32]]);
    let receipt = AnalyticsReceipt {
        kind: request.kind.clone(),
        meter_id: request.meter_id.clone(),
        input_id: request.input_id.clone(),
        block: SlotBlock {
            offset: 216,
            count: 30,
        },
        slot_period: SlotPeriod::Day,
        first_period: NaiveDateTime::parse_from_str("2010-03-01 00:00", "%Y-%m-%d %H:%M")
            .expect("day"),
        input_digests: vec![[7; 32]],
        lane: InputLane::try_new("analytics", 0.5, 96).expect("lane"),
    };
    f.recorder
        .record_analytics(
            &f.caller("M-1"),
            &receipt,
            &statement,
            &device.sign(&statement),
        )
        .await
        .expect("recorded");
    let store = AnalyticsStore::new(&f.log);
    let bound = |meter: &'static str| {
        let store = store.clone();
        async move {
            store
                .bound_receipt("anomaly", meter, "2010-03-01@w")
                .await
                .expect("database")
        }
    };
    assert_eq!(bound("M-1").await, Ok(receipt.clone()));

    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", f._dir.path().join("ka.db").display());
    let raw = sqlx::AnyPool::connect(&url).await.expect("raw pool");
    // A copy under M-2 (enrolled, no receipt of its own).
    sqlx::query(
        "INSERT INTO analytics_receipts (kind, meter_id, input_id, slot_offset, slot_count, \
         first_period, input_digests, lane, epsilon, readings_per_day, recorded_at_us, \
         signature, model_blake3, eval_group) SELECT kind, 'M-2', input_id, slot_offset, \
         slot_count, first_period, input_digests, lane, epsilon, readings_per_day, \
         recorded_at_us, signature, model_blake3, eval_group FROM analytics_receipts \
         WHERE meter_id = 'M-1'",
    )
    .execute(&raw)
    .await
    .expect("copied");
    assert!(
        store
            .receipt("anomaly", "M-2", "2010-03-01@w")
            .await
            .expect("row")
            .is_some()
    );
    let refusal = bound("M-2").await.expect_err("a copy is not bound");
    assert!(
        refusal.contains("not the one the audit chain recorded"),
        "{refusal}"
    );
    // The auditor's verification names it too (as the key authority's anchored log does).
    f.log.bind_releases(true);
    let report = f.log.verify(None).await.expect("verify");
    match report.problem.as_ref().map(|p| &p.kind) {
        Some(ProblemKind::ReceiptNotInChain {
            table,
            meter_id,
            subject,
        }) => {
            assert_eq!(
                (table.as_str(), meter_id.as_str(), subject.as_str()),
                ("analytics_receipts", "M-2", "anomaly:2010-03-01@w")
            );
        }
        other => panic!("expected an unbound receipt, got {other:?}"),
    }
    sqlx::query("DELETE FROM analytics_receipts WHERE meter_id = 'M-2'")
        .execute(&raw)
        .await
        .expect("deleted");
    assert!(f.log.verify(None).await.expect("verify").is_intact());

    // Each column the statement covers, altered in place and restored.
    for (column, altered, original) in [
        ("lane", "'exact'", "'analytics'"),
        ("epsilon", "5.0", "0.5"),
        ("readings_per_day", "24", "96"),
        ("slot_offset", "0", "216"),
        ("slot_count", "31", "30"),
        ("first_period", "'2010-02-28'", "'2010-03-01'"),
        ("model_blake3", "'ef'", &format!("'{}'", "cd".repeat(32))),
        ("eval_group", "4", "3"),
        (
            "input_digests",
            &format!("'{}'", "08".repeat(32)),
            &format!("'{}'", "07".repeat(32)),
        ),
    ] {
        let set = |value: &str| {
            format!("UPDATE analytics_receipts SET {column} = {value} WHERE meter_id = 'M-1'")
        };
        sqlx::query(sqlx::AssertSqlSafe(set(altered)))
            .execute(&raw)
            .await
            .expect("altered");
        let refusal = bound("M-1").await.expect_err(column);
        assert!(
            refusal.contains("not the one the audit chain recorded"),
            "{column}: {refusal}"
        );
        assert!(
            !f.log.verify(None).await.expect("verify").is_intact(),
            "{column}: the verification names the altered row"
        );
        sqlx::query(sqlx::AssertSqlSafe(set(original)))
            .execute(&raw)
            .await
            .expect("restored");
        assert_eq!(bound("M-1").await, Ok(receipt.clone()), "{column} restored");
    }
    // A row recorded before statements were kept (no model or group) is not bound either.
    sqlx::query("UPDATE analytics_receipts SET model_blake3 = NULL WHERE meter_id = 'M-1'")
        .execute(&raw)
        .await
        .expect("cleared");
    let refusal = bound("M-1").await.expect_err("no statement");
    assert!(refusal.contains("before receipts kept"), "{refusal}");
    assert!(f.log.verify(None).await.expect("verify").is_intact());
}
