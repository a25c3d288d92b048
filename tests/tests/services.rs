//! `utility-server` and `key-authority` started as separate processes on port 0, each asked
//! `seer.v1.Node/GetInfo` and `grpc.health.v1.Health/Check` over real gRPC.
//!
//! Needs the binaries built first with the same profile (see the `seer_tests` crate docs):
//! `cargo build --release -p utility-server -p key-authority && cargo test --release -p seer-tests`.

use std::time::Duration;

use seer_proto::{
    WithMessageLimits as _,
    v1::{GetInfoRequest, NodeInfo, Role, node_client::NodeClient},
};
use seer_tests::ServerProcess;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn connect(server: &ServerProcess) -> Channel {
    Endpoint::from_shared(server.uri())
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "connecting to {} at {}: {error}",
                server.name(),
                server.uri()
            )
        })
}

async fn get_info(channel: Channel) -> NodeInfo {
    NodeClient::new(channel)
        .with_seer_limits()
        .get_info(GetInfoRequest {})
        .await
        .expect("GetInfo succeeds")
        .into_inner()
}

async fn health(channel: Channel, service: &str) -> ServingStatus {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health check succeeds")
        .into_inner()
        .status()
}

async fn check_server(name: &str, env_prefix: &str, role: Role) {
    let server = ServerProcess::spawn(name, env_prefix).expect("server starts");
    assert!(server.address().ip().is_loopback());
    assert_ne!(server.address().port(), 0);
    let channel = connect(&server).await;

    let info = get_info(channel.clone()).await;
    assert_eq!(info.role(), role);
    assert_eq!(info.software_version, env!("CARGO_PKG_VERSION"));

    assert_eq!(health(channel.clone(), "").await, ServingStatus::Serving);
    assert_eq!(
        health(channel, "seer.v1.Node").await,
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn utility_server_serves_node_info_and_health() {
    check_server("utility-server", "SEER_UTILITY__", Role::UtilityServer).await;
}

#[tokio::test]
async fn key_authority_serves_node_info_and_health() {
    check_server("key-authority", "SEER_KEY_AUTHORITY__", Role::KeyAuthority).await;
}

#[tokio::test]
async fn both_servers_run_side_by_side() {
    let utility = ServerProcess::spawn("utility-server", "SEER_UTILITY__").expect("starts");
    let authority = ServerProcess::spawn("key-authority", "SEER_KEY_AUTHORITY__").expect("starts");
    assert_ne!(utility.address(), authority.address());
    let utility_info = get_info(connect(&utility).await).await;
    let authority_info = get_info(connect(&authority).await).await;
    assert_eq!(utility_info.role(), Role::UtilityServer);
    assert_eq!(authority_info.role(), Role::KeyAuthority);
}

#[test]
fn a_bad_setting_fails_startup_with_its_stderr() {
    let error = ServerProcess::spawn_with(
        "utility-server",
        &[("SEER_UTILITY__SERVER__PROT".to_owned(), "0".to_owned())],
    )
    .expect_err("unknown setting rejected");
    let message = format!("{error:#}");
    assert!(message.contains("did not start"), "{message}");
    assert!(message.contains("prot"), "{message}");
}
