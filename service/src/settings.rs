//! Typed settings: defaults, then an optional TOML file, then environment variables with a
//! program's prefix (nested keys separated by `__`, e.g. `SEER_UTILITY__SERVER__PORT=0`).
//! Unknown keys are rejected; values are validated before a service starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::limits::LimitSettings;

/// Where a gRPC server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind; loopback by default.
    pub host: IpAddr,
    /// Port to bind; 0 lets the operating system choose one (tests use this).
    pub port: u16,
    /// Mutual TLS (`[server.tls]`: `ca_file`, `cert_file`, `key_file`): the server's
    /// certificate, and a client certificate of the deployment CA required on every
    /// connection. Without it the server speaks plaintext h2c and says so in its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<seer_tls::TlsFiles>,
    /// In-flight bounds, deadlines and HTTP/2 limits (`[server.limits]`).
    #[serde(default)]
    pub limits: LimitSettings,
}

impl ServerSettings {
    /// Loopback on `port`.
    #[must_use]
    pub fn loopback(port: u16) -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            tls: None,
            limits: LimitSettings::default(),
        }
    }

    /// The socket address to bind.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// What is logged (to stderr).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info` or `utility_server=debug,info`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
        }
    }
}

impl LogSettings {
    /// Checks that the filter parses.
    ///
    /// # Errors
    /// When the filter is not a valid `EnvFilter` directive.
    pub fn validate(&self) -> anyhow::Result<()> {
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .with_context(|| format!("invalid log.filter {:?}", self.filter))?;
        Ok(())
    }
}

/// Loads settings of type `T`: `defaults`, then `config_file` (TOML) when given, then the
/// environment variables starting with `env_prefix`. `T` should reject unknown fields.
///
/// # Errors
/// When the file is missing or malformed, a key is unknown or a value has the wrong type.
pub fn load_settings<T: Serialize + DeserializeOwned>(
    defaults: &T,
    config_file: Option<&Path>,
    env_prefix: &str,
) -> anyhow::Result<T> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = config_file {
        anyhow::ensure!(
            path.is_file(),
            "config file {} does not exist",
            path.display()
        );
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .context("invalid settings")
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures must return figment::Error"
)]
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        server: ServerSettings,
        log: LogSettings,
    }

    const PREFIX: &str = "SEER_TEST__";

    fn defaults() -> Demo {
        Demo {
            server: ServerSettings::loopback(7),
            log: LogSettings::default(),
        }
    }

    #[test]
    fn defaults_without_file_or_environment() {
        Jail::expect_with(|_jail| {
            let s: Demo = load_settings(&defaults(), None, PREFIX).expect("defaults load");
            assert_eq!(s, defaults());
            assert!(s.server.host.is_loopback());
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
            jail.set_env(format!("{PREFIX}SERVER__PORT"), "0");
            let s: Demo = load_settings(&defaults(), Some(Path::new("seer.toml")), PREFIX)
                .expect("valid settings");
            assert_eq!(s.server.port, 0);
            assert_eq!(s.server.host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert_eq!(s.log.filter, "debug");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        Jail::expect_with(|jail| {
            jail.create_file("seer.toml", "[server]\nprot = 7000\n")?;
            let error = load_settings(&defaults(), Some(Path::new("seer.toml")), PREFIX)
                .expect_err("typo rejected");
            assert!(format!("{error:#}").contains("prot"), "{error:#}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(format!("{PREFIX}SURVER__PORT"), "1");
            load_settings(&defaults(), None, PREFIX).expect_err("unknown environment key");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(format!("{PREFIX}SERVER__PORT"), "70000");
            load_settings(&defaults(), None, PREFIX).expect_err("port out of range");
            Ok(())
        });
        Jail::expect_with(|_jail| {
            load_settings(&defaults(), Some(Path::new("absent.toml")), PREFIX)
                .expect_err("missing file");
            Ok(())
        });
        assert!(
            LogSettings {
                filter: "=[".into()
            }
            .validate()
            .is_err()
        );
    }
}
