//! The key-authority's gRPC server (see [`seer_service::serve`] for what every SEER server
//! carries).

use std::{future::Future, net::SocketAddr};

use anyhow::Context as _;
use seer_proto::v1::Role;
use seer_service::{GrpcListener, NodeService};

use crate::Settings;

/// A bound, not yet running, key-authority.
#[derive(Debug)]
pub struct Application {
    listener: GrpcListener,
}

impl Application {
    /// Binds the listener described by `settings` (port 0 picks a free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Ok(Self {
            listener: GrpcListener::bind(settings.server.address()).await?,
        })
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
        // No CKKS parameter set is configured yet, so the node reports an empty id.
        let node = NodeService::new(Role::KeyAuthority, env!("CARGO_PKG_VERSION"), "");
        seer_service::serve(self.listener, node, &[], |router| router, shutdown).await
    }
}
