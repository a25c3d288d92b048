//! The key authority's Ed25519 signing key: generated on first start, kept in a PKCS#8 PEM file
//! of mode 0600, held in memory in types that zeroize on drop, never printed.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use zeroize::Zeroizing;

use crate::{AuthError, key_id_of};

/// Largest key file read, in bytes: a PKCS#8 PEM Ed25519 key is about 120 bytes.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Whether [`JwtSigningKey::load_or_generate`] found a key or made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The key was read from the existing file.
    Loaded,
    /// The file did not exist; a fresh key was generated and written to it.
    Generated,
}

/// The key authority's Ed25519 signing key: it signs JWTs (EdDSA) and the audit log's head.
///
/// The secret lives in an [`ed25519_dalek::SigningKey`] and in `jsonwebtoken`'s
/// [`jsonwebtoken::EncodingKey`] (its PKCS#8 form); both zeroize their bytes on drop. The type
/// implements neither `Clone` nor `Serialize`, and its `Debug` output shows only the public
/// key id. Share it with `Arc`.
pub struct JwtSigningKey {
    signing: ed25519_dalek::SigningKey,
    encoding: jsonwebtoken::EncodingKey,
    key_id: String,
}

impl std::fmt::Debug for JwtSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigningKey")
            .field("key_id", &self.key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl JwtSigningKey {
    /// Generates a fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// When the random number generator fails.
    pub fn generate() -> Result<Self, AuthError> {
        let mut seed = Zeroizing::new([0_u8; ed25519_dalek::SECRET_KEY_LENGTH]);
        getrandom::fill(seed.as_mut_slice()).map_err(|e| AuthError::Random(e.to_string()))?;
        Self::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    fn from_signing_key(signing: ed25519_dalek::SigningKey) -> Result<Self, AuthError> {
        let der = signing.to_pkcs8_der().map_err(|_| {
            AuthError::InvalidRequest("encoding the signing key as PKCS#8 failed".into())
        })?;
        let encoding = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
        let key_id = key_id_of(&signing.verifying_key());
        Ok(Self {
            signing,
            encoding,
            key_id,
        })
    }

    /// Loads the key from `path`, or, when the file does not exist, generates one and writes it
    /// there (mode 0600, created atomically: a crash never leaves a half-written key file).
    ///
    /// An existing file must be a regular file that neither group nor others may read or write;
    /// otherwise this refuses with [`AuthError::KeyFilePermissions`], whose message says which
    /// `chmod` to run.
    ///
    /// # Errors
    /// When the file cannot be read or created, has loose permissions, or does not hold a
    /// PKCS#8 PEM Ed25519 private key.
    pub fn load_or_generate(path: &Path) -> Result<(Self, KeyOrigin), AuthError> {
        match Self::load(path) {
            Ok(key) => Ok((key, KeyOrigin::Loaded)),
            Err(AuthError::KeyFileIo { source, .. }) if source.kind() == ErrorKind::NotFound => {
                let key = Self::generate()?;
                key.write_new(path)?;
                tracing::info!(path = %path.display(), key_id = %key.key_id, "generated a new signing key");
                Ok((key, KeyOrigin::Generated))
            }
            Err(other) => Err(other),
        }
    }

    /// Loads the key from an existing file (see [`Self::load_or_generate`] for the checks).
    ///
    /// # Errors
    /// When the file is missing or unreadable, has loose permissions, or does not hold a
    /// PKCS#8 PEM Ed25519 private key.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let io = |action: &'static str| {
            let path = path.to_path_buf();
            move |source| AuthError::KeyFileIo {
                action,
                path,
                source,
            }
        };
        let file = File::open(path).map_err(io("opening"))?;
        let metadata = file.metadata().map_err(io("inspecting"))?;
        if !metadata.is_file() {
            return Err(AuthError::KeyFileNotRegular {
                path: path.to_path_buf(),
            });
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(AuthError::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        // Room for the whole file up front, so that reading never reallocates (and leaves
        // copies of the key behind in freed memory).
        let mut pem = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_LEN as usize + 64));
        file.take(MAX_KEY_FILE_LEN)
            .read_to_string(&mut pem)
            .map_err(io("reading"))?;
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|_| {
            AuthError::KeyFileFormat {
                path: path.to_path_buf(),
            }
        })?;
        Self::from_signing_key(signing)
    }

    /// Writes the key to a new file at `path` with mode 0600: a temporary file in the same
    /// directory is written and synced, then renamed into place, and the directory synced.
    fn write_new(&self, path: &Path) -> Result<(), AuthError> {
        let io = |action: &'static str, at: &Path| {
            let at = at.to_path_buf();
            move |source| AuthError::KeyFileIo {
                action,
                path: at,
                source,
            }
        };
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&directory).map_err(io("creating the directory of", path))?;
        let pem = self
            .signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|_| {
                AuthError::InvalidRequest("encoding the signing key as PEM failed".into())
            })?;
        let mut suffix = [0_u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| AuthError::Random(e.to_string()))?;
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "signing-key".to_owned());
        let temporary = directory.join(format!(".{file_name}.{}.tmp", hex::encode(suffix)));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(io("creating", &temporary))?;
            // The mode passed to open() is filtered by the umask; 0600 is what we want whatever
            // the umask says.
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io("setting permissions of", &temporary))?;
            file.write_all(pem.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io("writing", &temporary))?;
            // Never replace an existing key: link() fails when `path` exists (rename would
            // silently overwrite a key another process created meanwhile).
            fs::hard_link(&temporary, path).map_err(io("creating", path))?;
            File::open(&directory)
                .and_then(|dir| dir.sync_all())
                .map_err(io("syncing the directory of", path))
        })();
        let _ = fs::remove_file(&temporary);
        result
    }

    /// The public half.
    #[must_use]
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), the form
    /// other services load with [`super::TokenVerifier::from_public_key_pem`].
    ///
    /// # Errors
    /// Never in practice (encoding a valid key); reported rather than panicking.
    pub fn public_key_pem(&self) -> Result<String, AuthError> {
        self.verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|_| AuthError::InvalidPublicKey)
    }

    /// A short public identifier of this key: hex of the first 8 bytes of the SHA-256 of the
    /// raw public key. Carried as the JWT `kid` header and recorded with the audit head.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `message` with Ed25519. Callers must prefix their messages with a domain
    /// separation tag so that a signature for one purpose can never be taken for another (JWT
    /// signing inputs start with the base64url of `{"`, which no tag does).
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.signing.sign(message)
    }

    pub(super) fn encoding_key(&self) -> &jsonwebtoken::EncodingKey {
        &self.encoding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify_signature;

    fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn secret_holders_zeroize_on_drop() {
        assert_zeroize_on_drop::<ed25519_dalek::SigningKey>();
        assert_zeroize_on_drop::<jsonwebtoken::EncodingKey>();
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = JwtSigningKey::generate().expect("key");
        let debug = format!("{key:?}");
        assert!(debug.contains(key.key_id()));
        assert!(debug.contains("REDACTED"));
        let secret_hex = hex::encode(key.signing.to_bytes());
        assert!(!debug.contains(&secret_hex));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let key = JwtSigningKey::generate().expect("key");
        let other = JwtSigningKey::generate().expect("key");
        let signature = key.sign(b"SEER-TEST\0message");
        assert!(verify_signature(
            &key.verifying_key(),
            b"SEER-TEST\0message",
            &signature
        ));
        assert!(!verify_signature(
            &key.verifying_key(),
            b"SEER-TEST\0other",
            &signature
        ));
        assert!(!verify_signature(
            &other.verifying_key(),
            b"SEER-TEST\0message",
            &signature
        ));
    }
}
