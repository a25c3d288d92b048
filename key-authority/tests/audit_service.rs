//! `seer.v1.Audit` over real gRPC on a free port, behind the authenticating interceptor: only
//! auditors and admins may list and verify, and verification reports damage precisely.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use key_authority::audit::{AuditLog, AuditService, Decision, InputDigest, NewEntry, RequestKind};
use key_authority::auth::{
    AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, AuthInterceptor, Caller, DEFAULT_ISSUER,
    Identity, JwtSigningKey, OnFailure, TokenIssuer, TokenRequest,
};
use seer_proto::v1;
use seer_proto::v1::audit_client::AuditClient;
use seer_proto::v1::audit_server::{Audit as _, AuditServer};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request};

struct App {
    _dir: tempfile::TempDir,
    url: String,
    issuer: TokenIssuer,
    key: Arc<JwtSigningKey>,
    client: AuditClient<Channel>,
    service: AuditService,
}

async fn spawn_app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let key = Arc::new(JwtSigningKey::generate().expect("key"));
    let log = Arc::new(
        AuditLog::connect(&url, Arc::clone(&key))
            .await
            .expect("log"),
    );
    let utility = Caller::new("utility", Identity::Utility);
    for (meter, decision) in [
        ("M-1", Decision::Granted),
        ("M-1", Decision::refused("already released")),
        ("M-2", Decision::Granted),
    ] {
        log.append(
            NewEntry::new(RequestKind::BILL, decision)
                .caller(&utility)
                .meter(meter)
                .period("2007-01")
                .input(InputDigest::sha256(meter.as_bytes())),
        )
        .await
        .expect("append");
    }
    let issuer = TokenIssuer::new(Arc::clone(&key), DEFAULT_ISSUER);
    let interceptor = AuthInterceptor::new(
        Arc::new(issuer.verifier(AUDIENCE_KEY_AUTHORITY)),
        OnFailure::Reject,
    );
    let service = AuditService::new(Arc::clone(&log));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = Server::builder()
        .add_service(AuditServer::with_interceptor(service.clone(), interceptor))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    let client = AuditClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    App {
        _dir: dir,
        url,
        issuer,
        key: Arc::clone(&key),
        client,
        service,
    }
}

impl App {
    fn token(&self, identity: Identity) -> String {
        self.issuer
            .issue(&TokenRequest::new(identity, Duration::from_secs(600)))
            .expect("issue")
            .token
    }

    fn request<T>(message: T, token: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        request
    }

    async fn list(
        &self,
        message: v1::ListAuditEntriesRequest,
        token: Option<&str>,
    ) -> Result<v1::ListAuditEntriesResponse, tonic::Status> {
        self.client
            .clone()
            .list_entries(Self::request(message, token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn verify(
        &self,
        message: v1::VerifyAuditLogRequest,
        token: Option<&str>,
    ) -> Result<v1::VerifyAuditLogResponse, tonic::Status> {
        self.client
            .clone()
            .verify(Self::request(message, token))
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn auditors_and_admins_list_and_verify() {
    let app = spawn_app().await;
    for identity in [Identity::Auditor, Identity::Admin] {
        let token = app.token(identity);
        let listed = app
            .list(v1::ListAuditEntriesRequest::default(), Some(&token))
            .await
            .expect("listed");
        assert_eq!(listed.entries.len(), 3);
        let second = &listed.entries[1];
        assert_eq!(second.sequence, 2);
        assert_eq!(second.kind, "bill");
        assert_eq!(second.meter_id.as_deref(), Some("M-1"));
        assert_eq!(second.period.as_deref(), Some("2007-01"));
        assert_eq!(second.decision(), v1::AuditDecision::Refused);
        assert_eq!(second.reason, "already released");
        assert_eq!(second.input_digest, InputDigest::sha256(b"M-1").0.to_vec());
        assert_eq!(
            second.caller,
            Some(v1::AuditCaller {
                subject: "utility".into(),
                role: "utility".into()
            })
        );
        assert_eq!(second.previous_hash, listed.entries[0].entry_hash);
        assert!(second.recorded_at.ends_with('Z'));

        let verified = app
            .verify(v1::VerifyAuditLogRequest::default(), Some(&token))
            .await
            .expect("verified");
        assert!(verified.intact, "{verified:?}");
        assert_eq!(verified.entries_checked, 3);
        assert_eq!(verified.problem, None);
        let head = verified.head.expect("head");
        assert_eq!(head.sequence, 3);
        assert_eq!(head.entry_hash, listed.entries[2].entry_hash);
        assert_eq!(verified.head_key_id.len(), 16);

        // The head is signed: checkable with the public key alone.
        assert!(key_authority::auth::audit_chain::head_signature_valid(
            &app.key.verifying_key(),
            head.sequence,
            &head.entry_hash.clone().try_into().expect("32 bytes"),
            &verified.head_signature,
        ));
        assert!(verified.entries.is_empty(), "no page asked for");

        // The head works as the next anchor; entries come in pages.
        let anchored = app
            .verify(
                v1::VerifyAuditLogRequest {
                    anchor: Some(head),
                    after_sequence: 1,
                    page_size: 1,
                },
                Some(&token),
            )
            .await
            .expect("verified");
        assert!(anchored.intact);
        assert_eq!(anchored.entries, listed.entries[1..2]);
        assert_eq!(anchored.next_after_sequence, Some(2));
    }
}

#[tokio::test]
async fn filters_and_pages_travel() {
    let app = spawn_app().await;
    let token = app.token(Identity::Auditor);
    let page = app
        .list(
            v1::ListAuditEntriesRequest {
                meter_id: Some("M-1".into()),
                kind: Some("bill".into()),
                page_size: 1,
                ..Default::default()
            },
            Some(&token),
        )
        .await
        .expect("listed");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.next_after_sequence, Some(1));
    let rest = app
        .list(
            v1::ListAuditEntriesRequest {
                meter_id: Some("M-1".into()),
                after_sequence: 1,
                ..Default::default()
            },
            Some(&token),
        )
        .await
        .expect("listed");
    assert_eq!(
        rest.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(rest.next_after_sequence, None);

    for bad in [
        v1::ListAuditEntriesRequest {
            page_size: 5000,
            ..Default::default()
        },
        v1::ListAuditEntriesRequest {
            kind: Some("BILL; DROP TABLE".into()),
            ..Default::default()
        },
        v1::ListAuditEntriesRequest {
            from_unix_micros: Some(i64::MAX),
            ..Default::default()
        },
    ] {
        let status = app.list(bad, Some(&token)).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let status = app
        .verify(
            v1::VerifyAuditLogRequest {
                anchor: Some(v1::AuditAnchor {
                    sequence: 1,
                    entry_hash: vec![1, 2, 3],
                }),
                ..Default::default()
            },
            Some(&token),
        )
        .await
        .expect_err("invalid anchor");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn other_roles_are_denied() {
    let app = spawn_app().await;
    for identity in [
        Identity::Utility,
        Identity::Household {
            meter_id: "M-1".into(),
        },
    ] {
        let token = app.token(identity);
        let status = app
            .list(v1::ListAuditEntriesRequest::default(), Some(&token))
            .await
            .expect_err("denied");
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = app
            .verify(v1::VerifyAuditLogRequest::default(), Some(&token))
            .await
            .expect_err("denied");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn unauthenticated_callers_are_refused() {
    let app = spawn_app().await;
    let status = app
        .list(v1::ListAuditEntriesRequest::default(), None)
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("missing bearer token"));

    let expired = app
        .issuer
        .issue_at(
            &TokenRequest::new(Identity::Auditor, Duration::from_secs(60)),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .expect("issue")
        .token;
    let status = app
        .verify(v1::VerifyAuditLogRequest::default(), Some(&expired))
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "token expired");

    let mut request = TokenRequest::new(Identity::Auditor, Duration::from_secs(60));
    request.audience = vec![AUDIENCE_UTILITY_SERVER.into()];
    let elsewhere = app.issuer.issue(&request).expect("issue").token;
    let status = app
        .list(v1::ListAuditEntriesRequest::default(), Some(&elsewhere))
        .await
        .expect_err("wrong audience");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "token audience not accepted");

    // A handler reached without any interceptor still refuses.
    let status = app
        .service
        .list_entries(Request::new(v1::ListAuditEntriesRequest::default()))
        .await
        .expect_err("no caller");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn verification_reports_the_damaged_row() {
    let app = spawn_app().await;
    let token = app.token(Identity::Auditor);
    let pool = {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&app.url).await.expect("raw")
    };
    sqlx::query("DELETE FROM audit_entries WHERE seq = 2")
        .execute(&pool)
        .await
        .expect("tamper");
    pool.close().await;
    let report = app
        .verify(v1::VerifyAuditLogRequest::default(), Some(&token))
        .await
        .expect("verified");
    assert!(!report.intact);
    let problem = report.problem.expect("problem");
    assert_eq!(problem.kind(), v1::AuditProblemKind::SequenceGap);
    assert_eq!(problem.row, 2);
    assert_eq!(problem.sequence, Some(3));
    assert!(problem.detail.contains("expected sequence 2, found 3"));
}
