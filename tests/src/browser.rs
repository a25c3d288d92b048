//! Headless Chromium driven over WebDriver, for the dashboards' browser tests.
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free port and opens a session of
//! `chromium --headless --no-sandbox` (installed by `scripts/test-tools.sh`) that trusts
//! exactly the certificates it is given (their public keys pinned with
//! `--ignore-certificate-errors-spki-list`: the deployment's own CA is not in the system's
//! store). Screenshots go to `SEER_SCREENSHOTS` (the README's `docs/screenshots/` when set
//! to it) or to `target/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use sha2::Digest as _;

/// How long [`Browser::wait_for`] waits by default.
pub const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium session and the chromedriver that runs it (killed on drop).
pub struct Browser {
    client: Client,
    driver: Child,
    screenshots: PathBuf,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("screenshots", &self.screenshots)
            .finish_non_exhaustive()
    }
}

/// The base64 SHA-256 of the SubjectPublicKeyInfo of the first certificate in `pem_file`, as
/// Chromium's `--ignore-certificate-errors-spki-list` takes it.
///
/// # Errors
/// When the file does not hold a PEM certificate.
pub fn spki_pin(pem_file: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(pem_file).with_context(|| format!("reading {}", pem_file.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", pem_file.display()))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: {e}", pem_file.display()))?;
    let digest = sha2::Sha256::digest(certificate.public_key().raw);
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}

fn require(program: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!(
        "{program} is not installed: run scripts/test-tools.sh (Debian packages chromium and chromium-driver)"
    )
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that accepts the server certificates in
    /// `trusted_cert_files`.
    ///
    /// # Errors
    /// When Chromium or chromedriver is missing or does not start.
    pub async fn start(trusted_cert_files: &[&Path]) -> anyhow::Result<Self> {
        let chromium = require("chromium")?;
        let chromedriver = require("chromedriver")?;
        let port = crate::free_port()?;
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile = tempfile::tempdir().context("a browser profile directory")?;
        let pins = trusted_cert_files
            .iter()
            .map(|file| spki_pin(file))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1000".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if !pins.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                pins.join(",")
            ));
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    tracing_free_sleep(&error.to_string()).await;
                }
                Err(error) => bail!("no WebDriver session from chromedriver at {url}: {error}"),
            }
        };
        let screenshots = std::env::var_os("SEER_SCREENSHOTS").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"),
            PathBuf::from,
        );
        std::fs::create_dir_all(&screenshots)
            .with_context(|| format!("creating {}", screenshots.display()))?;
        Ok(Self {
            client,
            driver,
            screenshots,
            _profile: profile,
        })
    }

    /// The WebDriver client, for what the helpers below do not cover.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for its `<main>` (or the login form).
    ///
    /// # Errors
    /// When the page does not load.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))?;
        self.wait_for("main").await?;
        Ok(())
    }

    /// The current page's URL.
    ///
    /// # Errors
    /// When the browser does not answer.
    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    /// Logs in at `base` with `token` through the login form; returns the page's URL after.
    ///
    /// # Errors
    /// When the form is missing.
    pub async fn login(&self, base: &str, token: &str) -> anyhow::Result<String> {
        self.open(&format!("{base}/login")).await?;
        let field = self.wait_for("#token").await?;
        // send_keys types character by character; a JWT is long, so set the value directly.
        self.client
            .execute(
                "document.getElementById('token').value = arguments[0];",
                vec![serde_json::Value::String(token.to_owned())],
            )
            .await
            .context("filling the token field")?;
        drop(field);
        self.wait_for("#login-submit")
            .await?
            .click()
            .await
            .context("submitting the login form")?;
        // The click only starts the navigation: wait until the browser has left the login
        // page, or the login page says why it refused.
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.url().await?;
            if !url.contains("/login") {
                self.wait_for("main").await?;
                return Ok(url);
            }
            if self.exists("[data-testid=\"login-error\"]").await? {
                return Ok(url);
            }
            if Instant::now() > deadline {
                bail!("the login form neither navigated nor showed an error");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to [`WAIT`] for an element matching the CSS `selector`.
    ///
    /// # Errors
    /// When none appears.
    pub async fn wait_for(&self, selector: &str) -> anyhow::Result<Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(selector))
            .await
            .with_context(|| format!("waiting for {selector}"))
    }

    /// Whether an element matches `selector` now.
    ///
    /// # Errors
    /// When the browser does not answer.
    pub async fn exists(&self, selector: &str) -> anyhow::Result<bool> {
        Ok(!self
            .client
            .find_all(Locator::Css(selector))
            .await?
            .is_empty())
    }

    /// The visible text of the element with `data-testid="id"`.
    ///
    /// # Errors
    /// When there is none.
    pub async fn text(&self, test_id: &str) -> anyhow::Result<String> {
        match self.wait_for(&format!("[data-testid=\"{test_id}\"]")).await {
            Ok(element) => Ok(element.text().await?.trim().to_owned()),
            Err(error) => {
                let url = self.url().await.unwrap_or_default();
                let page = self.page_text().await.unwrap_or_default();
                Err(error.context(format!("no {test_id} on {url}; the page says:\n{page}")))
            }
        }
    }

    /// The whole page's visible text.
    ///
    /// # Errors
    /// When the browser does not answer.
    pub async fn page_text(&self) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css("body")).await?.text().await?)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    ///
    /// # Errors
    /// When the script throws.
    pub async fn script(
        &self,
        script: &str,
        args: Vec<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Saves a PNG screenshot of the viewport as `NAME.png`; returns its path.
    ///
    /// # Errors
    /// When the browser or the file system fails.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Ends the WebDriver session (and so the browser).
    ///
    /// # Errors
    /// When the driver does not answer.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let result = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        result.context("closing the browser")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn tracing_free_sleep(_why: &str) {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
