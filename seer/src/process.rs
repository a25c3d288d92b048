//! Starting and stopping the three programs as child processes.
//!
//! The servers are started on port 0 (`SEER_…__SERVER__PORT=0`) and announce their address as
//! the one line of their stdout (`listening on ADDRESS`); their logs (stderr) go to files in
//! the work directory. They are stopped with SIGTERM, on which they drain and exit 0; a server
//! that outlives [`STOP_TIMEOUT`] is killed. Every child is also killed if its handle is
//! dropped (an interrupted run), so none outlives the launcher.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print its `listening on` line (the key authority generates
/// its keys on first start).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The prefix of a server's one stdout line.
const LISTENING_PREFIX: &str = "listening on ";

/// The programs the launcher runs.
pub const PROGRAMS: [&str; 3] = ["key-authority", "utility-server", "meter-client"];

/// Where the three programs' binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`, or (when `None`) next to the running executable: a cargo build
    /// puts every binary of the workspace in the same `target/<profile>/` directory.
    ///
    /// # Errors
    /// When one of [`PROGRAMS`] is missing; the message says how to build it.
    pub fn locate(dir: Option<PathBuf>) -> Result<Self> {
        let dir = match dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("locating the seer executable")?
                .parent()
                .context("the seer executable has no directory")?
                .to_path_buf(),
        };
        let binaries = Self { dir };
        for name in PROGRAMS {
            let path = binaries.path(name);
            if !path.is_file() {
                bail!(
                    "{} not found: build the programs first, with the same profile \
                     (`cargo build --release --workspace --bins`), or pass --bin-dir",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }

    /// The path of program `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
    }
}

/// A server running as a child process.
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    child: Child,
    address: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts `program serve` with `envs`, its stderr appended to `log`, and waits for its
    /// `listening on` line.
    ///
    /// # Errors
    /// When it cannot start, exits, or announces nothing valid within [`START_TIMEOUT`]; the
    /// error quotes the end of its log.
    pub async fn start(
        binaries: &Binaries,
        name: &'static str,
        envs: &[(String, String)],
        log: &Path,
    ) -> Result<Self> {
        Self::start_within(binaries, name, envs, log, START_TIMEOUT).await
    }

    /// [`Server::start`] waiting up to `timeout` for the address (a key authority generating
    /// an N32768 key set on its first start needs minutes on a busy machine).
    ///
    /// # Errors
    /// As [`Server::start`].
    pub async fn start_within(
        binaries: &Binaries,
        name: &'static str,
        envs: &[(String, String)],
        log: &Path,
        start_timeout: Duration,
    ) -> Result<Self> {
        let path = binaries.path(name);
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&path)
            .arg("serve")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let stdout = child.stdout.take().context("the child's stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(start_timeout, lines.next_line()).await;
        let address = match first {
            Ok(Ok(Some(line))) => line
                .trim_end()
                .strip_prefix(LISTENING_PREFIX)
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .with_context(|| format!("{name} announced {line:?}, not `listening on ADDRESS`")),
            Ok(Ok(None)) => Err(anyhow::anyhow!(
                "{name} exited without announcing its address"
            )),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("reading {name}'s stdout"))),
            Err(_) => Err(anyhow::anyhow!(
                "{name} did not announce its address within {start_timeout:?}"
            )),
        };
        match address {
            Ok(address) => {
                // Its stdout carries nothing else; drain it anyway so it can never block.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Self {
                    name,
                    child,
                    address,
                    log: log.to_path_buf(),
                })
            }
            Err(e) => {
                let _ = child.kill().await;
                Err(e.context(format!(
                    "{name} did not start; the end of {}:\n{}",
                    log.display(),
                    log_tail(log, 20)
                )))
            }
        }
    }

    /// The program's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its `http://` URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Its `https://` URL (a server started with `server.tls`).
    pub fn https_url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`] for it to exit; kills it after that.
    ///
    /// # Errors
    /// When the signal cannot be sent or it had to be killed.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = self.child.id().context("the process has no id")?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .context("running kill -TERM")?;
        if sent.success()
            && let Ok(status) = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await
        {
            return Ok(status?);
        }
        self.child.kill().await?;
        bail!(
            "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM and was killed",
            self.name
        )
    }
}

/// The last `n` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `program args…` to completion with `envs` and returns its stdout.
///
/// # Errors
/// When it cannot start or exits unsuccessfully (the error quotes its stderr).
pub async fn output(
    binaries: &Binaries,
    name: &str,
    args: &[&str],
    envs: &[(String, String)],
) -> Result<String> {
    let path = binaries.path(name);
    let out = Command::new(&path)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{name} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{name}'s output is not UTF-8"))
}
