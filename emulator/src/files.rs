//! The state directory's files: written atomically, keys never readable by others.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `data` to `path` so that readers see the old file or the new one, never a part:
/// a temporary file in the same directory, created with `mode` (so a key is never readable by
/// others, not even for a moment), synced, then renamed over `path`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| invalid_data(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        // The temporary file is an implementation detail: name the file the caller asked for.
        return Err(at_path("write", path)(e));
    }
    // Make the rename itself durable; a failure here loses nothing already written.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Create the state directory (0700: it holds private keys) if it does not exist.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(at_path("create the directory", dir))
}

/// The paths of `names` in the private directory `dir`, which is created first if missing.
pub(crate) fn in_private_dir<const N: usize>(
    dir: &Path,
    names: [&str; N],
) -> io::Result<[PathBuf; N]> {
    create_private_dir(dir)?;
    Ok(names.map(|name| dir.join(name)))
}

/// The contents of `path`, or `None` if there is no such file.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(at_path("read", path)(e)),
    }
}

/// Open `path` for appending, creating it 0600 if missing.
pub(crate) fn open_append_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(at_path("open for appending", path))
}

/// Puts what was being done, and to which file, in front of an I/O error that names neither:
/// `cannot read /state/ca.pem: Permission denied (os error 13)`. The kind is kept.
pub(crate) fn at_path<'a>(
    doing: &'a str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("cannot {doing} {}: {e}", path.display()))
}

pub(crate) fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The permission bits of `path`.
#[cfg(test)]
pub(crate) fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_creates_with_the_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn read_if_exists_tells_a_missing_file_from_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(read_if_exists(&path).unwrap(), None);
        fs::write(&path, b"").unwrap();
        assert_eq!(read_if_exists(&path).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn io_errors_name_the_path_and_what_was_being_done() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let missing = dir.path().join("missing/out");
        let cases = [
            (
                write_atomic(&missing, b"x", 0o600),
                format!("cannot write {}", missing.display()),
            ),
            (
                create_private_dir(&file),
                format!("{} exists and is not a directory", file.display()),
            ),
            (
                create_private_dir(&file.join("sub")),
                format!("cannot create the directory {}", file.join("sub").display()),
            ),
            (
                read_if_exists(dir.path()).map(drop),
                format!("cannot read {}", dir.path().display()),
            ),
            (
                open_append_private(dir.path()).map(drop),
                format!("cannot open for appending {}", dir.path().display()),
            ),
        ];
        for (result, expected) in cases {
            let message = result.unwrap_err().to_string();
            assert!(
                message.starts_with(&expected),
                "{message:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn a_private_dir_and_an_appended_file_are_0700_and_0600() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        let [path] = in_private_dir(&sub, ["log"]).unwrap();
        assert_eq!(path, sub.join("log"));
        assert_eq!(mode_of(&sub), 0o700);
        open_append_private(&path).unwrap().write_all(b"1").unwrap();
        open_append_private(&path).unwrap().write_all(b"2").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"12");
        assert_eq!(mode_of(&path), 0o600);
    }
}
