//! The utility-server's gRPC server (see [`seer_service::serve`] for what every SEER server
//! carries): `seer.v1.Ingest`, `seer.v1.AnalyticsIngest` and `seer.v1.Bills` over the store,
//! all behind the same authenticating interceptor.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::Role;
use seer_proto::v1::analytics_ingest_server::AnalyticsIngestServer;
use seer_proto::v1::bills_server::BillsServer;
use seer_proto::v1::home_results_server::HomeResultsServer;
use seer_proto::v1::ingest_server::IngestServer;
use seer_service::{GrpcListener, NodeService};
use tonic::server::NamedService as _;

use crate::Settings;
use crate::analytics_ingest::AnalyticsIngestService;
use crate::auth::{AuthInterceptor, Authenticator, JwtAuthenticator, NoAuthenticator};
use crate::bills::BillsService;
use crate::household::HomeResultsService;
use crate::ingest::IngestService;
use crate::lanes::LaneValidator;
use crate::signatures::MeterSignatures;
use crate::store::{Store, redact_url};

/// A bound, not yet running, utility-server.
pub struct Application {
    listener: GrpcListener,
    store: Store,
    lanes: LaneValidator,
    authenticator: Arc<dyn Authenticator>,
    signatures: Option<Arc<MeterSignatures>>,
    limits: seer_service::LimitSettings,
    dashboard: Option<crate::dashboard::Dashboard>,
    refusals: crate::dashboard::IngestRefusals,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("listener", &self.listener)
            .field("store", &self.store)
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the database (creating the SQLite file when missing) and applies its
    /// migrations, builds the CKKS contexts of both lanes and the billing layout of the
    /// tariff, and binds the listener described by `settings` (port 0 picks a free port).
    ///
    /// Callers are authenticated with the key authority's JWTs when
    /// `auth.jwt_public_key_file` is set; otherwise (or until
    /// [`with_authenticator`](Self::with_authenticator)) every ingest call is refused as
    /// unauthenticated.
    ///
    /// # Errors
    /// When the settings are invalid, the database cannot be opened or migrated, or the
    /// address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let billing = settings.ckks.billing()?;
        let analytics = settings.ckks.analytics()?;
        let tariff = settings.tariff.clone();
        let lanes =
            tokio::task::spawn_blocking(move || LaneValidator::new(billing, analytics, &tariff))
                .await
                .context("building the CKKS contexts")??;
        let store = Store::connect(&settings.database.url)
            .await
            .with_context(|| format!("opening {}", redact_url(&settings.database.url)))?;
        tracing::info!(
            backend = ?store.backend(),
            billing = lanes.billing_context().parameter_set_id(),
            analytics = lanes.analytics_context().parameter_set_id(),
            capacity = lanes.billing_capacity(),
            tariff = settings.tariff.name(),
            "store open"
        );
        let mut signatures = None;
        let mut web_verifier = None;
        let authenticator: Arc<dyn Authenticator> = match &settings.auth.jwt_public_key_file {
            Some(path) => {
                let pem = tokio::fs::read_to_string(path)
                    .await
                    .with_context(|| format!("reading the JWT public key {}", path.display()))?;
                let pin = settings.auth.jwt_public_key_sha256.as_deref().with_context(|| {
                    format!(
                        "auth.jwt_public_key_sha256 is not set: the JWT public key {} is used only \
                         with its fingerprint pinned (`key-authority fingerprints` prints it as \
                         jwt-public-key-sha256)",
                        path.display()
                    )
                })?;
                seer_auth::fingerprint::check_public_key_fingerprint(&pem, pin)
                    .with_context(|| format!("checking the JWT public key {}", path.display()))?;
                // The same key signs meters' certificates: every batch and analytics input
                // must carry its meter's certificate and signature.
                signatures = Some(Arc::new(
                    MeterSignatures::from_public_key_pem(&pem).with_context(|| {
                        format!("{} is not an Ed25519 public key", path.display())
                    })?,
                ));
                // The dashboard's logins: the same pinned key and audience as the gRPC side.
                web_verifier = Some(
                    seer_auth::TokenVerifier::from_public_key_pem(
                        &pem,
                        &seer_auth::TokenPolicy::for_audience(seer_auth::AUDIENCE_UTILITY_SERVER),
                    )
                    .with_context(|| format!("{} is not an Ed25519 public key", path.display()))?,
                );
                Arc::new(
                    JwtAuthenticator::from_public_key_pem(&pem).with_context(|| {
                        format!("{} is not an Ed25519 public key", path.display())
                    })?,
                )
            }
            None => {
                tracing::warn!(
                    "auth.jwt_public_key_file is not set: every ingest call will be refused \
                     (write it with `key-authority jwt-public-key > FILE`)"
                );
                Arc::new(NoAuthenticator)
            }
        };
        let listener = GrpcListener::bind(settings.server.address())
            .await?
            .with_tls(settings.server.tls.as_ref())?
            .with_metrics(&settings.server.metrics)
            .await?;
        let refusals = crate::dashboard::IngestRefusals::default();
        let dashboard = if settings.dashboard.enabled {
            Some(
                crate::dashboard::Dashboard::bind(
                    &settings.dashboard,
                    settings.server.tls.as_ref(),
                    web_verifier,
                    store.clone(),
                    settings.tariff.clone(),
                    refusals.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        Ok(Self {
            listener,
            dashboard,
            refusals,
            store,
            lanes,
            authenticator,
            signatures,
            limits: settings.server.limits.clone(),
        })
    }

    /// Requires meters' certificates and signatures on every batch and analytics input,
    /// checked with `signatures` (set by [`Application::build`] from
    /// `auth.jwt_public_key_file`; tests with their own authenticator set it here).
    #[must_use]
    pub fn with_meter_signatures(mut self, signatures: MeterSignatures) -> Self {
        self.signatures = Some(Arc::new(signatures));
        self
    }

    /// Sets what turns a call's metadata into its principal (the JWT verifier).
    #[must_use]
    pub fn with_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = authenticator;
        self
    }

    /// The port actually bound.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.listener.local_addr().port()
    }

    /// The address actually bound.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The dashboard's port (`None` when `dashboard.enabled` is false).
    #[must_use]
    pub fn dashboard_port(&self) -> Option<u16> {
        self.dashboard.as_ref().map(|d| d.local_addr().port())
    }

    /// The dashboard's base URL, `https://ADDR` or `http://ADDR` (`None` when disabled).
    #[must_use]
    pub fn dashboard_url(&self) -> Option<String> {
        self.dashboard
            .as_ref()
            .map(crate::dashboard::Dashboard::url)
    }

    /// The store (for jobs and tests).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The lanes' contexts and the billing layout.
    #[must_use]
    pub fn lanes(&self) -> &LaneValidator {
        &self.lanes
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting and finishes in-flight calls.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed or the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let signal = seer_service::shutdown_signal().context("installing signal handlers")?;
        self.run_until(signal).await
    }

    /// Serves until `shutdown` completes, then stops accepting and finishes in-flight calls.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let node = NodeService::new(
            Role::UtilityServer,
            env!("CARGO_PKG_VERSION"),
            self.lanes.billing_context().parameter_set_id(),
        );
        // Every call passes the gate (same authenticator) before its body is read.
        let gate = seer_service::Gate::new(
            crate::gate::access_table(),
            Arc::new(crate::gate::GateAuthenticator(Arc::clone(
                &self.authenticator,
            ))),
            &self.limits,
        );
        let ingest = IngestServer::new(
            IngestService::new(self.store.clone(), self.lanes)
                .with_signatures(self.signatures.clone())
                .with_refusal_counter(self.refusals.clone()),
        )
        .with_seer_limits();
        let ingest = tonic::service::interceptor::InterceptedService::new(
            ingest,
            AuthInterceptor::new(Arc::clone(&self.authenticator)),
        );
        let analytics_ingest = tonic::service::interceptor::InterceptedService::new(
            AnalyticsIngestServer::new(
                AnalyticsIngestService::new(self.store.clone()).with_signatures(self.signatures),
            )
            .with_seer_limits(),
            AuthInterceptor::new(Arc::clone(&self.authenticator)),
        );
        let bills = tonic::service::interceptor::InterceptedService::new(
            BillsServer::new(BillsService::new(self.store.clone())).with_seer_limits(),
            AuthInterceptor::new(Arc::clone(&self.authenticator)),
        );
        let home_results = tonic::service::interceptor::InterceptedService::new(
            HomeResultsServer::new(HomeResultsService::new(self.store.clone())).with_seer_limits(),
            AuthInterceptor::new(self.authenticator),
        );
        let store = self.store;
        // One shutdown for both listeners: the gRPC server's signal also stops the dashboard.
        let (stop_dashboard, dashboard_stopped) = tokio::sync::watch::channel(false);
        let dashboard = self.dashboard.map(|dashboard| {
            let mut stopped = dashboard_stopped;
            tokio::spawn(dashboard.serve(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let shutdown = async move {
            shutdown.await;
            let _ = stop_dashboard.send(true);
        };
        let served = seer_service::serve(
            self.listener,
            node,
            gate,
            &[
                IngestServer::<IngestService>::NAME,
                AnalyticsIngestServer::<AnalyticsIngestService>::NAME,
                BillsServer::<BillsService>::NAME,
                HomeResultsServer::<HomeResultsService>::NAME,
            ],
            |router| {
                router
                    .add_service(ingest)
                    .add_service(analytics_ingest)
                    .add_service(bills)
                    .add_service(home_results)
            },
            shutdown,
        )
        .await;
        if let Some(dashboard) = dashboard {
            // The gRPC server may also have ended by failing: stop the dashboard either way.
            dashboard.abort();
            let _ = dashboard.await;
        }
        store.close().await;
        served
    }
}
