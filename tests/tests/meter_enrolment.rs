//! Meter enrolment across real processes: `key-authority enrolment-code` prints a one-time
//! code, `meter-client enrol` creates the device key (mode 0600) and stores the key
//! authority's certificate, which verifies with the published JWT public key; enrolling again
//! with the same key returns the same certificate, a wrong code is refused, another device
//! under the used code is refused, and `key-authority revoke-meter` revokes (once). Every step
//! is in the key authority's audit log.

use std::os::unix::fs::PermissionsExt as _;

use seer_auth::device::{AuthorityPublicKey, MeterCertificate};
use seer_tests::deployment::{Deployment, DeploymentOptions};

fn certificate(deployment: &Deployment, meter: &str) -> Vec<u8> {
    std::fs::read(
        deployment
            .dir()
            .join(format!("meter-{meter}"))
            .join(meter_client::identity::CERTIFICATE_FILE),
    )
    .expect("certificate stored")
}

#[test]
fn meters_enrol_with_one_time_codes_and_can_be_revoked() {
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let code = deployment.enrolment_code("M-0001").expect("code");
    assert_eq!(code.len(), 32, "128-bit hex code: {code:?}");

    // A wrong code is refused, and nothing is stored.
    let output = deployment
        .meter_enrol("M-0001", &"0".repeat(32))
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("unknown enrolment code"),
        "{stderr}"
    );

    // The right code enrols; the key file is private; the certificate verifies with the key
    // authority's published key and names the meter and the device key.
    deployment
        .meter_enrol("M-0001", &code)
        .map(|o| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)))
        .expect("enrols");
    let state = deployment.dir().join("meter-M-0001");
    let mode = std::fs::metadata(state.join(meter_client::identity::DEVICE_KEY_FILE))
        .expect("device key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(deployment.dir().join("ka-jwt-public.pem")).expect("pem");
    let authority = AuthorityPublicKey::from_public_key_pem(&pem).expect("authority key");
    let first = certificate(&deployment, "M-0001");
    let parsed = MeterCertificate::try_from_bytes(&first).expect("parses");
    let device = parsed.verify(&authority, "M-0001").expect("verifies");
    assert!(parsed.verify(&authority, "M-0002").is_err());
    let identity =
        meter_client::identity::DeviceIdentity::load(&state, "M-0001").expect("identity loads");
    assert_eq!(identity.certificate(), &parsed);
    assert_eq!(device.to_bytes(), parsed.body().device_public_key);

    // Again with the same key (a crash after enrolling): the same certificate.
    std::fs::remove_file(state.join(meter_client::identity::CERTIFICATE_FILE)).expect("rm");
    deployment
        .meter_enrol("M-0001", &code)
        .map(|o| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)))
        .expect("re-enrols");
    assert_eq!(certificate(&deployment, "M-0001"), first);

    // Another device (a fresh state directory) under the used code is refused.
    std::fs::remove_file(state.join(meter_client::identity::DEVICE_KEY_FILE)).expect("rm");
    let output = deployment.meter_enrol("M-0001", &code).expect("runs");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Revocation: once.
    let output = deployment
        .authority_cli(&["revoke-meter", "--meter-id", "M-0001"])
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = deployment
        .authority_cli(&["revoke-meter", "--meter-id", "M-0001"])
        .expect("runs");
    assert!(!output.status.success(), "a second revocation succeeded");

    // The audit log holds every step, in order.
    let kinds = audit_kinds(&deployment);
    assert_eq!(
        kinds,
        [
            ("enrolment-code", "granted"),
            ("enrol", "refused"),
            ("enrol", "granted"),
            ("enrol", "granted"),
            ("enrol", "refused"),
            ("revoke-meter", "granted"),
            ("revoke-meter", "refused"),
        ]
        .map(|(k, d)| (k.to_owned(), d.to_owned()))
    );
}

/// (request kind, decision) of every audit entry, in sequence order, read from the key
/// authority's SQLite database.
fn audit_kinds(deployment: &Deployment) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let url = format!(
            "sqlite://{}?mode=ro",
            deployment.dir().join("ka/audit.db").display()
        );
        let pool = sqlx::AnyPool::connect(&url).await.expect("audit db");
        sqlx::query_as("SELECT request_kind, decision FROM audit_entries ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("entries")
    })
}
