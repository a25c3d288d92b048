//! The gRPC server: `seer.v1.Node`, `grpc.health.v1.Health` and gRPC reflection on one port.

use std::{future::Future, net::SocketAddr};

use anyhow::Context as _;
use seer_proto::{WithMessageLimits as _, v1::node_server::NodeServer};
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};

use crate::{Settings, node::NodeService};

/// A bound, not yet running, utility-server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Application {
    /// Binds the listener described by `settings` (port 0 picks a free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let address = settings.server.address();
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        Ok(Self {
            listener,
            local_addr,
        })
    }

    /// The port actually bound.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The address actually bound.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting and finishes in-flight calls.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed or the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let signal = shutdown_signal().context("installing signal handlers")?;
        self.run_until(signal).await
    }

    /// Serves until `shutdown` completes, then stops accepting and finishes in-flight calls.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<NodeServer<NodeService>>().await;

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
                health.set_not_serving::<NodeServer<NodeService>>().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            }
        };

        tracing::info!(address = %self.local_addr, "serving");
        Server::builder()
            .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(NodeServer::new(NodeService::new()).with_seer_limits())
            .serve_with_incoming_shutdown(TcpIncoming::from(self.listener), shutdown)
            .await
            .context("serving gRPC")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The reflection service's builder, with every file descriptor set this server serves.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(seer_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
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
