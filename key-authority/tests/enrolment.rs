//! `seer.v1.Enrolment` over real gRPC, on a key authority built by `Application::build` on
//! port 0 with SQLite in a temporary directory: a one-time code enrols a device key and
//! returns a certificate that verifies with the published public key PEM; the same key
//! enrolling again gets the same certificate, another key is refused; unknown, foreign,
//! expired codes and bad proofs are refused and logged; renewed household tokens carry one
//! audience, and a utility-audience token is not accepted by the key authority; stale,
//! unenrolled and revoked renewals are refused and logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use key_authority::audit::{AuditLog, Decision, ListQuery, RefusalSettings};
use key_authority::auth::audit_chain::{AGGREGATE_KIND, RefusalAggregate};
use key_authority::auth::device::{
    AuthorityPublicKey, DeviceKey, EnrolmentStatement, MeterCertificate, TokenRenewalStatement,
};
use key_authority::auth::{AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, Role, TokenIssuer};
use key_authority::enrolment::EnrolmentStore;
use key_authority::keys::KeySetSpec;
use key_authority::{Application, Settings};
use seer_core::circuits::billing;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1;
use seer_proto::v1::enrolment_client::EnrolmentClient;
use tonic::Code;
use tonic::transport::Channel;

struct App {
    dir: tempfile::TempDir,
    issuer: TokenIssuer,
    audit: Arc<AuditLog>,
    store: EnrolmentStore,
    authority: AuthorityPublicKey,
    client: EnrolmentClient<Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn spawn_app() -> App {
    spawn_app_with(RefusalSettings::default()).await
}

async fn spawn_app_with(refusals: RefusalSettings) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::default();
    settings.audit.refusals = refusals;
    settings.server.port = 0;
    settings.keys.dir = dir.path().join("keys");
    settings.keys.sets = vec![KeySetSpec {
        parameter_set: billing::PARAMETER_SET.id(),
        galois_steps: vec![1, 2],
    }];
    settings.auth.signing_key_file = dir.path().join("jwt.pem");
    settings.audit.database_url = format!("sqlite://{}", dir.path().join("ka.db").display());
    let app = Application::build(settings).await.expect("build");
    let issuer = app.issuer().clone();
    let audit = Arc::clone(app.audit_log());
    let store = app.enrolment();
    let authority = AuthorityPublicKey::new(audit.verifying_key());
    let address = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    App {
        dir,
        issuer,
        audit,
        store,
        authority,
        client: EnrolmentClient::new(channel).with_seer_limits(),
        stop,
        server,
    }
}

fn enrol_request(meter: &str, code: &str, key: &DeviceKey) -> v1::EnrolRequest {
    let public = key.public_key().to_bytes();
    v1::EnrolRequest {
        meter_id: meter.into(),
        code: code.into(),
        device_public_key: public.to_vec(),
        signature: key
            .sign(&EnrolmentStatement {
                meter_id: meter.into(),
                device_public_key: public,
            })
            .to_vec(),
    }
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("fits")
}

fn renew_request(meter: &str, audience: &str, at: i64, key: &DeviceKey) -> v1::RenewTokenRequest {
    v1::RenewTokenRequest {
        meter_id: meter.into(),
        issued_at: at,
        audience: audience.into(),
        signature: key
            .sign(&TokenRenewalStatement {
                meter_id: meter.into(),
                issued_at: at,
                audience: audience.into(),
            })
            .to_vec(),
    }
}

impl App {
    async fn code(&self, meter: &str) -> String {
        self.store
            .issue_code(meter, Duration::from_secs(3600))
            .await
            .expect("code")
            .code
            .to_string()
    }

    /// How many granted entries of `kind` the log holds.
    async fn entries_of(&self, kind: &str) -> usize {
        let mut count = 0;
        let mut after = 0;
        loop {
            let page = self
                .audit
                .list(&ListQuery {
                    after_sequence: after,
                    limit: 1000,
                    ..ListQuery::default()
                })
                .await
                .expect("list");
            count += page
                .entries
                .iter()
                .filter(|e| e.kind.as_str() == kind && e.decision == Decision::Granted)
                .count();
            match page.next_after_sequence {
                Some(next) => after = next,
                None => return count,
            }
        }
    }

    async fn last_entry(&self) -> key_authority::audit::AuditEntry {
        let head = self.audit.head().await.expect("head");
        let page = self
            .audit
            .list(&ListQuery {
                after_sequence: head.sequence.saturating_sub(1),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        page.entries.last().cloned().expect("an entry")
    }

    async fn assert_refused_and_logged(
        &self,
        status: tonic::Status,
        kind: &str,
        meter: &str,
        reason: &str,
    ) {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(reason),
            "{:?} does not mention {reason:?}",
            status.message()
        );
        let entry = self.last_entry().await;
        assert_eq!(entry.kind.as_str(), kind);
        assert_eq!(entry.meter_id.as_deref(), Some(meter));
        match entry.decision {
            Decision::Refused { reason: logged } => assert!(logged.contains(reason), "{logged}"),
            Decision::Granted => panic!("refusal logged as granted"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_enrol_one_key_once_and_refusals_are_logged() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let key = DeviceKey::generate().expect("key");
    let code = app.code("M-0001").await;

    // Bad proof of possession: another key signed.
    let other = DeviceKey::generate().expect("key");
    let mut forged = enrol_request("M-0001", &code, &key);
    forged.signature = enrol_request("M-0001", &code, &other).signature;
    let status = client.enrol(forged).await.expect_err("bad proof");
    app.assert_refused_and_logged(status, "enrol", "M-0001", "proof of possession")
        .await;

    // Unknown code, and a code issued for another meter.
    let status = client
        .enrol(enrol_request("M-0001", &"0".repeat(32), &key))
        .await
        .expect_err("unknown code");
    app.assert_refused_and_logged(status, "enrol", "M-0001", "unknown enrolment code")
        .await;
    let status = client
        .enrol(enrol_request("M-0002", &code, &key))
        .await
        .expect_err("foreign code");
    app.assert_refused_and_logged(status, "enrol", "M-0002", "another meter")
        .await;

    // The right request enrols and the certificate verifies with the published key.
    let certificate = client
        .enrol(enrol_request("M-0001", &code, &key))
        .await
        .expect("enrols")
        .into_inner()
        .meter_certificate;
    let parsed = MeterCertificate::try_from_bytes(&certificate).expect("parses");
    assert_eq!(
        parsed.verify(&app.authority, "M-0001").expect("verifies"),
        key.public_key()
    );
    let entry = app.last_entry().await;
    assert_eq!(entry.kind.as_str(), "enrol");
    assert_eq!(entry.decision, Decision::Granted);
    assert_eq!(
        app.store.device_key("M-0001").await.expect("enrolled"),
        key.public_key()
    );

    // The same key again (a meter that crashed after enrolling) gets the same certificate.
    let again = client
        .enrol(enrol_request("M-0001", &code, &key))
        .await
        .expect("idempotent")
        .into_inner()
        .meter_certificate;
    assert_eq!(again, certificate);
    // Another key under the used code is refused and the binding stays.
    let status = client
        .enrol(enrol_request("M-0001", &code, &other))
        .await
        .expect_err("used code");
    app.assert_refused_and_logged(status, "enrol", "M-0001", "already used")
        .await;
    assert_eq!(
        app.store.device_key("M-0001").await.expect("enrolled"),
        key.public_key()
    );

    // An expired code is refused.
    let expiring = app
        .store
        .issue_code("M-0003", Duration::from_secs(1))
        .await
        .expect("code");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = client
        .enrol(enrol_request("M-0003", &expiring.code, &key))
        .await
        .expect_err("expired");
    app.assert_refused_and_logged(status, "enrol", "M-0003", "expired")
        .await;
    assert!(app.store.device_key("M-0003").await.is_err());

    // Only the code's hash is stored.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!(
        "sqlite://{}",
        app.dir.path().join("ka.db").display()
    ))
    .await
    .expect("pool");
    let stored: Vec<(String,)> = sqlx::query_as("SELECT code_sha256 FROM enrolment_codes")
        .fetch_all(&pool)
        .await
        .expect("codes");
    assert!(stored.iter().all(|(hash,)| *hash != code));
    assert!(app.audit.verify(None).await.expect("verify").is_intact());
}

#[tokio::test(flavor = "multi_thread")]
async fn renewed_tokens_have_one_audience_and_revoked_meters_get_none() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let key = DeviceKey::generate().expect("key");
    let code = app.code("M-0001").await;
    client
        .enrol(enrol_request("M-0001", &code, &key))
        .await
        .expect("enrols");

    let for_utility = client
        .renew_token(renew_request(
            "M-0001",
            AUDIENCE_UTILITY_SERVER,
            now(),
            &key,
        ))
        .await
        .expect("renews")
        .into_inner();
    let utility = app.issuer.verifier(AUDIENCE_UTILITY_SERVER);
    let ka = app.issuer.verifier(AUDIENCE_KEY_AUTHORITY);
    let caller = utility.verify(&for_utility.token).expect("utility accepts");
    assert_eq!(caller.role(), Role::Household);
    assert_eq!(caller.meter_id(), Some("M-0001"));
    assert!(
        ka.verify(&for_utility.token).is_err(),
        "KA accepts a utility token"
    );
    assert!(for_utility.expires_at <= now() + 3600 + 5);
    let for_ka = client
        .renew_token(renew_request("M-0001", AUDIENCE_KEY_AUTHORITY, now(), &key))
        .await
        .expect("renews")
        .into_inner();
    ka.verify(&for_ka.token).expect("KA accepts");
    assert!(utility.verify(&for_ka.token).is_err());

    // A stale statement, another key's signature, an unenrolled meter: refused and logged.
    let status = client
        .renew_token(renew_request(
            "M-0001",
            AUDIENCE_KEY_AUTHORITY,
            now() - 3600,
            &key,
        ))
        .await
        .expect_err("stale");
    app.assert_refused_and_logged(status, "renew-token", "M-0001", "clock")
        .await;
    let other = DeviceKey::generate().expect("key");
    let status = client
        .renew_token(renew_request(
            "M-0001",
            AUDIENCE_KEY_AUTHORITY,
            now(),
            &other,
        ))
        .await
        .expect_err("wrong key");
    app.assert_refused_and_logged(status, "renew-token", "M-0001", "does not verify")
        .await;
    let status = client
        .renew_token(renew_request(
            "M-0009",
            AUDIENCE_KEY_AUTHORITY,
            now(),
            &other,
        ))
        .await
        .expect_err("not enrolled");
    app.assert_refused_and_logged(status, "renew-token", "M-0009", "not enrolled")
        .await;

    // Revoked: no more tokens (logged), and the revocation itself is audited.
    assert!(app.store.revoke("M-0001").await.expect("revoke"));
    let entry = app.last_entry().await;
    assert_eq!(entry.kind.as_str(), "revoke-meter");
    assert_eq!(entry.decision, Decision::Granted);
    let status = client
        .renew_token(renew_request("M-0001", AUDIENCE_KEY_AUTHORITY, now(), &key))
        .await
        .expect_err("revoked");
    app.assert_refused_and_logged(status, "renew-token", "M-0001", "revoked")
        .await;
    // The used code does not bring the revoked binding back.
    let status = client
        .enrol(enrol_request("M-0001", &code, &key))
        .await
        .expect_err("revoked");
    app.assert_refused_and_logged(status, "enrol", "M-0001", "revoked")
        .await;
    // A fresh code enrols a new device.
    let code = app.code("M-0001").await;
    client
        .enrol(enrol_request("M-0001", &code, &other))
        .await
        .expect("re-enrols");
    client
        .renew_token(renew_request(
            "M-0001",
            AUDIENCE_KEY_AUTHORITY,
            now(),
            &other,
        ))
        .await
        .expect("renews");
    assert!(app.audit.verify(None).await.expect("verify").is_intact());
}

/// A flood of refused enrolments and renewals (bad codes and stale statements under a hundred
/// claimed meter ids, as anyone who can reach the port could send) adds at most the window's
/// individual entries plus one aggregate to the log, every refused call is accounted for, and
/// the chain verifies. Before enrolment refusals went through the throttle, each call wrote
/// its own entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_refused_enrolments_adds_a_bounded_number_of_entries() {
    const ENROLMENTS: usize = 200;
    const RENEWALS: usize = 100;
    let settings = RefusalSettings {
        window_secs: 3600,
        per_caller_per_window: 2,
        individual_per_window: 5,
    };
    let app = spawn_app_with(settings.clone()).await;
    let before = app.audit.head().await.expect("head").sequence;
    let key = DeviceKey::generate().expect("key");
    let mut client = app.client.clone();
    for i in 0..ENROLMENTS {
        let meter = format!("M-F{:03}", i % 100);
        let status = client
            .enrol(enrol_request(&meter, &format!("{i:032}"), &key))
            .await
            .expect_err("unknown code");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    for i in 0..RENEWALS {
        let meter = format!("M-F{:03}", i % 100);
        let status = client
            .renew_token(renew_request(
                &meter,
                AUDIENCE_KEY_AUTHORITY,
                now() - 7200,
                &key,
            ))
            .await
            .expect_err("stale");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // Shut down: the window's aggregate is written.
    let _ = app.stop.send(());
    app.server.await.expect("joined").expect("served");

    let added = app
        .audit
        .list(&ListQuery {
            after_sequence: before,
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .expect("list")
        .entries;
    let mut individual = 0u64;
    let mut counted = 0u64;
    let mut aggregates = 0u64;
    for entry in &added {
        match entry.kind.as_str() {
            "enrol" | "renew-token" => {
                assert!(matches!(entry.decision, Decision::Refused { .. }));
                assert!(
                    entry.meter_id.is_some(),
                    "an individual refusal names its meter"
                );
                individual += 1;
            }
            kind if kind == AGGREGATE_KIND => {
                let reason = match &entry.decision {
                    Decision::Refused { reason } => reason.as_str(),
                    Decision::Granted => panic!("an aggregate is a refusal"),
                };
                let aggregate = RefusalAggregate::check_entry(
                    entry.recorded_at.timestamp_micros(),
                    entry.caller.is_some(),
                    entry.meter_id.is_some()
                        || entry.period.is_some()
                        || entry.input_digest.is_some(),
                    Some(reason),
                )
                .expect("a valid aggregate");
                counted += aggregate.count;
                aggregates += 1;
                assert_eq!(
                    aggregate.reasons.keys().cloned().collect::<Vec<_>>(),
                    ["refused.enrolment", "refused.renewal"]
                );
            }
            other => panic!("unexpected entry {other}"),
        }
    }
    assert_eq!(individual, u64::from(settings.individual_per_window));
    assert_eq!(aggregates, 1);
    assert_eq!(individual + counted, (ENROLMENTS + RENEWALS) as u64);
    assert!(added.len() as u64 <= settings.max_entries_per_window());
    let report = app.audit.verify(None).await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.problem);
}

/// `key-authority enrolment-code --meters-file`: one code per meter of the file, printed as
/// `METER_ID CODE` in file order, each enrolling its own meter only, one `enrolment-code`
/// entry per meter; a file naming a meter twice issues nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_meters_file_issues_one_working_code_per_meter() {
    let app = spawn_app().await;
    let meters: Vec<String> = (0..25).map(|i| format!("BULK-{i:04}")).collect();
    let file = app.dir.path().join("meters.txt");
    std::fs::write(
        &file,
        format!("# fleet batch 1\n\n{}\n", meters.join("\n  ")),
    )
    .expect("write meters");
    let cli = |meters_file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_key-authority"))
            .args(["enrolment-code", "--lifetime", "1h", "--meters-file"])
            .arg(meters_file)
            .env(
                "SEER_KEY_AUTHORITY__AUDIT__DATABASE_URL",
                format!("sqlite://{}", app.dir.path().join("ka.db").display()),
            )
            .env(
                "SEER_KEY_AUTHORITY__AUTH__SIGNING_KEY_FILE",
                app.dir.path().join("jwt.pem"),
            )
            .env("SEER_KEY_AUTHORITY__KEYS__DIR", app.dir.path().join("keys"))
            .output()
            .expect("run key-authority")
    };
    let codes_before = app.entries_of("enrolment-code").await;
    let output = cli(&file);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let printed: Vec<(String, String)> = stdout
        .lines()
        .map(|line| {
            let (meter, code) = line.split_once(' ').expect("METER_ID CODE");
            (meter.to_owned(), code.to_owned())
        })
        .collect();
    assert_eq!(
        printed.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(),
        meters
    );
    assert_eq!(app.entries_of("enrolment-code").await, codes_before + 25);
    let mut client = app.client.clone();
    // A code enrols its own meter, not another.
    let key = DeviceKey::generate().expect("key");
    let status = client
        .enrol(enrol_request(&printed[1].0, &printed[0].1, &key))
        .await
        .expect_err("another meter's code");
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    for (meter, code) in printed.iter().step_by(6) {
        let key = DeviceKey::generate().expect("key");
        client
            .enrol(enrol_request(meter, code, &key))
            .await
            .expect("enrolled with its bulk code");
    }

    let twice = app.dir.path().join("twice.txt");
    std::fs::write(&twice, "BULK-9000\nBULK-9001\nBULK-9000\n").expect("write");
    let before = app.entries_of("enrolment-code").await;
    let output = cli(&twice);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("named twice"));
    assert_eq!(app.entries_of("enrolment-code").await, before);
    assert!(app.audit.verify(None).await.expect("verify").is_intact());
}
