//! Token revocation on a key authority built by `Application::build` on port 0 (SQLite in a
//! temporary directory), over real gRPC: a revoked auditor token is refused by the gate at
//! once when revoked in process, and within the reload interval when revoked by another
//! process on the same database (as `key-authority revoke-token` does); other tokens keep
//! working; each revocation is a granted audit entry naming the token id, each refused call a
//! refusal entry of the `unauthenticated.revoked` class, and the chain verifies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use key_authority::audit::{AuditLog, Decision, ListQuery};
use key_authority::auth::{Identity, IssuedToken, JwtSigningKey, TokenRequest};
use key_authority::keys::KeySetSpec;
use key_authority::revocation::{REFRESH_INTERVAL, REVOKE_TOKEN, RevokedTokens};
use key_authority::{Application, Settings};
use seer_core::circuits::billing;
use seer_proto::v1;
use seer_proto::v1::audit_client::AuditClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

async fn verify(client: &AuditClient<Channel>, token: &IssuedToken) -> Result<(), tonic::Status> {
    client
        .clone()
        .verify(with_token(
            v1::VerifyAuditLogRequest::default(),
            &token.token,
        ))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_refused_by_the_gate_and_the_revocation_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.keys.dir = dir.path().join("keys");
    settings.keys.sets = vec![KeySetSpec {
        parameter_set: billing::PARAMETER_SET.id(),
        galois_steps: vec![1, 2],
    }];
    settings.auth.signing_key_file = dir.path().join("jwt.pem");
    let url = format!("sqlite://{}", dir.path().join("ka.db").display());
    settings.audit.database_url = url.clone();
    let app = Application::build(settings).await.expect("build");
    let issuer = app.issuer().clone();
    let audit = Arc::clone(app.audit_log());
    let in_process = app.revoked_tokens().clone();
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
    let client = AuditClient::new(channel);
    let token = |identity: Identity| {
        issuer
            .issue(&TokenRequest::new(identity, Duration::from_secs(3600)))
            .expect("token")
    };
    let (first, second, admin) = (
        token(Identity::Auditor),
        token(Identity::Auditor),
        token(Identity::Admin),
    );
    for t in [&first, &second, &admin] {
        verify(&client, t)
            .await
            .expect("accepted before revocation");
    }

    // Revoked in this process: refused on the next call.
    assert!(
        in_process
            .revoke(&first.token_id, first.expires_at)
            .await
            .expect("revoked")
    );
    let refused = verify(&client, &first).await.expect_err("revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
    verify(&client, &second)
        .await
        .expect("another token still works");
    // Revoking again writes nothing.
    assert!(
        !in_process
            .revoke(&first.token_id, first.expires_at)
            .await
            .expect("no-op")
    );

    // Revoked by another process on the same database (the command-line tool's way): refused
    // within the reload interval.
    let (key, _) = JwtSigningKey::load_or_generate(&dir.path().join("jwt.pem")).expect("key");
    let other = RevokedTokens::load(Arc::new(
        AuditLog::connect(&url, Arc::new(key))
            .await
            .expect("second connection"),
    ))
    .await
    .expect("loaded");
    assert!(other.is_revoked(&first.token_id));
    assert!(
        other
            .revoke(&second.token_id, second.expires_at)
            .await
            .expect("revoked")
    );
    let started = Instant::now();
    let deadline = REFRESH_INTERVAL * 5;
    loop {
        match verify(&client, &second).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            Err(status) => panic!("unexpected refusal: {status:?}"),
            Ok(()) => {
                assert!(
                    started.elapsed() < deadline,
                    "a token revoked by another process still accepted after {deadline:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    verify(&client, &admin)
        .await
        .expect("an unrevoked token still works");

    // The record (refusals are flushed when the server stops): one granted revoke-token
    // entry per token, refusals of the revoked class.
    let _ = stop.send(());
    server.await.expect("join").expect("served");
    let entries = audit
        .list(&ListQuery {
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .expect("list")
        .entries;
    let mut revoked: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind.as_str() == REVOKE_TOKEN && e.decision == Decision::Granted)
        .filter_map(|e| e.period.as_deref())
        .collect();
    revoked.sort_unstable();
    let mut expected = vec![first.token_id.as_str(), second.token_id.as_str()];
    expected.sort_unstable();
    assert_eq!(revoked, expected);
    assert!(
        entries.iter().any(|e| matches!(&e.decision,
            Decision::Refused { reason } if reason.contains("unauthenticated.revoked"))),
        "no refusal of a revoked token was logged"
    );
    assert!(audit.verify(None).await.expect("verify").is_intact());
}
