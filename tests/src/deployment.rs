//! A whole SEER deployment as separate processes: the key authority and the utility server
//! started from their binaries (each with its own database), tokens issued with
//! `key-authority issue-token`, meters run with `meter-client run`, bills asked for with
//! `utility-server bill`, cursors read over real gRPC.
//!
//! Everything lives in a temporary directory owned by the [`Deployment`]; the servers are
//! killed when it is dropped. A PostgreSQL database named in [`DeploymentOptions`] belongs to
//! the caller: create it before the deployment (so it is dropped after it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::pki::Fingerprints;
use crate::{ServerProcess, bin_path};
use anyhow::{Context as _, bail, ensure};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::GetCursorRequest;
use seer_proto::v1::ingest_client::IngestClient;
use tonic::metadata::MetadataValue;

/// The file (in the deployment's directory) where the utility server writes its dashboard's
/// address.
const DASHBOARD_ADDRESS_FILE: &str = "utility-dashboard.address";

/// How a [`Deployment`] is set up; the default is SQLite everywhere and port 0 for both
/// servers.
#[derive(Clone, Debug, Default)]
pub struct DeploymentOptions {
    /// The utility server's database URL; `None`: a SQLite file in the deployment's directory.
    pub utility_database: Option<String>,
    /// The key authority's audit database URL; `None`: a SQLite file in the deployment's
    /// directory.
    pub audit_database: Option<String>,
    /// A fixed port for the utility server, so that it comes back on the same address after
    /// [`Deployment::restart_utility`]; `None`: port 0 (the operating system's choice).
    pub utility_port: Option<u16>,
}

/// The key authority and the utility server running as child processes; see the
/// [module docs](self).
#[derive(Debug)]
pub struct Deployment {
    // Declared before `dir`, so the processes are killed before their directory is removed.
    authority: ServerProcess,
    utility: ServerProcess,
    utility_database: String,
    dir: tempfile::TempDir,
    audit_database: String,
    fingerprints: Fingerprints,
}

impl Deployment {
    /// Starts the key authority, publishes its JWT verification key to the utility server,
    /// and starts the utility server. Blocks while the servers start.
    ///
    /// # Errors
    /// When a binary is missing or a server does not start.
    pub fn start(options: &DeploymentOptions) -> anyhow::Result<Self> {
        Self::start_with_authority_env(options, &[])
    }

    /// [`Deployment::start`] with extra environment variables for the key authority (they
    /// override the deployment's own, e.g. `SEER_KEY_AUTHORITY__ANALYTICS__ENABLED=true`, or
    /// `SEER_KEY_AUTHORITY__KEYS__DIR` to reuse keys cached across runs).
    ///
    /// # Errors
    /// As [`Deployment::start`].
    pub fn start_with_authority_env(
        options: &DeploymentOptions,
        authority_env_extra: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the deployment's directory")?;
        std::fs::create_dir_all(dir.path().join("ka")).context("creating ka/")?;
        let audit_database = options
            .audit_database
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("ka/audit.db").display()));
        let mut env = authority_env(dir.path(), Some(&audit_database));
        env.extend(crate::pki::authority_tls_env()?);
        env.extend_from_slice(authority_env_extra);
        // The deployment's log is new, but its keys may come from a cache: a new log beside
        // existing keys is started deliberately (`init-audit`), never implicitly.
        let init = Command::new(bin_path("key-authority")?)
            .arg("init-audit")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("running key-authority init-audit")?;
        ensure!(
            init.status.success(),
            "key-authority init-audit failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let authority = ServerProcess::spawn_with("key-authority", &env)?;
        let fingerprints = crate::pki::key_authority_fingerprints(&env)?;
        crate::pki::install_test_client()?;
        let pem = run_key_authority(dir.path(), &["jwt-public-key"])?;
        let pem_file = dir.path().join("ka-jwt-public.pem");
        std::fs::write(&pem_file, pem).context("writing the JWT public key")?;
        let utility_database = options
            .utility_database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("utility.db").display()));
        let mut utility_env = crate::pki::utility_tls_env()?;
        utility_env.push((
            "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_SHA256".into(),
            fingerprints.jwt_public_key_sha256.clone(),
        ));
        let utility = ServerProcess::spawn_with(
            "utility-server",
            &[
                (
                    "SEER_UTILITY__SERVER__PORT".into(),
                    options.utility_port.unwrap_or(0).to_string(),
                ),
                (
                    "SEER_UTILITY__DATABASE__URL".into(),
                    utility_database.clone(),
                ),
                (
                    "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_FILE".into(),
                    pem_file.display().to_string(),
                ),
                ("SEER_UTILITY__LOG__FILTER".into(), "warn".into()),
                (
                    "SEER_UTILITY__DASHBOARD__ADDRESS_FILE".into(),
                    dir.path()
                        .join(DASHBOARD_ADDRESS_FILE)
                        .display()
                        .to_string(),
                ),
            ]
            .into_iter()
            .chain(utility_env)
            .collect::<Vec<_>>(),
        )?;
        Ok(Self {
            authority,
            utility,
            utility_database,
            audit_database,
            dir,
            fingerprints,
        })
    }

    /// The base URL of the utility's dashboard (`https://127.0.0.1:PORT`), from the address
    /// file the utility server writes when its dashboard listens (waits up to 20 s for it).
    ///
    /// # Errors
    /// When the file does not appear or does not hold an address.
    pub fn utility_dashboard(&self) -> anyhow::Result<String> {
        let file = self.dir().join(DASHBOARD_ADDRESS_FILE);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let text = text.trim();
                if !text.is_empty() {
                    return Ok(if text.contains("://") {
                        text.to_owned()
                    } else {
                        format!("https://{text}")
                    });
                }
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "the utility server wrote no dashboard address to {}",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The fingerprints the key authority printed, which the utility and the meters pin.
    #[must_use]
    pub fn fingerprints(&self) -> &Fingerprints {
        &self.fingerprints
    }

    /// The environment of a `meter-client` for `meter_id` in this deployment: its certificate
    /// (naming the meter) and the key authority's public key pins.
    ///
    /// # Errors
    /// When the certificate cannot be issued.
    pub fn meter_env(&self, meter_id: &str) -> anyhow::Result<Vec<(String, String)>> {
        crate::pki::meter_env(meter_id, &self.fingerprints.public_key_pins)
    }

    /// The deployment's temporary directory (meter state directories go here too).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The key authority's process.
    #[must_use]
    pub fn authority(&self) -> &ServerProcess {
        &self.authority
    }

    /// The utility server's process.
    #[must_use]
    pub fn utility(&self) -> &ServerProcess {
        &self.utility
    }

    /// The utility server's process, to kill or restart it.
    pub fn utility_mut(&mut self) -> &mut ServerProcess {
        &mut self.utility
    }

    /// The utility server's database URL.
    #[must_use]
    pub fn utility_database(&self) -> &str {
        &self.utility_database
    }

    /// The utility server's SQLite file, when it runs on the embedded default (no
    /// [`DeploymentOptions::utility_database`]).
    #[must_use]
    pub fn utility_sqlite_file(&self) -> Option<PathBuf> {
        self.utility_database
            .strip_prefix("sqlite://")
            .map(PathBuf::from)
    }

    /// Kills the utility server with SIGKILL and starts it again on the same database (and,
    /// with a fixed [`DeploymentOptions::utility_port`], the same address).
    ///
    /// # Errors
    /// When it does not come back.
    pub fn restart_utility(&mut self) -> anyhow::Result<()> {
        self.utility.restart()
    }

    /// A token issued by `key-authority issue-token` (one hour) for `role`, bound to `meter`
    /// for a household.
    ///
    /// # Errors
    /// When the command fails.
    pub fn token(&self, role: &str, meter: Option<&str>) -> anyhow::Result<String> {
        issue_token(self.dir(), role, meter)
    }

    /// `utility-server ARGS` against the deployment's database, with `token` in
    /// `SEER_UTILITY_TOKEN`.
    ///
    /// # Errors
    /// When the program cannot be run (its own failure is in the output).
    pub fn utility_cli(&self, args: &[&str], token: &str) -> anyhow::Result<Output> {
        Command::new(bin_path("utility-server")?)
            .args(args)
            .env("SEER_UTILITY__DATABASE__URL", &self.utility_database)
            .envs(crate::pki::utility_tls_env()?)
            .env("SEER_UTILITY_TOKEN", token)
            .env("SEER_UTILITY__LOG__FILTER", "warn")
            .output()
            .context("running utility-server")
    }

    /// `utility-server bill --period PERIOD --group GROUP` against the deployment's key
    /// authority; the JSON report.
    ///
    /// # Errors
    /// When the command fails or prints no JSON; the message holds its stderr.
    pub fn bill(&self, period: &str, group: u32, token: &str) -> anyhow::Result<serde_json::Value> {
        let group = group.to_string();
        let output = self.utility_cli(
            &[
                "bill",
                "--period",
                period,
                "--group",
                &group,
                "--key-authority",
                &self.authority.uri(),
            ],
            token,
        )?;
        ensure!(
            output.status.success(),
            "utility-server bill --period {period} --group {group} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "the bill report is not JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// A one-time enrolment code for `meter_id`, from `key-authority enrolment-code` on the
    /// deployment's key-authority database.
    ///
    /// # Errors
    /// When the command fails.
    pub fn enrolment_code(&self, meter_id: &str) -> anyhow::Result<String> {
        let output = Command::new(bin_path("key-authority")?)
            .args(["enrolment-code", "--meter-id", meter_id])
            .envs(authority_env(self.dir(), Some(&self.audit_database)))
            .output()
            .context("running key-authority enrolment-code")?;
        ensure!(
            output.status.success(),
            "key-authority enrolment-code failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)
            .context("key-authority printed non-UTF-8")?
            .trim()
            .to_owned())
    }

    /// `key-authority ARGS` on the deployment's key-authority database (e.g. `revoke-meter`);
    /// its output, whatever its exit status.
    ///
    /// # Errors
    /// When it cannot be run.
    pub fn authority_cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(bin_path("key-authority")?)
            .args(args)
            .envs(authority_env(self.dir(), Some(&self.audit_database)))
            .output()
            .context("running key-authority")
    }

    /// `meter-client enrol` for `meter_id` with `code`, into the state directory that
    /// [`Deployment::meter`] uses; its output, whatever its exit status.
    ///
    /// # Errors
    /// When it cannot be run.
    pub fn meter_enrol(&self, meter_id: &str, code: &str) -> anyhow::Result<Output> {
        Command::new(bin_path("meter-client")?)
            .args(["enrol", "--meter-id", meter_id, "--code", code])
            .args(["--key-authority", &self.authority.uri()])
            .arg("--state")
            .arg(self.dir().join(format!("meter-{meter_id}")))
            .envs(self.meter_env(meter_id)?)
            .env("RUST_LOG", "warn")
            .output()
            .context("running meter-client enrol")
    }

    /// Enrols `meter_id` as an operator and a household do: `key-authority enrolment-code`,
    /// then `meter-client enrol` into the meter's state directory.
    ///
    /// # Errors
    /// When either command fails.
    pub fn enrol(&self, meter_id: &str) -> anyhow::Result<()> {
        let code = self.enrolment_code(meter_id)?;
        let output = self.meter_enrol(meter_id, &code)?;
        ensure!(
            output.status.success(),
            "meter-client enrol for {meter_id} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// A `meter-client run` for `meter_id` against this deployment (see [`MeterRun`]); the
    /// meter is enrolled into its state directory before it first runs.
    #[must_use]
    pub fn meter(&self, meter_id: &str, source: &str) -> MeterRun {
        MeterRun {
            meter_id: meter_id.to_owned(),
            source: source.to_owned(),
            key_authority: self.authority.uri(),
            utility: Some(self.utility.uri()),
            state: self.dir().join(format!("meter-{meter_id}")),
            token: None,
            args: Vec::new(),
            enrol_with: Some(authority_env(self.dir(), Some(&self.audit_database))),
            public_key_pins: self.fingerprints.public_key_pins.clone(),
        }
    }

    /// The device identity of `meter_id` (its key and certificate in the state directory
    /// [`Deployment::meter`] uses), enrolling the meter first when it is not yet.
    ///
    /// # Errors
    /// When enrolment fails or the identity cannot be loaded.
    pub fn identity(
        &self,
        meter_id: &str,
    ) -> anyhow::Result<meter_client::identity::DeviceIdentity> {
        let state = self.dir().join(format!("meter-{meter_id}"));
        ensure_enrolled(
            &authority_env(self.dir(), Some(&self.audit_database)),
            &self.authority.uri(),
            meter_id,
            &state,
            &self.meter_env(meter_id)?,
        )?;
        meter_client::identity::DeviceIdentity::load(&state, meter_id)
            .with_context(|| format!("loading the identity of {meter_id}"))
    }

    /// Enrols `meter_id` into the state directory `state` (unless it holds a certificate).
    ///
    /// # Errors
    /// When enrolment fails.
    pub fn enrol_into(&self, meter_id: &str, state: &Path) -> anyhow::Result<()> {
        ensure_enrolled(
            &authority_env(self.dir(), Some(&self.audit_database)),
            &self.authority.uri(),
            meter_id,
            state,
            &self.meter_env(meter_id)?,
        )
    }

    /// A one-hour household token of `meter` for exactly `audience`
    /// (`seer-key-authority` or `seer-utility-server`), from `key-authority issue-token`.
    ///
    /// # Errors
    /// When the command fails.
    pub fn household_token(&self, meter: &str, audience: &str) -> anyhow::Result<String> {
        issue_token_for(self.dir(), "household", Some(meter), Some(audience))
    }

    /// The utility server's ingest cursor for `meter`, read over gRPC with `token`.
    ///
    /// # Errors
    /// The server's refusal, or a failed connection (as `Unavailable`).
    pub async fn cursor(&self, meter: &str, token: &str) -> Result<u64, tonic::Status> {
        // From the connection of the party the token speaks for (a household token is
        // accepted only with its own meter's certificate).
        let channel = crate::pki::files_for_token(token)
            .map_err(|e| tonic::Status::internal(format!("{e:#}")))?
            .endpoint(&self.utility.uri())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connecting: {e}")))?;
        let bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("the token is not a header value"))?;
        let mut client =
            IngestClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                Ok(request)
            })
            .with_seer_limits();
        Ok(client
            .get_cursor(GetCursorRequest {
                meter_id: meter.into(),
            })
            .await?
            .into_inner()
            .last)
    }
}

/// One `meter-client run` invocation, built up and then turned into a [`Command`].
#[derive(Clone, Debug)]
pub struct MeterRun {
    meter_id: String,
    source: String,
    key_authority: String,
    utility: Option<String>,
    state: PathBuf,
    token: Option<String>,
    args: Vec<String>,
    /// The key authority's CLI environment, to enrol the meter before it runs (`None`: no
    /// enrolment).
    enrol_with: Option<Vec<(String, String)>>,
    public_key_pins: Vec<String>,
}

impl MeterRun {
    /// Runs the meter without enrolling it first (it then has no device key: an unenrolled
    /// meter's uploads and receipts are refused).
    #[must_use]
    pub fn unenrolled(mut self) -> Self {
        self.enrol_with = None;
        self
    }

    /// The household token (in `SEER_METER_TOKEN`); without one the variable is unset.
    #[must_use]
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// The state directory (default: `meter-METER` in the deployment's directory).
    #[must_use]
    pub fn state(mut self, state: impl Into<PathBuf>) -> Self {
        self.state = state.into();
        self
    }

    /// Only queue, do not upload (no `--utility`).
    #[must_use]
    pub fn offline(mut self) -> Self {
        self.utility = None;
        self
    }

    /// Any further arguments, e.g. `["--from", "2024-01-01"]`.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The meter's TLS identity and key pins: the certificate of the meter its token is for
    /// (a meter runs with its own token and certificate; a test giving it another meter's
    /// token plays that meter claiming to be this one), this meter's without a token.
    fn tls_env(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut env = match &self.token {
            Some(token) => crate::pki::files_for_token(token)?.client_env(),
            None => crate::pki::files(seer_tls::PartyKind::Meter, &self.meter_id)?.client_env(),
        };
        env.push((
            "SEER_METER_PUBLIC_KEY_PINS".to_owned(),
            self.public_key_pins.join(","),
        ));
        Ok(env)
    }

    /// The state directory.
    #[must_use]
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The command, ready to run or spawn (stdout and stderr as the caller sets them).
    ///
    /// # Errors
    /// When the binary has not been built.
    pub fn command(&self) -> anyhow::Result<Command> {
        if let Some(env) = &self.enrol_with {
            let meter_env = crate::pki::meter_env(&self.meter_id, &self.public_key_pins)?;
            ensure_enrolled(
                env,
                &self.key_authority,
                &self.meter_id,
                &self.state,
                &meter_env,
            )?;
        }
        let mut command = Command::new(bin_path("meter-client")?);
        command
            .args([
                "run",
                "--meter-id",
                &self.meter_id,
                "--source",
                &self.source,
            ])
            .args(["--key-authority", &self.key_authority])
            .arg("--state")
            .arg(&self.state)
            .args(&self.args)
            .env_remove("SEER_METER_TOKEN")
            .envs(self.tls_env()?)
            .env("RUST_LOG", "warn");
        if let Some(utility) = &self.utility {
            command.args(["--utility", utility]);
        }
        if let Some(token) = &self.token {
            command.env("SEER_METER_TOKEN", token);
        }
        Ok(command)
    }

    /// Runs the meter to its end; its output, whatever its exit status.
    ///
    /// # Errors
    /// When it cannot be run.
    pub fn output(&self) -> anyhow::Result<Output> {
        self.command()?
            .output()
            .with_context(|| format!("running meter-client for {}", self.meter_id))
    }

    /// Runs the meter to its end and requires success.
    ///
    /// # Errors
    /// When it fails; the message holds its stderr.
    pub fn run(&self) -> anyhow::Result<Output> {
        let output = self.output()?;
        if !output.status.success() {
            bail!(
                "meter-client run for {} failed ({}): {}",
                self.meter_id,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }
}

/// The key authority's environment for a deployment in `dir`.
fn authority_env(dir: &Path, audit_database: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("SEER_KEY_AUTHORITY__SERVER__PORT".into(), "0".into()),
        (
            "SEER_KEY_AUTHORITY__KEYS__DIR".into(),
            dir.join("ka/keys").display().to_string(),
        ),
        (
            "SEER_KEY_AUTHORITY__AUTH__SIGNING_KEY_FILE".into(),
            dir.join("ka/jwt.pem").display().to_string(),
        ),
        ("SEER_KEY_AUTHORITY__LOG__FILTER".into(), "warn".into()),
    ];
    if let Some(url) = audit_database {
        env.push(("SEER_KEY_AUTHORITY__AUDIT__DATABASE_URL".into(), url.into()));
    }
    env
}

/// `key-authority ARGS` with the signing key of the deployment in `dir`; its stdout.
fn run_key_authority(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(bin_path("key-authority")?)
        .args(args)
        .envs(authority_env(dir, None))
        .output()
        .context("running key-authority")?;
    ensure!(
        output.status.success(),
        "key-authority {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).context("key-authority printed non-UTF-8")
}

/// A one-hour token for `role` (bound to `meter`) signed with the key of the deployment in
/// `dir` (which need not be running: the CLI only reads the signing key, creating it first).
/// A household token names the utility server alone (household tokens name one audience);
/// see [`Deployment::household_token`] for the key authority's.
///
/// # Errors
/// When the command fails.
pub fn issue_token(dir: &Path, role: &str, meter: Option<&str>) -> anyhow::Result<String> {
    let audience = (role == "household").then_some("seer-utility-server");
    issue_token_for(dir, role, meter, audience)
}

/// A one-hour token for `role` (bound to `meter`), for `audience` when given.
fn issue_token_for(
    dir: &Path,
    role: &str,
    meter: Option<&str>,
    audience: Option<&str>,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir.join("ka")).context("creating ka/")?;
    let mut args = vec!["issue-token", "--role", role, "--lifetime", "1h"];
    if let Some(meter) = meter {
        args.extend(["--meter-id", meter]);
    }
    if let Some(audience) = audience {
        args.extend(["--audience", audience]);
    }
    Ok(run_key_authority(dir, &args)?.trim().to_owned())
}

/// Enrols `meter_id` into `state` (an operator's `key-authority enrolment-code` with the key
/// authority's CLI environment `env`, then `meter-client enrol` against `key_authority`),
/// unless the state directory already holds its certificate.
///
/// # Errors
/// When either command fails.
pub fn ensure_enrolled(
    env: &[(String, String)],
    key_authority: &str,
    meter_id: &str,
    state: &Path,
    meter_env: &[(String, String)],
) -> anyhow::Result<()> {
    if state
        .join(meter_client::identity::CERTIFICATE_FILE)
        .exists()
    {
        return Ok(());
    }
    let output = Command::new(bin_path("key-authority")?)
        .args(["enrolment-code", "--meter-id", meter_id])
        .envs(env.iter().cloned())
        .output()
        .context("running key-authority enrolment-code")?;
    ensure!(
        output.status.success(),
        "key-authority enrolment-code failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let code = String::from_utf8(output.stdout).context("key-authority printed non-UTF-8")?;
    let output = Command::new(bin_path("meter-client")?)
        .args(["enrol", "--meter-id", meter_id, "--code", code.trim()])
        .args(["--key-authority", key_authority])
        .arg("--state")
        .arg(state)
        .envs(meter_env.iter().cloned())
        .env("RUST_LOG", "warn")
        .output()
        .context("running meter-client enrol")?;
    ensure!(
        output.status.success(),
        "meter-client enrol for {meter_id} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Generates (or checks) the key authority's key set for `parameter_set` with `galois_steps`
/// in the key directory `dir`, in this process, so that a key authority started on `dir`
/// loads it instead of generating it while the start-up timeout runs (N32768 key generation
/// takes tens of seconds). A directory kept across runs is a key cache, like tfhe-rs's
/// keycache.
///
/// # Errors
/// When the key store cannot be opened or written.
pub fn prepare_key_set(
    dir: &Path,
    parameter_set: &str,
    galois_steps: &[i64],
) -> anyhow::Result<()> {
    key_authority::keys::KeyStore::open(
        dir,
        &[key_authority::keys::KeySetSpec {
            parameter_set: parameter_set.to_owned(),
            galois_steps: galois_steps.to_vec(),
        }],
    )
    .with_context(|| format!("preparing the key set {parameter_set} in {}", dir.display()))?;
    Ok(())
}

/// The key authority's environment for deep analytics: the deep key set (prepared in the key
/// cache `key_dir` with `galois_steps` first, see [`prepare_key_set`]), analytics enabled, the
/// given anomaly and forecast model files registered, and `extra` settings under
/// `ANALYTICS__` (e.g. `("ZSCORE_WINDOW", "7")`). Pass it to
/// [`Deployment::start_with_authority_env`].
///
/// # Errors
/// When the key set cannot be prepared.
pub fn deep_analytics_env(
    key_dir: &Path,
    galois_steps: &[i64],
    anomaly_models: &[&Path],
    forecast_models: &[&Path],
    extra: &[(&str, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    prepare_key_set(
        key_dir,
        &seer_forecast::circuit::PARAMETER_SET.id(),
        galois_steps,
    )?;
    let list = |paths: &[&Path]| {
        format!(
            "[{}]",
            paths
                .iter()
                .map(|p| format!("{:?}", p.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut env = vec![
        ("KEYS__DIR".to_owned(), key_dir.display().to_string()),
        ("ANALYTICS__ENABLED".to_owned(), "true".to_owned()),
        ("ANALYTICS__ANOMALY_MODELS".to_owned(), list(anomaly_models)),
        (
            "ANALYTICS__FORECAST_MODELS".to_owned(),
            list(forecast_models),
        ),
        (
            "ANALYTICS__GALOIS_STEPS".to_owned(),
            format!("{galois_steps:?}"),
        ),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| (format!("ANALYTICS__{k}"), v.clone())),
    );
    Ok(env
        .into_iter()
        .map(|(k, v)| (format!("SEER_KEY_AUTHORITY__{k}"), v))
        .collect())
}
