//! The key store on disk and `seer.v1.Keys` over real gRPC.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use key_authority::keys::{KeySetSpec, KeyStore, KeyStoreError};
use key_authority::{Application, Settings};
use seer_ckks::{
    CkksContext, Decryptor, Encryptor, GaloisKeys, ParameterSet, PublicKey, SecretKey,
};
use seer_proto::WithMessageLimits as _;
use seer_proto::v1::keys_client::KeysClient;
use seer_proto::v1::{GetKeyRequest, KeyKind, ListKeySetsRequest};

fn spec(steps: &[i64]) -> Vec<KeySetSpec> {
    vec![KeySetSpec {
        parameter_set: ParameterSet::N8192_L2_SEC128.id(),
        galois_steps: steps.to_vec(),
    }]
}

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generates_then_reloads_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("keys");
    let id = ParameterSet::N8192_L2_SEC128.id();
    let first = KeyStore::open(&root, &spec(&[1, 2])).unwrap();
    let set_dir = root.join(&id);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&set_dir.join("secret.key")), 0o600);
    assert_eq!(mode(&set_dir.join("public.key")), 0o644);
    let pk_bytes = first.get(&id).unwrap().public_key_bytes().clone();
    drop(first);

    let second = KeyStore::open(&root, &spec(&[1, 2])).unwrap();
    let set = second.get(&id).unwrap();
    assert_eq!(
        set.public_key_bytes(),
        &pk_bytes,
        "reloaded, not regenerated"
    );
    // The reloaded secret key decrypts what the published public key encrypts.
    let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).unwrap();
    let pk = PublicKey::from_bytes(&ctx, &pk_bytes).unwrap();
    let ct = Encryptor::new(&ctx, &pk)
        .unwrap()
        .encrypt_values(&[12.5, -3.0])
        .unwrap();
    // (The store hands out no decryptor for inputs: read the key file as the test's oracle.)
    let secret =
        SecretKey::from_bytes(&ctx, &fs::read(set_dir.join("secret.key")).unwrap()).unwrap();
    let back = Decryptor::new(&ctx, &secret)
        .unwrap()
        .decrypt_values(&ct)
        .unwrap();
    assert!((back[0] - 12.5).abs() < 1e-6 && (back[1] + 3.0).abs() < 1e-6);
    assert_eq!(set.galois_steps(), &[1, 2]);
}

#[test]
fn a_readable_secret_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    KeyStore::open(dir.path(), &spec(&[])).unwrap();
    let secret = dir
        .path()
        .join(ParameterSet::N8192_L2_SEC128.id())
        .join("secret.key");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let err = KeyStore::open(dir.path(), &spec(&[])).unwrap_err();
    assert!(
        matches!(err, KeyStoreError::InsecurePermissions { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn a_foreign_or_corrupted_public_key_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    KeyStore::open(a.path(), &spec(&[])).unwrap();
    KeyStore::open(b.path(), &spec(&[])).unwrap();
    let id = ParameterSet::N8192_L2_SEC128.id();
    let a_pk = a.path().join(&id).join("public.key");
    fs::copy(b.path().join(&id).join("public.key"), &a_pk).unwrap();
    let err = KeyStore::open(a.path(), &spec(&[])).unwrap_err();
    assert!(
        matches!(err, KeyStoreError::PublicKeyMismatch { .. }),
        "{err}"
    );

    let mut bytes = fs::read(&a_pk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&a_pk, &bytes).unwrap();
    let err = KeyStore::open(a.path(), &spec(&[])).unwrap_err();
    assert!(matches!(err, KeyStoreError::Key { .. }), "{err}");
    assert!(err.to_string().contains("corrupted"), "{err}");
}

#[test]
fn changed_rotation_steps_regenerate_the_galois_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let id = ParameterSet::N8192_L2_SEC128.id();
    let first = KeyStore::open(dir.path(), &spec(&[1])).unwrap();
    let pk = first.get(&id).unwrap().public_key_bytes().clone();
    drop(first);
    let second = KeyStore::open(dir.path(), &spec(&[1, -1, 4])).unwrap();
    let set = second.get(&id).unwrap();
    assert_eq!(set.galois_steps(), &[1, 4, 4095]);
    assert_eq!(set.public_key_bytes(), &pk);
    let ctx = CkksContext::new(ParameterSet::N8192_L2_SEC128).unwrap();
    let keys = GaloisKeys::from_bytes(&ctx, set.galois_keys_bytes().unwrap()).unwrap();
    assert_eq!(keys.steps(), &[1, 4, 4095]);
    assert!(matches!(
        KeyStore::open(dir.path(), &spec(&[5000])),
        Err(KeyStoreError::Config(_))
    ));
}

#[tokio::test]
async fn keys_are_served_in_chunks_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.keys.dir = dir.path().join("keys");
    settings.auth.signing_key_file = dir.path().join("jwt.pem");
    settings.audit.database_url = format!("sqlite:{}", dir.path().join("audit.db").display());
    let app = Application::build(settings).await.unwrap();
    let store = app.keys().clone();
    let address = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let mut client = KeysClient::new(channel).with_seer_limits();
    let list = client
        .list_key_sets(ListKeySetsRequest {})
        .await
        .unwrap()
        .into_inner();
    // The configured set, and the daily lane's set that every key authority holds.
    assert_eq!(list.key_sets.len(), 2);
    let daily = list
        .key_sets
        .iter()
        .find(|s| s.parameter_set_id == ParameterSet::N4096_L1_SEC128.id())
        .expect("the daily key set");
    assert_eq!(
        daily.galois_steps,
        (1..16).map(|r| r * 32).collect::<Vec<i32>>()
    );
    let id = ParameterSet::N8192_L2_SEC128.id();
    let info = list
        .key_sets
        .iter()
        .find(|s| s.parameter_set_id == id)
        .expect("the configured key set");
    assert_eq!(info.galois_steps, vec![1, 2, 4, 8, 16, 32, 64]);
    let set = store.get(&id).unwrap();
    assert_eq!(
        info.public_key_blake3,
        blake3::hash(set.public_key_bytes()).to_hex().to_string()
    );
    for (kind, expected) in [
        (KeyKind::Public, set.public_key_bytes().as_slice()),
        (KeyKind::Relin, set.relin_keys_bytes().as_slice()),
        (KeyKind::Galois, set.galois_keys_bytes().unwrap().as_slice()),
    ] {
        let mut stream = client
            .get_key(GetKeyRequest {
                parameter_set_id: id.clone(),
                kind: kind.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut bytes = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = stream.message().await.unwrap() {
            assert_eq!(chunk.offset as usize, bytes.len());
            assert_eq!(chunk.total_bytes as usize, expected.len());
            bytes.extend_from_slice(&chunk.data);
            chunks += 1;
        }
        assert_eq!(bytes, expected, "{kind:?}");
        assert_eq!(
            chunks,
            expected
                .len()
                .div_ceil(key_authority::keys_api::CHUNK_BYTES)
        );
    }
    let status = client
        .get_key(GetKeyRequest {
            parameter_set_id: "ckks1-n4096-q60-s40x1-p60".into(),
            kind: KeyKind::Public.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = client
        .get_key(GetKeyRequest {
            parameter_set_id: id,
            kind: KeyKind::Unspecified.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
