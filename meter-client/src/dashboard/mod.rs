//! `meter-client dashboard`: the household's own web page, served on its own machine.
//!
//! It shows the readings the meter batched (as they arrive: a background task watches the
//! state database and tells open pages over server-sent events), the analytics lane as it was
//! sent beside them, an ε control previewing what the utility's analytics would receive at
//! another ε ([`preview`]: fresh draws on this machine, never sent or stored) with what the
//! month's budget still allows, a battery what-if ([`seer_core::battery`]), the Green
//! Button export ([`crate::espi`], `/espi.xml`) and, with `--utility`, what the utility
//! released about this home ([`utility`]: bills with their slabs, forecasts against the actual
//! readings, anomaly flags with their explanations), read with the household's own token.
//!
//! # Access
//!
//! The page listens on loopback by default, but other local users can reach loopback too.
//! It is protected by a **random access key** made at each start (256 bits from the OS) and
//! printed on stderr as a link, `http://127.0.0.1:PORT/?key=…`: opening it stores the key in
//! seer-web's session cookie (`HttpOnly`, `SameSite=Strict`) and redirects to `/` so the key
//! leaves the address bar; the key can also be pasted into `/login`. We chose this over a
//! household JWT because the dashboard must work offline and before enrolment (a meter may
//! have no token, and a token's lifetime is an hour), and because a secret that dies with the
//! process never needs revoking. The key is compared in constant time; the dashboard reads
//! the state database read-only ([`store`]) and writes nothing.

pub mod preview;
pub mod store;
pub mod utility;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::Rng as _;
use seer_auth::{Caller, Identity};
use seer_core::dp::Epsilon;
use seer_core::tariff::Tariff;
use seer_core::units::Wh;
use seer_web::session::COOKIE_NAME;
use seer_web::{Authenticator, Events, Sessions, WebListener};
use serde::Deserialize;

use crate::error::Error;
use store::StateReader;

const SCRIPT: &str = include_str!("household.js");

/// What the dashboard needs.
#[derive(Clone, Debug)]
pub struct DashboardSettings {
    /// The meter's state directory (read-only).
    pub state_dir: PathBuf,
    /// Where to listen (loopback by default; plaintext is refused elsewhere by seer-web).
    pub listen: SocketAddr,
    /// The tariff the battery what-if bills with (the meter's own).
    pub tariff: Tariff,
    /// The analytics lane's clamp Δ.
    pub sensitivity: Wh,
    /// The analytics lane's ε per reading (the control's starting point).
    pub epsilon: Epsilon,
    /// The month's analytics budget (when the accountant has not started yet).
    pub monthly_budget: Epsilon,
    /// How often the state database is checked for new batches.
    pub poll: Duration,
    /// The meter's offset from UTC (its readings are wall-clock times; the Green Button export
    /// gives UTC instants).
    pub utc_offset: chrono::FixedOffset,
    /// The utility to read this home's released bills, forecasts and anomalies from (None:
    /// the results page says how to enable it).
    pub utility: Option<utility::UtilityAccess>,
}

/// The random access key of one dashboard process.
#[derive(Clone)]
pub struct AccessKey {
    key: Arc<str>,
    meter_id: Arc<str>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("meter_id", &self.meter_id)
            .finish_non_exhaustive()
    }
}

impl AccessKey {
    /// A fresh key for `meter_id`'s dashboard (256 bits from the OS CSPRNG, hex).
    ///
    /// # Errors
    /// When the OS has no entropy.
    pub fn generate(meter_id: &str) -> Result<Self, Error> {
        let mut rng = seer_core::dp::os_seeded_rng()?;
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            key: key.into(),
            meter_id: meter_id.into(),
        })
    }

    /// The key (for the start-up link and tests).
    pub fn expose(&self) -> &str {
        &self.key
    }

    fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.key.as_bytes(), candidate.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Authenticator for AccessKey {
    fn authenticate(&self, token: &str) -> Result<Caller, String> {
        if self.matches(token) {
            Ok(Caller::new(
                format!("household:{}", self.meter_id),
                Identity::Household {
                    meter_id: self.meter_id.to_string(),
                },
            ))
        } else {
            Err("wrong access key (it is printed on stderr when the dashboard starts)".to_owned())
        }
    }
}

/// The router's shared state.
#[derive(Clone)]
pub struct DashboardState {
    reader: StateReader,
    sessions: Sessions,
    events: Events,
    key: AccessKey,
    settings: Arc<DashboardSettings>,
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

impl DashboardState {
    /// Opens the state read-only and makes a fresh access key.
    ///
    /// # Errors
    /// No state database, or no meter identity in it yet.
    pub async fn open(settings: DashboardSettings) -> Result<Self, Error> {
        let reader = StateReader::open(&settings.state_dir).await?;
        let meter_id = reader
            .meter_id()
            .await?
            .ok_or_else(|| Error::StateDirectory {
                path: settings.state_dir.clone(),
                reason: "the meter has not run yet (no identity)".to_owned(),
            })?;
        let key = AccessKey::generate(&meter_id)?;
        let sessions = Sessions::new(
            key.clone(),
            &[seer_auth::Role::Household],
            false,
            "SEER household",
        );
        Ok(Self {
            reader,
            sessions,
            events: Events::new(),
            key,
            settings: Arc::new(settings),
        })
    }

    /// The access key.
    pub fn key(&self) -> &AccessKey {
        &self.key
    }

    /// The live-update notifier.
    pub fn events(&self) -> &Events {
        &self.events
    }
}

/// The dashboard's routes over `state`.
pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/preview", get(preview_json))
        .route("/battery", get(views::battery))
        .route("/results", get(views::results))
        .route("/statement.pdf", get(views::statement))
        .route("/espi.xml", get(views::espi))
        .route("/static/household.js", get(script))
        .merge(seer_web::common_routes::<DashboardState>())
        .layer(axum::middleware::from_fn(seer_web::headers::secure))
        .with_state(state)
}

/// Watches the state database and notifies open pages when a new batch's readings appear.
pub fn spawn_watcher(state: &DashboardState) -> tokio::task::JoinHandle<()> {
    let (reader, events, poll) = (
        state.reader.clone(),
        state.events.clone(),
        state.settings.poll,
    );
    tokio::spawn(async move {
        let mut last = reader.latest().await.ok().flatten();
        loop {
            tokio::time::sleep(poll).await;
            match reader.latest().await {
                Ok(now) if now != last => {
                    last = now;
                    events.notify("batch");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "dashboard: cannot read the state"),
            }
        }
    })
}

/// Serves the dashboard until the process stops; `announce` gets the link with the key.
///
/// # Errors
/// The state cannot be opened, or the address cannot be bound.
pub async fn serve(
    settings: DashboardSettings,
    announce: impl FnOnce(&str) + Send,
) -> Result<(), Error> {
    let listen = settings.listen;
    let state = DashboardState::open(settings).await?;
    let listener = WebListener::bind(listen, None)
        .await
        .map_err(|e| Error::InvalidSetting {
            setting: "dashboard listen address",
            reason: e.to_string(),
        })?;
    announce(&format!("{}/?key={}", listener.url(), state.key.expose()));
    let _watcher = spawn_watcher(&state);
    listener
        .serve(router(state), std::future::pending())
        .await
        .map_err(|e| Error::InvalidSetting {
            setting: "dashboard listener",
            reason: e.to_string(),
        })
}

/// [`serve`], once the state directory holds the meter's identity (for `meter-client run
/// --dashboard`, which starts before the first batch): waits, checking every half second.
///
/// # Errors
/// As [`serve`], for any failure but a state that is not there yet.
pub async fn serve_when_ready(
    settings: DashboardSettings,
    announce: impl FnOnce(&str) + Send,
) -> Result<(), Error> {
    loop {
        match StateReader::open(&settings.state_dir).await {
            Ok(reader) if reader.meter_id().await.ok().flatten().is_some() => break,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    serve(settings, announce).await
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

#[tracing::instrument(name = "dashboard.home", skip_all)]
async fn home(
    State(state): State<DashboardState>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(key) = query.key {
        if !state.key.matches(&key) {
            return (StatusCode::UNAUTHORIZED, "wrong access key\n").into_response();
        }
        let cookie =
            format!("{COOKIE_NAME}={key}; Max-Age=43200; Path=/; HttpOnly; SameSite=Strict");
        let mut response = (StatusCode::SEE_OTHER, [(LOCATION, "/")]).into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(SET_COOKIE, value);
        }
        return response;
    }
    match state.sessions.caller(&headers) {
        Ok(caller) => views::home(&state, &caller).await,
        Err(login) => login.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PreviewQuery {
    epsilon: Option<String>,
}

#[tracing::instrument(name = "dashboard.preview", skip_all)]
async fn preview_json(
    State(state): State<DashboardState>,
    _viewer: seer_web::Authenticated,
    Query(query): Query<PreviewQuery>,
) -> Response {
    let epsilon = match query.epsilon.as_deref().map(str::parse::<f64>) {
        Some(Ok(e)) => e,
        None => state.settings.epsilon.get(),
        Some(Err(_)) => return bad_request("epsilon must be a number"),
    };
    match views::preview_at(&state, epsilon).await {
        Ok(p) => ([(CACHE_CONTROL, "no-store")], axum::Json(p)).into_response(),
        Err(Error::InvalidSetting { reason, .. }) => bad_request(&reason),
        Err(e) => internal(&e),
    }
}

async fn script() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=300"),
        ],
        SCRIPT,
    )
        .into_response()
}

fn bad_request(reason: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("bad request: {reason}\n")).into_response()
}

fn internal(e: &Error) -> Response {
    tracing::error!(error = %e, "dashboard: request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the meter's state could not be read (see the dashboard's log)\n",
    )
        .into_response()
}

fn attachment(name: &str) -> (axum::http::HeaderName, String) {
    (
        CONTENT_DISPOSITION,
        format!("attachment; filename=\"{name}\""),
    )
}
