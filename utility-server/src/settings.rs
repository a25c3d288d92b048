//! The utility-server's settings: defaults, then an optional TOML file, then environment
//! variables prefixed [`ENV_PREFIX`] (nested keys separated by `__`, e.g.
//! `SEER_UTILITY__SERVER__PORT=0`). Unknown keys are rejected.

use std::path::Path;

use anyhow::Context as _;
use seer_ckks::ParameterSet;
use seer_core::circuits::billing;
use seer_core::tariff::Tariff;
use seer_service::{LogSettings, ServerSettings};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the settings file.
pub const ENV_PREFIX: &str = "SEER_UTILITY__";

/// Port the utility-server listens on when no setting says otherwise.
pub const DEFAULT_PORT: u16 = 50051;

/// The database when no setting says otherwise: an embedded SQLite file, relative to the
/// working directory, created (with its directories) on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://var/utility-server/seer.db";

/// Everything the utility-server can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the gRPC server listens.
    pub server: ServerSettings,
    /// What is logged.
    pub log: LogSettings,
    /// Where batches are stored.
    pub database: DatabaseSettings,
    /// How long stored data is kept (`[storage]`: `billing_lane_retention_days`).
    pub storage: StorageSettings,
    /// The CKKS parameter set of each lane.
    pub ckks: CkksSettings,
    /// How callers are authenticated.
    pub auth: AuthSettings,
    /// The tariff bills are computed with (a `seer_core::tariff` configuration: `name`,
    /// `slabs = [{ up_to_kwh, rate_paise }, ...]`, optional `bands`); BESCOM by default.
    pub tariff: Tariff,
    /// The utility dashboard (`[dashboard]`: `enabled`, `host`, `port`, `address_file`,
    /// `[dashboard.grid]`).
    pub dashboard: crate::dashboard::DashboardSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::loopback(DEFAULT_PORT),
            log: LogSettings::default(),
            database: DatabaseSettings::default(),
            storage: StorageSettings::default(),
            ckks: CkksSettings::default(),
            auth: AuthSettings::default(),
            tariff: Tariff::bescom(),
            dashboard: crate::dashboard::DashboardSettings::default(),
        }
    }
}

/// Where batches are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite:PATH` (`sqlite://relative/path.db`, `sqlite:///absolute/path.db`; created if
    /// missing) or `postgres://user@host:port/database`.
    pub url: String,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: DEFAULT_DATABASE_URL.to_owned(),
        }
    }
}

/// Default of [`StorageSettings::billing_lane_retention_days`].
pub const DEFAULT_BILLING_LANE_RETENTION_DAYS: u32 = 90;

/// How long stored data is kept (`utility-server prune`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Days after a bill's release when the billing lanes of its (meter, period) are pruned
    /// (set to NULL; the batch rows, their digests and signatures stay as evidence). The
    /// billing job never reads them again once the bill is released; the days leave time to
    /// investigate a disputed bill with the ciphertexts at hand. 0 prunes at the next run.
    pub billing_lane_retention_days: u32,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            billing_lane_retention_days: DEFAULT_BILLING_LANE_RETENTION_DAYS,
        }
    }
}

impl StorageSettings {
    /// [`StorageSettings::billing_lane_retention_days`] as a duration.
    #[must_use]
    pub fn billing_lane_retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.billing_lane_retention_days) * 86_400)
    }
}

/// The CKKS parameter set (by id, e.g. `ckks1-n8192-q60-s40x2-p60`) each lane's ciphertexts
/// must be made under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CkksSettings {
    /// The billing lane's set; it needs the billing circuit's two levels.
    pub billing_parameter_set: String,
    /// The analytics lane's set.
    pub analytics_parameter_set: String,
}

impl Default for CkksSettings {
    fn default() -> Self {
        let id = billing::PARAMETER_SET.id();
        Self {
            billing_parameter_set: id.clone(),
            analytics_parameter_set: id,
        }
    }
}

impl CkksSettings {
    /// The billing lane's parameter set.
    ///
    /// # Errors
    /// When the id names no valid parameter set.
    pub fn billing(&self) -> anyhow::Result<ParameterSet> {
        ParameterSet::try_from_id(&self.billing_parameter_set).context("ckks.billing_parameter_set")
    }

    /// The analytics lane's parameter set.
    ///
    /// # Errors
    /// When the id names no valid parameter set.
    pub fn analytics(&self) -> anyhow::Result<ParameterSet> {
        ParameterSet::try_from_id(&self.analytics_parameter_set)
            .context("ckks.analytics_parameter_set")
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
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what deserialization cannot: the log filter, the database URL's scheme, the
    /// parameter-set ids and the billing circuit's level budget.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.log.validate()?;
        self.server.limits.validate()?;
        crate::store::backend_of(&self.database.url).context("database.url")?;
        let billing_set = self.ckks.billing()?;
        self.ckks.analytics()?;
        self.dashboard.validate()?;
        anyhow::ensure!(
            billing_set.levels() >= billing::LEVELS_USED,
            "ckks.billing_parameter_set: {} has {} levels, the billing circuit needs {}",
            self.ckks.billing_parameter_set,
            billing_set.levels(),
            billing::LEVELS_USED
        );
        Ok(())
    }
}

/// Authentication of callers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// PEM file with the key authority's JWT public key (`key-authority jwt-public-key >
    /// FILE`). Without it no call is authenticated, so every ingest call is refused.
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// The fingerprint the JWT public key file must have (SHA-256 of its SubjectPublicKeyInfo
    /// DER, hex; `key-authority fingerprints` prints it as `jwt-public-key-sha256`). Required
    /// with `jwt_public_key_file`: the key is pinned by configuration, a swapped file refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_sha256: Option<String>,
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

    #[test]
    fn the_dashboard_section_sets_its_listener_and_capacities() {
        figment::Jail::expect_with(|jail| {
            let defaults = Settings::default().dashboard;
            assert!(defaults.enabled);
            assert_eq!(defaults.address().to_string(), "127.0.0.1:0");
            assert_eq!(defaults.grid.capacity_kw(7), 100.0);
            jail.create_file(
                "utility.toml",
                r#"
                [dashboard]
                port = 8443
                address_file = "dashboard-address"

                [dashboard.grid]
                default_capacity_kw = 250.0
                groups = [{ group = 3, capacity_kw = 40.5 }]
                "#,
            )?;
            let settings = Settings::load(Some(Path::new("utility.toml"))).expect("file");
            assert_eq!(settings.dashboard.port, 8443);
            assert_eq!(
                settings.dashboard.address_file.as_deref(),
                Some(Path::new("dashboard-address"))
            );
            assert_eq!(settings.dashboard.grid.capacity_kw(3), 40.5);
            assert_eq!(settings.dashboard.grid.capacity_kw(4), 250.0);
            jail.set_env(format!("{ENV_PREFIX}DASHBOARD__ENABLED"), "false");
            assert!(
                !Settings::load(Some(Path::new("utility.toml")))
                    .expect("env")
                    .dashboard
                    .enabled
            );
            jail.create_file("bad.toml", "[dashboard.grid]\ndefault_capacity_kw = -1.0\n")?;
            let error = Settings::load(Some(Path::new("bad.toml"))).expect_err("negative");
            assert!(
                format!("{error:#}").contains("default_capacity_kw"),
                "{error:#}"
            );
            jail.create_file(
                "twice.toml",
                "[dashboard.grid]\ngroups = [{ group = 1, capacity_kw = 5.0 }, { group = 1, capacity_kw = 6.0 }]\n",
            )?;
            Settings::load(Some(Path::new("twice.toml"))).expect_err("a group twice");
            jail.create_file("typo.toml", "[dashboard]\nprot = 1\n")?;
            Settings::load(Some(Path::new("typo.toml"))).expect_err("unknown key");
            Ok(())
        });
    }

    #[test]
    fn defaults_are_the_embedded_database_the_billing_set_and_bescom() {
        let settings = Settings::default();
        assert_eq!(settings.database.url, "sqlite://var/utility-server/seer.db");
        assert_eq!(
            settings.ckks.billing_parameter_set,
            "ckks1-n8192-q60-s40x2-p60"
        );
        assert_eq!(
            settings.ckks.analytics_parameter_set,
            "ckks1-n8192-q60-s40x2-p60"
        );
        assert_eq!(settings.tariff, Tariff::bescom());
        settings.validate().expect("the defaults are valid");
    }

    #[test]
    fn the_storage_section_sets_the_billing_lane_retention() {
        figment::Jail::expect_with(|jail| {
            let defaults = Settings::default().storage;
            assert_eq!(defaults.billing_lane_retention_days, 90);
            assert_eq!(
                defaults.billing_lane_retention(),
                std::time::Duration::from_secs(90 * 24 * 3600)
            );
            jail.create_file(
                "utility.toml",
                "[storage]\nbilling_lane_retention_days = 7\n",
            )?;
            let settings = Settings::load(Some(Path::new("utility.toml"))).expect("file");
            assert_eq!(settings.storage.billing_lane_retention_days, 7);
            jail.set_env(
                format!("{ENV_PREFIX}STORAGE__BILLING_LANE_RETENTION_DAYS"),
                "0",
            );
            let settings = Settings::load(Some(Path::new("utility.toml"))).expect("env");
            assert_eq!(
                settings.storage.billing_lane_retention(),
                std::time::Duration::ZERO
            );
            jail.create_file("bad.toml", "[storage]\nbilling_lane_retention = 7\n")?;
            Settings::load(Some(Path::new("bad.toml"))).expect_err("unknown key");
            Ok(())
        });
    }

    #[test]
    fn a_file_sets_database_parameter_sets_and_tariff_and_rejects_unknown_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "utility.toml",
                r#"
                [database]
                url = "postgres://postgres@127.0.0.1:5432/seer"

                [ckks]
                billing_parameter_set = "ckks1-n16384-q60-s40x7-p60"
                analytics_parameter_set = "ckks1-n16384-q60-s40x7-p60"

                [tariff]
                name = "flat"
                slabs = [{ rate_paise = 500 }]
                "#,
            )?;
            let settings = Settings::load(Some(Path::new("utility.toml"))).expect("file");
            assert_eq!(
                settings.database.url,
                "postgres://postgres@127.0.0.1:5432/seer"
            );
            assert_eq!(
                settings.ckks.billing().expect("set"),
                ParameterSet::N16384_L7_SEC128
            );
            assert_eq!(settings.tariff.name(), "flat");
            assert_eq!(settings.tariff.slab_count(), 1);

            jail.set_env(format!("{ENV_PREFIX}DATABASE__URL"), "mysql://db/seer");
            let error = Settings::load(Some(Path::new("utility.toml"))).expect_err("mysql");
            assert!(format!("{error:#}").contains("database.url"), "{error:#}");
            jail.set_env(format!("{ENV_PREFIX}DATABASE__URL"), "sqlite:seer.db");

            jail.set_env(
                format!("{ENV_PREFIX}CKKS__BILLING_PARAMETER_SET"),
                "ckks1-n4096",
            );
            let error = Settings::load(Some(Path::new("utility.toml"))).expect_err("bad set");
            assert!(
                format!("{error:#}").contains("billing_parameter_set"),
                "{error:#}"
            );
            jail.set_env(
                format!("{ENV_PREFIX}CKKS__BILLING_PARAMETER_SET"),
                "ckks1-n8192-q60-s40x2-p60",
            );
            Settings::load(Some(Path::new("utility.toml"))).expect("valid again");

            jail.create_file("typo.toml", "[database]\nurll = \"sqlite:x.db\"\n")?;
            Settings::load(Some(Path::new("typo.toml"))).expect_err("unknown key");
            jail.create_file(
                "bad-tariff.toml",
                "[tariff]\nslabs = [{ up_to_kwh = 50.0, rate_paise = 415 }]\n",
            )?;
            Settings::load(Some(Path::new("bad-tariff.toml"))).expect_err("open-ended last slab");
            Ok(())
        });
    }
}
