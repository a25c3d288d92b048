//! The `auth` target's body: the token verifier, meter certificates and device signatures,
//! and the audit chain's canonical encoding and head signature (see `fuzz_targets/auth.rs`).

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use seer_auth::audit_chain::{EntryFields, head_message, head_signature_valid};
use seer_auth::device::{
    AuthorityPublicKey, DevicePublicKey, EnrolmentStatement, MeterCertificate,
    MeterCertificateBody, Statement as _,
};
use seer_auth::{AUDIENCE_UTILITY_SERVER, Role, TokenPolicy, TokenVerifier};

/// The fuzzing key's seed: a fixed Ed25519 key that signs the seed tokens and certificates
/// (a test fixture, never a deployment's key).
pub const AUTHORITY_SEED: [u8; 32] = *b"seer fuzz authority key, fixture";

/// The fixed authority signing key.
pub fn authority_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&AUTHORITY_SEED))
}

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        TokenVerifier::new(
            &authority_key().verifying_key(),
            &TokenPolicy::for_audience(AUDIENCE_UTILITY_SERVER),
        )
    })
}

/// A compact JWS of `header` and `claims` (raw JSON bytes) signed with the fixture key.
pub fn sign_token(header: &[u8], claims: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = authority_key().sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// The JOSE header SEER's issuer writes.
pub const HEADER: &[u8] = br#"{"alg":"EdDSA","typ":"JWT"}"#;

/// Runs the check chosen by `data[0]` on `data[1..]`.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 8 {
        0 => raw_token(rest),
        1 => signed_claims(HEADER, rest),
        2 => {
            // A header of the fuzzer's choosing too, signed: only `alg: EdDSA` may pass.
            let split = usize::from(rest.first().copied().unwrap_or(0)).min(rest.len());
            let (header, claims) = rest.split_at(split);
            signed_claims(header, claims);
        }
        3 => certificate_bytes(rest),
        4 => signed_certificate(rest),
        5 => device_signature(rest),
        6 => public_key_pem(rest),
        _ => audit_chain(rest),
    }
}

fn raw_token(bytes: &[u8]) {
    if let Ok(token) = std::str::from_utf8(bytes) {
        // Nobody but the fixture key signs: a token not signed by it must never pass.
        if let Ok(caller) = verifier().verify(token) {
            let signing_input = token.rsplit_once('.').map(|(input, _)| input);
            let resigned = signing_input.map(|input| {
                let signature = authority_key().sign(input.as_bytes());
                format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
            });
            assert_eq!(
                resigned.as_deref(),
                Some(token),
                "a token passed without the authority's signature: {caller:?}"
            );
        }
    }
}

fn signed_claims(header: &[u8], claims: &[u8]) {
    let token = sign_token(header, claims);
    let Ok(caller) = verifier().verify(&token) else {
        return;
    };
    // Accepted: the claims must say what the caller says.
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(claims).expect("accepted claims are a JSON object");
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).expect("an accepted header is a JSON object");
    assert_eq!(header.get("alg").and_then(|a| a.as_str()), Some("EdDSA"));
    assert_eq!(
        parsed.get("sub").and_then(|s| s.as_str()),
        Some(caller.subject())
    );
    assert_eq!(
        parsed.get("role").and_then(|s| s.as_str()),
        Some(caller.role().as_str())
    );
    assert_eq!(
        parsed.get("meter_id").and_then(|s| s.as_str()),
        caller.meter_id()
    );
    assert_eq!(
        caller.role() == Role::Household,
        caller.meter_id().is_some()
    );
}

fn certificate_bytes(bytes: &[u8]) {
    let Ok(certificate) = MeterCertificate::try_from_bytes(bytes) else {
        return;
    };
    // The wire form is canonical: what parses encodes back to the same bytes.
    assert_eq!(certificate.to_bytes(), bytes);
    let authority = AuthorityPublicKey::new(authority_key().verifying_key());
    let meter_id = certificate.body().meter_id.clone();
    if certificate.verify(&authority, &meter_id).is_ok() {
        // Only a body the fixture key signed verifies.
        let signature = authority_key()
            .sign(&certificate.body().encode())
            .to_bytes();
        assert_eq!(&bytes[bytes.len() - 64..], signature.as_slice());
    }
}

fn signed_certificate(bytes: &[u8]) {
    if bytes.len() < 40 {
        return;
    }
    let (key, rest) = bytes.split_at(32);
    let (issued_at, meter_id) = rest.split_at(8);
    let body = MeterCertificateBody {
        meter_id: String::from_utf8_lossy(meter_id).into_owned(),
        device_public_key: key.try_into().expect("32 bytes"),
        issued_at: i64::from_be_bytes(issued_at.try_into().expect("8 bytes")),
    };
    let mut wire = body.encode();
    wire.extend_from_slice(&authority_key().sign(&body.encode()).to_bytes());
    let Ok(certificate) = MeterCertificate::try_from_bytes(&wire) else {
        // Only the size limit may refuse an honestly encoded certificate.
        assert!(wire.len() > seer_auth::device::MAX_CERTIFICATE_LEN);
        return;
    };
    assert_eq!(certificate.body(), &body);
    let authority = AuthorityPublicKey::new(authority_key().verifying_key());
    match certificate.verify(&authority, &body.meter_id) {
        Ok(device) => assert_eq!(device.to_bytes(), body.device_public_key),
        Err(seer_auth::AuthError::InvalidPublicKey) => {
            assert!(DevicePublicKey::try_from_bytes(&body.device_public_key).is_err());
        }
        Err(other) => panic!("an authority-signed certificate was refused: {other}"),
    }
    let other_meter = format!("{}x", body.meter_id);
    assert!(certificate.verify(&authority, &other_meter).is_err());
}

fn device_signature(bytes: &[u8]) {
    if bytes.len() < 96 {
        return;
    }
    let (key, rest) = bytes.split_at(32);
    let (signature, meter_id) = rest.split_at(64);
    let Ok(device) = DevicePublicKey::try_from_bytes(key) else {
        return;
    };
    let statement = EnrolmentStatement {
        meter_id: String::from_utf8_lossy(meter_id).into_owned(),
        device_public_key: device.to_bytes(),
    };
    let _ = device.verify(&statement, signature);
    // A signature of any length is refused rather than read past its end.
    let _ = device.verify(&statement, &bytes[32..]);
    let _ = device.key_id();
}

fn public_key_pem(bytes: &[u8]) {
    if let Ok(pem) = std::str::from_utf8(bytes) {
        let _ = AuthorityPublicKey::from_public_key_pem(pem);
        let _ = TokenVerifier::from_public_key_pem(
            pem,
            &TokenPolicy::for_audience(AUDIENCE_UTILITY_SERVER),
        );
    }
}

/// Two entries from one input: different fields must never share an encoding (the chain's
/// hashes would otherwise not bind what they claim to).
fn audit_chain(bytes: &[u8]) {
    let mut reader = Fields(bytes);
    let (Some(a), Some(b)) = (reader.entry(), reader.entry()) else {
        return;
    };
    let (fa, fb) = (a.fields(), b.fields());
    assert_eq!(
        fa == fb,
        fa.canonical_encoding() == fb.canonical_encoding(),
        "the canonical encoding must be injective"
    );
    let hash = fa.hash();
    let key = authority_key();
    let signature = key.sign(&head_message(a.sequence, &hash)).to_bytes();
    assert!(head_signature_valid(
        &key.verifying_key(),
        a.sequence,
        &hash,
        &signature
    ));
    assert!(!head_signature_valid(
        &key.verifying_key(),
        a.sequence ^ 1,
        &hash,
        &signature
    ));
    let _ = head_signature_valid(&key.verifying_key(), b.sequence, &hash, reader.0);
}

struct OwnedEntry {
    sequence: u64,
    recorded_at_micros: i64,
    caller: Option<(String, String)>,
    kind: String,
    meter_id: Option<String>,
    period: Option<String>,
    input_digest: Option<[u8; 32]>,
    refusal: Option<String>,
    previous_hash: [u8; 32],
}

impl OwnedEntry {
    fn fields(&self) -> EntryFields<'_> {
        EntryFields {
            sequence: self.sequence,
            recorded_at_micros: self.recorded_at_micros,
            caller: self.caller.as_ref().map(|(s, r)| (s.as_str(), r.as_str())),
            kind: &self.kind,
            meter_id: self.meter_id.as_deref(),
            period: self.period.as_deref(),
            input_digest: self.input_digest.as_ref(),
            refusal: self.refusal.as_deref(),
            previous_hash: &self.previous_hash,
        }
    }
}

/// Reads entry fields off the front of the fuzzer's bytes.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn text(&mut self) -> Option<String> {
        let len = usize::from(self.byte()? % 32);
        let len = len.min(self.0.len());
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(String::from_utf8_lossy(text).into_owned())
    }

    fn optional_text(&mut self, present: bool) -> Option<Option<String>> {
        if present {
            self.text().map(Some)
        } else {
            Some(None)
        }
    }

    fn entry(&mut self) -> Option<OwnedEntry> {
        let flags = self.byte()?;
        let sequence = u64::from(self.byte()?);
        let recorded_at_micros = i64::from(self.byte()?) - 128;
        let caller = if flags & 1 != 0 {
            Some((self.text()?, self.text()?))
        } else {
            None
        };
        let kind = self.text()?;
        let meter_id = self.optional_text(flags & 2 != 0)?;
        let period = self.optional_text(flags & 4 != 0)?;
        let input_digest = if flags & 8 != 0 {
            Some([self.byte()?; 32])
        } else {
            None
        };
        let refusal = self.optional_text(flags & 16 != 0)?;
        let previous_hash = [self.byte()?; 32];
        Some(OwnedEntry {
            sequence,
            recorded_at_micros,
            caller,
            kind,
            meter_id,
            period,
            input_digest,
            refusal,
            previous_hash,
        })
    }
}
