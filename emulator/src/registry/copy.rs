//! Reading a state directory's registry without disturbing a server that uses it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Registry;
use crate::files;

/// The registry of a state directory opened from a copy of its files in a scratch directory,
/// so that a server using the directory is not disturbed; the copy is removed on drop.
pub(crate) struct RegistryCopy {
    pub registry: Registry,
    scratch: PathBuf,
}

impl RegistryCopy {
    /// `purpose` names the scratch directory (`fleetprov-emulator-<purpose>-...`).
    pub(crate) fn open(state_dir: &Path, purpose: &str) -> io::Result<RegistryCopy> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let scratch = std::env::temp_dir().join(format!(
            "fleetprov-emulator-{purpose}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir(&scratch).map_err(files::at_path("create the directory", &scratch))?;
        let copied = (|| {
            let listing = || files::at_path("read the state directory", state_dir);
            for entry in fs::read_dir(state_dir).map_err(listing())? {
                let entry = entry.map_err(listing())?;
                let name = entry.file_name();
                if name.to_string_lossy().starts_with("registry") && entry.file_type()?.is_file() {
                    let from = entry.path();
                    fs::copy(&from, scratch.join(&name)).map_err(files::at_path("copy", &from))?;
                }
            }
            Registry::open(&scratch)
        })();
        match copied {
            Ok(registry) => Ok(RegistryCopy { registry, scratch }),
            Err(e) => {
                let _ = fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }
}

impl Drop for RegistryCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.scratch);
    }
}
