//! Tokens, the signing key file and the interceptor, from the outside: round trips per role
//! and every refusal case.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use seer_auth::{
    AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, AuthError, AuthInterceptor, Caller,
    DEFAULT_ISSUER, Identity, JwtSigningKey, KeyOrigin, MAX_TOKEN_LEN, OnFailure, Role,
    TokenIssuer, TokenPolicy, TokenRejection, TokenRequest, TokenVerifier, Unauthenticated,
    authenticate, authorize, caller, issue_token,
};
use serde_json::{Value, json};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Interceptor as _;

/// A signing key written to a file, so that tests can also sign arbitrary claims with it (the
/// library never signs anything but well-formed SEER claims).
struct Fixture {
    _dir: tempfile::TempDir,
    key: Arc<JwtSigningKey>,
    raw: jsonwebtoken::EncodingKey,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwt.key");
    let (key, origin) = JwtSigningKey::load_or_generate(&path).expect("generate");
    assert_eq!(origin, KeyOrigin::Generated);
    let pem = std::fs::read_to_string(&path).expect("read key");
    let der = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
        .expect("pkcs8")
        .to_pkcs8_der()
        .expect("der");
    let key = Arc::new(key);
    let issuer = TokenIssuer::new(Arc::clone(&key), DEFAULT_ISSUER);
    let verifier = issuer.verifier(AUDIENCE_KEY_AUTHORITY);
    Fixture {
        _dir: dir,
        key,
        raw: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        issuer,
        verifier,
    }
});

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

fn identity(role: Role) -> Identity {
    let meter = (role == Role::Household).then(|| "M-0001".to_owned());
    Identity::try_new(role, meter).expect("valid identity")
}

fn issue(role: Role) -> String {
    FIXTURE
        .issuer
        .issue(&TokenRequest::new(identity(role), hour()))
        .expect("issue")
        .token
}

/// Valid SEER claims for a utility token; tests change them.
fn claims() -> Value {
    let now = now();
    json!({
        "iss": DEFAULT_ISSUER,
        "sub": "utility",
        "aud": [AUDIENCE_KEY_AUTHORITY],
        "exp": now + 3600,
        "nbf": now,
        "iat": now,
        "jti": "0123456789abcdef0123456789abcdef",
        "role": "utility",
    })
}

/// Signs `claims` with the fixture's key (EdDSA).
fn sign(claims: &Value) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    jsonwebtoken::encode(&header, claims, &FIXTURE.raw).expect("sign")
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

fn verify(token: &str) -> Result<Caller, TokenRejection> {
    FIXTURE.verifier.verify(token)
}

#[test]
fn round_trip_for_every_role() {
    for role in Role::ALL {
        let issued = FIXTURE
            .issuer
            .issue(&TokenRequest::new(identity(role), hour()))
            .expect("issue");
        let caller = verify(&issued.token).expect("valid token");
        assert_eq!(caller.role(), role);
        assert_eq!(caller.identity(), &identity(role));
        assert_eq!(caller.token_id(), issued.token_id);
        assert_eq!(caller.token_id().len(), 32);
        assert_eq!(caller.subject(), issued.subject);
        assert_eq!(caller.expires_at(), issued.expires_at);
        match role {
            Role::Household => {
                assert_eq!(caller.meter_id(), Some("M-0001"));
                assert_eq!(caller.subject(), "household:M-0001");
            }
            other => {
                assert_eq!(caller.meter_id(), None);
                assert_eq!(caller.subject(), other.as_str());
            }
        }
        // The utility server's verifier accepts the same token (both audiences by default),
        // except a household's: household tokens name the key authority alone by default,
        // and a token of one service is refused by the other.
        let utility_side = FIXTURE.issuer.verifier(AUDIENCE_UTILITY_SERVER);
        if role == Role::Household {
            assert!(matches!(
                utility_side.verify(&issued.token),
                Err(TokenRejection::WrongAudience)
            ));
        } else {
            assert_eq!(utility_side.verify(&issued.token).expect("valid"), caller);
        }
        // The debug output of an issued token hides the bearer credential.
        assert!(!format!("{issued:?}").contains(&issued.token));
    }
}

#[test]
fn tokens_carry_an_eddsa_header_with_the_key_id() {
    let token = issue(Role::Auditor);
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(FIXTURE.key.key_id()));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
}

#[test]
fn custom_subjects_and_audiences_round_trip() {
    let mut request = TokenRequest::new(Identity::Auditor, hour());
    request.subject = Some("auditor:alice@example.org".into());
    request.audience = vec![AUDIENCE_KEY_AUTHORITY.into()];
    let token = FIXTURE.issuer.issue(&request).expect("issue").token;
    assert_eq!(
        verify(&token).expect("valid").subject(),
        "auditor:alice@example.org"
    );
}

#[test]
fn invalid_token_requests_are_refused_at_issue() {
    let mut request = TokenRequest::new(Identity::Utility, Duration::ZERO);
    assert!(matches!(
        FIXTURE.issuer.issue(&request),
        Err(AuthError::InvalidRequest(_))
    ));
    request.lifetime = Duration::from_secs(400 * 86_400);
    assert!(FIXTURE.issuer.issue(&request).is_err());
    request.lifetime = hour();
    request.audience.clear();
    assert!(FIXTURE.issuer.issue(&request).is_err());
    let household = TokenRequest::new(
        Identity::Household {
            meter_id: "no spaces allowed".into(),
        },
        hour(),
    );
    assert!(FIXTURE.issuer.issue(&household).is_err());
    let mut control = TokenRequest::new(Identity::Admin, hour());
    control.subject = Some("admin\nInjected: header".into());
    assert!(FIXTURE.issuer.issue(&control).is_err());
}

#[test]
fn expired_tokens_are_refused_but_leeway_is_honoured() {
    let request = TokenRequest::new(Identity::Utility, hour());
    let two_hours_ago = SystemTime::now() - 2 * hour();
    let expired = FIXTURE
        .issuer
        .issue_at(&request, two_hours_ago)
        .expect("issue");
    assert_eq!(verify(&expired.token), Err(TokenRejection::Expired));

    // Expired ten seconds ago: within the 30 s leeway.
    let just = SystemTime::now() - hour() - Duration::from_secs(10);
    let just_expired = FIXTURE.issuer.issue_at(&request, just).expect("issue");
    assert!(verify(&just_expired.token).is_ok());
}

/// Found by the `auth` fuzz target: a validly signed token whose `exp` lies beyond what the
/// system clock can represent (u64::MAX seconds) made the verifier panic while converting it
/// to a `SystemTime`; it is refused as an invalid claim instead.
#[test]
fn an_expiry_beyond_the_clocks_range_is_refused_without_panicking() {
    for exp in [u64::MAX, i64::MAX as u64 + 1] {
        let mut claims = claims();
        claims["exp"] = json!(exp);
        assert_eq!(
            verify(&sign(&claims)),
            Err(TokenRejection::InvalidClaim {
                claim: "exp",
                reason: "beyond the representable time range",
            }),
            "exp = {exp}"
        );
    }
}

#[test]
fn tokens_from_the_future_are_refused() {
    let request = TokenRequest::new(Identity::Utility, hour());
    let later = FIXTURE
        .issuer
        .issue_at(&request, SystemTime::now() + hour())
        .expect("issue");
    assert_eq!(verify(&later.token), Err(TokenRejection::NotYetValid));

    // iat in the future without nbf.
    let mut claims = claims();
    claims.as_object_mut().expect("object").remove("nbf");
    claims["iat"] = json!(now() + 3600);
    assert_eq!(verify(&sign(&claims)), Err(TokenRejection::NotYetValid));
}

#[test]
fn wrong_audience_is_refused() {
    let mut request = TokenRequest::new(Identity::Utility, hour());
    request.audience = vec![AUDIENCE_UTILITY_SERVER.into()];
    let token = FIXTURE.issuer.issue(&request).expect("issue").token;
    assert_eq!(verify(&token), Err(TokenRejection::WrongAudience));

    let mut claims = claims();
    claims["aud"] = json!("somebody-else");
    assert_eq!(verify(&sign(&claims)), Err(TokenRejection::WrongAudience));
}

#[test]
fn wrong_issuer_is_refused() {
    let other_issuer = TokenIssuer::new(Arc::clone(&FIXTURE.key), "not-the-key-authority");
    let token = other_issuer
        .issue(&TokenRequest::new(Identity::Admin, hour()))
        .expect("issue")
        .token;
    assert_eq!(verify(&token), Err(TokenRejection::WrongIssuer));
}

#[test]
fn alg_none_is_refused() {
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = json!({ "alg": alg, "typ": "JWT" });
        for signature in ["", "AAAA"] {
            let token = format!("{}.{}.{signature}", b64(&header), b64(&claims()));
            assert_eq!(
                verify(&token),
                Err(TokenRejection::AlgorithmNotAccepted),
                "alg {alg:?} signature {signature:?}"
            );
        }
    }
    // No alg at all.
    let token = format!("{}.{}.", b64(&json!({ "typ": "JWT" })), b64(&claims()));
    assert_eq!(verify(&token), Err(TokenRejection::Malformed));
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    let public_raw = FIXTURE.key.verifying_key().to_bytes();
    let public_pem = FIXTURE.key.public_key_pem().expect("pem");
    for secret in [public_raw.as_slice(), public_pem.as_bytes()] {
        for alg in [
            jsonwebtoken::Algorithm::HS256,
            jsonwebtoken::Algorithm::HS384,
            jsonwebtoken::Algorithm::HS512,
        ] {
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(alg),
                &claims(),
                &jsonwebtoken::EncodingKey::from_secret(secret),
            )
            .expect("encode");
            assert_eq!(
                verify(&token),
                Err(TokenRejection::AlgorithmNotAccepted),
                "{alg:?}"
            );
        }
    }
}

#[test]
fn other_algorithms_are_refused() {
    let valid = issue(Role::Utility);
    let signature = valid.rsplit('.').next().expect("three parts");
    for alg in ["RS256", "ES256", "PS256", "EdDSA ", "eddsa", "Ed25519"] {
        let header = json!({ "alg": alg, "typ": "JWT" });
        let token = format!("{}.{}.{signature}", b64(&header), b64(&claims()));
        assert_eq!(
            verify(&token),
            Err(TokenRejection::AlgorithmNotAccepted),
            "{alg}"
        );
    }
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let other = Arc::new(JwtSigningKey::generate().expect("key"));
    let token = TokenIssuer::new(other, DEFAULT_ISSUER)
        .issue(&TokenRequest::new(Identity::Admin, hour()))
        .expect("issue")
        .token;
    assert_eq!(verify(&token), Err(TokenRejection::BadSignature));
}

#[test]
fn altered_claims_break_the_signature() {
    let token = issue(Role::Household);
    let mut parts = token.split('.');
    let (header, claims, signature) = (
        parts.next().expect("header"),
        parts.next().expect("claims"),
        parts.next().expect("signature"),
    );
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("b64")).expect("json");
    claims["role"] = json!("admin");
    claims.as_object_mut().expect("object").remove("meter_id");
    let forged = format!("{header}.{}.{signature}", b64(&claims));
    assert_eq!(verify(&forged), Err(TokenRejection::BadSignature));
}

#[test]
fn malformed_tokens_are_refused() {
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "!!!.???.***",
        "eyJhbGciOiJFZERTQSJ9..",
    ] {
        assert_eq!(verify(token), Err(TokenRejection::Malformed), "{token:?}");
    }
    let valid = issue(Role::Utility);
    let (message, _) = valid.rsplit_once('.').expect("three parts");
    assert_eq!(
        verify(&format!("{message}.not*base64")),
        Err(TokenRejection::Malformed)
    );
    // Claims are parsed only once the signature verifies: garbage claims under a garbage
    // signature are a bad signature.
    let header = b64(&json!({ "alg": "EdDSA" }));
    assert_eq!(
        verify(&format!("{header}.bm90IGpzb24.AAAA")),
        Err(TokenRejection::BadSignature)
    );
    // Garbage claims under a valid signature are malformed.
    let garbage = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &json!(["not", "an", "object"]),
        &FIXTURE.raw,
    )
    .expect("sign");
    assert_eq!(verify(&garbage), Err(TokenRejection::Malformed));
    assert_eq!(
        verify(&"a".repeat(MAX_TOKEN_LEN + 1)),
        Err(TokenRejection::TooLarge)
    );
}

#[test]
fn household_tokens_need_a_valid_meter_id_and_others_none() {
    let mut household = claims();
    household["role"] = json!("household");
    household["sub"] = json!("household:M-1");
    assert_eq!(
        verify(&sign(&household)),
        Err(TokenRejection::MissingClaim("meter_id".into()))
    );
    household["meter_id"] = json!("");
    assert!(matches!(
        verify(&sign(&household)),
        Err(TokenRejection::InvalidClaim {
            claim: "meter_id",
            ..
        })
    ));
    household["meter_id"] = json!(42);
    assert!(matches!(
        verify(&sign(&household)),
        Err(TokenRejection::InvalidClaim {
            claim: "meter_id",
            ..
        })
    ));
    household["meter_id"] = json!("M-1");
    assert_eq!(
        verify(&sign(&household)).expect("valid").meter_id(),
        Some("M-1")
    );

    let mut utility = claims();
    utility["meter_id"] = json!("M-1");
    assert!(matches!(
        verify(&sign(&utility)),
        Err(TokenRejection::InvalidClaim {
            claim: "meter_id",
            ..
        })
    ));
}

#[test]
fn required_claims_are_required() {
    for claim in ["exp", "iss", "aud", "sub", "jti", "role"] {
        let mut claims = claims();
        claims.as_object_mut().expect("object").remove(claim);
        assert_eq!(
            verify(&sign(&claims)),
            Err(TokenRejection::MissingClaim(claim.into())),
            "{claim}"
        );
    }
    let mut unknown_role = claims();
    unknown_role["role"] = json!("root");
    assert!(matches!(
        verify(&sign(&unknown_role)),
        Err(TokenRejection::InvalidClaim { claim: "role", .. })
    ));
    let mut text_exp = claims();
    text_exp["exp"] = json!("tomorrow");
    assert!(matches!(
        verify(&sign(&text_exp)),
        Err(TokenRejection::InvalidClaim { claim: "exp", .. })
    ));
}

#[test]
fn critical_header_extensions_are_refused() {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.crit = Some(vec!["exp".into()]);
    let token = jsonwebtoken::encode(&header, &claims(), &FIXTURE.raw).expect("sign");
    assert_eq!(
        verify(&token),
        Err(TokenRejection::UnsupportedCriticalHeader)
    );
}

#[test]
fn a_verifier_needs_only_the_public_key_pem() {
    let pem = FIXTURE.key.public_key_pem().expect("pem");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let verifier = TokenVerifier::from_public_key_pem(
        &pem,
        &TokenPolicy::for_audience(AUDIENCE_KEY_AUTHORITY),
    )
    .expect("verifier");
    assert_eq!(verifier.key_id(), FIXTURE.key.key_id());
    assert!(verifier.verify(&issue(Role::Admin)).is_ok());
    assert!(matches!(
        TokenVerifier::from_public_key_pem("not a key", &TokenPolicy::for_audience("x")),
        Err(AuthError::InvalidPublicKey)
    ));
}

fn metadata(authorization: Option<&str>) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    if let Some(value) = authorization {
        metadata.insert(
            "authorization",
            MetadataValue::try_from(value).expect("ascii"),
        );
    }
    metadata
}

#[test]
fn the_bearer_header_is_required_and_strict() {
    let token = issue(Role::Auditor);
    assert_eq!(
        authenticate(&FIXTURE.verifier, &metadata(None)),
        Err(TokenRejection::Missing)
    );
    for bad in [
        "Basic dXNlcjpwYXNz".to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        token.clone(),
        format!("Bearer {token} extra"),
        format!("Token {token}"),
    ] {
        assert_eq!(
            authenticate(&FIXTURE.verifier, &metadata(Some(&bad))),
            Err(TokenRejection::MalformedHeader),
            "{bad:?}"
        );
    }
    for good in [format!("Bearer {token}"), format!("bearer {token}")] {
        let caller = authenticate(&FIXTURE.verifier, &metadata(Some(&good))).expect("valid");
        assert_eq!(caller.role(), Role::Auditor);
    }
}

#[test]
fn refusals_become_unauthenticated_statuses_without_internals() {
    let request = TokenRequest::new(Identity::Utility, hour());
    let expired = FIXTURE
        .issuer
        .issue_at(&request, SystemTime::now() - 2 * hour())
        .expect("issue")
        .token;
    let mut wrong_audience = TokenRequest::new(Identity::Utility, hour());
    wrong_audience.audience = vec!["elsewhere".into()];
    let wrong_audience = FIXTURE.issuer.issue(&wrong_audience).expect("issue").token;
    let none = format!("{}.{}.", b64(&json!({ "alg": "none" })), b64(&claims()));
    let cases = [
        (None, "missing bearer token"),
        (Some("Bearer not-a-jwt".to_owned()), "malformed token"),
        (Some(format!("Bearer {expired}")), "token expired"),
        (
            Some(format!("Bearer {wrong_audience}")),
            "token audience not accepted",
        ),
        (
            Some(format!("Bearer {none}")),
            "token algorithm not accepted",
        ),
    ];
    let mut interceptor =
        AuthInterceptor::new(Arc::new(FIXTURE.verifier.clone()), OnFailure::Reject);
    for (authorization, message) in cases {
        let mut request = tonic::Request::new(());
        *request.metadata_mut() = metadata(authorization.as_deref());
        let status = interceptor.call(request).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(
            status.message().starts_with(message),
            "{}",
            status.message()
        );
        for internal in ["jsonwebtoken", "Error", "ed25519", "kind"] {
            assert!(!status.message().contains(internal), "{}", status.message());
        }
    }
}

#[test]
fn the_interceptor_inserts_the_caller() {
    let mut interceptor =
        AuthInterceptor::new(Arc::new(FIXTURE.verifier.clone()), OnFailure::Reject);
    let mut request = tonic::Request::new(());
    *request.metadata_mut() = metadata(Some(&format!("Bearer {}", issue(Role::Household))));
    let request = interceptor.call(request).expect("accepted");
    let caller = caller(&request).expect("caller");
    assert_eq!(caller.meter_id(), Some("M-0001"));
    assert!(caller.check_household_meter("M-0001").is_ok());
    assert!(matches!(
        caller.check_household_meter("M-0002"),
        Err(AuthError::WrongMeter { .. })
    ));
    let status: tonic::Status = authorize(&request, &[Role::Auditor, Role::Admin])
        .expect_err("households may not audit")
        .into();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(authorize(&request, &[Role::Household]).is_ok());
}

#[test]
fn a_recording_interceptor_lets_the_handler_log_the_refusal() {
    let mut interceptor =
        AuthInterceptor::new(Arc::new(FIXTURE.verifier.clone()), OnFailure::Record);
    let request = interceptor
        .call(tonic::Request::new(()))
        .expect("passed through");
    assert_eq!(
        request.extensions().get::<Unauthenticated>(),
        Some(&Unauthenticated(TokenRejection::Missing))
    );
    let error = caller(&request).expect_err("no caller");
    assert!(matches!(
        error,
        AuthError::Unauthenticated(TokenRejection::Missing)
    ));
    assert_eq!(
        tonic::Status::from(error).code(),
        tonic::Code::Unauthenticated
    );
    // A request no interceptor saw has no caller either.
    assert!(caller(&tonic::Request::new(())).is_err());
}

#[test]
fn the_key_file_is_generated_with_mode_0600_and_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("jwt.key");
    let (first, origin) = JwtSigningKey::load_or_generate(&path).expect("generate");
    assert_eq!(origin, KeyOrigin::Generated);
    let metadata = std::fs::metadata(&path).expect("written");
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read_to_string(&path).expect("read");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("jwt.key")]);

    let (second, origin) = JwtSigningKey::load_or_generate(&path).expect("load");
    assert_eq!(origin, KeyOrigin::Loaded);
    assert_eq!(first.key_id(), second.key_id());
    let token = TokenIssuer::new(Arc::new(first), DEFAULT_ISSUER)
        .issue(&TokenRequest::new(Identity::Admin, hour()))
        .expect("issue")
        .token;
    assert!(
        TokenIssuer::new(Arc::new(second), DEFAULT_ISSUER)
            .verifier(AUDIENCE_KEY_AUTHORITY)
            .verify(&token)
            .is_ok()
    );

    // Neither Debug nor errors show the secret.
    let (key, _) = JwtSigningKey::load_or_generate(&path).expect("load");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!format!("{key:?}").contains(&body));
}

#[test]
fn key_files_open_to_group_or_others_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwt.key");
    JwtSigningKey::load_or_generate(&path).expect("generate");
    for mode in [0o640, 0o604, 0o660, 0o644, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let error = JwtSigningKey::load_or_generate(&path).expect_err("refused");
        assert!(
            matches!(error, AuthError::KeyFilePermissions { mode: m, .. } if m == mode),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    assert!(
        JwtSigningKey::load(&path).is_ok(),
        "owner-read-only is fine"
    );
}

#[test]
fn key_files_that_hold_no_key_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwt.key");
    std::fs::write(&path, "not a key").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let error = JwtSigningKey::load(&path).expect_err("refused");
    assert!(
        matches!(error, AuthError::KeyFileFormat { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("not a key"));

    assert!(matches!(
        JwtSigningKey::load(dir.path()),
        Err(AuthError::KeyFileNotRegular { .. })
    ));
    assert!(matches!(
        JwtSigningKey::load(&dir.path().join("missing")),
        Err(AuthError::KeyFileIo { .. })
    ));
}

#[test]
fn the_cli_issue_function_uses_the_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwt.key");
    let issued = issue_token(&path, Role::Household, Some("M-7".into()), hour()).expect("issue");
    let (key, origin) = JwtSigningKey::load_or_generate(&path).expect("load");
    assert_eq!(origin, KeyOrigin::Loaded);
    let caller = TokenIssuer::new(Arc::new(key), DEFAULT_ISSUER)
        .verifier(AUDIENCE_KEY_AUTHORITY)
        .verify(&issued.token)
        .expect("valid");
    assert_eq!(caller.meter_id(), Some("M-7"));
    assert!(issue_token(&path, Role::Household, None, hour()).is_err());
    assert!(issue_token(&path, Role::Auditor, Some("M-7".into()), hour()).is_err());
}
