//! Ed25519 private keys in PKCS#8 PEM files of mode 0600: the one place SEER reads and writes
//! them, for the key authority's signing key and for meters' device keys alike.
//!
//! A file that group or others can read or write is refused with a message naming the `chmod`
//! to run; a new file is written to a temporary file in the same directory, synced and linked
//! into place (never replacing an existing key), and the directory synced. Key bytes read from
//! disk live only in buffers that zeroize on drop.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use zeroize::Zeroizing;

use crate::AuthError;

/// Largest key file read, in bytes: a PKCS#8 PEM Ed25519 key is about 120 bytes.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Whether a `load_or_generate` found a key or made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The key was read from the existing file.
    Loaded,
    /// The file did not exist; a fresh key was generated and written to it.
    Generated,
}

/// A fresh Ed25519 key from the operating system's CSPRNG.
pub(crate) fn generate() -> Result<ed25519_dalek::SigningKey, AuthError> {
    let mut seed = Zeroizing::new([0_u8; ed25519_dalek::SECRET_KEY_LENGTH]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Loads the key at `path`, or, when the file does not exist, generates one and writes it
/// there (see [`write_new`]).
pub(crate) fn load_or_generate(
    path: &Path,
) -> Result<(ed25519_dalek::SigningKey, KeyOrigin), AuthError> {
    match load(path) {
        Ok(key) => Ok((key, KeyOrigin::Loaded)),
        Err(AuthError::KeyFileIo { source, .. }) if source.kind() == ErrorKind::NotFound => {
            let key = generate()?;
            write_new(path, &key)?;
            Ok((key, KeyOrigin::Generated))
        }
        Err(other) => Err(other),
    }
}

/// Loads the key from an existing file: a regular file that neither group nor others may read
/// or write, holding a PKCS#8 PEM Ed25519 private key.
pub(crate) fn load(path: &Path) -> Result<ed25519_dalek::SigningKey, AuthError> {
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
    // Room for the whole file up front, so that reading never reallocates (and leaves copies
    // of the key behind in freed memory).
    let mut pem = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_LEN as usize + 64));
    file.take(MAX_KEY_FILE_LEN)
        .read_to_string(&mut pem)
        .map_err(io("reading"))?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|_| AuthError::KeyFileFormat {
        path: path.to_path_buf(),
    })
}

/// Writes `key` to a new file at `path` with mode 0600: a temporary file in the same directory
/// is written and synced, then linked into place (failing when `path` exists), and the
/// directory synced.
pub(crate) fn write_new(path: &Path, key: &ed25519_dalek::SigningKey) -> Result<(), AuthError> {
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
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|_| AuthError::InvalidRequest("encoding a private key as PEM failed".into()))?;
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
