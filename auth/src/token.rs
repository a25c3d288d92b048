//! JWTs: roles, the typed caller identity, issuing and verification (EdDSA only).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use sha2::{Digest as _, Sha256};

use super::{AuthError, TokenRejection};

/// Largest token, in bytes, that is parsed at all.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The `iss` of every token the key authority issues.
pub const DEFAULT_ISSUER: &str = "seer-key-authority";
/// The `aud` value that names the key authority.
pub const AUDIENCE_KEY_AUTHORITY: &str = "seer-key-authority";
/// The `aud` value that names the utility server.
pub const AUDIENCE_UTILITY_SERVER: &str = "seer-utility-server";
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Longest lifetime a token may be issued with: 90 days (the key authority's operator can
/// revoke a token before then: `key-authority revoke-token`).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// Longest lifetime of a household token: one hour. Meters renew theirs with their device
/// key (`seer.v1.Enrolment.RenewToken`), one token per audience.
pub const MAX_HOUSEHOLD_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Longest meter id accepted in a household token.
pub const MAX_METER_ID_LEN: usize = 64;
/// Longest subject accepted in a token.
pub const MAX_SUBJECT_LEN: usize = 256;

/// What a token holder may do. Serialized lowercase in the `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A household's meter client, bound to exactly one meter id.
    Household,
    /// The utility server.
    Utility,
    /// Reads and verifies the key authority's audit log.
    Auditor,
    /// Operates the system (every role's read access).
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Household, Role::Utility, Role::Auditor, Role::Admin];

    /// The wire name (`household`, `utility`, `auditor`, `admin`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Household => "household",
            Role::Utility => "utility",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                AuthError::InvalidRequest(format!(
                    "unknown role {s:?} (expected household, utility, auditor or admin)"
                ))
            })
    }
}

/// A role together with what it is bound to: a household is always bound to one meter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A household, bound to one meter.
    Household {
        /// The meter the token is bound to.
        meter_id: String,
    },
    /// The utility server.
    Utility,
    /// An auditor.
    Auditor,
    /// An administrator.
    Admin,
}

impl Identity {
    /// Builds an identity from a role and an optional meter id: households need a valid meter
    /// id (see [`validate_meter_id`]); the other roles must not carry one.
    ///
    /// # Errors
    /// [`AuthError::InvalidRequest`] when the meter id is missing, invalid or superfluous.
    pub fn try_new(role: Role, meter_id: Option<String>) -> Result<Self, AuthError> {
        match (role, meter_id) {
            (Role::Household, Some(meter_id)) => {
                validate_meter_id(&meter_id).map_err(|reason| {
                    AuthError::InvalidRequest(format!("meter id {meter_id:?}: {reason}"))
                })?;
                Ok(Identity::Household { meter_id })
            }
            (Role::Household, None) => Err(AuthError::InvalidRequest(
                "a household token must be bound to a meter id".into(),
            )),
            (role, Some(_)) => Err(AuthError::InvalidRequest(format!(
                "only household tokens carry a meter id, not {role} tokens"
            ))),
            (Role::Utility, None) => Ok(Identity::Utility),
            (Role::Auditor, None) => Ok(Identity::Auditor),
            (Role::Admin, None) => Ok(Identity::Admin),
        }
    }

    /// The role.
    #[must_use]
    pub fn role(&self) -> Role {
        match self {
            Identity::Household { .. } => Role::Household,
            Identity::Utility => Role::Utility,
            Identity::Auditor => Role::Auditor,
            Identity::Admin => Role::Admin,
        }
    }

    /// The meter a household is bound to; `None` for the other roles.
    #[must_use]
    pub fn meter_id(&self) -> Option<&str> {
        match self {
            Identity::Household { meter_id } => Some(meter_id),
            _ => None,
        }
    }

    /// The subject used when a token request names none: `household:<meter id>` for
    /// households, the role name otherwise.
    #[must_use]
    pub fn default_subject(&self) -> String {
        match self {
            Identity::Household { meter_id } => format!("household:{meter_id}"),
            other => other.role().as_str().to_owned(),
        }
    }
}

/// Checks a meter id: 1 to [`MAX_METER_ID_LEN`] ASCII letters, digits, `-`, `_`, `.` or `:`.
///
/// # Errors
/// A short reason when the id is not acceptable.
pub fn validate_meter_id(meter_id: &str) -> Result<(), &'static str> {
    if meter_id.is_empty() {
        return Err("empty");
    }
    if meter_id.len() > MAX_METER_ID_LEN {
        return Err("longer than 64 characters");
    }
    if !meter_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err("only ASCII letters, digits, '-', '_', '.' and ':' are allowed");
    }
    Ok(())
}

pub(crate) fn validate_subject(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("empty");
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err("longer than 256 bytes");
    }
    if subject.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

/// Who is calling: the verified content of a bearer token. Interceptors put it into the
/// request's extensions; handlers read it with [`super::caller`] or [`super::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    subject: String,
    identity: Identity,
    token_id: String,
    expires_at: SystemTime,
}

impl Caller {
    /// A caller with the given subject and identity, as if authenticated by a token with no id
    /// that never expires. For in-process callers and tests; remote callers are built by
    /// [`TokenVerifier::verify`] only.
    #[must_use]
    pub fn new(subject: impl Into<String>, identity: Identity) -> Self {
        Self {
            subject: subject.into(),
            identity,
            token_id: String::new(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)),
        }
    }

    /// The token's subject (`sub`).
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The role and what it is bound to.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.identity.role()
    }

    /// The meter a household caller is bound to; `None` for other roles.
    #[must_use]
    pub fn meter_id(&self) -> Option<&str> {
        self.identity.meter_id()
    }

    /// The token's id (`jti`); empty for callers built with [`Caller::new`].
    #[must_use]
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// When the token expires.
    #[must_use]
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Succeeds when the caller's role is one of `allowed`.
    ///
    /// # Errors
    /// [`AuthError::PermissionDenied`] otherwise.
    pub fn require_role(&self, allowed: &[Role]) -> Result<(), AuthError> {
        if allowed.contains(&self.role()) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied {
                role: self.role(),
                allowed: allowed
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }

    /// Succeeds unless the caller is a household bound to another meter than `meter_id`.
    /// (Whether other roles may act for a meter is the caller's policy, checked with
    /// [`Caller::require_role`].)
    ///
    /// # Errors
    /// [`AuthError::WrongMeter`] for a household bound to another meter.
    pub fn check_household_meter(&self, meter_id: &str) -> Result<(), AuthError> {
        match &self.identity {
            Identity::Household { meter_id: bound } if bound != meter_id => {
                Err(AuthError::WrongMeter {
                    bound: bound.clone(),
                    requested: meter_id.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// What a verifier accepts besides a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// The only accepted `iss`.
    pub issuer: String,
    /// The `aud` value that must be among the token's audiences (this service's name).
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

impl TokenPolicy {
    /// The default policy of the service called `audience`: issuer [`DEFAULT_ISSUER`], leeway
    /// [`DEFAULT_LEEWAY`].
    #[must_use]
    pub fn for_audience(audience: &str) -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: audience.to_owned(),
            leeway: DEFAULT_LEEWAY,
        }
    }
}

/// Verifies tokens: EdDSA with one public key, pinned; `iss`, `aud`, `exp`, `sub` required;
/// `nbf` and `iat` checked when present; SEER's `role`, `meter_id` and `jti` claims checked.
/// Needs only the public key, so any service can hold one.
#[derive(Clone)]
pub struct TokenVerifier {
    decoding: DecodingKey,
    validation: Validation,
    audience: String,
    leeway: Duration,
    key_id: String,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("key_id", &self.key_id)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for tokens signed by `key` under `policy`.
    #[must_use]
    pub fn new(key: &ed25519_dalek::VerifyingKey, policy: &TokenPolicy) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.leeway = policy.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[policy.issuer.as_str()]);
        validation.set_audience(&[policy.audience.as_str()]);
        Self {
            decoding: DecodingKey::from_ed_der(key.as_bytes()),
            validation,
            audience: policy.audience.clone(),
            leeway: policy.leeway,
            key_id: key_id_of(key),
        }
    }

    /// A verifier for the public key in a SubjectPublicKeyInfo PEM (as written by
    /// [`JwtSigningKey::public_key_pem`]).
    ///
    /// # Errors
    /// [`AuthError::InvalidPublicKey`] when the PEM is not an Ed25519 public key.
    pub fn from_public_key_pem(pem: &str, policy: &TokenPolicy) -> Result<Self, AuthError> {
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| AuthError::InvalidPublicKey)?;
        Ok(Self::new(&key, policy))
    }

    /// The id of the public key this verifier checks signatures with.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Verifies `token` and returns who it names.
    ///
    /// # Errors
    /// The first reason the token is not acceptable.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenRejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenRejection::TooLarge);
        }
        check_header(token)?;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
                .map_err(|error| match rejection_of(error.kind()) {
                    // jsonwebtoken reports a registered claim of the wrong type (`"exp":
                    // "tomorrow"`) as missing. Its signature has been verified by then, so the
                    // claims can be read to say which it is.
                    TokenRejection::MissingClaim(claim) if claim_present(token, &claim) => {
                        TokenRejection::InvalidClaim {
                            claim: static_claim_name(&claim),
                            reason: "wrong type",
                        }
                    }
                    other => other,
                })?;
        self.caller_from_claims(&data.claims)
    }

    fn caller_from_claims(&self, claims: &Map<String, Value>) -> Result<Caller, TokenRejection> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Some(iat) = claims.get("iat") {
            let iat = iat.as_u64().ok_or(TokenRejection::InvalidClaim {
                claim: "iat",
                reason: "not a non-negative integer",
            })?;
            if iat > now.saturating_add(self.leeway.as_secs()) {
                return Err(TokenRejection::NotYetValid);
            }
        }
        let string_claim = |name: &'static str| -> Result<Option<&str>, TokenRejection> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(value)) => Ok(Some(value)),
                Some(_) => Err(TokenRejection::InvalidClaim {
                    claim: name,
                    reason: "not a string",
                }),
            }
        };
        let subject = string_claim("sub")?.ok_or(TokenRejection::MissingClaim("sub".into()))?;
        validate_subject(subject).map_err(|reason| TokenRejection::InvalidClaim {
            claim: "sub",
            reason,
        })?;
        let token_id = string_claim("jti")?.ok_or(TokenRejection::MissingClaim("jti".into()))?;
        if token_id.is_empty() || token_id.len() > 128 {
            return Err(TokenRejection::InvalidClaim {
                claim: "jti",
                reason: "empty or longer than 128 bytes",
            });
        }
        let role = string_claim("role")?.ok_or(TokenRejection::MissingClaim("role".into()))?;
        let role = Role::from_str(role).map_err(|_| TokenRejection::InvalidClaim {
            claim: "role",
            reason: "not household, utility, auditor or admin",
        })?;
        let meter_id = string_claim("meter_id")?;
        let identity = match (role, meter_id) {
            (Role::Household, None) => return Err(TokenRejection::MissingClaim("meter_id".into())),
            (Role::Household, Some(meter_id)) => {
                validate_meter_id(meter_id).map_err(|reason| TokenRejection::InvalidClaim {
                    claim: "meter_id",
                    reason,
                })?;
                // A household token names exactly one service: a token a meter sends to the
                // utility must never let the utility speak as the meter to the key authority.
                if !single_audience(claims.get("aud"), &self.audience) {
                    return Err(TokenRejection::WrongAudience);
                }
                Identity::Household {
                    meter_id: meter_id.to_owned(),
                }
            }
            (_, Some(_)) => {
                return Err(TokenRejection::InvalidClaim {
                    claim: "meter_id",
                    reason: "only household tokens carry a meter id",
                });
            }
            (Role::Utility, None) => Identity::Utility,
            (Role::Auditor, None) => Identity::Auditor,
            (Role::Admin, None) => Identity::Admin,
        };
        // `exp` is required and validated by jsonwebtoken; read it back for the caller.
        let expires =
            claims
                .get("exp")
                .and_then(Value::as_u64)
                .ok_or(TokenRejection::InvalidClaim {
                    claim: "exp",
                    reason: "not a non-negative integer",
                })?;
        // A signed `exp` far beyond the clock's range must be refused, not overflow.
        let expires_at = UNIX_EPOCH.checked_add(Duration::from_secs(expires)).ok_or(
            TokenRejection::InvalidClaim {
                claim: "exp",
                reason: "beyond the representable time range",
            },
        )?;
        Ok(Caller {
            subject: subject.to_owned(),
            identity,
            token_id: token_id.to_owned(),
            expires_at,
        })
    }
}

/// Whether `aud` names exactly `audience` and nothing else (a string, or a one-element array).
fn single_audience(aud: Option<&Value>, audience: &str) -> bool {
    match aud {
        Some(Value::String(one)) => one == audience,
        Some(Value::Array(values)) => {
            matches!(values.as_slice(), [Value::String(one)] if one == audience)
        }
        _ => false,
    }
}

/// Checks the JOSE header before anything else: `alg` must be exactly `EdDSA` (so `none`,
/// HS256 with the public key as secret, and every other algorithm are refused whatever the
/// library would do with them), no `crit` extensions, `typ` absent or `JWT`.
fn check_header(token: &str) -> Result<(), TokenRejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenRejection::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|_| TokenRejection::Malformed)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "EdDSA" => {}
        Some(_) => return Err(TokenRejection::AlgorithmNotAccepted),
        None => return Err(TokenRejection::Malformed),
    }
    if header.contains_key("crit") {
        return Err(TokenRejection::UnsupportedCriticalHeader);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(TokenRejection::Malformed),
    }
    if claims.is_empty() || signature.is_empty() {
        return Err(TokenRejection::Malformed);
    }
    Ok(())
}

/// Whether the (already verified) token's claims contain `claim` at all.
fn claim_present(token: &str, claim: &str) -> bool {
    token
        .split('.')
        .nth(1)
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims).ok())
        .and_then(|claims| serde_json::from_slice::<Map<String, Value>>(&claims).ok())
        .is_some_and(|claims| claims.get(claim).is_some_and(|value| !value.is_null()))
}

fn rejection_of(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidSignature => TokenRejection::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => TokenRejection::AlgorithmNotAccepted,
        ErrorKind::MissingRequiredClaim(claim) => TokenRejection::MissingClaim(claim.clone()),
        ErrorKind::InvalidClaimFormat(claim) => TokenRejection::InvalidClaim {
            claim: static_claim_name(claim),
            reason: "wrong type",
        },
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
        // Malformed structure, base64, JSON or UTF-8, and anything a later version adds.
        _ => TokenRejection::Malformed,
    }
}

fn static_claim_name(claim: &str) -> &'static str {
    ["exp", "nbf", "iat", "iss", "aud", "sub"]
        .into_iter()
        .find(|known| *known == claim)
        .unwrap_or("unknown")
}

/// Parses a token lifetime: a number followed by `s`, `m`, `h`, `d` or `w` (seconds,
/// minutes, hours, days, weeks); a bare number is seconds. E.g. `90s`, `15m`, `12h`, `30d`.
///
/// # Errors
/// [`AuthError::InvalidRequest`] for anything else, zero, or more than
/// [`MAX_TOKEN_LIFETIME`].
pub fn parse_lifetime(text: &str) -> Result<Duration, AuthError> {
    let text = text.trim();
    let invalid = || {
        AuthError::InvalidRequest(format!(
            "lifetime {text:?} is not a number followed by s, m, h, d or w"
        ))
    };
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid()),
    };
    let lifetime = Duration::from_secs(number.checked_mul(seconds_per_unit).ok_or_else(invalid)?);
    if lifetime.is_zero() || lifetime > MAX_TOKEN_LIFETIME {
        return Err(AuthError::InvalidRequest(format!(
            "lifetime {text:?} must be more than zero and at most {} days",
            MAX_TOKEN_LIFETIME.as_secs() / 86_400
        )));
    }
    Ok(lifetime)
}

#[cfg(all(test, feature = "issuer"))]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse() {
        assert_eq!(parse_lifetime("90").expect("ok"), Duration::from_secs(90));
        assert_eq!(parse_lifetime("15m").expect("ok"), Duration::from_secs(900));
        assert_eq!(
            parse_lifetime("12h").expect("ok"),
            Duration::from_secs(43_200)
        );
        assert_eq!(
            parse_lifetime("30d").expect("ok"),
            Duration::from_secs(2_592_000)
        );
        assert_eq!(
            parse_lifetime("2w").expect("ok"),
            Duration::from_secs(1_209_600)
        );
        for bad in [
            "",
            "0",
            "0d",
            "d",
            "1y",
            "-5m",
            "91d",
            "99999999999999999999w",
        ] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().expect("known"), role);
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn identities_bind_households_to_one_valid_meter() {
        assert!(Identity::try_new(Role::Household, None).is_err());
        assert!(Identity::try_new(Role::Household, Some(String::new())).is_err());
        assert!(Identity::try_new(Role::Household, Some("M 1".into())).is_err());
        assert!(Identity::try_new(Role::Utility, Some("M-1".into())).is_err());
        let household = Identity::try_new(Role::Household, Some("M-1".into())).expect("valid");
        assert_eq!(household.meter_id(), Some("M-1"));
        assert_eq!(household.default_subject(), "household:M-1");
        assert_eq!(
            Identity::try_new(Role::Auditor, None).expect("valid"),
            Identity::Auditor
        );
    }

    #[test]
    fn households_may_act_only_for_their_meter() {
        let household = Caller::new(
            "h",
            Identity::Household {
                meter_id: "M-1".into(),
            },
        );
        assert!(household.check_household_meter("M-1").is_ok());
        assert!(matches!(
            household.check_household_meter("M-2"),
            Err(AuthError::WrongMeter { .. })
        ));
        assert!(
            Caller::new("u", Identity::Utility)
                .check_household_meter("M-2")
                .is_ok()
        );
        assert!(
            household
                .require_role(&[Role::Auditor, Role::Admin])
                .is_err()
        );
    }
}

/// Checks an Ed25519 signature made by [`JwtSigningKey::sign`] (strict verification: no
/// malleable or small-order encodings).
#[must_use]
pub fn verify_signature(
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature: &ed25519_dalek::Signature,
) -> bool {
    key.verify_strict(message, signature).is_ok()
}

/// Hex of the first 8 bytes of the SHA-256 of the raw 32-byte public key.
#[must_use]
pub fn key_id_of(key: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}
