//! The key authority's CKKS public key, pinned by fingerprint from configuration.
//!
//! The meter encrypts every reading under the public key it fetches from the key authority;
//! a key substituted on the way (or by an impostor) would hand the readings to whoever holds
//! its secret half. So the meter accepts only a key whose BLAKE3 digest is configured
//! (`--public-key-pin PARAMETER_SET=BLAKE3`, printed by `key-authority fingerprints`), never
//! one merely seen first. Several pins for one parameter set accept each (a rotation window).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// One accepted public key: its parameter set and the BLAKE3 digest (hex) of its serialized
/// object, as the key authority lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPin {
    parameter_set_id: String,
    blake3: String,
}

impl KeyPin {
    /// A pin of `blake3` (64 hex digits, any case) for `parameter_set_id`.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for an empty parameter set or a malformed digest.
    pub fn try_new(parameter_set_id: &str, blake3: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidSetting {
            setting: "public key pin",
            reason,
        };
        if parameter_set_id.is_empty() {
            return Err(invalid("the parameter set is empty".into()));
        }
        if blake3.len() != 64 || !blake3.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "{blake3:?} is not a BLAKE3 digest (64 hex digits)"
            )));
        }
        Ok(Self {
            parameter_set_id: parameter_set_id.to_owned(),
            blake3: blake3.to_ascii_lowercase(),
        })
    }

    /// The parameter set.
    #[must_use]
    pub fn parameter_set_id(&self) -> &str {
        &self.parameter_set_id
    }

    /// The digest (lowercase hex).
    #[must_use]
    pub fn blake3(&self) -> &str {
        &self.blake3
    }
}

impl FromStr for KeyPin {
    type Err = Error;

    /// Parses `PARAMETER_SET=BLAKE3`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let (set, digest) = s.split_once('=').ok_or_else(|| Error::InvalidSetting {
            setting: "public key pin",
            reason: format!("{s:?} is not PARAMETER_SET=BLAKE3"),
        })?;
        Self::try_new(set.trim(), digest.trim())
    }
}

impl fmt::Display for KeyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.parameter_set_id, self.blake3)
    }
}

/// Checks the key object `bytes` served for `parameter_set_id` against `pins`.
///
/// # Errors
/// [`Error::PublicKeyNotPinned`] when no pin names the parameter set;
/// [`Error::PublicKeyPinMismatch`] when none of its pins matches.
pub fn check(pins: &[KeyPin], parameter_set_id: &str, bytes: &[u8]) -> Result<(), Error> {
    let served = blake3::hash(bytes).to_hex().to_string();
    let configured: Vec<&str> = pins
        .iter()
        .filter(|p| p.parameter_set_id == parameter_set_id)
        .map(|p| p.blake3.as_str())
        .collect();
    if configured.is_empty() {
        return Err(Error::PublicKeyNotPinned {
            parameter_set: parameter_set_id.to_owned(),
            served,
        });
    }
    if configured.contains(&served.as_str()) {
        Ok(())
    } else {
        Err(Error::PublicKeyPinMismatch {
            parameter_set: parameter_set_id.to_owned(),
            configured: configured.join(", "),
            served,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_only_the_configured_key_passes() {
        let key = b"the public key object";
        let digest = blake3::hash(key).to_hex().to_string();
        let pin: KeyPin = format!("N8192_L2_SEC128={}", digest.to_ascii_uppercase())
            .parse()
            .expect("valid pin");
        assert_eq!(pin.blake3(), digest);
        assert_eq!(pin.to_string(), format!("N8192_L2_SEC128={digest}"));
        assert!(check(std::slice::from_ref(&pin), "N8192_L2_SEC128", key).is_ok());
        assert!(matches!(
            check(
                std::slice::from_ref(&pin),
                "N8192_L2_SEC128",
                b"another key"
            ),
            Err(Error::PublicKeyPinMismatch { .. })
        ));
        assert!(matches!(
            check(&[pin], "N32768_L19_SEC128", key),
            Err(Error::PublicKeyNotPinned { .. })
        ));
        assert!(matches!(
            check(&[], "N8192_L2_SEC128", key),
            Err(Error::PublicKeyNotPinned { .. })
        ));
        for bad in [
            "N8192",
            "=abc",
            "N8192=xyz",
            &format!("N8192={}", &digest[1..]),
        ] {
            assert!(bad.parse::<KeyPin>().is_err(), "{bad}");
        }
    }
}
