//! Files only the user Keelson runs as may read: directories 0700, files 0600. The state
//! directory holds secret environment values (the local agent's state) and the control socket
//! of the local agent; nothing in it is for other users.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (and missing parents) as 0700; an existing directory of this user is tightened
/// to 0700. One of another user is refused: its owner could read or replace what goes in it.
pub fn dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.uid() != euid() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "`{}` belongs to uid {}, not to this user (uid {}); use a state directory of your own",
                dir.display(),
                meta.uid(),
                euid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        // Others lose access; the owner keeps what it had (a read-only directory stays so).
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o700))?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it as 0600.
pub fn append(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Makes an existing file 0600 (a file an earlier version created with the umask's mode).
pub fn tighten(path: &Path) -> std::io::Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.mode() & 0o177 != 0 => {
            // Read and write for the owner at most (a read-only file stays so).
            fs::set_permissions(path, fs::Permissions::from_mode(m.mode() & 0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The copy of `path` kept by [`replace`].
pub fn previous(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".prev");
    PathBuf::from(p)
}

/// Writes `bytes` to `path` atomically as 0600 (a temporary file, synced, renamed over it),
/// keeping what was there as [`previous`]. A crash leaves `path` whole, or absent with the
/// previous copy beside it.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    match fs::rename(path, previous(path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::rename(&tmp, path)
}

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_are_private_and_replaced_whole() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = t.path().join("a/b");
        dir(&d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::metadata(&d).map(|m| m.mode() & 0o777).ok(), Some(0o700));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).ok();
        dir(&d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::metadata(&d).map(|m| m.mode() & 0o777).ok(), Some(0o700));
        let f = d.join("state.json");
        replace(&f, b"one").unwrap_or_else(|e| panic!("{e}"));
        replace(&f, b"two").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::read(&f).ok().as_deref(), Some(&b"two"[..]));
        assert_eq!(fs::read(previous(&f)).ok().as_deref(), Some(&b"one"[..]));
        assert_eq!(fs::metadata(&f).map(|m| m.mode() & 0o777).ok(), Some(0o600));
    }
}
