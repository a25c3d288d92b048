//! `utility-server` and `key-authority` started as separate processes on port 0, each asked
//! `seer.v1.Node/GetInfo`, `grpc.health.v1.Health/Check` and server reflection over real
//! gRPC, then stopped with SIGTERM, which they must survive gracefully (exit status 0).
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
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
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

async fn reflected_services(channel: Channel) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call succeeds")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("reflection stream succeeds")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    list.service
        .into_iter()
        .map(|service| service.name)
        .collect()
}

/// Starts `name` on port 0 with every file it writes (keys, databases) under `keys`.
fn spawn(name: &str, env_prefix: &str, keys: &tempfile::TempDir) -> ServerProcess {
    let mut envs = vec![(format!("{env_prefix}SERVER__PORT"), "0".to_owned())];
    let dir = keys.path().display();
    if name == "utility-server" {
        envs.push((
            format!("{env_prefix}DATABASE__URL"),
            format!("sqlite://{dir}/utility.db"),
        ));
    }
    if name == "key-authority" {
        envs.push((format!("{env_prefix}KEYS__DIR"), format!("{dir}/keys")));
        envs.push((
            format!("{env_prefix}AUTH__SIGNING_KEY_FILE"),
            format!("{dir}/jwt.pem"),
        ));
        envs.push((
            format!("{env_prefix}AUDIT__DATABASE_URL"),
            format!("sqlite:{dir}/audit.db"),
        ));
    }
    ServerProcess::spawn_with(name, &envs).expect("server starts")
}

async fn check_server(name: &str, env_prefix: &str, role: Role) {
    let keys = tempfile::tempdir().expect("temporary key directory");
    let mut server = spawn(name, env_prefix, &keys);
    assert!(server.address().ip().is_loopback());
    assert_ne!(server.address().port(), 0);
    let channel = connect(&server).await;

    let info = get_info(channel.clone()).await;
    assert_eq!(info.role(), role);
    assert_eq!(info.software_version, env!("CARGO_PKG_VERSION"));
    if role == Role::KeyAuthority {
        // The default key store holds the billing set (n = 8192) and the daily lane's
        // (n = 4096).
        assert_eq!(
            info.ckks_parameter_set_id,
            "ckks1-n4096-q39-s29x1-p40,ckks1-n8192-q60-s40x2-p60"
        );
    }

    assert_eq!(health(channel.clone(), "").await, ServingStatus::Serving);
    assert_eq!(
        health(channel.clone(), "seer.v1.Node").await,
        ServingStatus::Serving
    );
    let names = reflected_services(channel).await;
    for expected in ["seer.v1.Node", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // Off the runtime: the client side must stay responsive while the server drains its
    // connections (it sends GOAWAY and waits for this client to close them).
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(10)))
        .await
        .expect("terminate task")
        .expect("exits after SIGTERM");
    assert!(
        status.success(),
        "{name} exited with {status} after SIGTERM"
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
    let keys = tempfile::tempdir().expect("temporary key directory");
    let utility = spawn("utility-server", "SEER_UTILITY__", &keys);
    let authority = spawn("key-authority", "SEER_KEY_AUTHORITY__", &keys);
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
