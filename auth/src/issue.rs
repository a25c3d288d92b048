//! Issuing tokens: needs the key authority's signing key (feature `issuer`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;

use crate::token::validate_subject;
use crate::{
    AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, AuthError, DEFAULT_ISSUER, DEFAULT_LEEWAY,
    Identity, JwtSigningKey, MAX_HOUSEHOLD_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME, Role, TokenPolicy,
    TokenVerifier,
};

/// What a token is issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The role (and, for households, the meter).
    pub identity: Identity,
    /// The subject; `None` uses [`Identity::default_subject`].
    pub subject: Option<String>,
    /// The services the token is for (`aud`); must not be empty.
    pub audience: Vec<String>,
    /// How long the token is valid: more than zero, at most [`MAX_TOKEN_LIFETIME`].
    pub lifetime: Duration,
}

impl TokenRequest {
    /// A request for `identity` valid for `lifetime`, with the default subject, for both the
    /// key authority and the utility server — except a household's, which names the key
    /// authority alone (household tokens name exactly one service; set `audience` to
    /// [`AUDIENCE_UTILITY_SERVER`] for the utility's).
    #[must_use]
    pub fn new(identity: Identity, lifetime: Duration) -> Self {
        let audience = if identity.role() == Role::Household {
            vec![AUDIENCE_KEY_AUTHORITY.to_owned()]
        } else {
            vec![
                AUDIENCE_KEY_AUTHORITY.to_owned(),
                AUDIENCE_UTILITY_SERVER.to_owned(),
            ]
        };
        Self {
            identity,
            subject: None,
            audience,
            lifetime,
        }
    }
}

/// A freshly issued token. Its `Debug` output hides the token itself (a bearer credential).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT (`header.claims.signature`).
    pub token: String,
    /// Its `jti`.
    pub token_id: String,
    /// Its `sub`.
    pub subject: String,
    /// Its `exp`.
    pub expires_at: SystemTime,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[REDACTED]")
            .field("token_id", &self.token_id)
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The claims SEER puts into a token.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a [String],
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: &'a str,
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    meter_id: Option<&'a str>,
}

/// Issues EdDSA-signed tokens with the key authority's key.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    key: Arc<JwtSigningKey>,
    issuer: String,
}

impl TokenIssuer {
    /// An issuer signing with `key`, writing `issuer` into `iss` (normally
    /// [`DEFAULT_ISSUER`]).
    #[must_use]
    pub fn new(key: Arc<JwtSigningKey>, issuer: impl Into<String>) -> Self {
        Self {
            key,
            issuer: issuer.into(),
        }
    }

    /// Issues a token valid from now for `request.lifetime`.
    ///
    /// # Errors
    /// When the request is invalid (empty audience, zero or too long lifetime, bad subject) or
    /// signing fails.
    pub fn issue(&self, request: &TokenRequest) -> Result<IssuedToken, AuthError> {
        self.issue_at(request, SystemTime::now())
    }

    /// Issues a token as if the clock read `now` (for tools and tests that need a fixed
    /// clock, e.g. to make an already expired token).
    ///
    /// # Errors
    /// As [`Self::issue`].
    pub fn issue_at(
        &self,
        request: &TokenRequest,
        now: SystemTime,
    ) -> Result<IssuedToken, AuthError> {
        if request.lifetime.is_zero() || request.lifetime > MAX_TOKEN_LIFETIME {
            return Err(AuthError::InvalidRequest(format!(
                "lifetime must be more than zero and at most {} days",
                MAX_TOKEN_LIFETIME.as_secs() / 86_400
            )));
        }
        if request.audience.is_empty() || request.audience.iter().any(String::is_empty) {
            return Err(AuthError::InvalidRequest(
                "the audience must name at least one service".into(),
            ));
        }
        // A household token speaks for a meter to one service only, briefly: verifiers refuse
        // household tokens naming more than their own audience, and meters renew theirs with
        // their device key (`RenewToken`).
        if request.identity.role() == Role::Household {
            if request.audience.len() != 1 {
                return Err(AuthError::InvalidRequest(format!(
                    "a household token names exactly one audience ({AUDIENCE_KEY_AUTHORITY} or \
                     {AUDIENCE_UTILITY_SERVER}); meters obtain theirs with their device key \
                     after `meter-client enrol`"
                )));
            }
            if request.lifetime > MAX_HOUSEHOLD_TOKEN_LIFETIME {
                return Err(AuthError::InvalidRequest(format!(
                    "a household token lives at most {} s; meters renew theirs with their \
                     device key after `meter-client enrol`",
                    MAX_HOUSEHOLD_TOKEN_LIFETIME.as_secs()
                )));
            }
        }
        // Re-check the identity: its fields are public, so it may not have come through
        // `Identity::try_new`.
        let identity = Identity::try_new(
            request.identity.role(),
            request.identity.meter_id().map(str::to_owned),
        )?;
        let subject = request
            .subject
            .clone()
            .unwrap_or_else(|| identity.default_subject());
        validate_subject(&subject)
            .map_err(|reason| AuthError::InvalidRequest(format!("subject: {reason}")))?;
        let issued_at = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::InvalidRequest("the clock is before 1970".into()))?
            .as_secs();
        let expires = issued_at + request.lifetime.as_secs().max(1);
        let mut id = [0_u8; 16];
        getrandom::fill(&mut id).map_err(|e| AuthError::Random(e.to_string()))?;
        let token_id = hex::encode(id);

        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.key.key_id().to_owned());
        let claims = IssuedClaims {
            iss: &self.issuer,
            sub: &subject,
            aud: &request.audience,
            exp: expires,
            nbf: issued_at,
            iat: issued_at,
            jti: &token_id,
            role: identity.role(),
            meter_id: identity.meter_id(),
        };
        let token = jsonwebtoken::encode(&header, &claims, self.key.encoding_key())
            .map_err(AuthError::Signing)?;
        Ok(IssuedToken {
            token,
            token_id,
            subject,
            expires_at: UNIX_EPOCH + Duration::from_secs(expires),
        })
    }

    /// A verifier for tokens of this issuer addressed to `audience`, with
    /// [`DEFAULT_LEEWAY`].
    #[must_use]
    pub fn verifier(&self, audience: &str) -> TokenVerifier {
        TokenVerifier::new(
            &self.key.verifying_key(),
            &TokenPolicy {
                issuer: self.issuer.clone(),
                audience: audience.to_owned(),
                leeway: DEFAULT_LEEWAY,
            },
        )
    }
}

/// Issues a token with the key in `key_file` (generating the key there when the file does not
/// exist yet, as the server would): what the key authority's token-issuing CLI subcommand
/// calls. The token is for both services ([`TokenRequest::new`]) and its subject the
/// identity's default.
///
/// # Errors
/// When the role and meter id do not fit together ([`Identity::try_new`]), the lifetime is
/// out of range, or the key file cannot be loaded or created.
pub fn issue_token(
    key_file: &std::path::Path,
    role: Role,
    meter_id: Option<String>,
    lifetime: Duration,
) -> Result<IssuedToken, AuthError> {
    let identity = Identity::try_new(role, meter_id)?;
    let (key, _origin) = JwtSigningKey::load_or_generate(key_file)?;
    TokenIssuer::new(Arc::new(key), DEFAULT_ISSUER).issue(&TokenRequest::new(identity, lifetime))
}
