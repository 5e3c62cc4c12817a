//! The emulator's certificate authority.
//!
//! One local root CA (EC P-256) signs the server certificate, the claim certificates and every
//! device certificate. Everything lives in the state directory so a restart keeps the same trust
//! anchor: devices provisioned yesterday still connect today.
//!
//! [`Ca`] issues; `csr` checks certificate requests; `key_pool` keeps RSA keys ready;
//! `profile` says what each kind of certificate contains; `stored` loads and writes the CA's
//! files.

mod csr;
mod key_pool;
mod profile;
mod stored;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, SubjectPublicKeyInfo,
    PKCS_ECDSA_P256_SHA256,
};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::EncodePublicKey;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::cert::{certificate_id, pem_block};
/// Also reachable here for the binary; the helper lives in [`crate::files`].
pub use crate::files::write_atomic;
use crate::files::{at_path, in_private_dir, invalid_data};
use crate::state_dir::{
    CA_CERT_FILE, CA_KEY_FILE, CLAIM_CERT_FILE, CLAIM_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE,
};
use key_pool::KeyPool;
use profile::{client_params, device_params, new_root_ca, now, server_params, DAY};
use stored::{load_or_make_intermediate, load_or_make_pair, load_signer};

/// Keys kept ready for CreateKeysAndCertificate; RSA-2048 generation takes ~100 ms each.
const KEY_POOL_SIZE: usize = 4;
/// The size of the RSA keys the CA generates, and the least it takes in a request.
const RSA_BITS: usize = 2048;
/// Subject AWS gives the certificates it generates for CreateKeysAndCertificate.
const DEVICE_COMMON_NAME: &str = "AWS IoT Certificate";

/// A certificate the CA issued, ready to go into a reply.
#[derive(Debug, Clone)]
pub struct Issued {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub certificate_id: String,
    pub certificate_pem: String,
    pub certificate_der: Vec<u8>,
    /// The private key when the CA generated it: PKCS#1 PEM for CreateKeysAndCertificate,
    /// PKCS#8 PEM for claims. `None` for certificates signed from a CSR.
    pub private_key_pem: Option<String>,
}

/// Why a certificate could not be issued (a bad CSR, or a failure of the CA itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrError(pub String);

impl std::fmt::Display for CsrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CsrError {}

/// The signing half of the CA: rcgen signs with a `Certificate` plus its key.
struct Signer {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// How device certificates (CreateKeysAndCertificate, CreateCertificateFromCsr) are issued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCertificates {
    /// How long they are valid (`notAfter - notBefore`), as a certificate provider may set it;
    /// `None`: until the end of 2049, as AWS IoT's own. `notBefore` lies a tenth of the
    /// validity (at most a minute) in the past, for device clocks that run a little behind.
    pub validity: Option<Duration>,
    /// Issue them from an intermediate CA under the root (kept in the state directory as
    /// `intermediate-ca.pem` and `intermediate-ca-key.pem`), with `certificatePem` holding
    /// the certificate then the intermediate's. The server trusts only the root, so a device
    /// must send the chain.
    pub intermediate: bool,
}

/// The intermediate CA and its certificate's PEM, appended to the certificates it issues.
struct Intermediate {
    signer: Signer,
    pem: String,
}

/// The emulator's CA with the server and claim identities it made.
pub struct Ca {
    dir: PathBuf,
    ca_pem: String,
    ca_der: Vec<u8>,
    signer: Signer,
    server_der: Vec<u8>,
    server_key_der: Vec<u8>,
    claim_der: Vec<u8>,
    pool: KeyPool,
    device: DeviceCertificates,
    intermediate: Option<Intermediate>,
}

debug_one_field!(Ca, dir);

impl Ca {
    /// First start creates ca.pem, ca-key.pem (0600), server-cert.pem, server-key.pem (0600),
    /// claim-cert.pem, claim-key.pem (0600) in `dir`; later starts load them.
    pub fn load_or_create(dir: &Path) -> io::Result<Ca> {
        Ca::load_or_create_with(dir, DeviceCertificates::default())
    }

    /// [`Ca::load_or_create`], issuing device certificates as `device` says. With
    /// `device.intermediate`, the first such start also creates intermediate-ca.pem and
    /// intermediate-ca-key.pem (0600); a root made before intermediates were possible
    /// (pathLenConstraint 0) is refused with a message naming it.
    pub fn load_or_create_with(dir: &Path, device: DeviceCertificates) -> io::Result<Ca> {
        if device.validity.is_some_and(|v| v.as_secs() == 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the device certificate validity must be at least one second",
            ));
        }
        let [ca_path, ca_key_path] = in_private_dir(dir, [CA_CERT_FILE, CA_KEY_FILE])?;

        let (signer, ca_pem, fresh) = if ca_path.exists() {
            if !ca_key_path.exists() {
                return Err(invalid_data(format!(
                    "{} exists but {} is missing",
                    ca_path.display(),
                    ca_key_path.display()
                )));
            }
            let ca_pem = fs::read_to_string(&ca_path).map_err(at_path("read", &ca_path))?;
            let key_pem =
                fs::read_to_string(&ca_key_path).map_err(at_path("read", &ca_key_path))?;
            let signer = load_signer((&ca_path, &ca_pem), (&ca_key_path, &key_pem))?;
            (signer, ca_pem, false)
        } else {
            // A key without its certificate is a start that died half-way: begin again.
            let signer = new_root_ca().map_err(io_err)?;
            let ca_pem = signer.cert.pem();
            write_atomic(&ca_key_path, signer.key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&ca_path, ca_pem.as_bytes(), 0o644)?;
            (signer, ca_pem, true)
        };
        let ca_der = pem_block(ca_pem.as_bytes(), "CERTIFICATE").ok_or_else(|| {
            invalid_data(format!("{} is not a PEM certificate", ca_path.display()))
        })?;

        let (server_der, server_key_der) = load_or_make_pair(
            dir,
            (SERVER_CERT_FILE, SERVER_KEY_FILE),
            fresh,
            &ca_der,
            || {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
                let cert = server_params()?.signed_by(&key, &signer.cert, &signer.key)?;
                Ok((cert.pem(), key.serialize_pem()))
            },
        )?;
        let (claim_der, _) = load_or_make_pair(
            dir,
            (CLAIM_CERT_FILE, CLAIM_KEY_FILE),
            fresh,
            &ca_der,
            || {
                // The default claim outlives restarts; short-lived claims come from issue_claim.
                let issued = issue_claim_with(&signer, "fleetprov emulator claim", 3650 * DAY)
                    .map_err(|e| rcgen::Error::X509(e.0))?;
                let key = issued.private_key_pem.unwrap_or_default();
                Ok((issued.certificate_pem, key))
            },
        )?;

        let intermediate = if device.intermediate {
            Some(load_or_make_intermediate(dir, fresh, &signer, &ca_der)?)
        } else {
            None
        };

        Ok(Ca {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_der,
            signer,
            server_der,
            server_key_der,
            claim_der,
            pool: KeyPool::start(KEY_POOL_SIZE),
            device,
            intermediate,
        })
    }

    /// How device certificates are issued.
    pub fn device_certificates(&self) -> &DeviceCertificates {
        &self.device
    }

    /// The intermediate CA's certificate (PEM) when device certificates come from one.
    pub fn intermediate_pem(&self) -> Option<&str> {
        self.intermediate.as_ref().map(|i| i.pem.as_str())
    }

    /// Who signs device certificates: the intermediate CA if there is one, else the root.
    fn device_signer(&self) -> &Signer {
        self.intermediate
            .as_ref()
            .map_or(&self.signer, |i| &i.signer)
    }

    /// Parameters of a device certificate: valid until the end of 2049, or for the set
    /// validity.
    fn device_params(&self, dn: DistinguishedName) -> Result<CertificateParams, CsrError> {
        let Some(validity) = self.device.validity else {
            return device_params(dn);
        };
        let span = time::Duration::try_from(validity).map_err(ca_err)?;
        let backdate = Duration::from_secs((validity / 10).as_secs().min(60));
        let not_before = now() - backdate;
        let not_after = not_before
            .checked_add(span)
            .filter(|t| t.year() <= 9999)
            .ok_or_else(|| CsrError("the device certificate validity is too long".into()))?;
        let mut params = client_params(dn, not_after)?;
        params.not_before = not_before;
        Ok(params)
    }

    /// A device certificate as it goes into a reply: with the intermediate's certificate after
    /// it when there is one.
    fn issued_device(&self, cert: &rcgen::Certificate, private_key_pem: Option<String>) -> Issued {
        let mut issued = issued(cert, private_key_pem);
        if let Some(i) = &self.intermediate {
            if !issued.certificate_pem.ends_with('\n') {
                issued.certificate_pem.push('\n');
            }
            issued.certificate_pem.push_str(&i.pem);
        }
        issued
    }

    /// The root CA certificate in PEM, as written to ca.pem.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.ca_der.clone()
    }

    /// The server's chain: its certificate alone (SANs localhost, 127.0.0.1, ::1); clients hold
    /// the root as their trust anchor.
    pub fn server_chain_der(&self) -> Vec<Vec<u8>> {
        vec![self.server_der.clone()]
    }

    /// The server's private key, PKCS#8 DER.
    pub fn server_key_der(&self) -> Vec<u8> {
        self.server_key_der.clone()
    }

    /// Paths of claim-cert.pem and claim-key.pem.
    pub fn claim_paths(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join(CLAIM_CERT_FILE),
            self.dir.join(CLAIM_KEY_FILE),
        )
    }

    /// The default claim certificate, DER.
    pub fn claim_der(&self) -> Vec<u8> {
        self.claim_der.clone()
    }

    /// A new claim certificate and its EC P-256 key (PKCS#8 PEM), valid from now for
    /// `valid_for` (AWS's temporary claims last five minutes). Nothing is written to disk.
    pub fn issue_claim(&self, common_name: &str, valid_for: Duration) -> Result<Issued, CsrError> {
        issue_claim_with(&self.signer, common_name, valid_for)
    }

    /// A claim certificate like [`Ca::issue_claim`]'s, valid from `not_before` to `not_after`
    /// (whole seconds), either of which may lie in the past: for testing how a device deals
    /// with an expired or not yet valid certificate. Nothing is written to disk.
    pub fn issue_claim_between(
        &self,
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, CsrError> {
        if not_after < not_before {
            return Err(CsrError("a certificate cannot end before it starts".into()));
        }
        let whole = |t: SystemTime| {
            let t = OffsetDateTime::from(t);
            t.replace_nanosecond(0).unwrap_or(t)
        };
        sign_claim(
            &self.signer,
            common_name,
            Some(whole(not_before)),
            whole(not_after),
        )
    }

    /// CreateKeysAndCertificate: an RSA-2048 key (PKCS#1 PEM) and a client certificate for it.
    pub fn create_keys_and_certificate(&self) -> Result<Issued, CsrError> {
        let key = self.pool.take()?;
        let spki_der = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| CsrError(format!("cannot encode the public key: {e}")))?;
        let spki = SubjectPublicKeyInfo::from_der(spki_der.as_bytes()).map_err(ca_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DEVICE_COMMON_NAME);
        let signer = self.device_signer();
        let cert = self
            .device_params(dn)?
            .signed_by(&spki, &signer.cert, &signer.key)
            .map_err(ca_err)?;
        let key_pem = key
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| CsrError(format!("cannot encode the private key: {e}")))?;
        Ok(self.issued_device(&cert, Some(key_pem.as_str().to_owned())))
    }

    /// CreateCertificateFromCsr: RSA (2048 bits or more), EC P-256 or P-384 CSRs whose signature
    /// verifies. The certificate carries the CSR's subject and its public key byte for byte.
    pub fn sign_csr(&self, csr_pem: &str) -> Result<Issued, CsrError> {
        let csr::Checked {
            subject: dn,
            spki_der,
        } = csr::check(csr_pem)?;
        // The SPKI is copied from the CSR: rcgen picks the encoding from the key algorithm
        // found here, not from the CSR's signature algorithm, which may name another curve.
        let spki = SubjectPublicKeyInfo::from_der(&spki_der).map_err(|_| {
            CsrError("the certificate request's public key is not supported".into())
        })?;
        let signer = self.device_signer();
        let cert = self
            .device_params(dn)?
            .signed_by(&spki, &signer.cert, &signer.key)
            .map_err(ca_err)?;
        let (_, parsed) =
            X509Certificate::from_der(cert.der()).map_err(|e| ca_err(e.to_string()))?;
        if parsed.tbs_certificate.subject_pki.raw != spki_der.as_slice() {
            return Err(CsrError(
                "the certificate request's public key encoding is not supported".into(),
            ));
        }
        Ok(self.issued_device(&cert, None))
    }
}

fn issue_claim_with(
    signer: &Signer,
    common_name: &str,
    valid_for: Duration,
) -> Result<Issued, CsrError> {
    let not_after = now()
        .checked_add(time::Duration::try_from(valid_for).map_err(ca_err)?)
        .ok_or_else(|| CsrError("claim validity is too long".into()))?;
    sign_claim(signer, common_name, None, not_after)
}

/// A claim: a new EC P-256 key and a client certificate for it, from `not_before` (default: a
/// minute ago) to `not_after`.
fn sign_claim(
    signer: &Signer,
    common_name: &str,
    not_before: Option<OffsetDateTime>,
    not_after: OffsetDateTime,
) -> Result<Issued, CsrError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    let mut params = client_params(dn, not_after)?;
    if let Some(t) = not_before {
        params.not_before = t;
    }
    let cert = params
        .signed_by(&key, &signer.cert, &signer.key)
        .map_err(ca_err)?;
    Ok(issued(&cert, Some(key.serialize_pem())))
}

fn issued(cert: &rcgen::Certificate, private_key_pem: Option<String>) -> Issued {
    Issued {
        certificate_id: certificate_id(cert.der()),
        certificate_pem: cert.pem(),
        certificate_der: cert.der().to_vec(),
        private_key_pem,
    }
}

fn ca_err(e: impl std::fmt::Display) -> CsrError {
    CsrError(format!("the CA failed: {e}"))
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

#[cfg(test)]
mod device_certificate_tests;
#[cfg(test)]
mod tests;
