//! Real TLS handshakes against a tonic server configured as SEER's servers are: a client
//! certificate of the deployment CA is required, and the server reads the party it names; a
//! certificate on the CA's revocation list is refused once the list is written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use seer_tls::crl::CRL_FILE;
use seer_tls::pki::{CertificateRequest, DeploymentCa, IssuedCertificate};
use seer_tls::{Party, PartyKind, ServerTls, TlsFiles, request_party};
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
            crl_file: None,
        }
    }
}

/// How a test server accepts TLS.
#[derive(Clone, Copy)]
enum Acceptor {
    /// tonic's own `ServerTlsConfig`.
    Tonic,
    /// SEER's servers' way: `ServerTls`, the revocation list re-read when it changes.
    Seer,
}

/// Starts a health server with `server` TLS accepted by `acceptor`; returns its port and the
/// parties it saw.
async fn serve_with(
    server: &TlsFiles,
    acceptor: Acceptor,
) -> (u16, Arc<Mutex<Vec<Option<Party>>>>) {
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
    match acceptor {
        Acceptor::Tonic => {
            let router = Server::builder()
                .tls_config(server.server_config().expect("server TLS"))
                .expect("TLS accepted")
                .add_service(health);
            tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        }
        Acceptor::Seer => {
            let tls = Arc::new(ServerTls::new(server).expect("server TLS"));
            let (incoming, _accepting) = tls.incoming(listener);
            let router = Server::builder().add_service(health);
            tokio::spawn(router.serve_with_incoming(incoming));
        }
    }
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
    only_clients_of_the_ca_get_through(Acceptor::Tonic).await;
}

#[tokio::test]
async fn only_clients_of_the_ca_get_through_seers_own_acceptor() {
    only_clients_of_the_ca_get_through(Acceptor::Seer).await;
}

async fn only_clients_of_the_ca_get_through(acceptor: Acceptor) {
    let pki = Pki::new();
    let ca = DeploymentCa::generate("test").expect("CA");
    let server = pki.files(
        &ca,
        &ca.issue(&CertificateRequest::server("key-authority", &[]).expect("request"))
            .expect("issued"),
        "server",
    );
    let (port, seen) = serve_with(&server, acceptor).await;
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

#[tokio::test]
async fn a_revoked_certificate_no_longer_completes_a_handshake() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let ca = DeploymentCa::generate("test").expect("CA");
    let mut server = pki.files(
        &ca,
        &ca.issue(&CertificateRequest::server("utility", &[]).expect("request"))
            .expect("issued"),
        "server",
    );
    // A configured list must exist: a deleted list would un-revoke everything.
    server.crl_file = Some(dir.join(CRL_FILE));
    let missing = ServerTls::new(&server).expect_err("no list yet");
    assert!(missing.to_string().contains(CRL_FILE), "{missing}");
    ca.ensure_revocation_list(dir).expect("empty list");
    let (port, seen) = serve_with(&server, Acceptor::Seer).await;
    let https = format!("https://127.0.0.1:{port}");
    let meter = |id: &str| {
        pki.files(
            &ca,
            &ca.issue(&CertificateRequest::client(Party::meter(id).expect("id")))
                .expect("issued"),
            &format!("meter-{id}"),
        )
    };
    let (m1, m2) = (meter("M-1"), meter("M-2"));
    for m in [&m1, &m2] {
        check(m.endpoint(&https).expect("endpoint"))
            .await
            .expect("served before any revocation");
    }

    // M-1 revoked: its next connection is refused in the handshake; M-2 is still served.
    let pem = std::fs::read_to_string(&m1.cert_file).expect("pem");
    let revocation = ca.revoke(dir, &pem, &m1.cert_file).expect("revoked");
    assert!(revocation.added);
    assert_eq!(revocation.listed, 1);
    assert_eq!(
        revocation.serial,
        seer_tls::crl::certificate_serial(&pem, &m1.cert_file).expect("serial")
    );
    let list = seer_tls::crl::read_list(&dir.join(CRL_FILE)).expect("list");
    assert_eq!(list.number, 1);
    assert_eq!(list.revoked.len(), 1);
    // No pause: the list is replaced by a rename (a new inode), seen at the next connection.
    let calls = seen.lock().expect("lock").len();
    assert!(
        check(m1.endpoint(&https).expect("endpoint")).await.is_err(),
        "a revoked certificate must be refused"
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        calls,
        "nothing reached the service"
    );
    check(m2.endpoint(&https).expect("endpoint"))
        .await
        .expect("another meter is still served");
    // Revoking again changes nothing.
    let again = ca.revoke(dir, &pem, &m1.cert_file).expect("no-op");
    assert!(!again.added);
    assert_eq!(
        seer_tls::crl::read_list(&dir.join(CRL_FILE))
            .expect("list")
            .number,
        1
    );

    // A certificate of another CA cannot be put on this CA's list.
    let stranger = DeploymentCa::generate("test").expect("CA of the same name");
    let foreign = stranger
        .issue(&CertificateRequest::client(
            Party::meter("M-1").expect("id"),
        ))
        .expect("issued");
    let refused = ca
        .revoke(dir, foreign.certificate_pem(), &dir.join("foreign.pem"))
        .expect_err("not this CA's");
    assert!(
        refused
            .to_string()
            .contains("not issued by this deployment's CA"),
        "{refused}"
    );

    // A list replaced by something unreadable: the last good list stays in force.
    std::fs::write(dir.join(CRL_FILE), "garbage").expect("overwritten");
    assert!(
        check(m1.endpoint(&https).expect("endpoint")).await.is_err(),
        "an unreadable list must not un-revoke"
    );
    check(m2.endpoint(&https).expect("endpoint"))
        .await
        .expect("still served");
}
