//! The key-authority's settings: defaults, then an optional TOML file, then environment
//! variables prefixed [`ENV_PREFIX`] (nested keys separated by `__`, e.g.
//! `SEER_KEY_AUTHORITY__SERVER__PORT=0`). Unknown keys are rejected.

use std::path::{Path, PathBuf};

use seer_ckks::{ParameterSet, steps_for_sum};
use seer_service::{LogSettings, ServerSettings};

use crate::analytics::AnalyticsSettings;
use crate::audit::RefusalSettings;
use crate::keys::KeySetSpec;
use seer_core::circuits::billing;
use seer_core::tariff::Tariff;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the settings file.
pub const ENV_PREFIX: &str = "SEER_KEY_AUTHORITY__";

/// Port the key-authority listens on when no setting says otherwise.
pub const DEFAULT_PORT: u16 = 50052;

/// Everything the key-authority can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the gRPC server listens.
    pub server: ServerSettings,
    /// What is logged.
    pub log: LogSettings,
    /// Where the CKKS keys live and which key sets to hold.
    pub keys: KeysSettings,
    /// The JWT signing key.
    pub auth: AuthSettings,
    /// The audit log's database.
    pub audit: AuditSettings,
    /// What the key authority re-executes before releasing (the registered computations).
    #[serde(default)]
    pub release: ReleaseSettings,
    /// Deep analytics (the `anomaly` release and its N32768 key set): off by default.
    #[serde(default)]
    pub analytics: AnalyticsSettings,
}

/// The registered computations' configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSettings {
    /// The tariff bills are computed with (the BESCOM slabs by default); it must be the
    /// utility's and the meters', since it fixes the billing layout.
    pub tariff: Tariff,
    /// The CKKS parameter set of the billing lanes; `keys.sets` must hold a key set for it
    /// with the billing layout's rotation steps (checked at startup).
    pub billing_parameter_set: String,
}

impl Default for ReleaseSettings {
    fn default() -> Self {
        Self {
            tariff: Tariff::bescom(),
            billing_parameter_set: billing::PARAMETER_SET.id(),
        }
    }
}

/// Token signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// PKCS#8 PEM Ed25519 key file (mode 0600), generated on first start.
    pub signing_key_file: PathBuf,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            signing_key_file: PathBuf::from("var/key-authority/jwt-signing-key.pem"),
        }
    }
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// `sqlite:PATH` (embedded, the default) or `postgres://...`.
    pub database_url: String,
    /// The signed anchor of the log's head, kept outside the database (mode 0600; see
    /// `key_authority::audit::anchor`). Unset: `audit-anchor` beside the JWT signing key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_file: Option<PathBuf>,
    /// How refused calls are written: individually up to a bound, else aggregated per window.
    #[serde(default)]
    pub refusals: RefusalSettings,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            database_url: "sqlite:var/key-authority/audit.db".to_owned(),
            anchor_file: None,
            refusals: RefusalSettings::default(),
        }
    }
}

/// The CKKS key store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSettings {
    /// Directory of the key store (created with mode 0700).
    pub dir: PathBuf,
    /// The key sets: one per parameter set, with the rotation steps its computations need.
    pub sets: Vec<KeySetSpec>,
}

impl Default for KeysSettings {
    /// `var/key-authority/keys`; one n = 8192 key set with the rotations that sum 128
    /// consecutive slots (the engine demonstration's per-day sums).
    fn default() -> Self {
        Self {
            dir: PathBuf::from("var/key-authority/keys"),
            sets: vec![KeySetSpec {
                parameter_set: ParameterSet::N8192_L2_SEC128.id(),
                galois_steps: steps_for_sum(128).into_iter().map(i64::from).collect(),
            }],
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::loopback(DEFAULT_PORT),
            log: LogSettings::default(),
            keys: KeysSettings::default(),
            auth: AuthSettings::default(),
            audit: AuditSettings::default(),
            release: ReleaseSettings::default(),
            analytics: AnalyticsSettings::default(),
        }
    }
}

impl Settings {
    /// The audit anchor file: `audit.anchor_file`, or `audit-anchor` beside the JWT signing
    /// key file.
    #[must_use]
    pub fn audit_anchor_file(&self) -> PathBuf {
        self.audit
            .anchor_file
            .clone()
            .unwrap_or_else(|| self.auth.signing_key_file.with_file_name("audit-anchor"))
    }

    /// Loads and validates the settings (see the module documentation).
    ///
    /// # Errors
    /// When the file is missing or malformed, a key is unknown, or a value is invalid.
    pub fn load(config_file: Option<&Path>) -> anyhow::Result<Self> {
        let settings: Self =
            seer_service::load_settings(&Self::default(), config_file, ENV_PREFIX)?;
        settings.log.validate()?;
        settings.server.limits.validate()?;
        settings.audit.refusals.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures must return figment::Error"
)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_prefixed_overrides() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(Settings::load(None).expect("defaults"), Settings::default());
            jail.set_env(format!("{ENV_PREFIX}SERVER__PORT"), "0");
            jail.set_env(format!("{ENV_PREFIX}LOG__FILTER"), "debug");
            let settings = Settings::load(None).expect("overrides");
            assert_eq!(settings.server.port, 0);
            assert_eq!(settings.log.filter, "debug");
            assert!(settings.analytics.daily_release_home_forecasts);
            jail.set_env(
                format!("{ENV_PREFIX}ANALYTICS__DAILY_RELEASE_HOME_FORECASTS"),
                "false",
            );
            let settings = Settings::load(None).expect("overrides");
            assert!(!settings.analytics.daily_release_home_forecasts);
            jail.set_env(format!("{ENV_PREFIX}LOG__FILTER"), "=[");
            Settings::load(None).expect_err("invalid filter");
            Ok(())
        });
    }
}
