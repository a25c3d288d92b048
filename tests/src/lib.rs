//! Helpers for SEER's integration tests, which start the real programs as separate processes
//! (on port 0) and talk to them over real gRPC.
//!
//! - [`ServerProcess`]: one server child process (start, SIGTERM, SIGKILL, restart on the same
//!   port with [`free_port`]).
//! - [`deployment`]: the key authority and the utility server together, tokens, meter runs,
//!   bills and cursors ([`Deployment`]), on SQLite or on databases the caller provides.
//! - [`oracle`]: the plaintext bills of the readings a meter reads, to the paisa.
//! - [`rng`]: a seeded generator for random kill moments.
//!
//! # Finding the binaries
//!
//! Cargo hands `CARGO_BIN_EXE_<name>` only to the integration tests of the package that
//! defines the binary, and artifact dependencies are unstable, so the programs are looked up
//! next to the running test executable instead: a test runs from `<target>/<profile>/deps/`,
//! the binaries of the same build sit in `<target>/<profile>/`. Set `SEER_BIN_DIR` to look
//! elsewhere.
//!
//! The binaries must be built, with the same profile, before the tests run:
//!
//! ```text
//! cargo build --release -p utility-server -p key-authority -p meter-client
//! cargo test --release -p seer-tests
//! ```
//!
//! (`cargo test --release --workspace` also builds them, because `utility-server` and
//! `key-authority` have integration tests of their own and cargo builds a package's binaries
//! for those.)

use std::{
    env,
    io::{BufRead as _, BufReader, Read as _},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

pub mod audit;
pub mod browser;
pub mod deployment;
pub mod oracle;
pub mod pki;
pub mod rng;
pub mod signing;

pub use deployment::{Deployment, DeploymentOptions, MeterRun};

/// How long a program may take to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The prefix of the one line a SEER server prints on stdout once it is bound.
pub const LISTENING_PREFIX: &str = "listening on ";

/// The directory holding the workspace's binaries for the profile these tests were built with.
///
/// # Errors
/// When the test executable's path cannot be found.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = env::var_os("SEER_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = env::current_exe().context("locating the test executable")?;
    let mut dir = exe
        .parent()
        .context("the test executable has no parent directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of the workspace binary `name`, checked to exist.
///
/// # Errors
/// When the binary has not been built; the message says how to build it.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(format!("{name}{}", env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "{} not found: build the binaries before the tests, with the same profile, \
             e.g. `cargo build --release -p {name}` (or set SEER_BIN_DIR)",
            path.display()
        );
    }
    Ok(path)
}

/// A SEER server running as a child process on a port it chose; killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    envs: Vec<(String, String)>,
    child: Child,
    address: SocketAddr,
    /// Whether it serves mutual TLS (its `SERVER__TLS__*` settings are given).
    tls: bool,
}

impl ServerProcess {
    /// Starts the workspace binary `name` on port 0 (through its `SERVER__PORT` environment
    /// override, e.g. `SEER_UTILITY__SERVER__PORT=0` for `env_prefix` `SEER_UTILITY__`)
    /// and waits for its `listening on ADDRESS` line. Blocks the calling thread while it
    /// waits (up to [`STARTUP_TIMEOUT`]).
    ///
    /// # Errors
    /// When the binary is missing, cannot start, exits, or prints no valid `listening on`
    /// line within [`STARTUP_TIMEOUT`]; the error includes what it wrote to stderr.
    pub fn spawn(name: &str, env_prefix: &str) -> anyhow::Result<Self> {
        Self::spawn_with(
            name,
            &[(format!("{env_prefix}SERVER__PORT"), "0".to_owned())],
        )
    }

    /// Starts the workspace binary `name` with the extra environment variables `envs` and
    /// waits for its `listening on ADDRESS` line.
    ///
    /// # Errors
    /// As [`ServerProcess::spawn`].
    pub fn spawn_with(name: &str, envs: &[(String, String)]) -> anyhow::Result<Self> {
        let path = bin_path(name)?;
        let mut child = Command::new(&path)
            .envs(envs.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;

        let stdout = child.stdout.take().context("child stdout is piped")?;
        let stderr = child.stderr.take().context("child stderr is piped")?;
        let stderr = StderrCollector::start(stderr);

        // Read stdout on a thread so that the wait can time out; after the line, keep draining
        // it so the child never blocks on a full pipe.
        let (line_tx, line_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = line_tx.send(first);
            lines.for_each(drop);
        });

        let outcome = match line_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(Ok(line))) => parse_listening_line(&line),
            Ok(Some(Err(error))) => Err(anyhow::Error::new(error).context("reading its stdout")),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(anyhow::anyhow!("it closed stdout without a listening line"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(anyhow::anyhow!(
                "no listening line within {STARTUP_TIMEOUT:?}"
            )),
        };
        match outcome {
            Ok(address) => Ok(Self {
                name: name.to_owned(),
                envs: envs.to_vec(),
                child,
                address,
                tls: envs
                    .iter()
                    .any(|(key, _)| key.ends_with("SERVER__TLS__CERT_FILE")),
            }),
            Err(error) => {
                let _ = child.kill();
                let status = child.wait().ok();
                let stderr = stderr.finish();
                Err(error.context(format!(
                    "{name} did not start (exit status: {status:?}); its stderr:\n{stderr}"
                )))
            }
        }
    }

    /// The address the server listens on.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The URI of the server, for a tonic `Endpoint`: `https://` when it serves mutual TLS,
    /// `http://` otherwise.
    #[must_use]
    pub fn uri(&self) -> String {
        if self.tls {
            format!("https://{}", self.address)
        } else {
            format!("http://{}", self.address)
        }
    }

    /// The plaintext `http://` URI of the server, whatever it serves (to show that a server
    /// with TLS refuses plaintext).
    #[must_use]
    pub fn plaintext_uri(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The program's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl ServerProcess {
    /// Sends SIGTERM and waits (up to `timeout`) for the process to exit; returns its status.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process outlives the timeout.
    pub fn terminate(
        &mut self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.child.id());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the process")? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{} did not exit within {timeout:?} of SIGTERM",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl ServerProcess {
    /// Kills the process with SIGKILL (no chance to clean up, like a power cut) and reaps it;
    /// returns its exit status.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process cannot be waited for.
    pub fn kill(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait().context("polling the process")? {
            return Ok(status);
        }
        self.child
            .kill()
            .with_context(|| format!("sending SIGKILL to {}", self.name))?;
        self.child
            .wait()
            .with_context(|| format!("waiting for {} after SIGKILL", self.name))
    }

    /// Whether the process is still running.
    ///
    /// # Errors
    /// When its status cannot be polled.
    pub fn is_running(&mut self) -> anyhow::Result<bool> {
        Ok(self
            .child
            .try_wait()
            .context("polling the process")?
            .is_none())
    }

    /// Kills the process if it still runs, then starts the same binary again with the same
    /// environment (so on the same port when a fixed one was given, see [`free_port`]), and
    /// waits for its `listening on` line. A start that fails (e.g. the port not yet free) is
    /// retried a few times.
    ///
    /// # Errors
    /// When every attempt fails; the last attempt's error.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::spawn_with(&self.name, &self.envs) {
                Ok(fresh) => {
                    // The old child is reaped; dropping it only kills a dead process.
                    *self = fresh;
                    return Ok(());
                }
                Err(error) if attempt < RESTART_ATTEMPTS => {
                    eprintln!("restarting {} (attempt {attempt}): {error:#}", self.name);
                    thread::sleep(Duration::from_millis(500));
                }
                Err(error) => {
                    return Err(
                        error.context(format!("restarting {} failed {attempt} times", self.name))
                    );
                }
            }
        }
    }
}

/// A current-thread Tokio runtime, for synchronous tests that make a few gRPC or database
/// calls between starting and killing processes.
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a Tokio runtime")
}

/// How many times [`ServerProcess::restart`] tries to start the program again.
const RESTART_ATTEMPTS: u32 = 10;

/// A TCP port on 127.0.0.1 that was free a moment ago (the operating system's choice for port
/// 0, released at once): for a server that must come back on the same address after a restart.
///
/// # Errors
/// When no socket can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("the bound address")?.port())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `listening on ADDRESS`.
///
/// # Errors
/// When the line has another form.
pub fn parse_listening_line(line: &str) -> anyhow::Result<SocketAddr> {
    let address = line
        .trim_end()
        .strip_prefix(LISTENING_PREFIX)
        .with_context(|| {
            format!("expected `{LISTENING_PREFIX}ADDRESS` first on stdout, got {line:?}")
        })?;
    address
        .parse()
        .with_context(|| format!("invalid address in {line:?}"))
}

/// Drains a child's stderr on a thread (so it never blocks on a full pipe) and keeps it for
/// error messages.
struct StderrCollector {
    handle: thread::JoinHandle<String>,
}

impl StderrCollector {
    fn start(mut stderr: ChildStderr) -> Self {
        let handle = thread::spawn(move || {
            let mut text = String::new();
            let mut bytes = Vec::new();
            if stderr.read_to_end(&mut bytes).is_ok() {
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        });
        Self { handle }
    }

    /// The stderr written so far; call after the child has exited.
    fn finish(self) -> String {
        self.handle
            .join()
            .unwrap_or_else(|_| "<stderr reader panicked>".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        let address = parse_listening_line("listening on 127.0.0.1:4321\n").expect("valid line");
        assert_eq!(address, SocketAddr::from(([127, 0, 0, 1], 4321)));
        parse_listening_line("serving on 127.0.0.1:1").expect_err("wrong prefix");
        parse_listening_line("listening on nowhere").expect_err("not an address");
    }

    #[test]
    fn missing_binary_error_says_how_to_build_it() {
        let error = bin_path("no-such-seer-binary").expect_err("absent");
        assert!(
            format!("{error}").contains("cargo build --release"),
            "{error}"
        );
    }
}
