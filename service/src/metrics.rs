//! Prometheus metrics of a SEER server, served as OpenMetrics text at `GET /metrics` on a
//! listener of its own (`[server.metrics]`), apart from the gRPC port.
//!
//! [`serve`](crate::serve) records, for every call that reaches the server:
//!
//! - `seer_rpc_requests_total{method, code}`: calls by method and gRPC status code (the gate's
//!   refusals included, with the code they were answered);
//! - `seer_rpc_duration_seconds{method}`: a histogram of the time from the request's headers
//!   to the end of its response (a stream's whole life for streaming calls);
//! - `seer_rpc_in_flight`: calls started and not yet finished;
//! - `seer_gate_refusals_total{method, class}`: the gate's refusals by
//!   [`class`](crate::gate::class).
//!
//! Method labels come from a fixed set — the methods the server's file descriptor sets
//! declare (`seer.v1`, health, reflection) — and any other path is counted as `unknown`, so a
//! client cannot grow the registry by calling made-up paths. Programs add their own metrics
//! (batches stored, releases granted and refused) to the same registry through
//! [`Metrics::register`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use http_body::Body as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic::Status;
use tonic::body::Body;

use crate::gate::BoxFuture;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label of a method path the server does not declare.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Where the metrics are served (`[server.metrics]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Whether `/metrics` is served (default `true`).
    pub enabled: bool,
    /// The address of its plain-HTTP listener (default `127.0.0.1:0`: loopback, a port the
    /// operating system picks, logged and written to `address_file`). The metrics carry no
    /// secrets but no authentication either: a non-loopback address is logged as a warning.
    pub listen: SocketAddr,
    /// A file the metrics URL (`http://ADDR/metrics`) is written to once bound, for launchers
    /// and scrapers that start the server on port 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_file: Option<PathBuf>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            address_file: None,
        }
    }
}

/// `method` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// `method` and `code` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    method: String,
    code: String,
}

/// `method` and `class` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    method: String,
    class: String,
}

/// Latency buckets: 1 ms to about 65 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The method paths the server declares: every `/package.Service/Method` of its file
/// descriptor sets.
fn known_methods() -> HashSet<String> {
    use prost::Message as _;
    let mut methods = HashSet::new();
    for encoded in [
        seer_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    methods.insert(format!(
                        "/{package}.{service_name}/{}",
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
    }
    for reflection in ["v1", "v1alpha"] {
        methods.insert(format!(
            "/grpc.reflection.{reflection}.ServerReflection/ServerReflectionInfo"
        ));
    }
    methods
}

/// The shared state behind [`Metrics`].
struct Inner {
    registry: RwLock<Registry>,
    known: HashSet<String>,
    requests: Family<CodeLabels, Counter>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    refusals: Family<RefusalLabels, Counter>,
}

/// A server's metrics registry with the RPC metrics every server records; cheap to clone
/// (all clones share one registry).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding the RPC metrics (see the [module documentation](self)).
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        let duration = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let in_flight = Gauge::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "seer_rpc_requests",
            "gRPC calls by method and status code",
            requests.clone(),
        );
        registry.register(
            "seer_rpc_duration_seconds",
            "time from a call's request headers to the end of its response",
            duration.clone(),
        );
        registry.register(
            "seer_rpc_in_flight",
            "gRPC calls started and not yet finished",
            in_flight.clone(),
        );
        registry.register(
            "seer_gate_refusals",
            "calls the gate refused before reading their body, by method and class",
            refusals.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: RwLock::new(registry),
                known: known_methods(),
                requests,
                duration,
                in_flight,
                refusals,
            }),
        }
    }

    /// Adds a program's own metric (a counter, gauge, histogram or family of them; keep the
    /// handle and update it). `name` gets no prefix: start it with `seer_`. Counters are
    /// exposed with the `_total` suffix.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// The registry in the OpenMetrics text format.
    ///
    /// # Errors
    /// When a metric cannot be encoded (a program's own metric with a broken encoder).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }

    /// The `method` label of `path`: the path when the server declares it, else
    /// [`UNKNOWN_METHOD`].
    fn method_label(&self, path: &str) -> String {
        if self.inner.known.contains(path) {
            path.to_owned()
        } else {
            UNKNOWN_METHOD.to_owned()
        }
    }

    /// Counts one gate refusal of a call to `path`.
    pub(crate) fn refused(&self, path: &str, class: &'static str) {
        self.inner
            .refusals
            .get_or_create(&RefusalLabels {
                method: self.method_label(path),
                class: class.to_owned(),
            })
            .inc();
    }

    /// Records a finished call.
    fn finished(&self, method: String, code: &str, started: Instant) {
        self.inner
            .duration
            .get_or_create(&MethodLabels {
                method: method.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.inner
            .requests
            .get_or_create(&CodeLabels {
                method,
                code: code.to_owned(),
            })
            .inc();
        self.inner.in_flight.dec();
    }

    /// The tower layer recording every call's count, latency and in-flight state.
    #[must_use]
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer {
            metrics: self.clone(),
        }
    }
}

/// The tower layer of [`Metrics`] (outside the gate, so refusals are counted too).
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            metrics: self.metrics.clone(),
            inner,
        }
    }
}

/// A service whose calls [`Metrics`] records.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    metrics: Metrics,
    inner: S,
}

impl<S> tower_service::Service<http::Request<Body>> for MetricsService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let method = metrics.method_label(request.uri().path());
        metrics.inner.in_flight.inc();
        // The call in flight until its response body ends: a guard records it then, or on
        // drop (a cancelled call), exactly once.
        let mut guard = Finish {
            metrics,
            method,
            started,
            code: None,
            done: false,
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = match inner.call(request).await {
                Ok(response) => response,
                Err(error) => {
                    guard.code = Some("transport".to_owned());
                    guard.finish();
                    return Err(error);
                }
            };
            // A trailers-only answer (the gate's refusals, most errors) carries its status in
            // the headers.
            guard.code = grpc_status(response.headers());
            if response.body().is_end_stream() {
                guard.finish();
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(Observed { body, guard })))
        })
    }
}

/// The `grpc-status` of `headers` as its code name (`OK`, `UNAUTHENTICATED`, ...).
fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    let code = tonic::Code::from_bytes(value.as_bytes());
    Some(code_name(code).to_owned())
}

/// The canonical upper-case name of a gRPC code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Records one call when its response ends or is dropped.
struct Finish {
    metrics: Metrics,
    method: String,
    started: Instant,
    code: Option<String>,
    done: bool,
}

impl Finish {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            // No status seen: the client went away before the response ended.
            let code = self.code.take().unwrap_or_else(|| "CANCELLED".to_owned());
            self.metrics
                .finished(std::mem::take(&mut self.method), &code, self.started);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A response body whose trailers give the call's status.
struct Observed {
    body: Body,
    guard: Finish,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(code) = grpc_status(trailers)
                {
                    self.guard.code = Some(code);
                    self.guard.finish();
                }
            }
            Poll::Ready(Some(Err(status))) => {
                self.guard.code = Some(code_name(status.code()).to_owned());
                self.guard.finish();
            }
            Poll::Ready(None) => {
                if self.guard.code.is_none() {
                    // Ended without trailers: gRPC treats this as an error.
                    self.guard.code = Some("UNKNOWN".to_owned());
                }
                self.guard.finish();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The bound, not yet serving, metrics listener.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl MetricsListener {
    /// Binds `settings.listen` and writes the URL to `settings.address_file`; `None` when
    /// metrics are disabled.
    ///
    /// # Errors
    /// When the address cannot be bound or the address file cannot be written.
    pub async fn bind(settings: &MetricsSettings) -> anyhow::Result<Option<Self>> {
        if !settings.enabled {
            return Ok(None);
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding the metrics listener {}", settings.listen))?;
        let local_addr = listener
            .local_addr()
            .context("reading the metrics listener's address")?;
        if let Some(path) = &settings.address_file {
            std::fs::write(path, format!("http://{local_addr}/metrics\n"))
                .with_context(|| format!("writing the metrics address to {}", path.display()))?;
        }
        if !local_addr.ip().is_loopback() {
            tracing::warn!(
                address = %local_addr,
                "metrics are served without authentication on a non-loopback address"
            );
        }
        Ok(Some(Self {
            listener,
            local_addr,
        }))
    }

    /// The address actually bound.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `GET /metrics` from `metrics` until `shutdown` completes.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn serve(
        self,
        metrics: Metrics,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr, "serving metrics at /metrics");
        axum::serve(self.listener, router(metrics))
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving metrics")
    }
}

/// The metrics HTTP routes: `GET /metrics`.
pub fn router(metrics: Metrics) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                match metrics.encode() {
                    Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                    Err(error) => {
                        tracing::error!(%error, "encoding the metrics");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_methods_are_labelled_and_others_are_unknown() {
        let metrics = Metrics::new();
        assert_eq!(
            metrics.method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(
            metrics.method_label("/seer.v1.Node/GetInfo"),
            "/seer.v1.Node/GetInfo"
        );
        assert_eq!(metrics.method_label("/made.Up/Path"), UNKNOWN_METHOD);
        assert_eq!(metrics.method_label("/seer.v1.Node/Nope"), UNKNOWN_METHOD);
    }

    #[test]
    fn encoding_holds_the_rpc_metrics_and_program_metrics() {
        let metrics = Metrics::new();
        metrics.inner.in_flight.inc();
        metrics.finished("/seer.v1.Node/GetInfo".to_owned(), "OK", Instant::now());
        metrics.refused("/x.Y/Z", crate::gate::class::MISSING_TOKEN);
        let batches = Counter::<u64>::default();
        metrics.register("seer_batches_stored", "batches stored", batches.clone());
        batches.inc_by(3);
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains(r#"seer_rpc_requests_total{method="/seer.v1.Node/GetInfo",code="OK"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"seer_gate_refusals_total{method="unknown",class="unauthenticated.missing"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("seer_rpc_in_flight 0"), "{text}");
        assert!(
            text.contains(r#"seer_rpc_duration_seconds_count{method="/seer.v1.Node/GetInfo"} 1"#),
            "{text}"
        );
        assert!(text.contains("seer_batches_stored_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
