//! The trust anchors a deployment pins by fingerprint, as `key-authority fingerprints` prints
//! them: the SHA-256 of the key authority's JWT public key (its SubjectPublicKeyInfo), which
//! the utility and auditors pin, and the BLAKE3 of each CKKS public key, which meters pin.
//! Configuration carries them, so nothing is trusted on first use.

use crate::TlsError;

/// What `key-authority fingerprints` prints: one `jwt-public-key-sha256 HEX` line and one
/// `public-key-pin PARAMETER_SET=BLAKE3` line per key set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprints {
    /// SHA-256 of the JWT public key's SubjectPublicKeyInfo (64 hex digits).
    pub jwt_public_key_sha256: String,
    /// `PARAMETER_SET=BLAKE3` of each key set's public key.
    pub public_key_pins: Vec<String>,
}

impl Fingerprints {
    /// Parses `key-authority fingerprints`'s output.
    ///
    /// # Errors
    /// [`TlsError::Fingerprints`] for an unknown line or a missing or malformed JWT key
    /// fingerprint.
    pub fn parse(output: &str) -> Result<Self, TlsError> {
        let mut fingerprints = Self::default();
        for line in output.lines().filter(|l| !l.trim().is_empty()) {
            match line.split_once(' ') {
                Some(("jwt-public-key-sha256", hex)) => {
                    fingerprints.jwt_public_key_sha256 = hex.trim().to_owned();
                }
                Some(("public-key-pin", pin)) => {
                    fingerprints.public_key_pins.push(pin.trim().to_owned());
                }
                _ => {
                    return Err(TlsError::Fingerprints(format!("unexpected line {line:?}")));
                }
            }
        }
        let hex = &fingerprints.jwt_public_key_sha256;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TlsError::Fingerprints(
                "no jwt-public-key-sha256 line of 64 hex digits".into(),
            ));
        }
        Ok(fingerprints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_and_bad_output_is_refused() {
        let hex = "0f".repeat(32);
        let parsed = Fingerprints::parse(&format!(
            "jwt-public-key-sha256 {hex}\npublic-key-pin N8192_L2_SEC128={hex}\n"
        ))
        .expect("parses");
        assert_eq!(parsed.jwt_public_key_sha256, hex);
        assert_eq!(
            parsed.public_key_pins,
            vec![format!("N8192_L2_SEC128={hex}")]
        );
        assert!(Fingerprints::parse("something else").is_err());
        assert!(Fingerprints::parse("public-key-pin N8192_L2_SEC128=00\n").is_err());
        assert!(Fingerprints::parse("jwt-public-key-sha256 zz\n").is_err());
    }
}
