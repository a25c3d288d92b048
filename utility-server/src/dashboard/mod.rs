//! The utility dashboard: server-rendered pages on their own listener ([`seer_web`]), showing
//! what the utility's own database holds — released bills and their cells, stored batches'
//! receive times and declared ε, released daily results, released group totals and group
//! forecasts. The utility never decrypts: every number on these pages was released by the key
//! authority or is a count or time the utility observed.
//!
//! # Who sees what
//!
//! Logging in takes a JWT the key authority issued for the utility server's audience,
//! verified with the same pinned key as the gRPC side (`auth.jwt_public_key_file`) and kept
//! in seer-web's `HttpOnly`, `SameSite=Strict` session cookie ([`access`] decides each page):
//! - `utility` and `admin`: every page;
//! - `household`: its own home only — its row of the homes table (and of the CSV), its home
//!   page (bills with their slab breakdown, flagged days), its slab breakdown on the billing
//!   page and its flagged days; any URL naming another meter is `403` and shows nothing of it;
//!   the group and ingest pages are `403`;
//! - `auditor`: the pages that reveal no home — the overview (counts and the groups'
//!   forecast against actual) and the ingest status (counts per hour, refusals by kind) —
//!   and `403` elsewhere.
//!
//! # Live updates
//!
//! Writes of this process reach the pages through [`Store::subscribe_changes`]; writes by
//! the `utility-server bill` and other job processes on the same database are noticed by
//! polling [`Store::dashboard_change_counter`] every [`POLL_INTERVAL`]. Either way every open
//! page gets a server-sent event on `/events` and re-renders.
//!
//! # Ingest refusals
//!
//! The utility's database records no refused ingest, so [`IngestRefusals`] counts them in
//! memory (per gRPC status code, since the process started), fed by the ingest service's
//! refusal path. Refused bills are recorded by the billing job (`bill_refusals`).

pub mod access;
mod csv;
mod views;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRef;
use seer_core::tariff::Tariff;
use seer_web::{Events, Sessions, WebListener};
use serde::{Deserialize, Serialize};

use crate::store::Store;

pub use csv::csv_field;

/// How often the dashboard polls the database for writes by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The dashboard's settings (`[dashboard]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// Whether the dashboard is served (default `true`).
    pub enabled: bool,
    /// The address it listens on (default `127.0.0.1`). Without `[server.tls]` only a loopback
    /// address is accepted; with it the dashboard serves HTTPS with the same certificate.
    pub host: IpAddr,
    /// The port (default 0: the operating system picks one; the address is logged and written
    /// to `address_file`).
    pub port: u16,
    /// A file the dashboard's URL (`https://ADDR` or `http://ADDR`) is written to once bound,
    /// for launchers (`seer run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_file: Option<PathBuf>,
    /// The feeders' capacities for the grid health page.
    pub grid: GridSettings,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            address_file: None,
            grid: GridSettings::default(),
        }
    }
}

impl DashboardSettings {
    /// The address to bind.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Checks the capacities.
    ///
    /// # Errors
    /// A capacity that is not a positive finite number of kW, or a group listed twice.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.grid
            .default_capacity_kw
            .validate("dashboard.grid.default_capacity_kw")?;
        let mut seen = std::collections::BTreeSet::new();
        for group in &self.grid.groups {
            group.capacity_kw.validate(&format!(
                "dashboard.grid.groups[{}].capacity_kw",
                group.group
            ))?;
            anyhow::ensure!(
                seen.insert(group.group),
                "dashboard.grid.groups: group {} is listed twice",
                group.group
            );
        }
        Ok(())
    }
}

/// A power in kW (finite, positive once validated).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kw(pub f64);

impl PartialEq for Kw {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Kw {}

impl Kw {
    fn validate(self, name: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.0.is_finite() && self.0 > 0.0,
            "{name}: {} is not a positive number of kW",
            self.0
        );
        Ok(())
    }
}

/// Each group's (feeder's) capacity (`[dashboard.grid]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSettings {
    /// The capacity of a group not listed in `groups`, kW (default 100).
    pub default_capacity_kw: Kw,
    /// Per-group overrides: `groups = [{ group = 0, capacity_kw = 40.0 }]`.
    pub groups: Vec<GroupCapacity>,
}

impl Default for GridSettings {
    fn default() -> Self {
        Self {
            default_capacity_kw: Kw(100.0),
            groups: Vec::new(),
        }
    }
}

impl GridSettings {
    /// The capacity of `group`, kW.
    #[must_use]
    pub fn capacity_kw(&self, group: u32) -> f64 {
        self.groups
            .iter()
            .find(|g| g.group == group)
            .map_or(self.default_capacity_kw.0, |g| g.capacity_kw.0)
    }
}

/// One group's capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCapacity {
    /// The billing group (feeder).
    pub group: u32,
    /// Its capacity, kW.
    pub capacity_kw: Kw,
}

/// Refused ingest calls, counted in memory per gRPC status code since the process started
/// (the database records none). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct IngestRefusals {
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl IngestRefusals {
    /// Counts one refusal answered with `code`.
    pub fn record(&self, code: tonic::Code) {
        let name = code_name(code);
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }

    /// The counts so far, by status code name.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.counts
            .lock()
            .map(|counts| counts.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// What the dashboard's handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DashboardState {
    store: Store,
    tariff: Arc<Tariff>,
    labels: Arc<[String]>,
    grid: Arc<GridSettings>,
    sessions: Sessions,
    events: Events,
    refusals: IngestRefusals,
}

impl FromRef<DashboardState> for Sessions {
    fn from_ref(state: &DashboardState) -> Self {
        state.sessions.clone()
    }
}

impl FromRef<DashboardState> for Events {
    fn from_ref(state: &DashboardState) -> Self {
        state.events.clone()
    }
}

/// Refuses every token: the dashboard of a utility without `auth.jwt_public_key_file`.
struct NoTokens;

impl seer_web::Authenticator for NoTokens {
    fn authenticate(&self, _token: &str) -> Result<seer_auth::Caller, String> {
        Err("the utility server has no JWT public key configured \
             (auth.jwt_public_key_file): nobody can log in"
            .to_owned())
    }
}

/// A bound, not yet serving, dashboard.
pub struct Dashboard {
    listener: WebListener,
    state: DashboardState,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// Binds the dashboard's listener: HTTPS with `tls` (the server's certificate and key),
    /// else plaintext on a loopback address only. Tokens are verified by `verifier` (the
    /// key authority's key, the utility server's audience); without one nobody can log in.
    /// Writes the URL to `settings.address_file` when set.
    ///
    /// # Errors
    /// When the address cannot be bound, plaintext is asked for off loopback, the
    /// certificate does not load, or the address file cannot be written.
    pub async fn bind(
        settings: &DashboardSettings,
        tls: Option<&seer_tls::TlsFiles>,
        verifier: Option<seer_auth::TokenVerifier>,
        store: Store,
        tariff: Tariff,
        refusals: IngestRefusals,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        settings.validate()?;
        let web_tls = tls.map(seer_web::WebTls::from);
        let listener = WebListener::bind(settings.address(), web_tls.as_ref())
            .await
            .context("binding the dashboard")?;
        let roles = [
            seer_auth::Role::Utility,
            seer_auth::Role::Admin,
            seer_auth::Role::Household,
            seer_auth::Role::Auditor,
        ];
        let secure = listener.is_tls();
        let sessions = match verifier {
            Some(verifier) => Sessions::new(verifier, &roles, secure, "SEER utility"),
            None => Sessions::new(NoTokens, &roles, secure, "SEER utility"),
        };
        let url = listener.url();
        if let Some(path) = &settings.address_file {
            tokio::fs::write(path, format!("{url}\n"))
                .await
                .with_context(|| format!("writing the dashboard address to {}", path.display()))?;
        }
        tracing::info!(%url, "dashboard on {url}");
        let labels: Arc<[String]> = crate::billing::cell_labels(&tariff).into();
        Ok(Self {
            listener,
            state: DashboardState {
                store,
                tariff: Arc::new(tariff),
                labels,
                grid: Arc::new(settings.grid.clone()),
                sessions,
                events: Events::new(),
                refusals,
            },
        })
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The base URL (`https://ADDR` or `http://ADDR`).
    #[must_use]
    pub fn url(&self) -> String {
        self.listener.url()
    }

    /// The dashboard's routes (also for tests that drive the router without a listener).
    pub(crate) fn router(state: DashboardState) -> axum::Router {
        views::routes()
            .merge(seer_web::common_routes())
            .with_state(state)
            .layer(axum::middleware::from_fn(seer_web::headers::secure))
    }

    /// Serves until `shutdown` completes, forwarding this process's writes and polling the
    /// database for other processes' as live updates.
    ///
    /// # Errors
    /// When the listening socket fails.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), seer_web::WebError> {
        let Self { listener, state } = self;
        let watcher = tokio::spawn(watch_changes(state.store.clone(), state.events.clone()));
        let served = listener.serve(Self::router(state), shutdown).await;
        watcher.abort();
        served
    }
}

/// Tells the pages about every write: this process's as they happen, other processes' when
/// the change counter moves.
async fn watch_changes(store: Store, events: Events) {
    let mut changes = store.subscribe_changes();
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = store.dashboard_change_counter().await.ok();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(what) => events.notify(what),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => events.notify("changed"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                match store.dashboard_change_counter().await {
                    Ok(now) if Some(now) != last => {
                        // The first reading only sets the baseline.
                        if last.is_some() {
                            events.notify("changed");
                        }
                        last = Some(now);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "dashboard: reading the change counter"),
                }
            }
        }
    }
}
