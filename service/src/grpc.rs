//! A gRPC server with `grpc.health.v1`, reflection (v1 and v1alpha) and `seer.v1.Node` on one
//! port, graceful shutdown, and the one machine-readable stdout line that tells whoever
//! started the process on port 0 where it listens.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::node_server::NodeServer;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::server::NamedService;

use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};

use crate::gate::{Gate, GateLayer};
use crate::metrics::{Metrics, MetricsLayer, MetricsListener, MetricsSettings};
use crate::node::NodeService;

/// The router [`serve`] hands to `add_services`: every route behind the [`Gate`], every call
/// recorded by the listener's [`Metrics`] (outermost, so the gate's refusals are counted).
pub type GatedRouter =
    Router<tower_layer::Stack<GateLayer, tower_layer::Stack<MetricsLayer, tower_layer::Identity>>>;

/// A bound, not yet serving, listener.
#[derive(Debug)]
pub struct GrpcListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<seer_tls::ServerTls>>,
    metrics: Metrics,
    metrics_listener: Option<MetricsListener>,
}

impl GrpcListener {
    /// Binds `address` (port 0 picks a free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(address: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        Ok(Self {
            listener,
            local_addr,
            tls: None,
            metrics: Metrics::new(),
            metrics_listener: None,
        })
    }

    /// Serves this server's [`Metrics`] at `GET /metrics` on the plain-HTTP listener of
    /// `settings` (`[server.metrics]`), bound now, while [`serve`] runs; nothing when
    /// `settings.enabled` is false. The calls are recorded either way.
    ///
    /// # Errors
    /// When the metrics address cannot be bound or its address file cannot be written.
    pub async fn with_metrics(mut self, settings: &MetricsSettings) -> anyhow::Result<Self> {
        self.metrics_listener = MetricsListener::bind(settings).await?;
        Ok(self)
    }

    /// The metrics registry (programs register their own metrics here before serving).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The address `/metrics` is served on, when it is.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(MetricsListener::local_addr)
    }

    /// Serves mutual TLS with `tls` (see [`seer_tls::server`]): every connection must present
    /// a client certificate of the deployment CA that its revocation list (`crl_file`, re-read
    /// when it changes) does not list; plaintext is refused. `None` leaves the
    /// listener on plaintext h2c, which only a loopback listener may do (development and
    /// in-process tests); it is logged as a warning when serving starts.
    ///
    /// # Errors
    /// When the certificate, key or CA cannot be read (or the key file is too open), or when
    /// `tls` is `None` and the listener is not on a loopback address.
    pub fn with_tls(mut self, tls: Option<&seer_tls::TlsFiles>) -> anyhow::Result<Self> {
        if tls.is_none() {
            plaintext_allowed(self.local_addr)?;
        }
        self.tls = tls
            .map(|files| {
                seer_tls::ServerTls::new(files).map(Arc::new).with_context(|| {
                    format!(
                        "loading the server's TLS certificate {}, its CA {} and revocation list \
                         {}",
                        files.cert_file.display(),
                        files.ca_file.display(),
                        files
                            .crl_file
                            .as_ref()
                            .map_or_else(|| "(none)".into(), |f| f.display().to_string())
                    )
                })
            })
            .transpose()?;
        Ok(self)
    }

    /// The address actually bound.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Refuses plaintext h2c on an address other hosts can reach: bearer tokens, signatures and
/// ciphertexts would cross the network in the clear. Loopback stays open to plaintext, for
/// development and in-process tests (a process on the same host can read loopback traffic
/// only with the privileges that would let it read the server's memory anyway).
///
/// # Errors
/// When `address` is not a loopback address.
pub fn plaintext_allowed(address: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        address.ip().is_loopback(),
        "refusing to serve plaintext h2c on {address}: tokens and ciphertexts would cross the \
         network in the clear. Configure [server.tls] (ca_file, cert_file, key_file; \
         `seer pki init` and `seer pki issue` make them), or listen on a loopback address"
    );
    Ok(())
}

/// Prints `listening on ADDRESS` as the one line on stdout.
///
/// # Errors
/// When stdout cannot be written.
pub fn announce(address: SocketAddr) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {address}")
        .and_then(|()| stdout.flush())
        .context("writing the listening line to stdout")
}

/// Serves `node`, health, reflection and whatever `add_services` adds, until `shutdown`
/// completes; then reports NOT_SERVING, stops accepting and finishes in-flight calls.
/// `service_names` are the fully qualified names (`NamedService::NAME`) of the services
/// `add_services` adds, reported SERVING by the health service. Every call passes `gate`
/// (authentication, authorization and in-flight bounds before its body is read) and the
/// server applies `gate`'s limits (call timeout, HTTP/2 keepalive and stream bounds). Every
/// call is recorded in the listener's [`Metrics`], served at `/metrics` while the server runs
/// when the listener was given [`GrpcListener::with_metrics`].
///
/// # Errors
/// When the reflection service cannot be built or the server fails.
pub async fn serve(
    listener: GrpcListener,
    node: NodeService,
    gate: Gate,
    service_names: &[&'static str],
    add_services: impl FnOnce(GatedRouter) -> GatedRouter,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut names = vec![<NodeServer<NodeService> as NamedService>::NAME];
    names.extend_from_slice(service_names);
    for name in &names {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = reflection()
        .build_v1()
        .context("building the reflection service")?;
    // grpcurl and older tools still ask the v1alpha service.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the reflection service")?;

    let shutdown = {
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down");
            for name in names.iter().chain(std::iter::once(&"")) {
                health
                    .set_service_status(*name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
        }
    };

    let metrics = listener.metrics.clone();
    let gate = gate.with_metrics(metrics.clone());
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = listener.metrics_listener.map(|metrics_listener| {
        tokio::spawn(metrics_listener.serve(metrics.clone(), async move {
            // Sent, or dropped, when the gRPC server has stopped.
            let _ = metrics_stopped.await;
        }))
    });

    let builder = gate.limits().apply(Server::builder());
    if listener.tls.is_none() {
        plaintext_allowed(listener.local_addr)?;
        tracing::warn!(
            address = %listener.local_addr,
            "serving plaintext h2c: tokens and ciphertexts travel in the clear; \
             configure server.tls for mutual TLS"
        );
    }
    let router = builder
        .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
        .layer(metrics.layer())
        .layer(gate.layer())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(NodeServer::new(node).with_seer_limits());
    let router = add_services(router);
    match listener.tls {
        Some(tls) => {
            tracing::info!(
                address = %listener.local_addr,
                revoked_certificates = tls.revoked(),
                "serving mutual TLS"
            );
            let (incoming, accepting) = tls.incoming(listener.listener);
            let served = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .context("serving gRPC");
            accepting.abort();
            served?;
        }
        None => router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener.listener), shutdown)
            .await
            .context("serving gRPC")?,
    }
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task {
        task.await.context("metrics task")??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The reflection service's builder, with every file descriptor set SEER serves.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(seer_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Completes on the first SIGINT or SIGTERM.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "received"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "received"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback() {
        for ok in ["127.0.0.1:7000", "127.9.9.9:1", "[::1]:7000"] {
            let address: SocketAddr = ok.parse().expect("address");
            assert!(plaintext_allowed(address).is_ok(), "{ok}");
        }
        for refused in [
            "0.0.0.0:7000",
            "192.168.1.20:7000",
            "[::]:7000",
            "10.0.0.1:1",
        ] {
            let address: SocketAddr = refused.parse().expect("address");
            let error = plaintext_allowed(address).expect_err(refused).to_string();
            assert!(error.contains("server.tls"), "{error}");
        }
    }
}
