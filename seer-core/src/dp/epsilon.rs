//! The privacy-loss parameter ε.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A privacy-loss parameter ε of pure differential privacy, within
/// [`Epsilon::MIN`]`..=`[`Epsilon::MAX`].
///
/// The same type carries a mechanism's per-reading ε and a per-period budget (a sum of
/// per-reading ε under sequential composition, see [the module docs](super)).
///
/// Parse, don't validate: every constructor (`try_new`, `TryFrom<f64>`, `FromStr`, serde
/// deserialisation) rejects NaN, infinities, zero, negative values and values outside the
/// bounds, so an `Epsilon` is always usable. The bounds are far outside any sensible
/// configuration, so a value beyond them is a configuration error:
/// - below 10⁻⁶, even a 1 Wh sensitivity would need noise with a scale of 10⁶ Wh;
/// - above 10⁶, a value promises nothing (e^ε is astronomically large), and 10⁶ still covers a
///   monthly budget of one-minute readings at over 20 per reading.
///
/// The `f64` is used exactly as it is: the noise sampler turns it into the exact dyadic
/// rational it denotes (see [`DiscreteLaplace::for_mechanism`](super::DiscreteLaplace::for_mechanism)),
/// so the mechanism's guarantee is ε for the exact stored value, with no rounding.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Epsilon(f64);

impl Epsilon {
    /// The smallest accepted value, 10⁻⁶.
    pub const MIN: Self = Self(1e-6);
    /// The largest accepted value, 10⁶.
    pub const MAX: Self = Self(1e6);

    /// Validates ε: rejects NaN, ±∞, values ≤ 0 and values outside
    /// [`Epsilon::MIN`]`..=`[`Epsilon::MAX`].
    pub fn try_new(epsilon: f64) -> Result<Self, Error> {
        let reason = if epsilon.is_nan() {
            "not a number"
        } else if epsilon.is_infinite() {
            "not finite"
        } else if epsilon <= 0.0 {
            "epsilon must be positive"
        } else if epsilon < Self::MIN.0 {
            "below the minimum of 1e-6"
        } else if epsilon > Self::MAX.0 {
            "above the maximum of 1e6"
        } else {
            return Ok(Self(epsilon));
        };
        Err(Error::InvalidEpsilon {
            value: epsilon,
            reason,
        })
    }

    /// The value of ε.
    pub const fn get(self) -> f64 {
        self.0
    }

    /// ε as the exact dyadic rational `mantissa · 2^exponent` it denotes, with an odd
    /// mantissa below 2⁵³.
    pub(crate) fn to_dyadic(self) -> (u64, i32) {
        // MIN > 0 is far above the subnormal range, so the value is a normal positive f64:
        // bits = exponent field (11 bits) | fraction (52 bits), value = 1.fraction · 2^(field − 1023).
        let bits = self.0.to_bits();
        let field = ((bits >> 52) & 0x7ff) as i32;
        let mut mantissa = (bits & ((1_u64 << 52) - 1)) | (1_u64 << 52);
        let mut exponent = field - 1075;
        let zeros = mantissa.trailing_zeros();
        mantissa >>= zeros;
        exponent += zeros as i32;
        (mantissa, exponent)
    }
}

// Never NaN, so equality is reflexive.
impl Eq for Epsilon {}

impl TryFrom<f64> for Epsilon {
    type Error = Error;
    fn try_from(epsilon: f64) -> Result<Self, Error> {
        Self::try_new(epsilon)
    }
}

impl From<Epsilon> for f64 {
    fn from(epsilon: Epsilon) -> Self {
        epsilon.0
    }
}

impl FromStr for Epsilon {
    type Err = Error;
    /// Parses a decimal number such as `"0.5"` or `"1e-2"` and validates it.
    fn from_str(s: &str) -> Result<Self, Error> {
        let value: f64 = s.trim().parse().map_err(|_| Error::InvalidOption {
            option: "epsilon",
            reason: format!("{:?} is not a number", crate::error::snippet(s.as_bytes())),
        })?;
        Self::try_new(value)
    }
}

impl fmt::Display for Epsilon {
    /// Prints the number; a precision (`{:.2}`) applies to it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match f.precision() {
            Some(precision) => write!(f, "{:.*}", precision, self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            -1.0,
            1e-7,
            1e6 * 1.000_001,
            f64::MIN_POSITIVE,
        ] {
            assert!(
                matches!(Epsilon::try_new(bad), Err(Error::InvalidEpsilon { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn accepts_bounds_and_typical_values() {
        for good in [1e-6, 0.01, 0.1, 0.5, 1.0, 8.0, 1e6] {
            assert_eq!(Epsilon::try_new(good).map(Epsilon::get).ok(), Some(good));
        }
    }

    #[test]
    fn dyadic_decomposition_is_exact() {
        for v in [1e-6, 0.1, 0.5, 1.0, 3.0, 0.75, 1e6, 123.456] {
            let eps = Epsilon::try_new(v).expect("valid");
            let (m, e) = eps.to_dyadic();
            assert_eq!(m % 2, 1, "{v}");
            assert!(m < 1 << 53);
            // m · 2^e is exact in f64 (m < 2^53).
            assert_eq!(m as f64 * 2f64.powi(e), v, "{v}");
        }
        assert_eq!(Epsilon::try_new(0.5).expect("valid").to_dyadic(), (1, -1));
        assert_eq!(Epsilon::try_new(6.0).expect("valid").to_dyadic(), (3, 1));
    }

    #[test]
    fn parses_and_serialises() {
        assert_eq!("0.25".parse::<Epsilon>().map(Epsilon::get).ok(), Some(0.25));
        assert!(matches!(
            "abc".parse::<Epsilon>(),
            Err(Error::InvalidOption { .. })
        ));
        assert!(matches!(
            "-1".parse::<Epsilon>(),
            Err(Error::InvalidEpsilon { .. })
        ));
        let eps = Epsilon::try_new(0.5).expect("valid");
        assert_eq!(serde_json::to_string(&eps).ok().as_deref(), Some("0.5"));
        assert_eq!(serde_json::from_str::<Epsilon>("0.5").ok(), Some(eps));
        assert!(serde_json::from_str::<Epsilon>("0").is_err());
        assert!(serde_json::from_str::<Epsilon>("-3").is_err());
        assert_eq!(format!("{eps:.2}"), "0.50");
    }
}
