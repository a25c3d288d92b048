//! The gate in front of every SEER server: authentication and authorization from the headers
//! and the method path alone, and the in-flight bounds of [`crate::limits`], decided before
//! any request body is read or decoded.
//!
//! For each call the [`GateLayer`] looks up the method path in the program's [`AccessTable`]:
//!
//! - [`Access::Public`] (health, reflection, `Node`, public keys, enrolment): no token; the
//!   call counts against its peer's in-flight bound.
//! - [`Access::Roles`]: the `authorization` header is verified by the program's
//!   [`Authenticate`]; a missing or invalid token is answered `UNAUTHENTICATED`, a role not
//!   listed `PERMISSION_DENIED`, both as a trailers-only response while the request body is
//!   still unread (a large streaming upload with a bad token is refused after its headers);
//!   an admitted call counts against its token subject's in-flight bound.
//!
//! A call over a bound is answered `RESOURCE_EXHAUSTED`. Every refusal goes to the program's
//! [`RefusalSink`] (the key authority's audit log, rate-limited and aggregated); the refusal is
//! answered once the sink is done with it, and `UNAVAILABLE` if the sink could not record it.
//! An admitted call's request body fails with `DEADLINE_EXCEEDED` once it stays silent longer
//! than `server.limits.stream_idle_timeout_secs`, and its place in the limiter is held until
//! its response body ends.
//!
//! The handlers still authorize the caller for what the request body names (the meter, the
//! period): the gate decides what can be decided without reading it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use seer_auth::{Caller, Role, TokenRejection, TokenVerifier};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};

use crate::limits::{CallPermit, LimitSettings, Limiter};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (bounded per peer).
    Public,
    /// A valid token whose role is one of these.
    Roles(&'static [Role]),
}

/// Every role: any valid token.
pub const ANY_ROLE: &[Role] = &Role::ALL;

/// The paths every SEER server serves without a token: health, reflection and `Node`.
pub const ALWAYS_PUBLIC: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/seer.v1.Node/",
];

/// Who may call which method: by full method path (`/seer.v1.Release/ReleaseBills`) or by
/// service (`/seer.v1.Enrolment/`, trailing slash); a path in neither needs any valid token.
#[derive(Debug, Clone)]
pub struct AccessTable {
    methods: HashMap<String, Access>,
    services: HashMap<String, Access>,
}

impl Default for AccessTable {
    fn default() -> Self {
        let mut table = Self {
            methods: HashMap::new(),
            services: HashMap::new(),
        };
        for path in ALWAYS_PUBLIC {
            table = table.with(path, Access::Public);
        }
        table
    }
}

impl AccessTable {
    /// The table with `path` admitted as `access`: a method (`/pkg.Service/Method`) or, with a
    /// trailing slash, every method of a service (`/pkg.Service/`).
    #[must_use]
    pub fn with(mut self, path: &str, access: Access) -> Self {
        if path.ends_with('/') {
            self.services.insert(path.to_owned(), access);
        } else {
            self.methods.insert(path.to_owned(), access);
        }
        self
    }

    /// Who may call `path`.
    #[must_use]
    pub fn access(&self, path: &str) -> Access {
        if let Some(access) = self.methods.get(path) {
            return *access;
        }
        let service = path
            .rfind('/')
            .filter(|&i| i > 0)
            .map_or("", |i| &path[..=i]);
        self.services
            .get(service)
            .copied()
            .unwrap_or(Access::Roles(ANY_ROLE))
    }
}

/// Why the gate refused a call: a short, stable class for aggregation.
pub mod class {
    /// No `authorization` header.
    pub const MISSING_TOKEN: &str = "unauthenticated.missing";
    /// Not `Bearer <jwt>`, or not a JWT.
    pub const MALFORMED_TOKEN: &str = "unauthenticated.malformed";
    /// Expired or not yet valid.
    pub const EXPIRED_TOKEN: &str = "unauthenticated.expired";
    /// Any other token rejection (signature, issuer, audience, algorithm, claims).
    pub const INVALID_TOKEN: &str = "unauthenticated.invalid";
    /// A valid token of a role that may not call the method.
    pub const WRONG_ROLE: &str = "permission_denied.role";
    /// Over the caller's in-flight bound.
    pub const CALLER_BUSY: &str = "resource_exhausted.caller";
    /// Over the server's in-flight bound.
    pub const SERVER_BUSY: &str = "resource_exhausted.server";
    /// A valid token its issuer revoked (the key authority's `revoke-token`).
    pub const REVOKED_TOKEN: &str = "unauthenticated.revoked";
}

/// A token not accepted: the [`class`] and the status to answer.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// One of [`class`]'s `unauthenticated.*` constants.
    pub class: &'static str,
    /// What the client is told.
    pub status: Status,
}

impl From<TokenRejection> for Rejected {
    fn from(rejection: TokenRejection) -> Self {
        let class = match rejection {
            TokenRejection::Missing => class::MISSING_TOKEN,
            TokenRejection::MalformedHeader
            | TokenRejection::Malformed
            | TokenRejection::TooLarge => class::MALFORMED_TOKEN,
            TokenRejection::Expired | TokenRejection::NotYetValid => class::EXPIRED_TOKEN,
            _ => class::INVALID_TOKEN,
        };
        Self {
            class,
            status: Status::unauthenticated(rejection.to_string()),
        }
    }
}

/// Verifies a call's credentials from its metadata alone.
pub trait Authenticate: Send + Sync + 'static {
    /// The caller of a call with `metadata`.
    ///
    /// # Errors
    /// [`Rejected`] when the token is missing or not accepted.
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Rejected>;
}

impl Authenticate for TokenVerifier {
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Rejected> {
        seer_auth::authenticate(self, metadata).map_err(Rejected::from)
    }
}

/// A call the gate refused, as handed to the [`RefusalSink`].
#[derive(Debug, Clone)]
pub struct GateRefusal {
    /// The method path.
    pub method: String,
    /// The peer's IP address, when the transport reports it.
    pub peer: Option<IpAddr>,
    /// The authenticated caller (a role refusal, a busy caller); `None` without a valid token.
    pub caller: Option<Caller>,
    /// The [`class`] of the refusal.
    pub class: &'static str,
    /// The status answered.
    pub code: Code,
    /// Its message.
    pub message: String,
}

impl GateRefusal {
    /// Who the refusal is counted against: `subject:<sub>` when authenticated, else
    /// `peer:<ip>` (or `peer:unknown`).
    #[must_use]
    pub fn caller_key(&self) -> String {
        match (&self.caller, self.peer) {
            (Some(caller), _) => format!("subject:{}", caller.subject()),
            (None, Some(peer)) => format!("peer:{peer}"),
            (None, None) => "peer:unknown".to_owned(),
        }
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where the gate reports refusals. `Err` makes the call answer `UNAVAILABLE` instead (a
/// refusal that had to be recorded and could not be).
pub trait RefusalSink: Send + Sync + 'static {
    /// Records `refusal`.
    fn refused(&self, refusal: GateRefusal) -> BoxFuture<Result<(), Status>>;
}

/// A sink that only traces refusals (at debug level): for servers without an audit log.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceRefusals;

impl RefusalSink for TraceRefusals {
    fn refused(&self, refusal: GateRefusal) -> BoxFuture<Result<(), Status>> {
        tracing::debug!(
            method = %refusal.method,
            class = refusal.class,
            caller = %refusal.caller_key(),
            "call refused before its body was read"
        );
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The gate's configuration: the program's access table, authenticator and refusal sink,
/// and the limits.
#[derive(Clone)]
pub struct Gate {
    table: Arc<AccessTable>,
    authenticate: Arc<dyn Authenticate>,
    sink: Arc<dyn RefusalSink>,
    limiter: Limiter,
    idle_timeout: Duration,
    limits: LimitSettings,
    /// Where refusals are counted (`seer_gate_refusals_total`), when set.
    metrics: Option<crate::metrics::Metrics>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("table", &self.table)
            .field("limiter", &self.limiter)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate admitting calls by `table`, verifying tokens with `authenticate`, within
    /// `limits`; refusals are only traced until [`Gate::with_sink`].
    #[must_use]
    pub fn new(
        table: AccessTable,
        authenticate: Arc<dyn Authenticate>,
        limits: &LimitSettings,
    ) -> Self {
        Self {
            table: Arc::new(table),
            authenticate,
            sink: Arc::new(TraceRefusals),
            limiter: Limiter::from_settings(limits),
            idle_timeout: limits.stream_idle_timeout(),
            limits: limits.clone(),
            metrics: None,
        }
    }

    /// Refusals are also counted in `metrics` (`seer_gate_refusals_total{method, class}`).
    /// [`serve`](crate::serve) sets the listener's metrics.
    #[must_use]
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The limits the gate and the server apply.
    #[must_use]
    pub fn limits(&self) -> &LimitSettings {
        &self.limits
    }

    /// Refusals go to `sink`.
    #[must_use]
    pub fn with_sink(mut self, sink: Arc<dyn RefusalSink>) -> Self {
        self.sink = sink;
        self
    }

    /// The limiter (to observe in-flight calls).
    #[must_use]
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The tower layer applying this gate to a server's routes.
    #[must_use]
    pub fn layer(&self) -> GateLayer {
        GateLayer { gate: self.clone() }
    }

    /// Admits a call from its parts, or says why not.
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<CallPermit, Box<GateRefusal>> {
        let refusal = |caller: Option<Caller>, class: &'static str, status: &Status| {
            Box::new(GateRefusal {
                method: path.to_owned(),
                peer,
                caller,
                class,
                code: status.code(),
                message: status.message().to_owned(),
            })
        };
        let caller = match self.table.access(path) {
            Access::Public => None,
            Access::Roles(roles) => {
                let metadata = MetadataMap::from_headers(headers.clone());
                let caller = self
                    .authenticate
                    .authenticate(&metadata)
                    .map_err(|rejected| refusal(None, rejected.class, &rejected.status))?;
                if let Err(error) = caller.require_role(roles) {
                    let status = Status::permission_denied(error.to_string());
                    return Err(refusal(Some(caller), class::WRONG_ROLE, &status));
                }
                Some(caller)
            }
        };
        let key = match (&caller, peer) {
            (Some(caller), _) => format!("subject:{}", caller.subject()),
            (None, Some(peer)) => format!("peer:{peer}"),
            (None, None) => "peer:unknown".to_owned(),
        };
        self.limiter.try_acquire(&key).map_err(|exceeded| {
            let class = match exceeded {
                crate::limits::LimitExceeded::PerCaller { .. } => class::CALLER_BUSY,
                _ => class::SERVER_BUSY,
            };
            refusal(
                caller,
                class,
                &Status::resource_exhausted(exceeded.to_string()),
            )
        })
    }
}

/// The tower layer of a [`Gate`] (`Server::builder().layer(gate.layer())`).
#[derive(Debug, Clone)]
pub struct GateLayer {
    gate: Gate,
}

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            gate: self.gate.clone(),
            inner,
        }
    }
}

/// A service behind a [`Gate`].
#[derive(Debug, Clone)]
pub struct GateService<S> {
    gate: Gate,
    inner: S,
}

impl<S> tower_service::Service<http::Request<Body>> for GateService<S>
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
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map(|address| address.ip());
        match self
            .gate
            .admit(request.uri().path(), request.headers(), peer)
        {
            Ok(permit) => {
                // The ready service is the one to call; a fresh clone takes its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let idle = self.gate.idle_timeout;
                let request = request.map(|body| Body::new(IdleTimeout::new(body, idle)));
                Box::pin(async move {
                    let response = inner.call(request).await?;
                    Ok(response.map(|body| {
                        Body::new(HoldPermit {
                            body,
                            _permit: permit,
                        })
                    }))
                })
            }
            Err(refusal) => {
                // The body is dropped unread.
                drop(request);
                if let Some(metrics) = &self.gate.metrics {
                    metrics.refused(&refusal.method, refusal.class);
                }
                let status = Status::new(refusal.code, refusal.message.clone());
                let recorded = self.gate.sink.refused(*refusal);
                Box::pin(async move {
                    let status = match recorded.await {
                        Ok(()) => status,
                        Err(unavailable) => unavailable,
                    };
                    Ok(status.into_http())
                })
            }
        }
    }
}

/// A response body that holds its call's [`CallPermit`] until it ends (or is dropped).
struct HoldPermit {
    body: Body,
    /// Held for its drop.
    _permit: CallPermit,
}

impl http_body::Body for HoldPermit {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails with `DEADLINE_EXCEEDED` once no frame arrived for `idle`.
struct IdleTimeout {
    body: Body,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    fn new(body: Body, idle: Duration) -> Self {
        Self {
            body,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                    "request stream idle for more than {} s",
                    this.idle.as_secs()
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_resolves_methods_before_services_and_defaults_to_any_token() {
        const UTILITY: &[Role] = &[Role::Utility];
        let table = AccessTable::default()
            .with("/seer.v1.Enrolment/", Access::Public)
            .with("/seer.v1.Release/ReleaseBills", Access::Roles(UTILITY))
            .with("/seer.v1.Keys/GetKey", Access::Public);
        assert_eq!(table.access("/seer.v1.Enrolment/Enrol"), Access::Public);
        assert_eq!(
            table.access("/seer.v1.Release/ReleaseBills"),
            Access::Roles(UTILITY)
        );
        assert_eq!(table.access("/grpc.health.v1.Health/Check"), Access::Public);
        assert_eq!(table.access("/seer.v1.Node/GetInfo"), Access::Public);
        // Unlisted methods, unknown services and odd paths need a valid token.
        for path in [
            "/seer.v1.Keys/ListKeySets",
            "/seer.v1.Release/Other",
            "/x.Y/Z",
            "/",
            "",
            "nothing",
        ] {
            assert_eq!(table.access(path), Access::Roles(ANY_ROLE), "{path}");
        }
    }

    #[test]
    fn token_rejections_fall_into_stable_classes() {
        assert_eq!(
            Rejected::from(TokenRejection::Missing).class,
            class::MISSING_TOKEN
        );
        assert_eq!(
            Rejected::from(TokenRejection::Malformed).class,
            class::MALFORMED_TOKEN
        );
        assert_eq!(
            Rejected::from(TokenRejection::Expired).class,
            class::EXPIRED_TOKEN
        );
        let bad = Rejected::from(TokenRejection::BadSignature);
        assert_eq!(bad.class, class::INVALID_TOKEN);
        assert_eq!(bad.status.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn a_silent_request_stream_fails_after_the_idle_timeout() {
        use http_body_util::BodyExt as _;
        let (sender, receiver) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Status>>(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let idle = Duration::from_millis(400);
        let mut body = IdleTimeout::new(Body::new(http_body_util::StreamBody::new(stream)), idle);
        let send = |data: &'static [u8]| {
            sender
                .try_send(Ok(http_body::Frame::data(Bytes::from_static(data))))
                .expect("send");
        };
        send(b"a");
        let first = body.frame().await.expect("a frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"a"));
        // Frames less than the timeout apart, for longer than the timeout: the deadline moves.
        let started = tokio::time::Instant::now();
        for _ in 0..4 {
            tokio::time::sleep(idle / 4).await;
            send(b"b");
            body.frame().await.expect("b").expect("ok");
        }
        assert!(started.elapsed() >= idle);
        // Then silence past the timeout.
        let silent = tokio::time::Instant::now();
        let error = body.frame().await.expect("an error").expect_err("idle");
        assert_eq!(error.code(), Code::DeadlineExceeded);
        assert!(silent.elapsed() >= idle * 9 / 10);
        drop(sender);
    }
}
