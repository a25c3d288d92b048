//! The key authority's CKKS key sets: generated on first start, loaded and checked after.
//!
//! One directory per parameter set under the key directory (mode 0700):
//!
//! | file | mode | content |
//! |---|---|---|
//! | `secret.key` | 0600 | the CKKS secret key (SEER frame, checksummed) |
//! | `public.key` | 0644 | the public key |
//! | `relin.keys` | 0644 | relinearization keys |
//! | `galois.keys` | 0644 | Galois keys for the configured rotation steps only |
//!
//! Files are written to a temporary name, synced and renamed, so a crash never leaves a
//! half-written key. A secret key file readable by group or others is refused. On load the
//! public key is checked against the secret key (an encryption under it must decrypt under
//! the secret key), so a swapped or stale `public.key` is caught before any meter uses it.
//! Evaluation keys whose steps differ from the configuration are regenerated from the secret
//! key. The secret key is held only inside a [`Decryptor`] (SEAL memory cleared on
//! destruction) and its serialized form only in zeroize-on-drop buffers; it is never logged.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use seer_ckks::{
    CkksContext, CkksError, Decryptor, Encryptor, GaloisKeys, KeyGenerator, ParameterSet,
    PublicKey, RelinKeys, SecretKey,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Configuration of one key set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetSpec {
    /// The CKKS parameter-set id, e.g. `ckks1-n8192-q60-s40x2-p60`.
    pub parameter_set: String,
    /// Rotation steps the registered computations need (Galois keys for these only).
    #[serde(default)]
    pub galois_steps: Vec<i64>,
}

/// Why the key store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The secret key file is readable or writable by group or others.
    #[error("{path} has mode {mode:03o}; the secret key must be private: run `chmod 600 {path}`")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file is malformed, corrupted or for another parameter set.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: CkksError,
    },
    /// The public key on disk does not belong to the secret key.
    #[error("{path} does not belong to the secret key next to it: delete it to regenerate it")]
    PublicKeyMismatch {
        /// The public key file.
        path: PathBuf,
    },
    /// The configuration is invalid.
    #[error("invalid key configuration: {0}")]
    Config(String),
    /// An engine operation failed.
    #[error(transparent)]
    Ckks(#[from] CkksError),
}

/// One parameter set's keys: the secret key (inside its decryptor) and the public objects.
pub struct KeySet {
    ctx: CkksContext,
    decryptor: Decryptor,
    public_key: Arc<Vec<u8>>,
    relin_keys: Arc<Vec<u8>>,
    galois_keys: Option<Arc<Vec<u8>>>,
    galois_steps: Vec<i32>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("parameter_set", &self.ctx.parameter_set_id())
            .field("galois_steps", &self.galois_steps)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// The CKKS context.
    pub fn context(&self) -> &CkksContext {
        &self.ctx
    }

    /// The decryptor of the key authority's own re-executed outputs (the only use of the
    /// secret key; see [`crate::outputs`]: nothing else can be decrypted).
    pub fn output_decryptor(&self) -> crate::outputs::OutputDecryptor<'_> {
        crate::outputs::OutputDecryptor::new(&self.decryptor)
    }

    /// The serialized public key.
    pub fn public_key_bytes(&self) -> &Arc<Vec<u8>> {
        &self.public_key
    }

    /// The serialized relinearization keys.
    pub fn relin_keys_bytes(&self) -> &Arc<Vec<u8>> {
        &self.relin_keys
    }

    /// The serialized Galois keys, if the set has rotation steps.
    pub fn galois_keys_bytes(&self) -> Option<&Arc<Vec<u8>>> {
        self.galois_keys.as_ref()
    }

    /// The rotation steps of the Galois keys (normalized left rotations).
    pub fn galois_steps(&self) -> &[i32] {
        &self.galois_steps
    }
}

/// All key sets of the key authority, by parameter-set id.
#[derive(Debug, Default)]
pub struct KeyStore {
    sets: BTreeMap<String, KeySet>,
}

impl KeyStore {
    /// Opens the store in `dir`, generating what is missing. Blocking and CPU-heavy (key
    /// generation at n = 32768 takes seconds): call it off the async runtime.
    ///
    /// # Errors
    /// See [`KeyStoreError`]; every error names the file and what to do.
    pub fn open(dir: &Path, specs: &[KeySetSpec]) -> Result<Self, KeyStoreError> {
        if specs.is_empty() {
            return Err(KeyStoreError::Config("no key sets configured".into()));
        }
        // Generate-or-load under the key directory's lock: two processes starting at once
        // on an empty directory end with one key set (the second loads the first's).
        let _lock = lock_key_dir(dir)?;
        let mut sets = BTreeMap::new();
        for spec in specs {
            let params = ParameterSet::try_from_id(&spec.parameter_set)?;
            let id = params.id();
            if sets.contains_key(&id) {
                return Err(KeyStoreError::Config(format!(
                    "parameter set {id} is configured twice"
                )));
            }
            let set = open_set(&dir.join(&id), params, &spec.galois_steps)?;
            sets.insert(id, set);
        }
        Ok(Self { sets })
    }

    /// The key set for a parameter-set id.
    pub fn get(&self, parameter_set_id: &str) -> Option<&KeySet> {
        self.sets.get(parameter_set_id)
    }

    /// All key sets, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &KeySet)> {
        self.sets.iter().map(|(id, set)| (id.as_str(), set))
    }
}

/// The exclusive hold of a key directory (see [`lock_key_dir`]); released on drop.
#[derive(Debug)]
pub struct KeyDirLock {
    _dir: fs::File,
}

/// Creates `dir` (mode 0700) when missing and takes its exclusive advisory lock (`flock` on
/// the directory itself, so no file is added to it), waiting while another process or thread
/// holds it. Every generate-or-load of key material (the CKKS key sets, the JWT signing key)
/// runs under it, so key-authority processes sharing a key directory never generate two
/// different keys. Blocking: call it off the async runtime.
///
/// # Errors
/// [`KeyStoreError::Io`] when the directory cannot be created, opened or locked.
pub fn lock_key_dir(dir: &Path) -> Result<KeyDirLock, KeyStoreError> {
    create_private_dir(dir)?;
    let file = fs::File::open(dir).map_err(io(dir))?;
    file.lock().map_err(io(dir))?;
    Ok(KeyDirLock { _dir: file })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), KeyStoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename) with `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyStoreError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent))?;
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, KeyStoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

fn key_error(path: &Path) -> impl FnOnce(CkksError) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Key {
        path: path.to_path_buf(),
        source,
    }
}

fn load_or_create_secret(ctx: &CkksContext, path: &Path) -> Result<SecretKey, KeyStoreError> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyStoreError::InsecurePermissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            let bytes = Zeroizing::new(fs::read(path).map_err(io(path))?);
            let secret = SecretKey::from_bytes(ctx, &bytes).map_err(key_error(path))?;
            tracing::info!(parameter_set = ctx.parameter_set_id(), path = %path.display(), "secret key loaded");
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = KeyGenerator::new(ctx)?.secret_key()?;
            let bytes = secret.to_bytes(ctx)?;
            write_atomic(path, &bytes, 0o600)?;
            tracing::info!(parameter_set = ctx.parameter_set_id(), path = %path.display(), "secret key generated");
            Ok(secret)
        }
        Err(e) => Err(io(path)(e)),
    }
}

fn open_set(dir: &Path, params: ParameterSet, steps: &[i64]) -> Result<KeySet, KeyStoreError> {
    create_private_dir(dir)?;
    let ctx = CkksContext::new(params)?;
    let secret = load_or_create_secret(&ctx, &dir.join("secret.key"))?;
    let keygen = KeyGenerator::from_secret_key(&ctx, &secret)?;
    let decryptor = Decryptor::new(&ctx, &secret)?;
    drop(secret);

    // Public key: load and prove it belongs to the secret key, or generate it.
    let pk_path = dir.join("public.key");
    let public_key = match read_optional(&pk_path)? {
        Some(bytes) => {
            let pk = PublicKey::from_bytes(&ctx, &bytes).map_err(key_error(&pk_path))?;
            check_pair(&ctx, &pk, &decryptor).map_err(|_| KeyStoreError::PublicKeyMismatch {
                path: pk_path.clone(),
            })?;
            bytes
        }
        None => {
            let bytes = keygen.public_key()?.to_bytes(&ctx);
            write_atomic(&pk_path, &bytes, 0o644)?;
            bytes
        }
    };

    let rk_path = dir.join("relin.keys");
    let relin_keys = match read_optional(&rk_path)? {
        Some(bytes) => {
            RelinKeys::from_bytes(&ctx, &bytes).map_err(key_error(&rk_path))?;
            bytes
        }
        None => {
            let bytes = keygen.relin_keys()?.to_bytes(&ctx);
            write_atomic(&rk_path, &bytes, 0o644)?;
            bytes
        }
    };

    let gk_path = dir.join("galois.keys");
    let (galois_keys, galois_steps) = if steps.is_empty() {
        let _ = fs::remove_file(&gk_path);
        (None, Vec::new())
    } else {
        let wanted = normalized(&ctx, steps)?;
        let existing = match read_optional(&gk_path)? {
            Some(bytes) => {
                let keys = GaloisKeys::from_bytes(&ctx, &bytes).map_err(key_error(&gk_path))?;
                (keys.steps() == wanted.as_slice()).then_some(bytes)
            }
            None => None,
        };
        let bytes = match existing {
            Some(bytes) => bytes,
            None => {
                let bytes = keygen.galois_keys(steps)?.to_bytes(&ctx);
                write_atomic(&gk_path, &bytes, 0o644)?;
                tracing::info!(parameter_set = ctx.parameter_set_id(), steps = ?wanted, "galois keys generated");
                bytes
            }
        };
        (Some(Arc::new(bytes)), wanted)
    };

    tracing::info!(
        parameter_set = ctx.parameter_set_id(),
        public_key_bytes = public_key.len(),
        relin_keys_bytes = relin_keys.len(),
        galois_keys_bytes = galois_keys.as_ref().map_or(0, |g| g.len()),
        "key set ready"
    );
    Ok(KeySet {
        ctx,
        decryptor,
        public_key: Arc::new(public_key),
        relin_keys: Arc::new(relin_keys),
        galois_keys,
        galois_steps,
    })
}

/// The steps as the engine normalizes them (left rotations in `1..slots`, sorted, unique).
fn normalized(ctx: &CkksContext, steps: &[i64]) -> Result<Vec<i32>, KeyStoreError> {
    let slots = ctx.slots() as i64;
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        if *s <= -slots || *s >= slots {
            return Err(KeyStoreError::Config(format!(
                "rotation step {s} is outside ({}, {slots}) for {}",
                -slots,
                ctx.parameter_set_id()
            )));
        }
        let n = s.rem_euclid(slots) as i32;
        if n != 0 {
            out.push(n);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Encrypts a probe under `pk` and checks that `decryptor` recovers it.
fn check_pair(ctx: &CkksContext, pk: &PublicKey, decryptor: &Decryptor) -> Result<(), CkksError> {
    let probe = [1.0, -2.0, 3.5, 0.25];
    let ct = Encryptor::new(ctx, pk)?.encrypt_values(&probe)?;
    let back = decryptor.decrypt_values(&ct)?;
    if probe.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-3) {
        Ok(())
    } else {
        Err(CkksError::ForeignObject {
            expected: ctx.parameter_set_id().to_string(),
        })
    }
}
