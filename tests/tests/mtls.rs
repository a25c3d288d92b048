//! Mutual TLS on every hop, across real processes, tried as someone on the network would.
//!
//! - A TCP relay between the meter and the utility server, and one between the meter / the
//!   utility's billing job and the key authority, records every byte of a month's upload and
//!   its bill release: the capture holds TLS records only — no bearer token, no meter id, no
//!   gRPC path or other readable protobuf string.
//! - A plaintext (h2c) client is refused by both servers; so are TLS clients without a
//!   certificate and with another CA's certificate.
//! - A meter whose certificate names another meter is refused with its token; utility and
//!   auditor tokens need their own party's certificate.
//! - A wrong pinned fingerprint makes the meter refuse the key authority's public key, and the
//!   utility refuse a JWT key other than the one pinned.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use seer_proto::v1;
use seer_proto::v1::audit_client::AuditClient;
use seer_proto::v1::ingest_client::IngestClient;
use seer_proto::v1::node_client::NodeClient;
use seer_proto::v1::receipts_client::ReceiptsClient;
use seer_tests::pki::{files, files_for_token};
use seer_tests::{Deployment, DeploymentOptions, ServerProcess};
use seer_tls::pki::{CertificateRequest, DeploymentCa};
use seer_tls::{Party, PartyKind, TlsFiles};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// The meter of the relay test: a distinctive id to look for in the capture.
const METER: &str = "meter-relay-4711";

/// One relayed connection's bytes, each direction on its own.
#[derive(Default, Clone)]
struct Connection {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

/// A TCP relay on 127.0.0.1 that forwards every connection to `target` and records its bytes.
struct Relay {
    address: SocketAddr,
    connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let address = listener.local_addr().expect("relay address");
        let connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>> = Arc::default();
        let all = Arc::clone(&connections);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let record = Arc::new(Mutex::new(Connection::default()));
                all.lock().expect("lock").push(Arc::clone(&record));
                let pipe = |mut from: TcpStream, mut to: TcpStream, upstream: bool| {
                    let record = Arc::clone(&record);
                    thread::spawn(move || {
                        let mut buffer = [0_u8; 16 * 1024];
                        loop {
                            match from.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    {
                                        let mut r = record.lock().expect("lock");
                                        let side = if upstream {
                                            &mut r.to_server
                                        } else {
                                            &mut r.to_client
                                        };
                                        side.extend_from_slice(&buffer[..n]);
                                    }
                                    if to.write_all(&buffer[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                };
                pipe(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    true,
                );
                pipe(server, client, false);
            }
        });
        Self {
            address,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    fn captured(&self) -> Vec<Connection> {
        self.connections
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.lock().expect("lock").clone())
            .collect()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs of at least `min` printable ASCII bytes (what `strings` would show).
fn readable_runs(bytes: &[u8], min: usize) -> Vec<String> {
    bytes
        .split(|b| !(b.is_ascii_graphic() || *b == b' '))
        .filter(|run| run.len() >= min)
        .map(|run| String::from_utf8_lossy(run).into_owned())
        .collect()
}

#[test]
fn a_relay_on_every_hop_sees_tls_records_only() {
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let household = deployment.token("household", Some(METER)).expect("token");
    let utility_token = deployment.token("utility", None).expect("token");
    let to_utility = Relay::start(deployment.utility().address());
    let to_authority = Relay::start(deployment.authority().address());

    // A month through the relays: the public key, receipts and batches.
    let mut run = deployment
        .meter(METER, "synthetic:5:0")
        .token(&household)
        .args(["--from", "2024-01-01", "--until", "2024-02-01"])
        .args(["--batch-days", "7", "--max-attempts", "3"])
        .command()
        .expect("command");
    let args: Vec<String> = run
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Point the meter at the relays instead of the servers.
    let mut relayed = std::process::Command::new(run.get_program());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        relayed.arg(&arg);
        match arg.as_str() {
            "--key-authority" => {
                args.next();
                relayed.arg(to_authority.url());
            }
            "--utility" => {
                args.next();
                relayed.arg(to_utility.url());
            }
            _ => {}
        }
    }
    for (key, value) in run.get_envs() {
        match value {
            Some(value) => relayed.env(key, value),
            None => relayed.env_remove(key),
        };
    }
    let output = relayed.output().expect("meter-client runs");
    assert!(
        output.status.success(),
        "the meter uploads through the relays: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = &mut run;

    // The utility's billing job through the relay to the key authority.
    let bill = deployment
        .utility_cli(
            &[
                "bill",
                "--period",
                "2024-01",
                "--group",
                "0",
                "--key-authority",
                &to_authority.url(),
            ],
            &utility_token,
        )
        .expect("utility-server bill runs");
    assert!(
        bill.status.success(),
        "{}",
        String::from_utf8_lossy(&bill.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&bill.stdout).expect("JSON report");
    assert_eq!(
        report["released"].as_array().map(Vec::len),
        Some(1),
        "the bill was released through the relay: {report}"
    );

    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("the household token", household.as_bytes().to_vec()),
        ("the utility token", utility_token.as_bytes().to_vec()),
        (
            "a token's signature",
            household
                .rsplit('.')
                .next()
                .expect("signature")
                .as_bytes()
                .to_vec(),
        ),
        // A JWT's start: `eyJ` and what follows (eight bytes or more, so that random
        // ciphertext bytes cannot match by chance).
        ("a JWT header", household.as_bytes()[..16].to_vec()),
        (
            "a token's claims",
            household
                .split('.')
                .nth(1)
                .expect("claims")
                .as_bytes()
                .to_vec(),
        ),
        ("the bearer scheme", b"Bearer".to_vec()),
        ("the meter id", METER.as_bytes().to_vec()),
        ("a gRPC path", b"seer.v1".to_vec()),
        ("the billing period", b"2024-01".to_vec()),
        ("the parameter set", b"N8192".to_vec()),
        ("a content type", b"application/grpc".to_vec()),
    ];
    let mut total = 0;
    for (hop, relay) in [
        ("meter → utility", &to_utility),
        ("→ key authority", &to_authority),
    ] {
        let connections = relay.captured();
        assert!(
            !connections.is_empty(),
            "{hop}: nothing went through the relay"
        );
        for connection in &connections {
            // Every connection opens with a TLS handshake record (ClientHello), and the server
            // answers with one: no h2c preface, no cleartext.
            assert_eq!(
                connection.to_server.get(..2),
                Some(&[0x16, 0x03][..]),
                "{hop}: a connection did not start with a TLS handshake"
            );
            assert_eq!(
                connection.to_client.get(..2),
                Some(&[0x16, 0x03][..]),
                "{hop}"
            );
            for bytes in [&connection.to_server, &connection.to_client] {
                total += bytes.len();
                for (what, secret) in &secrets {
                    assert!(!contains(bytes, secret), "{hop}: the capture holds {what}");
                }
                // No readable string longer than chance produces in random bytes (a run of 24
                // printable bytes has probability 0.37^24 ≈ 5e-11 at each position).
                let runs = readable_runs(bytes, 24);
                assert!(runs.is_empty(), "{hop}: readable strings {runs:?}");
            }
        }
    }
    // The ciphertexts went through (a month's closing batch alone is hundreds of KB).
    assert!(total > 1_000_000, "only {total} bytes relayed");
}

async fn node_info(channel: Channel) -> Result<v1::NodeInfo, tonic::Status> {
    NodeClient::new(channel)
        .get_info(v1::GetInfoRequest {})
        .await
        .map(tonic::Response::into_inner)
}

async fn connect(endpoint: tonic::transport::Endpoint) -> Result<Channel, String> {
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Whether a Node.GetInfo call through `endpoint` is served.
async fn served(endpoint: tonic::transport::Endpoint) -> bool {
    match connect(endpoint).await {
        Ok(channel) => node_info(channel).await.is_ok(),
        Err(_) => false,
    }
}

/// TLS files from another deployment's CA (trusting this deployment's CA for the server).
fn foreign_identity(dir: &std::path::Path, own: &TlsFiles) -> TlsFiles {
    let stranger = DeploymentCa::generate("stranger").expect("CA");
    let written = stranger
        .issue(&CertificateRequest::client(
            Party::try_new(PartyKind::Utility, "utility").expect("party"),
        ))
        .expect("issued")
        .write(dir, "stranger")
        .expect("written");
    TlsFiles {
        ca_file: own.ca_file.clone(),
        cert_file: written.cert_file,
        key_file: written.key_file,
        crl_file: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_anonymous_and_foreign_clients_are_refused_by_both_servers() {
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let utility = files(PartyKind::Utility, "utility").expect("certificate");
    let scratch = tempfile::tempdir().expect("dir");
    let foreign = foreign_identity(scratch.path(), &utility);
    let ca_only = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
        std::fs::read(&utility.ca_file).expect("CA"),
    ));
    let servers: [&ServerProcess; 2] = [deployment.authority(), deployment.utility()];
    for server in servers {
        let name = server.name();
        // The positive control: a client of the deployment is served.
        assert!(
            served(utility.endpoint(&server.uri()).expect("endpoint")).await,
            "{name} serves a client of the deployment"
        );
        // Plaintext h2c, to the same port.
        let plain = seer_tls::config::endpoint_with(&server.plaintext_uri(), None).expect("url");
        assert!(!served(plain).await, "{name} served a plaintext client");
        // TLS without a client certificate.
        let anonymous =
            seer_tls::config::endpoint_with(&server.uri(), Some(&ca_only)).expect("url");
        assert!(
            !served(anonymous).await,
            "{name} served a client without a certificate"
        );
        // A certificate of another CA.
        assert!(
            !served(foreign.endpoint(&server.uri()).expect("endpoint")).await,
            "{name} served a client of another CA"
        );
    }
}

/// A meter's certificate revoked with the deployment CA's list (`seer pki revoke`'s way) while
/// both servers run: neither completes a handshake with it from then on (they re-read the
/// list), and another meter's certificate is still served.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_meter_certificate_is_refused_by_both_running_servers() {
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let revoked = files(PartyKind::Meter, "M-REVOKED-CERT").expect("certificate");
    let other = files(PartyKind::Meter, "M-STILL-VALID").expect("certificate");
    let servers: [&ServerProcess; 2] = [deployment.authority(), deployment.utility()];
    for server in servers {
        assert!(
            served(revoked.endpoint(&server.uri()).expect("endpoint")).await,
            "{} serves the meter before revocation",
            server.name()
        );
    }
    let pki = seer_tests::pki::test_pki().expect("pki");
    let revocation = pki.revoke(&revoked).expect("revoked");
    assert!(revocation.listed >= 1);
    for server in servers {
        let name = server.name();
        assert!(
            !served(revoked.endpoint(&server.uri()).expect("endpoint")).await,
            "{name} served a revoked certificate"
        );
        assert!(
            served(other.endpoint(&server.uri()).expect("endpoint")).await,
            "{name} no longer serves an unrevoked meter"
        );
    }
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("header");
    request.metadata_mut().insert("authorization", value);
    request
}

async fn channel_as(files: &TlsFiles, server: &ServerProcess) -> Channel {
    connect(files.endpoint(&server.uri()).expect("endpoint"))
        .await
        .expect("a client of the deployment connects")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_accepted_only_with_its_own_partys_certificate() {
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let token_a = deployment.token("household", Some("M-A")).expect("token");
    // Household tokens name one audience: the key authority's for receipts.
    let token_a_ka = deployment
        .household_token("M-A", "seer-key-authority")
        .expect("token");
    let meter_a = files(PartyKind::Meter, "M-A").expect("certificate");
    let meter_b = files(PartyKind::Meter, "M-B").expect("certificate");
    let utility_token = deployment.token("utility", None).expect("token");
    let auditor_token = deployment.token("auditor", None).expect("token");

    // The utility server: meter A's cursor with A's token, from A's connection and from B's.
    let cursor = |channel: Channel, token: String| async move {
        IngestClient::new(channel)
            .get_cursor(bearer(
                v1::GetCursorRequest {
                    meter_id: "M-A".into(),
                },
                &token,
            ))
            .await
    };
    let own = cursor(
        channel_as(&meter_a, deployment.utility()).await,
        token_a.clone(),
    )
    .await;
    assert_eq!(own.expect("A reads its own cursor").into_inner().last, 0);
    let stolen = cursor(
        channel_as(&meter_b, deployment.utility()).await,
        token_a.clone(),
    )
    .await
    .expect_err("A's token from B's certificate");
    assert_eq!(stolen.code(), tonic::Code::Unauthenticated, "{stolen:?}");
    assert!(
        stolen.message().contains("names meter M-B"),
        "the refusal says why: {stolen:?}"
    );
    // A utility token needs the utility's certificate.
    let utility_from_meter = cursor(
        channel_as(&meter_b, deployment.utility()).await,
        utility_token.clone(),
    )
    .await
    .expect_err("a utility token from a meter's certificate");
    assert_eq!(utility_from_meter.code(), tonic::Code::Unauthenticated);
    let utility_files = files_for_token(&utility_token).expect("certificate");
    assert!(
        cursor(
            channel_as(&utility_files, deployment.utility()).await,
            utility_token.clone()
        )
        .await
        .is_ok()
    );

    // The key authority: a receipt with A's token from B's certificate is refused before it
    // is looked at; from A's own certificate it gets as far as the receipt's checks.
    let receipt = || v1::ReceiptRequest {
        meter_id: "M-A".into(),
        ..Default::default()
    };
    let from_b = ReceiptsClient::new(channel_as(&meter_b, deployment.authority()).await)
        .record(bearer(receipt(), &token_a_ka))
        .await
        .expect_err("A's token from B's certificate");
    assert_eq!(from_b.code(), tonic::Code::Unauthenticated, "{from_b:?}");
    let from_a = ReceiptsClient::new(channel_as(&meter_a, deployment.authority()).await)
        .record(bearer(receipt(), &token_a_ka))
        .await;
    assert!(
        !matches!(&from_a, Err(s) if s.code() == tonic::Code::Unauthenticated),
        "A's own connection is authenticated: {from_a:?}"
    );

    // An auditor token needs an auditor's certificate.
    let verify = |channel: Channel| {
        let token = auditor_token.clone();
        async move {
            AuditClient::new(channel)
                .verify(bearer(v1::VerifyAuditLogRequest::default(), &token))
                .await
        }
    };
    let auditor = files_for_token(&auditor_token).expect("certificate");
    assert!(
        verify(channel_as(&auditor, deployment.authority()).await)
            .await
            .is_ok()
    );
    let from_utility = verify(channel_as(&utility_files, deployment.authority()).await)
        .await
        .expect_err("an auditor token from the utility's certificate");
    assert_eq!(from_utility.code(), tonic::Code::Unauthenticated);
}

#[test]
fn a_meter_whose_certificate_names_another_meter_uploads_nothing() {
    let runtime = seer_tests::runtime().expect("runtime");
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let token_a = deployment.token("household", Some("M-A")).expect("token");
    let utility_token = deployment.token("utility", None).expect("token");
    // Meter A's token and state, but meter B's certificate.
    let mut command = deployment
        .meter("M-A", "synthetic:5:0")
        .token(&token_a)
        .args(["--from", "2024-01-01", "--until", "2024-01-03"])
        .args(["--batch-days", "1", "--max-attempts", "1"])
        .command()
        .expect("command");
    let meter_b = files(PartyKind::Meter, "M-B").expect("certificate");
    command.envs(meter_b.client_env());
    let output = command.output().expect("meter-client runs");
    assert!(
        !output.status.success(),
        "a meter with another meter's certificate must be refused"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("client certificate"), "{stderr}");
    let stored = runtime
        .block_on(deployment.cursor("M-A", &utility_token))
        .expect("cursor");
    assert_eq!(stored, 0, "nothing was stored for meter A");

    // Enrolment: meter C's one-time code, presented from meter B's certificate, is refused
    // (and logged); the code stays unused, so meter C then enrols with its own certificate.
    let code = deployment.enrolment_code("M-C").expect("code");
    let state = deployment.dir().join("meter-M-C-from-B");
    let output = std::process::Command::new(seer_tests::bin_path("meter-client").expect("bin"))
        .args(["enrol", "--meter-id", "M-C", "--code", &code])
        .args(["--key-authority", &deployment.authority().uri()])
        .arg("--state")
        .arg(&state)
        .envs(meter_b.client_env())
        .output()
        .expect("meter-client enrol runs");
    assert!(
        !output.status.success(),
        "an enrolment from another meter's certificate must be refused"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("names meter M-B, not meter M-C"),
        "{stderr}"
    );
    let audit = runtime
        .block_on(seer_tests::audit::audit_entries(
            &deployment.dir().join("ka/audit.db"),
        ))
        .expect("audit log");
    assert!(
        seer_tests::audit::has_refusal(&audit, "enrol", Some("M-C"), "not meter M-C"),
        "the refusal is in the audit log"
    );
    let own = deployment.meter_enrol("M-C", &code).expect("runs");
    assert!(
        own.status.success(),
        "the same code from M-C's own certificate: {}",
        String::from_utf8_lossy(&own.stderr)
    );
}

#[test]
fn wrong_pinned_fingerprints_are_refused() {
    let runtime = seer_tests::runtime().expect("runtime");
    let deployment = Deployment::start(&DeploymentOptions::default()).expect("deployment");
    let token = deployment.token("household", Some("M-P")).expect("token");
    let utility_token = deployment.token("utility", None).expect("token");
    // The billing set's pin (the key authority also pins the daily lane's set).
    let billing = seer_ckks::ParameterSet::N8192_L2_SEC128.id();
    let (set, digest) = deployment
        .fingerprints()
        .public_key_pins
        .iter()
        .find_map(|pin| pin.split_once('=').filter(|(set, _)| *set == billing))
        .expect("the billing set's SET=BLAKE3");
    // One digit of the key authority's fingerprint changed.
    let mut wrong = digest.to_owned().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = format!("{set}={}", String::from_utf8(wrong).expect("hex"));
    let mut command = deployment
        .meter("M-P", "synthetic:5:1")
        .token(&token)
        .args(["--from", "2024-01-01", "--until", "2024-01-03"])
        .args(["--batch-days", "1", "--max-attempts", "2"])
        .command()
        .expect("command");
    command.env("SEER_METER_PUBLIC_KEY_PINS", &wrong);
    let output = command.output().expect("meter-client runs");
    assert!(!output.status.success(), "a key other than the pinned one");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pins") && stderr.contains("key-authority fingerprints"),
        "the error says what to do: {stderr}"
    );
    assert_eq!(
        runtime
            .block_on(deployment.cursor("M-P", &utility_token))
            .expect("cursor"),
        0
    );
    // The right pin: the same meter goes through.
    let ok = deployment
        .meter("M-P", "synthetic:5:1")
        .token(&token)
        .args(["--from", "2024-01-01", "--until", "2024-01-03"])
        .args(["--batch-days", "1", "--max-attempts", "2"])
        .output()
        .expect("meter-client runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // A utility server whose JWT key pin does not match the key file refuses to start.
    let pem = deployment.dir().join("ka-jwt-public.pem");
    let mut env = seer_tests::pki::utility_tls_env().expect("certificate");
    env.extend([
        ("SEER_UTILITY__SERVER__PORT".to_owned(), "0".to_owned()),
        (
            "SEER_UTILITY__DATABASE__URL".to_owned(),
            format!("sqlite://{}", deployment.dir().join("other.db").display()),
        ),
        (
            "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_FILE".to_owned(),
            pem.display().to_string(),
        ),
        (
            "SEER_UTILITY__AUTH__JWT_PUBLIC_KEY_SHA256".to_owned(),
            "ab".repeat(32),
        ),
    ]);
    let refused = ServerProcess::spawn_with("utility-server", &env)
        .expect_err("a JWT key other than the pinned one");
    let message = format!("{refused:#}");
    assert!(
        message.contains("key-authority fingerprints"),
        "the error says what to do: {message}"
    );
}

/// The CA of the local PostgreSQL's certificate, as `scripts/services.sh` installs it
/// (`SEER_TEST_POSTGRES_CA` overrides); `None` (after a note) when there is none and CI is not
/// set.
fn postgres_ca() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("SEER_TEST_POSTGRES_CA").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/postgres-tls/ca.pem"),
        std::path::PathBuf::from,
    );
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").map_or(true, |ci| ci != "true"),
        "CI=true but {} is missing: run scripts/services.sh",
        path.display()
    );
    eprintln!(
        "note: skipping the PostgreSQL TLS test: {} is missing (scripts/services.sh makes it)",
        path.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_connections_verify_the_servers_certificate() {
    let Some(ca) = postgres_ca() else { return };
    let Some(admin) = seer_service::testing::postgres_admin_url("TLS").await else {
        return;
    };
    let admin = admin.split('?').next().expect("base").to_owned();
    let tls = format!("{admin}?sslmode=verify-full&sslrootcert={}", ca.display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&tls)
        .await
        .expect("verify-full against the test CA");
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("pg_stat_ssl");
    assert!(ssl, "the connection is encrypted");
    pool.close().await;

    // A CA that did not sign the server's certificate: refused.
    let scratch = tempfile::tempdir().expect("dir");
    let stranger = scratch.path().join("stranger.pem");
    std::fs::write(
        &stranger,
        DeploymentCa::generate("stranger")
            .expect("CA")
            .certificate_pem(),
    )
    .expect("written");
    let refused = sqlx::AnyPool::connect(&format!(
        "{admin}?sslmode=verify-full&sslrootcert={}",
        stranger.display()
    ))
    .await;
    assert!(refused.is_err(), "a server certificate of another CA");

    // The utility's store, migrations and all, over verify-full.
    let database = seer_service::testing::PostgresDatabase::create(&tls, "mtls").await;
    let store = utility_server::store::Store::connect(database.url())
        .await
        .expect("the store opens over TLS");
    drop(store);
}
