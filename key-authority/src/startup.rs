//! The key-authority's gRPC server (see [`seer_service::serve`] for what every SEER server
//! carries).

use std::{future::Future, net::SocketAddr};

use anyhow::Context as _;
use std::sync::Arc;

use seer_proto::WithMessageLimits as _;
use seer_proto::v1::Role;
use seer_proto::v1::keys_server::KeysServer;
use seer_service::{GrpcListener, NodeService};
use tonic::server::NamedService as _;

use seer_auth::{
    AUDIENCE_KEY_AUTHORITY, AuthInterceptor, DEFAULT_ISSUER, JwtSigningKey, KeyOrigin, OnFailure,
    TokenIssuer,
};
use seer_proto::v1::audit_server::AuditServer;

use crate::Settings;
use crate::analytics::{AnalyticsReceiptsService, AnalyticsReleaser, AnalyticsService, DeepEngine};
use crate::audit::{AuditLog, AuditService, EmptyLog};
use crate::enrolment::{EnrolmentService, EnrolmentStore};
use crate::group_totals::{GroupTotalsReleaser, GroupTotalsService};
use crate::keys::KeyStore;
use crate::keys_api::KeysApi;
use crate::release::{BillEngine, BillReleaser, ReceiptsService, ReleaseService};
use crate::revocation::{RevocableVerifier, RevokedTokens};
use seer_proto::v1::analytics_receipts_server::AnalyticsReceiptsServer;
use seer_proto::v1::analytics_server::AnalyticsServer;
use seer_proto::v1::enrolment_server::EnrolmentServer;
use seer_proto::v1::group_totals_server::GroupTotalsServer;
use seer_proto::v1::receipts_server::ReceiptsServer;
use seer_proto::v1::release_server::ReleaseServer;
use seer_service::db::redact_url;
use tonic::service::interceptor::InterceptedService;

/// What an empty audit log means at this start: a brand-new deployment (neither the JWT
/// signing key file nor any key-store entry exists yet) initializes it; otherwise it is
/// refused, and the operator runs `key-authority init-audit` deliberately.
fn empty_log_policy(settings: &Settings) -> EmptyLog {
    let keys_exist = std::fs::read_dir(&settings.keys.dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if settings.auth.signing_key_file.exists() {
        EmptyLog::Refuse {
            evidence: "the JWT signing key file exists",
        }
    } else if keys_exist {
        EmptyLog::Refuse {
            evidence: "the key store holds keys",
        }
    } else {
        EmptyLog::Initialize
    }
}

/// `key-authority init-audit`: opens (or creates) the JWT signing key and the audit log and
/// anchors the log's verified head (see [`AuditLog::init_audit`]). Returns the anchored
/// sequence.
///
/// # Errors
/// When the key or the log cannot be opened, or the log is damaged or does not match an
/// existing anchor.
pub async fn init_audit(settings: &Settings) -> anyhow::Result<u64> {
    let (signing_key, _) = load_signing_key(settings).await?;
    let anchor = AuditLog::init_audit(
        &settings.audit.database_url,
        Arc::new(signing_key),
        &settings.audit_anchor_file(),
    )
    .await
    .with_context(|| {
        format!(
            "initializing the audit log at {}",
            redact_url(&settings.audit.database_url)
        )
    })?;
    Ok(anchor.sequence)
}

/// Loads the JWT signing key of `settings` (generating it on first use), off the runtime,
/// under the key directory's lock ([`crate::keys::lock_key_dir`]): pool members starting at
/// once share one signing key.
async fn load_signing_key(settings: &Settings) -> anyhow::Result<(JwtSigningKey, KeyOrigin)> {
    let key_file = settings.auth.signing_key_file.clone();
    let key_dir = settings.keys.dir.clone();
    tokio::task::spawn_blocking(move || {
        let _lock = crate::keys::lock_key_dir(&key_dir)
            .with_context(|| format!("locking the key directory {}", key_dir.display()))?;
        JwtSigningKey::load_or_generate(&key_file).map_err(anyhow::Error::from)
    })
    .await
    .context("signing key task")?
    .with_context(|| {
        format!(
            "opening the JWT signing key {}",
            settings.auth.signing_key_file.display()
        )
    })
}

/// A bound, not yet running, key-authority.
#[derive(Debug)]
pub struct Application {
    listener: GrpcListener,
    keys: Arc<KeyStore>,
    issuer: TokenIssuer,
    signing_key: Arc<JwtSigningKey>,
    audit: Arc<AuditLog>,
    bills: Arc<BillEngine>,
    analytics: Arc<DeepEngine>,
    /// `analytics.daily_release_home_forecasts`.
    daily_home_forecasts: bool,
    limits: seer_service::LimitSettings,
    /// Refusals (the gate's, enrolment's and token renewal's) into the audit log, throttled.
    refusals: crate::audit::RefusalThrottle,
    /// Tokens the operator revoked, refused by the gate.
    revoked: RevokedTokens,
}

impl Application {
    /// Opens (or creates) the key store, the JWT signing key and the audit log, then binds
    /// the listener described by `settings` (port 0 picks a free port).
    ///
    /// # Errors
    /// When a key or the audit log cannot be opened or the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything is generated: does key material from an earlier start exist? Then a
        // log existed too, and an empty one must not be silently recreated.
        let empty_log = empty_log_policy(&settings);
        let (signing_key, origin) = load_signing_key(&settings).await?;
        tracing::info!(
            ?origin,
            key_id = signing_key.key_id(),
            "jwt signing key ready"
        );
        let signing_key = Arc::new(signing_key);
        let audit = AuditLog::open_anchored(
            &settings.audit.database_url,
            Arc::clone(&signing_key),
            &settings.audit_anchor_file(),
            empty_log,
        )
        .await
        .with_context(|| {
            format!(
                "opening the audit log at {} (anchor {})",
                redact_url(&settings.audit.database_url),
                settings.audit_anchor_file().display()
            )
        })?;
        let audit = Arc::new(audit);
        let revoked = RevokedTokens::load(Arc::clone(&audit))
            .await
            .context("reading the revoked tokens")?;
        let keys = settings.keys.clone();
        // The deep key set joins the configured ones when analytics is enabled (opt-in).
        let specs = settings.analytics.key_set_specs(&keys.sets);
        // Key generation is CPU-heavy: off the async runtime.
        let store = tokio::task::spawn_blocking(move || KeyStore::open(&keys.dir, &specs))
            .await
            .context("key store task")?
            .with_context(|| format!("opening the key store in {}", settings.keys.dir.display()))?;
        let store = Arc::new(store);
        let release = settings.release.clone();
        let engine_keys = Arc::clone(&store);
        // Parsing the Galois keys is CPU work too.
        let bills = tokio::task::spawn_blocking(move || {
            BillEngine::try_new(engine_keys, &release.tariff, &release.billing_parameter_set)
        })
        .await
        .context("billing engine task")?
        .context("setting up the billing release (settings `release` and `keys.sets`)")?;
        // The daily lane's engine always (its N4096 key set is always held); the deep
        // computations join it when analytics is enabled.
        let engine_keys = Arc::clone(&store);
        let analytics_settings = settings.analytics.clone();
        let analytics = tokio::task::spawn_blocking(move || {
            DeepEngine::try_new(engine_keys, &analytics_settings)
        })
        .await
        .context("analytics engine task")?
        .map_err(anyhow::Error::msg)
        .context("setting up the analytics release (settings `analytics`)")?;
        let analytics = Arc::new(analytics);
        Ok(Self {
            analytics,
            daily_home_forecasts: settings.analytics.daily_release_home_forecasts,
            limits: settings.server.limits.clone(),
            refusals: crate::audit::RefusalThrottle::new(
                Arc::clone(&audit),
                settings.audit.refusals.clone(),
            ),
            revoked,
            audit,
            listener: GrpcListener::bind(settings.server.address())
                .await?
                .with_tls(settings.server.tls.as_ref())?
                .with_metrics(&settings.server.metrics)
                .await?,
            keys: store,
            bills: Arc::new(bills),
            issuer: TokenIssuer::new(Arc::clone(&signing_key), DEFAULT_ISSUER),
            signing_key,
        })
    }

    /// The key store.
    #[must_use]
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// The token issuer (the key authority's signing key).
    #[must_use]
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// The meter enrolment registry (in the audit log's database).
    #[must_use]
    pub fn enrolment(&self) -> EnrolmentStore {
        EnrolmentStore::new(Arc::clone(&self.audit), Arc::clone(&self.signing_key))
            .with_refusals(self.refusals.clone())
    }

    /// The tokens revoked by the operator (refused by the gate).
    #[must_use]
    pub fn revoked_tokens(&self) -> &RevokedTokens {
        &self.revoked
    }

    /// The audit log.
    #[must_use]
    pub fn audit_log(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// The billing engine the release policy re-executes bills with.
    #[must_use]
    pub fn bill_engine(&self) -> &Arc<BillEngine> {
        &self.bills
    }

    /// The analytics engine: `daily` always, `anomaly` and `forecast` when
    /// `analytics.enabled`.
    #[must_use]
    pub fn analytics_engine(&self) -> &Arc<DeepEngine> {
        &self.analytics
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
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id).collect();
        let node = NodeService::new(
            Role::KeyAuthority,
            env!("CARGO_PKG_VERSION"),
            &ids.join(","),
        );
        let keys = KeysServer::new(KeysApi::new(Arc::clone(&self.keys))).with_seer_limits();
        let verifier = Arc::new(self.issuer.verifier(AUDIENCE_KEY_AUTHORITY));
        let audit = AuditServer::with_interceptor(
            AuditService::new(Arc::clone(&self.audit)),
            AuthInterceptor::new(Arc::clone(&verifier), OnFailure::Reject),
        );
        let receipts = InterceptedService::new(
            ReceiptsServer::new(ReceiptsService::new(
                Arc::clone(&self.audit),
                self.bills.layout().capacity(),
                &seer_core::circuits::billing::PARAMETER_SET.id(),
            ))
            .with_seer_limits(),
            // Record: refusals of the caller (no token, another audience) are audited.
            AuthInterceptor::new(Arc::clone(&verifier), OnFailure::Record),
        );
        // Record: a request without a valid token reaches the handler, which logs the
        // refusal before answering UNAUTHENTICATED.
        let release = InterceptedService::new(
            ReleaseServer::new(ReleaseService::new(BillReleaser::new(
                Arc::clone(&self.audit),
                Arc::clone(&self.bills),
            )))
            .with_seer_limits(),
            AuthInterceptor::new(Arc::clone(&verifier), OnFailure::Record),
        );
        // Record, like releases: a request without a valid token is logged, then refused.
        let group_totals = InterceptedService::new(
            GroupTotalsServer::new(GroupTotalsService::new(
                GroupTotalsReleaser::try_new(
                    Arc::clone(&self.audit),
                    Arc::clone(&self.keys),
                    self.bills.parameter_set(),
                )
                .context("group totals")?,
            ))
            .with_seer_limits(),
            AuthInterceptor::new(Arc::clone(&verifier), OnFailure::Record),
        );
        // Enrolment authenticates with one-time codes and device signatures, not tokens.
        let enrolment =
            EnrolmentServer::new(EnrolmentService::new(self.enrolment(), self.issuer.clone()))
                .with_seer_limits();
        // The analytics services are always served: `daily` needs only its small key set.
        let analytics_receipts = InterceptedService::new(
            AnalyticsReceiptsServer::new(AnalyticsReceiptsService::new(
                Arc::clone(&self.audit),
                self.analytics.kind_slots(),
            ))
            .with_seer_limits(),
            AuthInterceptor::new(Arc::clone(&verifier), OnFailure::Record),
        );
        let analytics_release = InterceptedService::new(
            AnalyticsServer::new(AnalyticsService::new(
                AnalyticsReleaser::new(Arc::clone(&self.audit), Arc::clone(&self.analytics))
                    .with_daily_home_forecasts(self.daily_home_forecasts),
                self.analytics.max_ciphertext_bytes(),
            ))
            .with_seer_limits(),
            AuthInterceptor::new(Arc::clone(&verifier), OnFailure::Record),
        );
        let names = [
            KeysServer::<KeysApi>::NAME,
            AuditServer::<AuditService>::NAME,
            ReceiptsServer::<ReceiptsService>::NAME,
            ReleaseServer::<ReleaseService>::NAME,
            GroupTotalsServer::<GroupTotalsService>::NAME,
            EnrolmentServer::<EnrolmentService>::NAME,
            AnalyticsReceiptsServer::<AnalyticsReceiptsService>::NAME,
            AnalyticsServer::<AnalyticsService>::NAME,
        ];
        // Every call passes the gate before its body is read; refusals are audited, throttled.
        let refusals = self.refusals.clone();
        // The gate refuses revoked tokens before any handler (or interceptor) sees them.
        let gate = seer_service::Gate::new(
            crate::gate::access_table(),
            Arc::new(RevocableVerifier::new(
                Arc::clone(&verifier),
                self.revoked.clone(),
            )) as Arc<dyn seer_service::gate::Authenticate>,
            &self.limits,
        )
        .with_sink(Arc::new(refusals.clone()));
        let ticker = refusals.spawn_ticker();
        let refresher = self.revoked.spawn_refresher();
        let served = seer_service::serve(
            self.listener,
            node,
            gate,
            &names,
            |router| {
                router
                    .add_service(keys)
                    .add_service(audit)
                    .add_service(receipts)
                    .add_service(release)
                    .add_service(group_totals)
                    .add_service(enrolment)
                    .add_service(analytics_receipts)
                    .add_service(analytics_release)
            },
            shutdown,
        )
        .await;
        ticker.abort();
        refresher.abort();
        refusals.flush_all().await;
        served
    }
}

/// The BLAKE3 fingerprint of each configured key set's public key object, by parameter-set id:
/// what meters pin (`--public-key-pin ID=BLAKE3`) and what `seer.v1.Keys` lists. Opens the key
/// store as serving does (generating missing key material, off the async runtime).
///
/// # Errors
/// When the key store cannot be opened.
pub async fn public_key_fingerprints(settings: &Settings) -> anyhow::Result<Vec<(String, String)>> {
    let keys = settings.keys.clone();
    let specs = settings.analytics.key_set_specs(&keys.sets);
    let dir = keys.dir.clone();
    let store = tokio::task::spawn_blocking(move || KeyStore::open(&dir, &specs))
        .await
        .context("key store task")?
        .with_context(|| format!("opening the key store in {}", keys.dir.display()))?;
    Ok(store
        .iter()
        .map(|(id, set)| {
            (
                id.to_owned(),
                blake3::hash(set.public_key_bytes()).to_hex().to_string(),
            )
        })
        .collect())
}
