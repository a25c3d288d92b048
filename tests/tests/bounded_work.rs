//! Bounded work before authentication, across real processes: a flood of refused calls adds a
//! bounded number of audit entries that account for every call exactly, the chain still
//! verifies from public material, a legitimate caller is served throughout, and a large
//! streaming body with a bad token is refused before the server reads it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio_stream::StreamExt as _;

use seer_auth::audit_chain::{AGGREGATE_KIND, RefusalAggregate};
use seer_auth::{Identity, JwtSigningKey, TokenIssuer, TokenRequest};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1;
use seer_proto::v1::analytics_client::AnalyticsClient;
use seer_proto::v1::audit_client::AuditClient;
use seer_proto::v1::ingest_client::IngestClient;
use seer_proto::v1::keys_client::KeysClient;
use seer_proto::v1::receipts_client::ReceiptsClient;
use seer_proto::v1::release_client::ReleaseClient;
use seer_tests::deployment::{Deployment, DeploymentOptions};
use seer_tests::{bin_path, runtime};
use tonic::Code;
use tonic::transport::Channel;

/// The key authority's refusal settings in this test (`[audit.refusals]`).
const WINDOW_SECS: u64 = 2;
const PER_CALLER_PER_WINDOW: u64 = 3;
const INDIVIDUAL_PER_WINDOW: u64 = 20;
/// Refused calls in the flood, and how many run at once.
const FLOOD: usize = 10_000;
const BATCH: usize = 200;

fn authority_env() -> Vec<(String, String)> {
    [
        ("AUDIT__REFUSALS__WINDOW_SECS", WINDOW_SECS),
        (
            "AUDIT__REFUSALS__PER_CALLER_PER_WINDOW",
            PER_CALLER_PER_WINDOW,
        ),
        (
            "AUDIT__REFUSALS__INDIVIDUAL_PER_WINDOW",
            INDIVIDUAL_PER_WINDOW,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (format!("SEER_KEY_AUTHORITY__{k}"), v.to_string()))
    .collect()
}

/// `request` with `authorization: <value>` when given.
fn with_auth<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("header value"));
    }
    request
}

/// Every audit row: (kind, caller subject, decision, reason).
async fn rows(path: &Path) -> Vec<(String, Option<String>, String, Option<String>)> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(path).read_only(true))
        .await
        .expect("open the audit database");
    let rows = sqlx::query_as(
        "SELECT request_kind, caller_subject, decision, reason FROM audit_entries ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .expect("read the audit entries");
    pool.close().await;
    rows
}

/// The refusals the gate accounted for in `rows`: individual entries (their reason names the
/// gate's class) and the aggregates' counts, checked as an auditor checks them.
fn accounted(
    rows: &[(String, Option<String>, String, Option<String>)],
) -> (u64, Vec<RefusalAggregate>) {
    let individual = rows
        .iter()
        .filter(|(kind, _, decision, reason)| {
            kind != AGGREGATE_KIND
                && decision == "refused"
                && reason
                    .as_deref()
                    .is_some_and(|r| r.contains("(permission_denied.role, "))
        })
        .count() as u64;
    let aggregates = rows
        .iter()
        .filter(|(kind, ..)| kind == AGGREGATE_KIND)
        .map(|(_, caller, _, reason)| {
            RefusalAggregate::check_entry(i64::MAX, caller.is_some(), false, reason.as_deref())
                .expect("a valid aggregate")
        })
        .collect();
    (individual, aggregates)
}

/// A channel over mutual TLS with the test process's identity (the utility's certificate,
/// installed by the deployment), or the one [`seer_tls::with_client_identity`] set.
async fn channel(uri: &str) -> Channel {
    seer_tls::endpoint(uri)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// One refused call of the mix; returns the gRPC code.
async fn refused_call(
    i: usize,
    channel: Channel,
    expired: Arc<str>,
    household: Arc<str>,
    utility: Arc<str>,
) -> Code {
    let bearer = |token: &str| format!("Bearer {token}");
    let release = |authorization: Option<String>| {
        let channel = channel.clone();
        async move {
            let request = v1::ReleaseBillsRequest {
                period: "2007-01".into(),
                inputs: vec![v1::BillInput {
                    meter_id: "M-1".into(),
                    sequence: 1,
                    billing_lane: vec![7; 64 * 1024],
                }],
                ..Default::default()
            };
            ReleaseClient::new(channel)
                .with_seer_limits()
                .release_bills(with_auth(request, authorization.as_deref()))
                .await
                .map(drop)
        }
    };
    let result = match i % 8 {
        0 => release(None).await,
        1 => release(Some("Bearer not-a-jwt".into())).await,
        2 => release(Some(bearer(&expired))).await,
        // A valid token of a role that may not ask for releases.
        3 => release(Some(bearer(&household))).await,
        4 => AuditClient::new(channel)
            .list_entries(with_auth(v1::ListAuditEntriesRequest::default(), None))
            .await
            .map(drop),
        5 => ReceiptsClient::new(channel)
            .record(with_auth(
                v1::ReceiptRequest::default(),
                Some("Basic dXNlcjpwYXNz"),
            ))
            .await
            .map(drop),
        // A streaming upload with a large body and no token.
        6 => {
            let chunks = (0..4).map(|index| v1::AnalyticsReleaseChunk {
                part: Some(v1::analytics_release_chunk::Part::Input(
                    v1::CiphertextChunk {
                        index,
                        data: vec![1; 64 * 1024],
                        ..Default::default()
                    },
                )),
            });
            AnalyticsClient::new(channel)
                .with_seer_limits()
                .release(with_auth(tokio_stream::iter(chunks), None))
                .await
                .map(drop)
        }
        // The utility's token on the auditors' service.
        _ => AuditClient::new(channel)
            .verify(with_auth(
                v1::VerifyAuditLogRequest::default(),
                Some(&bearer(&utility)),
            ))
            .await
            .map(drop),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn expected_code(i: usize) -> Code {
    match i % 8 {
        3 | 7 => Code::PermissionDenied,
        _ => Code::Unauthenticated,
    }
}

#[test]
fn ten_thousand_refused_calls_add_a_bounded_number_of_entries_that_count_them_all() {
    let deployment =
        Deployment::start_with_authority_env(&DeploymentOptions::default(), &authority_env())
            .expect("deployment");
    let audit_db = deployment.dir().join("ka/audit.db");
    // A valid household token for the key authority: the wrong role for releases and audit.
    let household = deployment
        .household_token("M-1", "seer-key-authority")
        .expect("token");
    let utility = deployment.token("utility", None).expect("token");
    let auditor = deployment.token("auditor", None).expect("token");
    let (key, _) =
        JwtSigningKey::load_or_generate(&deployment.dir().join("ka/jwt.pem")).expect("key");
    let expired = TokenIssuer::new(Arc::new(key), seer_auth::DEFAULT_ISSUER)
        .issue_at(
            &TokenRequest::new(Identity::Utility, Duration::from_secs(60)),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .expect("issue")
        .token;
    let uri = deployment.authority().uri();

    let rt = runtime().expect("runtime");
    let before = rt.block_on(rows(&audit_db));
    let started = Instant::now();
    let (codes, served) = rt.block_on(async {
        // The auditor connects with an auditor's certificate (its token is bound to it).
        let auditor_files = seer_tests::pki::files_for_token(&auditor).expect("certificate");
        let auditor_channel = seer_tls::with_client_identity(&auditor_files, channel(&uri))
            .await
            .expect("the auditor's identity");
        let channel = channel(&uri).await;
        // A legitimate auditor and a public-key reader, served while the flood runs.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let legitimate = {
            let channel = auditor_channel;
            let done = Arc::clone(&done);
            let auditor = auditor.clone();
            tokio::spawn(async move {
                let mut served = 0_usize;
                while !done.load(Ordering::SeqCst) || served < 3 {
                    AuditClient::new(channel.clone())
                        .with_seer_limits()
                        .list_entries(with_auth(
                            v1::ListAuditEntriesRequest {
                                page_size: 1,
                                ..Default::default()
                            },
                            Some(&format!("Bearer {auditor}")),
                        ))
                        .await
                        .expect("the auditor is served during the flood");
                    KeysClient::new(channel.clone())
                        .list_key_sets(v1::ListKeySetsRequest::default())
                        .await
                        .expect("public keys are served during the flood");
                    served += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                served
            })
        };
        let (expired, household, utility): (Arc<str>, Arc<str>, Arc<str>) =
            (expired.into(), household.into(), utility.into());
        let mut codes = Vec::with_capacity(FLOOD);
        for batch in (0..FLOOD).collect::<Vec<_>>().chunks(BATCH) {
            let calls: Vec<_> = batch
                .iter()
                .map(|&i| {
                    tokio::spawn(refused_call(
                        i,
                        channel.clone(),
                        Arc::clone(&expired),
                        Arc::clone(&household),
                        Arc::clone(&utility),
                    ))
                })
                .collect();
            for (call, &i) in calls.into_iter().zip(batch) {
                codes.push((i, call.await.expect("call task")));
            }
        }
        done.store(true, Ordering::SeqCst);
        (codes, legitimate.await.expect("legitimate caller"))
    });
    for (i, code) in &codes {
        assert_eq!(*code, expected_code(*i), "call {i}");
    }
    assert!(
        served >= 3,
        "the legitimate caller was served {served} times"
    );

    // Every refusal is accounted for once its window is written (at most a window plus a
    // tick after the flood).
    let deadline = Instant::now() + Duration::from_secs(WINDOW_SECS * 5 + 10);
    let after = loop {
        let after = rt.block_on(rows(&audit_db));
        let (individual, aggregates) = accounted(&after[before.len()..]);
        let counted: u64 = aggregates.iter().map(|a| a.count).sum();
        if individual + counted >= FLOOD as u64 || Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    let added = &after[before.len()..];
    let (individual, aggregates) = accounted(added);
    let counted: u64 = aggregates.iter().map(|a| a.count).sum();
    assert_eq!(
        individual + counted,
        FLOOD as u64,
        "{individual} individual entries and {counted} counted in {} aggregates",
        aggregates.len()
    );
    // Only the refusals added rows (the legitimate caller's reads write nothing).
    assert_eq!(added.len() as u64, individual + aggregates.len() as u64);
    // The bound: per window, at most INDIVIDUAL_PER_WINDOW individual entries and one
    // aggregate; individual ones only for the two authenticated (class, subject) pairs.
    let windows = elapsed.as_secs() / WINDOW_SECS + 2;
    let bound = windows * (INDIVIDUAL_PER_WINDOW + 1);
    assert!(
        (added.len() as u64) <= bound,
        "{} rows in {elapsed:?} ({windows} windows), bound {bound}",
        added.len()
    );
    assert!(
        individual <= windows * 2 * PER_CALLER_PER_WINDOW,
        "{individual} individual entries in {windows} windows"
    );
    assert!(aggregates.len() as u64 <= windows);
    // The classes add up to the mix: unauthenticated calls are never individual.
    let class_total =
        |class: &str| -> u64 { aggregates.iter().filter_map(|a| a.reasons.get(class)).sum() };
    let unauthenticated = (0..FLOOD)
        .filter(|i| expected_code(*i) == Code::Unauthenticated)
        .count() as u64;
    assert_eq!(
        class_total("unauthenticated.missing")
            + class_total("unauthenticated.malformed")
            + class_total("unauthenticated.expired"),
        unauthenticated
    );
    assert_eq!(
        class_total("unauthenticated.expired"),
        (0..FLOOD).filter(|i| i % 8 == 2).count() as u64
    );
    assert_eq!(
        class_total("permission_denied.role") + individual,
        FLOOD as u64 - unauthenticated
    );
    eprintln!(
        "{FLOOD} refused calls in {elapsed:?}: {} rows ({individual} individual, {} aggregates; \
         bound {bound})",
        added.len(),
        aggregates.len()
    );

    // The chain, aggregates included, verifies on the auditor's side.
    let pem = deployment.dir().join("ka-jwt-public.pem");
    let verify = Command::new(bin_path("seer").expect("seer"))
        .args([
            "audit",
            "verify",
            "--key-authority",
            &uri,
            "--token",
            &auditor,
        ])
        .arg("--public-key")
        .arg(&pem)
        .arg("--public-key-sha256")
        .arg(&deployment.fingerprints().jwt_public_key_sha256)
        .envs(seer_tests::pki::auditor_env("auditor").expect("auditor certificate"))
        .output()
        .expect("seer audit verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let list = Command::new(bin_path("seer").expect("seer"))
        .args([
            "audit",
            "list",
            "--key-authority",
            &uri,
            "--token",
            &auditor,
        ])
        .args(["--kind", AGGREGATE_KIND])
        .envs(seer_tests::pki::auditor_env("auditor").expect("auditor certificate"))
        .output()
        .expect("seer audit list");
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed: u64 = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).expect("json line");
            entry["aggregate"]["count"]
                .as_u64()
                .expect("a parsed aggregate")
        })
        .sum();
    assert_eq!(listed, counted);

    // After the flood, a legitimate release caller still gets an answer from the policy (an
    // empty request is refused by the handler, not by the gate).
    let status = rt
        .block_on(async {
            ReleaseClient::new(channel(&uri).await)
                .release_bills(with_auth(
                    v1::ReleaseBillsRequest::default(),
                    Some(&format!(
                        "Bearer {}",
                        deployment.token("utility", None).expect("token")
                    )),
                ))
                .await
        })
        .expect_err("an empty request");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[test]
fn a_large_stream_with_a_bad_token_is_refused_before_it_is_read() {
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let rt = runtime().expect("runtime");
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 256; // 64 MiB offered
    for (uri, utility) in [
        (deployment.utility().uri(), true),
        (deployment.authority().uri(), false),
    ] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let status = rt.block_on(async {
            let channel = channel(&uri).await;
            let counter = Arc::clone(&pulled);
            let chunks = tokio_stream::iter(0..CHUNKS).map(move |i| {
                counter.fetch_add(1, Ordering::SeqCst);
                i
            });
            if utility {
                let batches = chunks.map(|i| v1::UploadBatch {
                    meter_id: "M-1".into(),
                    sequence: i as u64 + 1,
                    billing_lane: vec![3; CHUNK],
                    ..Default::default()
                });
                IngestClient::new(channel)
                    .with_seer_limits()
                    .upload(with_auth(batches, Some("Bearer forged.jwt.token")))
                    .await
                    .map(drop)
                    .expect_err("refused")
            } else {
                let parts = chunks.map(|i| v1::AnalyticsReleaseChunk {
                    part: Some(v1::analytics_release_chunk::Part::Input(
                        v1::CiphertextChunk {
                            index: i as u32,
                            data: vec![3; CHUNK],
                            ..Default::default()
                        },
                    )),
                });
                AnalyticsClient::new(channel)
                    .with_seer_limits()
                    .release(with_auth(parts, Some("Bearer forged.jwt.token")))
                    .await
                    .map(drop)
                    .expect_err("refused")
            }
        });
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let pulled = pulled.load(Ordering::SeqCst);
        // The server answered after the headers; the client stopped sending within the
        // HTTP/2 flow-control window, nowhere near the 64 MiB offered.
        assert!(
            pulled <= 8,
            "{uri}: {pulled} of {CHUNKS} chunks of {CHUNK} bytes were taken from the stream"
        );
        eprintln!(
            "{uri}: refused in {:?} after {pulled} of {CHUNKS} chunks",
            started.elapsed()
        );
    }
}
