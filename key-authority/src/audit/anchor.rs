//! The key authority's own anchor of its log head, kept outside the database.
//!
//! The signed head lives in the same database as the chain, so restoring an old copy of the
//! database (or deleting it) leaves a log that is consistent in itself. The anchor file is a
//! second, independent record of how far the log has reached: after every committed append the
//! key authority rewrites it (atomically, mode 0600) with the last sequence and hash, signed
//! with its key under [`ANCHOR_SIGNATURE_TAG`]. At start-up the database's head must be at or
//! past the anchor, and the anchored entry must still be in the chain with the anchored hash.
//!
//! A crash between the database commit and the anchor write leaves the database *ahead* of the
//! anchor, which is accepted (the newer entries must still chain to the anchored one); the
//! database is never legitimately *behind* it.
//!
//! In a key-authority pool (several processes on one database) each process has its own
//! anchor file, held under an exclusive lock ([`AnchorFile::lock`]) for as long as the log is
//! open: a second process naming the same file is refused at start. Each anchor then records
//! how far the chain had reached when its process last appended; it lags behind the head
//! while other members append, which a start accepts (the head may be ahead of the anchor).
//!
//! File format (text, one field per line):
//!
//! ```text
//! seer-audit-anchor v1
//! sequence 42
//! hash <64 hex digits>
//! key_id <id of the signing key>
//! signature <128 hex digits: Ed25519 over ANCHOR_SIGNATURE_TAG || sequence (u64 BE) || hash>
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::AuditError;
use super::entry::EntryHash;
use super::verify::Anchor;
use crate::auth::{JwtSigningKey, key_id_of, verify_signature};

pub use crate::auth::audit_chain::ANCHOR_SIGNATURE_TAG;

const MAGIC: &str = "seer-audit-anchor v1";

/// The message an anchor signature covers.
#[must_use]
pub fn anchor_message(anchor: &Anchor) -> Vec<u8> {
    crate::auth::audit_chain::anchor_message(anchor.sequence, anchor.entry_hash.as_bytes())
}

/// The exclusive hold of one anchor file (see [`AnchorFile::lock`]); released on drop (or
/// when the process ends).
#[derive(Debug)]
pub struct AnchorLock {
    _file: std::fs::File,
}

/// The anchor file at a path (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorFile {
    path: PathBuf,
}

impl AnchorFile {
    /// The anchor file at `path` (nothing is read or written yet).
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the exclusive lock of this anchor for the life of the returned guard: an
    /// advisory `flock` on `<anchor>.lock` beside it (created with mode 0600). Two processes
    /// (or two logs in one process) never share an anchor, so it only ever moves forward.
    ///
    /// # Errors
    /// [`AuditError::AnchorInUse`] when another holder has it; [`AuditError::AnchorIo`] when
    /// the lock file cannot be created.
    pub fn lock(&self) -> Result<AnchorLock, AuditError> {
        let io = |source| AuditError::AnchorIo {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut name = self
            .path
            .file_name()
            .map(std::ffi::OsStr::to_os_string)
            .unwrap_or_default();
        name.push(".lock");
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(dir.join(name)).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(AnchorLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::AnchorInUse {
                path: self.path.clone(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
        }
    }

    /// Reads the anchor and checks its signature with `key`; `None` when there is no file.
    ///
    /// # Errors
    /// [`AuditError::AnchorIo`] when the file cannot be read, [`AuditError::AnchorInvalid`]
    /// when it is malformed, names another key or its signature does not verify.
    pub fn read(&self, key: &ed25519_dalek::VerifyingKey) -> Result<Option<Anchor>, AuditError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(AuditError::AnchorIo {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        self.parse(&text, key).map(Some)
    }

    fn parse(&self, text: &str, key: &ed25519_dalek::VerifyingKey) -> Result<Anchor, AuditError> {
        let invalid = |detail: String| AuditError::AnchorInvalid {
            path: self.path.clone(),
            detail,
        };
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(invalid(format!("the first line is not {MAGIC:?}")));
        }
        let mut field = |name: &str| -> Result<String, AuditError> {
            let line = lines
                .next()
                .ok_or_else(|| invalid(format!("missing field {name}")))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("expected field {name}, found {line:?}")))
        };
        let sequence: u64 = field("sequence")?
            .parse()
            .map_err(|_| invalid("sequence is not a number".into()))?;
        let entry_hash = EntryHash::from_hex(&field("hash")?).map_err(invalid)?;
        let key_id = field("key_id")?;
        let signature = field("signature")?;
        let expected_id = key_id_of(key);
        if key_id != expected_id {
            return Err(invalid(format!(
                "signed by key {key_id}, this key authority's key is {expected_id}"
            )));
        }
        let mut bytes = [0_u8; 64];
        hex::decode_to_slice(&signature, &mut bytes)
            .map_err(|_| invalid("the signature is not 128 hex digits".into()))?;
        let anchor = Anchor {
            sequence,
            entry_hash,
        };
        if !verify_signature(
            key,
            &anchor_message(&anchor),
            &ed25519_dalek::Signature::from_bytes(&bytes),
        ) {
            return Err(invalid(format!(
                "the signature does not cover sequence {sequence} with hash {entry_hash}"
            )));
        }
        Ok(anchor)
    }

    /// Signs `anchor` with `key` and replaces the file atomically (a temporary file with mode
    /// 0600 in the same directory, synced, then renamed over the old one; the directory is
    /// synced too).
    ///
    /// # Errors
    /// [`AuditError::AnchorIo`] when the file cannot be written.
    pub fn write(&self, anchor: &Anchor, key: &JwtSigningKey) -> Result<(), AuditError> {
        let io = |source| AuditError::AnchorIo {
            path: self.path.clone(),
            source,
        };
        let signature = key.sign(&anchor_message(anchor));
        let text = format!(
            "{MAGIC}\nsequence {}\nhash {}\nkey_id {}\nsignature {}\n",
            anchor.sequence,
            anchor.entry_hash,
            key.key_id(),
            hex::encode(signature.to_bytes())
        );
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut name = self
            .path
            .file_name()
            .map(std::ffi::OsStr::to_os_string)
            .unwrap_or_default();
        name.push(".tmp");
        let temporary = dir.join(name);
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut file = options.open(&temporary).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        if let Ok(dir) = std::fs::File::open(&dir) {
            // Best effort: the rename is durable once the directory is synced.
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_round_trip_and_reject_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = AnchorFile::new(dir.path().join("sub").join("anchor"));
        let key = JwtSigningKey::generate().expect("key");
        assert_eq!(file.read(&key.verifying_key()).expect("read"), None);
        let anchor = Anchor {
            sequence: 7,
            entry_hash: EntryHash([3; 32]),
        };
        file.write(&anchor, &key).expect("write");
        assert_eq!(file.read(&key.verifying_key()).expect("read"), Some(anchor));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(file.path()).expect("meta").permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
        // Another sequence under the same signature is refused.
        let text = std::fs::read_to_string(file.path()).expect("text");
        std::fs::write(file.path(), text.replace("sequence 7", "sequence 9")).expect("write");
        assert!(matches!(
            file.read(&key.verifying_key()),
            Err(AuditError::AnchorInvalid { .. })
        ));
        // Another key's anchor is refused.
        file.write(&anchor, &key).expect("write");
        let other = JwtSigningKey::generate().expect("key");
        assert!(matches!(
            file.read(&other.verifying_key()),
            Err(AuditError::AnchorInvalid { .. })
        ));
    }
}
