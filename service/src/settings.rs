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
use crate::metrics::MetricsSettings;

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
    /// Prometheus metrics at `GET /metrics` on a plain-HTTP listener of their own
    /// (`[server.metrics]`: `enabled`, `listen`, `address_file`); on, on loopback, by default.
    #[serde(default)]
    pub metrics: MetricsSettings,
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
            metrics: MetricsSettings::default(),
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
    /// `text` (default: human-readable lines) or `json` (one JSON object per line, for log
    /// collectors).
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`,
    /// `span` and `spans`.
    Json,
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

/// `settings` as TOML for people to read (`print-settings`), with the password of every
/// database URL replaced by `***` (any string whose key ends in `url`: the userinfo password
/// through [`crate::db::redact_url`], and `password=` / `sslpassword=` query parameters).
/// Settings hold file paths to keys and certificates, never key material.
///
/// # Errors
/// When the settings cannot be represented as TOML.
pub fn to_redacted_toml<T: Serialize>(settings: &T) -> anyhow::Result<String> {
    let mut value = toml::Value::try_from(settings).context("settings as TOML")?;
    redact_urls(&mut value, "");
    toml::to_string_pretty(&value).context("writing the settings as TOML")
}

/// `url` with the values of its `password` and `sslpassword` query parameters replaced by
/// `***`.
fn redact_query_passwords(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, _))
                if name.eq_ignore_ascii_case("password")
                    || name.eq_ignore_ascii_case("sslpassword") =>
            {
                format!("{name}=***")
            }
            _ => parameter.to_owned(),
        })
        .collect();
    format!("{base}?{}", parameters.join("&"))
}

/// Redacts the passwords of the URLs under `value` (whose key is `key`).
fn redact_urls(value: &mut toml::Value, key: &str) {
    match value {
        toml::Value::String(text) if key.to_ascii_lowercase().ends_with("url") => {
            *text = redact_query_passwords(&crate::db::redact_url(text));
        }
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                redact_urls(value, key);
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                redact_urls(item, key);
            }
        }
        _ => {}
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
                filter: "=[".into(),
                format: LogFormat::Text,
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn printed_settings_redact_database_passwords() {
        #[derive(Serialize)]
        struct WithUrls {
            server: ServerSettings,
            log: LogSettings,
            database: Db,
        }
        #[derive(Serialize)]
        struct Db {
            url: String,
            replica_url: String,
            note: String,
        }
        let text = to_redacted_toml(&WithUrls {
            server: ServerSettings::loopback(7),
            log: LogSettings::default(),
            database: Db {
                url: "postgres://seer:hunter2@db.example/seer?sslmode=verify-full".into(),
                replica_url: "postgres://seer@db2/seer?password=hunter3&sslmode=require".into(),
                note: "postgres://a:kept@b/c".into(),
            },
        })
        .expect("toml");
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
        assert!(
            text.contains("postgres://seer:***@db.example/seer?sslmode=verify-full"),
            "{text}"
        );
        assert!(text.contains("password=***&sslmode=require"), "{text}");
        // Only URL keys are touched.
        assert!(text.contains("postgres://a:kept@b/c"), "{text}");
        // What is printed loads back.
        let back: toml::Value = toml::from_str(&text).expect("printed TOML parses");
        assert_eq!(back["server"]["port"].as_integer(), Some(7));
        assert_eq!(
            back["server"]["metrics"]["listen"].as_str(),
            Some("127.0.0.1:0")
        );
        assert_eq!(back["log"]["format"].as_str(), Some("text"));
    }

    #[test]
    fn log_format_and_metrics_settings_load() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "seer.toml",
                "[server.metrics]\nlisten = \"127.0.0.1:9464\"\n[log]\nformat = \"json\"\n",
            )?;
            let s: Demo = load_settings(&defaults(), Some(Path::new("seer.toml")), PREFIX)
                .expect("valid settings");
            assert_eq!(s.log.format, LogFormat::Json);
            assert_eq!(s.server.metrics.listen.port(), 9464);
            assert!(s.server.metrics.enabled);
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("seer.toml", "[log]\nformat = \"xml\"\n")?;
            load_settings(&defaults(), Some(Path::new("seer.toml")), PREFIX)
                .expect_err("unknown log format");
            Ok(())
        });
    }
}
