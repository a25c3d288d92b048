//! `/metrics` of a running server: a gRPC call that succeeds and one the gate refuses, then
//! the counters read back over plain HTTP from the metrics listener.

use std::sync::Arc;

use seer_proto::v1::Role;
use seer_service::gate::{AccessTable, Authenticate, Gate, Rejected, class};
use seer_service::{GrpcListener, LimitSettings, MetricsSettings, NodeService, serve};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Accepts no token at all.
struct NoTokens;

impl Authenticate for NoTokens {
    fn authenticate(&self, _metadata: &MetadataMap) -> Result<seer_auth::Caller, Rejected> {
        Err(Rejected {
            class: class::MISSING_TOKEN,
            status: Status::unauthenticated("no token"),
        })
    }
}

/// `GET path` over HTTP/1.1 on `address`: (status line, body).
async fn http_get(address: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the metrics listener");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn calls_and_refusals_are_counted_and_served() {
    let listener = GrpcListener::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind")
        .with_metrics(&MetricsSettings::default())
        .await
        .expect("bind metrics");
    let grpc = listener.local_addr();
    let metrics_addr = listener.metrics_addr().expect("metrics enabled by default");
    let gate = Gate::new(
        AccessTable::default(),
        Arc::new(NoTokens),
        &LimitSettings::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        NodeService::new(Role::UtilityServer, "test", ""),
        gate,
        &[],
        |router| router,
        async move {
            let _ = stopped.await;
        },
    ));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    // A public call that succeeds.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health check");
    // A call the gate refuses (no token), to a path the server does not declare.
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("ready");
    let refused = client
        .unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static("/made.Up/Call"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let (status, text) = http_get(metrics_addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for line in [
        r#"seer_rpc_requests_total{method="/grpc.health.v1.Health/Check",code="OK"} 1"#,
        r#"seer_rpc_requests_total{method="unknown",code="UNAUTHENTICATED"} 1"#,
        r#"seer_gate_refusals_total{method="unknown",class="unauthenticated.missing"} 1"#,
        r#"seer_rpc_duration_seconds_count{method="/grpc.health.v1.Health/Check"} 1"#,
        "seer_rpc_in_flight 0",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let (status, _) = http_get(metrics_addr, "/other").await;
    assert!(status.contains("404"), "{status}");

    stop.send(()).expect("stop");
    server.await.expect("join").expect("served");
    // The metrics listener stops with the server.
    assert!(tokio::net::TcpStream::connect(metrics_addr).await.is_err());
}
