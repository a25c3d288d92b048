//! The utility-server's settings: defaults, then an optional TOML file, then environment
//! variables prefixed [`ENV_PREFIX`] (nested keys separated by `__`, e.g.
//! `SEER_UTILITY__SERVER__PORT=0`). Unknown keys are rejected.

use std::path::Path;

use seer_service::{LogSettings, ServerSettings};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the settings file.
pub const ENV_PREFIX: &str = "SEER_UTILITY__";

/// Port the utility-server listens on when no setting says otherwise.
pub const DEFAULT_PORT: u16 = 50051;

/// Everything the utility-server can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the gRPC server listens.
    pub server: ServerSettings,
    /// What is logged.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::loopback(DEFAULT_PORT),
            log: LogSettings::default(),
        }
    }
}

impl Settings {
    /// Loads and validates the settings (see the module documentation).
    ///
    /// # Errors
    /// When the file is missing or malformed, a key is unknown, or a value is invalid.
    pub fn load(config_file: Option<&Path>) -> anyhow::Result<Self> {
        let settings: Self =
            seer_service::load_settings(&Self::default(), config_file, ENV_PREFIX)?;
        settings.log.validate()?;
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
            jail.set_env(format!("{ENV_PREFIX}LOG__FILTER"), "=[");
            Settings::load(None).expect_err("invalid filter");
            Ok(())
        });
    }
}
