//! Certificate and key files: public files 0644, private keys 0600 (never replaced, written
//! to a temporary file, synced and linked into place), private keys read only from files that
//! group and others cannot read, into buffers that zeroize on drop.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use zeroize::Zeroizing;

use crate::TlsError;

/// Largest certificate or key file read (a chain of a few certificates is a few KB).
const MAX_FILE_LEN: u64 = 64 * 1024;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Io {
        action,
        path,
        source,
    }
}

/// Writes `bytes` to a new file `path` of mode `mode`; refuses to replace an existing file.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == ErrorKind::AlreadyExists {
                TlsError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io("creating", path)(source)
            }
        })?;
    // The umask may have narrowed the mode; never widened it. Set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", path))?;
    file.write_all(bytes).map_err(io("writing", path))?;
    file.sync_all().map_err(io("syncing", path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))?;
    }
    Ok(())
}

/// Replaces (or creates) the public file `path` (mode 0644) atomically: the bytes go to a
/// temporary file beside it, synced, then renamed over it, so a reader sees the old file or the
/// new one, never part of one.
pub(crate) fn replace_public(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&temporary);
    write_new(&temporary, bytes, 0o644)?;
    fs::rename(&temporary, path).map_err(io("replacing", path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))?;
    }
    Ok(())
}

/// Reads a public file (certificate, CA) as text.
pub(crate) fn read_public(path: &Path) -> Result<String, TlsError> {
    let file = File::open(path).map_err(io("opening", path))?;
    let mut text = String::new();
    file.take(MAX_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(io("reading", path))?;
    Ok(text)
}

/// Reads a private key file: a regular file neither group nor others may read or write.
pub(crate) fn read_private(path: &Path) -> Result<Zeroizing<String>, TlsError> {
    let file = File::open(path).map_err(io("opening", path))?;
    let metadata = file.metadata().map_err(io("inspecting", path))?;
    if !metadata.is_file() {
        return Err(TlsError::Invalid {
            what: path.display().to_string(),
            reason: "not a regular file".into(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    // Room for the whole file up front, so that reading never reallocates and leaves copies of
    // the key behind in freed memory.
    let len = usize::try_from(metadata.len().min(MAX_FILE_LEN)).unwrap_or(0);
    let mut text = Zeroizing::new(String::with_capacity(len + 1));
    file.take(MAX_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(io("reading", path))?;
    Ok(text)
}
