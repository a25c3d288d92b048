//! A key authority with deep analytics enabled, started as a separate process for one run of
//! `seer anomaly` or `seer forecast`, and the tokens those runs act with.
//!
//! Its keys and JWT signing key persist under `WORKDIR/ka/`, so only the first run generates
//! the deep N32768 key set (about 12 s plus 2 s per Galois key); its audit database is fresh
//! for each run (`WORKDIR/runs/<time>/`), because a period is released at most once per audit
//! database.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use meter_client::identity::DeviceIdentity;

use crate::process::{Binaries, Server, output};

/// How long the key authority may take to start: its first start generates the deep key set.
pub const KEY_AUTHORITY_START_TIMEOUT: Duration = Duration::from_secs(600);

/// Prints a progress line with the time since `start` to stderr.
pub fn progress(start: Instant, what: &str) {
    eprintln!("[{:>7.1} s] {what}", start.elapsed().as_secs_f64());
}

/// The running key authority of one run.
#[derive(Debug)]
pub struct AnalyticsAuthority {
    server: Server,
    binaries: Binaries,
    env: Vec<(String, String)>,
    url: String,
    run_dir: PathBuf,
}

/// A meter of one run (see [`AnalyticsAuthority::meter`]).
#[derive(Debug)]
pub struct RunMeter {
    /// The meter id.
    pub meter_id: String,
    /// Its household token for the key authority.
    pub token: String,
    /// Its device key and certificate.
    pub identity: DeviceIdentity,
}

impl AnalyticsAuthority {
    /// Starts the key authority with analytics enabled and `analytics` (settings under
    /// `SEER_KEY_AUTHORITY__ANALYTICS__`, e.g. `("FORECAST_MODELS", "[\"…\"]")`).
    ///
    /// # Errors
    /// When the programs cannot be found, the directories created or the process started.
    pub async fn start(
        workdir: &Path,
        bin_dir: Option<PathBuf>,
        analytics: &[(&str, String)],
        start: Instant,
    ) -> Result<Self> {
        let binaries = Binaries::locate(bin_dir)?;
        let ka_dir = workdir.join("ka");
        let run_dir = workdir
            .join("runs")
            .join(chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f").to_string());
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let var = |k: &str, v: String| (format!("SEER_KEY_AUTHORITY__{k}"), v);
        let mut env = vec![
            var("SERVER__PORT", "0".into()),
            var("KEYS__DIR", ka_dir.join("keys").display().to_string()),
            var(
                "AUTH__SIGNING_KEY_FILE",
                ka_dir.join("jwt.pem").display().to_string(),
            ),
            var(
                "AUDIT__DATABASE_URL",
                format!("sqlite:{}", run_dir.join("audit.db").display()),
            ),
            // The run's own log has the run's own anchor (the keys are shared across runs).
            var(
                "AUDIT__ANCHOR_FILE",
                run_dir.join("audit-anchor").display().to_string(),
            ),
            var("LOG__FILTER", "info".into()),
            var("ANALYTICS__ENABLED", "true".into()),
        ];
        env.extend(
            analytics
                .iter()
                .map(|(k, v)| var(&format!("ANALYTICS__{k}"), v.clone())),
        );
        let deep = !analytics
            .iter()
            .any(|(k, v)| *k == "ENABLED" && v.as_str() == "false");
        let first_run = deep && !ka_dir.join("keys").exists();
        std::fs::create_dir_all(&ka_dir)
            .with_context(|| format!("creating {}", ka_dir.display()))?;
        progress(
            start,
            if first_run {
                "starting the key authority: generating the deep N32768 key set (first run \
                 only; about 12 s + 2 s per Galois key)"
            } else {
                "starting the key authority (keys from an earlier run)"
            },
        );
        // A new log beside existing keys is started deliberately, never implicitly.
        output(&binaries, "key-authority", &["init-audit"], &env)
            .await
            .context("initializing the run's audit log")?;
        let server = Server::start_within(
            &binaries,
            "key-authority",
            &env,
            &run_dir.join("key-authority.log"),
            KEY_AUTHORITY_START_TIMEOUT,
        )
        .await?;
        // The token subcommand shares the configuration but not the listening port.
        env.retain(|(k, _)| !k.ends_with("__PORT"));
        let url = server.url();
        progress(start, &format!("key authority listening at {url}"));
        Ok(Self {
            server,
            binaries,
            env,
            url,
            run_dir,
        })
    }

    /// Its URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A meter of this run, enrolled as an operator and a household do (a one-time code from
    /// `key-authority enrolment-code`, then `meter-client enrol` into `WORKDIR/runs/…/meters/`):
    /// its device identity, with which it signs its receipts, and a one-hour household token
    /// for the key authority alone.
    ///
    /// # Errors
    /// When enrolment or issuing fails.
    pub async fn meter(&self, meter_id: &str) -> Result<RunMeter> {
        let code = output(
            &self.binaries,
            "key-authority",
            &["enrolment-code", "--meter-id", meter_id],
            &self.env,
        )
        .await?;
        let state = self.run_dir.join("meters").join(meter_id);
        let state_arg = state.display().to_string();
        output(
            &self.binaries,
            "meter-client",
            &[
                "enrol",
                "--meter-id",
                meter_id,
                "--code",
                code.trim(),
                "--key-authority",
                &self.url,
                "--state",
                &state_arg,
            ],
            &[],
        )
        .await?;
        let identity = DeviceIdentity::load(&state, meter_id)
            .with_context(|| format!("loading the identity of {meter_id}"))?;
        let token = self.token("household", Some(meter_id)).await?;
        Ok(RunMeter {
            meter_id: meter_id.to_owned(),
            token,
            identity,
        })
    }

    /// A one-hour token for `role`, bound to `meter_id` for households (whose tokens name
    /// the key authority alone: these runs record receipts with it).
    ///
    /// # Errors
    /// When `key-authority issue-token` fails.
    pub async fn token(&self, role: &str, meter_id: Option<&str>) -> Result<String> {
        let mut args = vec!["issue-token", "--role", role, "--lifetime", "1h"];
        if let Some(meter_id) = meter_id {
            args.extend(["--meter-id", meter_id]);
        }
        if role == "household" {
            args.extend(["--audience", seer_auth::AUDIENCE_KEY_AUTHORITY]);
        }
        Ok(output(&self.binaries, "key-authority", &args, &self.env)
            .await?
            .trim()
            .to_owned())
    }

    /// Stops the process.
    pub async fn stop(mut self) {
        if let Err(e) = self.server.stop().await {
            eprintln!("note: stopping the key authority: {e:#}");
        }
    }
}
