//! Typed settings: defaults, then an optional TOML file, then environment variables with the
//! prefix [`ENV_PREFIX`] (nested keys separated by `__`, e.g. `SEER_KEY_AUTHORITY__SERVER__PORT=0`).
//! Unknown keys are rejected and values are validated before the service starts.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
};

use anyhow::Context as _;
use figment::{
    Figment,
    providers::{Env, Format as _, Toml},
};
use serde::Deserialize;

/// Prefix of the environment variables that override the settings file.
pub const ENV_PREFIX: &str = "SEER_KEY_AUTHORITY__";

/// Port the key-authority listens on when no setting says otherwise.
pub const DEFAULT_PORT: u16 = 50052;

/// Everything the key-authority can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the gRPC server listens.
    pub server: ServerSettings,
    /// What is logged.
    pub log: LogSettings,
}

/// Where the gRPC server listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind; loopback by default.
    pub host: IpAddr,
    /// Port to bind; 0 lets the operating system choose one (tests use this).
    pub port: u16,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
        }
    }
}

impl ServerSettings {
    /// The socket address to bind.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// What is logged (to stderr).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info` or `key_authority=debug,info`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
        }
    }
}

impl Settings {
    /// Loads the settings: defaults, then `config_file` (TOML) when given, then the
    /// environment variables prefixed [`ENV_PREFIX`]; then validates them.
    ///
    /// # Errors
    /// When the file cannot be read or parsed, a key is unknown, a value has the wrong type,
    /// or [`Settings::validate`] rejects the result.
    pub fn load(config_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(path) = config_file {
            anyhow::ensure!(
                path.is_file(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: Self = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .context("invalid settings")?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// When the log filter is not a valid `tracing_subscriber::EnvFilter` directive.
    pub fn validate(&self) -> anyhow::Result<()> {
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .with_context(|| format!("invalid log.filter {:?}", self.log.filter))?;
        Ok(())
    }
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures must return figment::Error"
)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_without_file_or_environment() {
        Jail::expect_with(|_jail| {
            let settings = Settings::load(None).expect("defaults are valid");
            assert_eq!(settings, Settings::default());
            assert_eq!(settings.server.port, DEFAULT_PORT);
            assert!(settings.server.host.is_loopback());
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "seer.toml",
                "[server]\nhost = \"0.0.0.0\"\nport = 7000\n[log]\nfilter = \"debug\"\n",
            )?;
            jail.set_env(format!("{ENV_PREFIX}SERVER__PORT"), "0");
            let settings = Settings::load(Some(Path::new("seer.toml"))).expect("valid settings");
            assert_eq!(settings.server.port, 0);
            assert_eq!(settings.server.host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert_eq!(settings.log.filter, "debug");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        Jail::expect_with(|jail| {
            jail.create_file("seer.toml", "[server]\nprot = 7000\n")?;
            let error = Settings::load(Some(Path::new("seer.toml"))).expect_err("typo rejected");
            assert!(format!("{error:#}").contains("prot"), "{error:#}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(format!("{ENV_PREFIX}SURVER__PORT"), "1");
            Settings::load(None).expect_err("unknown environment key rejected");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env(format!("{ENV_PREFIX}SERVER__PORT"), "70000");
            Settings::load(None).expect_err("port out of range");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(format!("{ENV_PREFIX}LOG__FILTER"), "=[");
            Settings::load(None).expect_err("invalid filter");
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_an_error() {
        Jail::expect_with(|_jail| {
            Settings::load(Some(Path::new("absent.toml"))).expect_err("missing file");
            Ok(())
        });
    }
}
