//! What the state directory holds, by name: the CA's, server's and claim's certificates and keys,
//! the registry's snapshot and journal, and the claims issued by `fleetprov-emulator claim`.
//! How the files are written is [`crate::files`]'s; opening a state directory as a running
//! service is `open`'s.

use std::io;
use std::path::Path;

use crate::files;

/// The root CA certificate devices trust (PEM).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The root CA's private key (PEM, 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const SERVER_CERT_FILE: &str = "server-cert.pem";
pub const SERVER_KEY_FILE: &str = "server-key.pem";
/// The default claim certificate and its key.
pub const CLAIM_CERT_FILE: &str = "claim-cert.pem";
pub const CLAIM_KEY_FILE: &str = "claim-key.pem";
/// The intermediate CA, when device certificates are issued from one.
pub const INTERMEDIATE_CERT_FILE: &str = "intermediate-ca.pem";
pub const INTERMEDIATE_KEY_FILE: &str = "intermediate-ca-key.pem";
/// The registry: a snapshot replaced whole, and the changes appended since.
pub const REGISTRY_SNAPSHOT_FILE: &str = "registry.json";
pub const REGISTRY_JOURNAL_FILE: &str = "registry.journal";

/// Subdirectory of the state dir where `fleetprov-emulator claim` leaves the ids of the claims it
/// issued, so a running server accepts them without a restart.
pub const CLAIMS_DIR: &str = "claims";

/// Record a claim issued outside the running server (see [`CLAIMS_DIR`]): the file is named by
/// the certificate id and holds the certificate PEM.
pub fn record_claim(
    state_dir: &Path,
    certificate_id: &str,
    certificate_pem: &str,
) -> io::Result<()> {
    let dir = state_dir.join(CLAIMS_DIR);
    std::fs::create_dir_all(&dir).map_err(files::at_path("create the directory", &dir))?;
    files::write_atomic(&dir.join(certificate_id), certificate_pem.as_bytes(), 0o644)
}

/// The ids of the claims recorded in `state_dir`: the file names that are certificate ids.
pub fn recorded_claims(state_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(CLAIMS_DIR)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}
