//! Real TLS handshakes against a tonic server configured as SEER's servers are: a client
//! certificate of the deployment CA is required, and the server reads the party it names.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use seer_tls::pki::{CertificateRequest, DeploymentCa, IssuedCertificate};
use seer_tls::{Party, PartyKind, TlsFiles, request_party};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("dir"),
        }
    }

    fn files(&self, ca: &DeploymentCa, issued: &IssuedCertificate, stem: &str) -> TlsFiles {
        let ca_file = self.dir.path().join(format!("{stem}-ca.pem"));
        std::fs::write(&ca_file, ca.certificate_pem()).expect("CA written");
        let written = issued.write(self.dir.path(), stem).expect("written");
        TlsFiles {
            ca_file,
            cert_file: written.cert_file,
            key_file: written.key_file,
        }
    }
}

/// Starts a health server with `server` TLS; returns its port and the parties it saw.
async fn serve(server: &TlsFiles) -> (u16, Arc<Mutex<Vec<Option<Party>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let (_reporter, health) = tonic_health::server::health_reporter();
    let health = tonic::service::interceptor::InterceptedService::new(
        health,
        move |request: tonic::Request<()>| {
            let party = request_party(&request).and_then(Result::ok);
            record.lock().expect("lock").push(party);
            Ok(request)
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = Server::builder()
        .tls_config(server.server_config().expect("server TLS"))
        .expect("TLS accepted")
        .add_service(health);
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    (port, seen)
}

async fn check(endpoint: tonic::transport::Endpoint) -> Result<(), String> {
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(drop)
        .map_err(|s| format!("call: {s:?}"))
}

#[tokio::test]
async fn only_clients_with_a_certificate_of_the_deployment_ca_get_through() {
    let pki = Pki::new();
    let ca = DeploymentCa::generate("test").expect("CA");
    let server = pki.files(
        &ca,
        &ca.issue(&CertificateRequest::server("key-authority", &[]).expect("request"))
            .expect("issued"),
        "server",
    );
    let (port, seen) = serve(&server).await;
    let https = format!("https://127.0.0.1:{port}");

    // A meter of this deployment: accepted, and the server reads its meter id.
    let meter = pki.files(
        &ca,
        &ca.issue(&CertificateRequest::client(
            Party::meter("M-7").expect("id"),
        ))
        .expect("issued"),
        "meter",
    );
    check(meter.endpoint(&https).expect("endpoint"))
        .await
        .expect("a meter of the deployment is served");
    let party = seen.lock().expect("lock").last().cloned().flatten();
    assert_eq!(party, Some(Party::meter("M-7").expect("id")));
    assert_eq!(party.expect("party").kind(), PartyKind::Meter);

    // Plaintext h2c to the TLS port: refused.
    let plain = seer_tls::config::endpoint_with(&format!("http://127.0.0.1:{port}"), None)
        .expect("endpoint");
    assert!(check(plain).await.is_err(), "plaintext must be refused");

    // TLS without a client certificate: refused.
    let ca_only = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(ca.certificate_pem()),
    );
    let anonymous = seer_tls::config::endpoint_with(&https, Some(&ca_only)).expect("endpoint");
    assert!(
        check(anonymous).await.is_err(),
        "a client without a certificate must be refused"
    );

    // A client certificate of another CA (trusting this deployment's server): refused.
    let stranger = DeploymentCa::generate("stranger").expect("CA");
    let foreign = stranger
        .issue(&CertificateRequest::client(
            Party::meter("M-7").expect("id"),
        ))
        .expect("issued");
    let mut foreign_files = pki.files(&stranger, &foreign, "foreign");
    foreign_files.ca_file = server.ca_file.clone();
    assert!(
        check(foreign_files.endpoint(&https).expect("endpoint"))
            .await
            .is_err(),
        "a certificate of another CA must be refused"
    );

    // A client that trusts another CA refuses this server.
    let mut distrustful = meter.clone();
    distrustful.ca_file = pki.dir.path().join("foreign-ca.pem");
    assert!(
        check(distrustful.endpoint(&https).expect("endpoint"))
            .await
            .is_err(),
        "a server of another CA must be refused"
    );
    // Only the one accepted call reached the service.
    assert_eq!(seen.lock().expect("lock").len(), 1);
}
