//! The CA's files in the state directory: loaded when present and signed by this CA, made and
//! written otherwise.

use std::fs;
use std::io;
use std::path::Path;

use rcgen::{CertificateParams, KeyPair};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::profile::new_intermediate;
use super::{io_err, Intermediate, Signer};
use crate::cert::pem_block;
use crate::files::{at_path, invalid_data, write_atomic};
use crate::state_dir::{CA_CERT_FILE, INTERMEDIATE_CERT_FILE, INTERMEDIATE_KEY_FILE};

/// The CA from its certificate and key, each given with the file it was read from.
pub(super) fn load_signer(
    (ca_path, ca_pem): (&Path, &str),
    (key_path, key_pem): (&Path, &str),
) -> io::Result<Signer> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| invalid_data(format!("{}: {e}", key_path.display())))?;
    let params = CertificateParams::from_ca_cert_pem(ca_pem)
        .map_err(|e| invalid_data(format!("{}: {e}", ca_path.display())))?;
    // Only the subject, key identifier and key usages of this re-signed copy are used when
    // issuing; the certificate clients trust stays the one in ca.pem.
    let cert = params.self_signed(&key).map_err(io_err)?;
    Ok(Signer { cert, key })
}

/// The root's pathLenConstraint: `Some(n)`, or `None` when it sets none.
pub(super) fn path_len_constraint(ca_der: &[u8]) -> Option<u32> {
    let (_, ca) = X509Certificate::from_der(ca_der).ok()?;
    let constraints = ca.basic_constraints().ok()??;
    constraints.value.path_len_constraint
}

/// Loads the intermediate CA from `dir`, or makes it (and writes its files) when missing, when
/// the root is new, or when the stored one was not signed by this root.
pub(super) fn load_or_make_intermediate(
    dir: &Path,
    fresh_ca: bool,
    root: &Signer,
    ca_der: &[u8],
) -> io::Result<Intermediate> {
    if path_len_constraint(ca_der) == Some(0) {
        return Err(invalid_data(format!(
            "the root CA in {} allows no intermediate CA (pathLenConstraint 0; it was made \
             before intermediates were possible): use a new state directory",
            dir.join(CA_CERT_FILE).display()
        )));
    }
    let files = (INTERMEDIATE_CERT_FILE, INTERMEDIATE_KEY_FILE);
    let (cert_der, _) = load_or_make_pair(dir, files, fresh_ca, ca_der, || new_intermediate(root))?;
    let pem = fs::read_to_string(dir.join(INTERMEDIATE_CERT_FILE))?;
    let key_pem = fs::read_to_string(dir.join(INTERMEDIATE_KEY_FILE))?;
    if pem_block(pem.as_bytes(), "CERTIFICATE").as_deref() != Some(cert_der.as_slice()) {
        return Err(invalid_data(format!(
            "{} changed while it was read",
            dir.join(INTERMEDIATE_CERT_FILE).display()
        )));
    }
    Ok(Intermediate {
        signer: load_signer(
            (&dir.join(INTERMEDIATE_CERT_FILE), &pem),
            (&dir.join(INTERMEDIATE_KEY_FILE), &key_pem),
        )?,
        pem,
    })
}

/// Load a certificate + key pair from `dir`, or make and write a new one when it is missing,
/// when the CA is new, or when the stored certificate was not signed by this CA.
pub(super) fn load_or_make_pair(
    dir: &Path,
    (cert_file, key_file): (&str, &str),
    fresh_ca: bool,
    ca_der: &[u8],
    make: impl FnOnce() -> Result<(String, String), rcgen::Error>,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    if !fresh_ca && cert_path.exists() && key_path.exists() {
        let cert_pem = fs::read(&cert_path).map_err(at_path("read", &cert_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(at_path("read", &key_path))?;
        if let (Some(cert_der), Ok(key)) = (
            pem_block(&cert_pem, "CERTIFICATE"),
            KeyPair::from_pem(&key_pem),
        ) {
            if signed_by(&cert_der, ca_der) {
                return Ok((cert_der, key.serialize_der()));
            }
        }
    }
    let (cert_pem, key_pem) = make().map_err(io_err)?;
    write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
    let cert_der = pem_block(cert_pem.as_bytes(), "CERTIFICATE")
        .ok_or_else(|| invalid_data(format!("{}: not a PEM certificate", cert_path.display())))?;
    let key = KeyPair::from_pem(&key_pem).map_err(io_err)?;
    Ok((cert_der, key.serialize_der()))
}

/// Does the CA whose certificate is `ca_der` verify the signature of `cert_der`?
fn signed_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(cert_der),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}
