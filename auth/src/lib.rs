//! SEER's authentication and authorization: JWT verification, the typed [`Caller`] identity
//! and the gRPC interceptor, for every SEER server; and, with the `issuer` feature (only the
//! key authority enables it), the Ed25519 signing key and token issuing.
//!
//! # Tokens
//!
//! Tokens are compact JWTs signed with EdDSA (Ed25519) by the key authority. Verification is
//! pinned to EdDSA: the header's `alg` is checked to be exactly `EdDSA` before the library
//! sees the token, so `alg: none`, HS256 (including HS256 keyed with the public key), RS256
//! and the rest are refused. Required claims: `iss` (the key authority, [`DEFAULT_ISSUER`]),
//! `aud` (must include the verifying service's name, [`AUDIENCE_KEY_AUTHORITY`] or
//! [`AUDIENCE_UTILITY_SERVER`]), `exp`, `sub`, `jti` and `role`; `nbf` and `iat` are checked
//! when present; `exp`, `nbf` and `iat` tolerate [`DEFAULT_LEEWAY`] of clock skew. A
//! `household` token must carry a `meter_id` claim (the one meter it may act for); other
//! roles must not.
//!
//! ```json
//! {"iss":"seer-key-authority","sub":"household:M-0001",
//!  "aud":["seer-key-authority","seer-utility-server"],
//!  "exp":1767225600,"nbf":1764633600,"iat":1764633600,
//!  "jti":"5f0c…","role":"household","meter_id":"M-0001"}
//! ```
//!
//! # The signing key
//!
//! `JwtSigningKey::load_or_generate` (feature `issuer`) reads a PKCS#8 PEM Ed25519 key from a file of mode
//! 0600, or generates one and writes it so. A key file that group or others can read or write
//! is refused with a message naming the `chmod` to run. In memory the key lives in types that
//! zeroize on drop; no `Debug`, log or error message contains it. The same key signs the
//! audit log's head (see the key authority's `audit` module), with a domain-separated message.
//!
//! # Meter identity
//!
//! [`device`] holds meters' Ed25519 device keys, the canonical domain-tagged statements they
//! sign (billing receipts, batches, analytics receipts, enrolment, token renewal) and the key
//! authority's [`device::MeterCertificate`] binding a meter id to its device key. A household
//! token alone never lets its holder speak for the meter.
//!
//! # In a server
//!
//! [`AuthInterceptor`] verifies each request's `authorization: Bearer <jwt>` and inserts the
//! [`Caller`]; handlers call [`authorize`] with the roles they admit. Errors become gRPC
//! statuses in one place (`From<AuthError> for tonic::Status`): token problems are
//! `UNAUTHENTICATED`, role problems `PERMISSION_DENIED`, and the messages say what is wrong
//! with the token, never anything about the server.

pub mod audit_chain;
pub mod device;
mod error;
pub mod fingerprint;
mod interceptor;
#[cfg(feature = "issuer")]
mod issue;
mod key_file;
pub mod peer;
#[cfg(feature = "issuer")]
mod signing_key;
mod token;

pub use error::{AuthError, TokenRejection};
pub use interceptor::{
    AuthInterceptor, OnFailure, Unauthenticated, authenticate, authorize, caller,
};
#[cfg(feature = "issuer")]
pub use issue::{IssuedToken, TokenIssuer, TokenRequest, issue_token};
pub use key_file::KeyOrigin;
#[cfg(feature = "issuer")]
pub use signing_key::JwtSigningKey;
pub use token::{
    AUDIENCE_KEY_AUTHORITY, AUDIENCE_UTILITY_SERVER, Caller, DEFAULT_ISSUER, DEFAULT_LEEWAY,
    Identity, MAX_HOUSEHOLD_TOKEN_LIFETIME, MAX_METER_ID_LEN, MAX_SUBJECT_LEN, MAX_TOKEN_LEN,
    MAX_TOKEN_LIFETIME, Role, TokenPolicy, TokenVerifier, key_id_of, parse_lifetime,
    validate_meter_id, verify_signature,
};
