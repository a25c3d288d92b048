//! The utility-server built in-process on port 0 and called over real gRPC: `seer.v1.Node`,
//! health and reflection.

use std::time::Duration;

use seer_proto::{
    WithMessageLimits as _,
    v1::{GetInfoRequest, Role, node_client::NodeClient},
};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use utility_server::{Application, Settings};

/// A running application; stops it gracefully on drop.
struct TestApp {
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    async fn spawn() -> Self {
        let mut settings = Settings::default();
        settings.server.port = 0;
        let application = Application::build(settings).await.expect("binds port 0");
        let address = application.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("valid uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connects");
        Self {
            channel,
            stop: Some(stop),
            server,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = std::mem::replace(&mut self.server, tokio::spawn(async { Ok(()) }));
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("stops in time")
            .expect("server task did not panic")
            .expect("server ran cleanly");
    }
}

#[tokio::test]
async fn get_info_reports_the_role() {
    let app = TestApp::spawn().await;
    let info = NodeClient::new(app.channel.clone())
        .with_seer_limits()
        .get_info(GetInfoRequest {})
        .await
        .expect("GetInfo succeeds")
        .into_inner();
    assert_eq!(info.role(), Role::UtilityServer);
    assert_eq!(info.software_version, env!("CARGO_PKG_VERSION"));
    app.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let app = TestApp::spawn().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "seer.v1.Node"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health check succeeds")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services() {
    let app = TestApp::spawn().await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tonic::codegen::tokio_stream::iter([request]))
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
    let names: Vec<_> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in ["seer.v1.Node", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
    app.stop().await;
}
