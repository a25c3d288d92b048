//! `key-authority issue-token` and `key-authority jwt-public-key` as a separate process: a
//! token issued by the CLI verifies against the printed public key, with the role and meter
//! it was issued for; bad requests fail with a clear message.

use std::process::{Command, Output};

use seer_auth::{AUDIENCE_UTILITY_SERVER, Identity, Role, TokenPolicy, TokenVerifier};
use seer_tests::bin_path;

fn key_authority(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    Command::new(bin_path("key-authority").expect("key-authority is built"))
        .args(args)
        .env(
            "SEER_KEY_AUTHORITY__AUTH__SIGNING_KEY_FILE",
            dir.path().join("jwt.pem"),
        )
        .output()
        .expect("key-authority runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[test]
fn issued_tokens_verify_against_the_published_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = stdout(&key_authority(
        &dir,
        &[
            "issue-token",
            "--role",
            "household",
            "--meter-id",
            "M-0042",
            "--lifetime",
            "1h",
            "--audience",
            "seer-utility-server",
        ],
    ));
    let pem = stdout(&key_authority(&dir, &["jwt-public-key"]));
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let verifier = TokenVerifier::from_public_key_pem(
        &pem,
        &TokenPolicy::for_audience(AUDIENCE_UTILITY_SERVER),
    )
    .expect("valid public key");
    let caller = verifier.verify(token.trim()).expect("token verifies");
    assert_eq!(caller.role(), Role::Household);
    assert_eq!(
        caller.identity(),
        &Identity::Household {
            meter_id: "M-0042".into()
        }
    );

    // A key file generated for another key authority does not verify this token.
    let other = tempfile::tempdir().expect("temp dir");
    let other_pem = stdout(&key_authority(&other, &["jwt-public-key"]));
    let other_verifier = TokenVerifier::from_public_key_pem(
        &other_pem,
        &TokenPolicy::for_audience(AUDIENCE_UTILITY_SERVER),
    )
    .expect("valid public key");
    assert!(other_verifier.verify(token.trim()).is_err());
}

#[test]
fn bad_token_requests_fail_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = key_authority(&dir, &["issue-token", "--role", "household"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must be bound to a meter id"), "{stderr}");

    let output = key_authority(
        &dir,
        &["issue-token", "--role", "utility", "--lifetime", "400d"],
    );
    assert!(!output.status.success());
    let output = key_authority(&dir, &["issue-token", "--role", "root"]);
    assert!(!output.status.success());
}
