//! The emulator's certificate authority.
//!
//! One local root CA (EC P-256) signs the server certificate, the claim certificates and every
//! device certificate. Everything lives in the state directory so a restart keeps the same trust
//! anchor: devices provisioned yesterday still connect today.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo,
    PKCS_ECDSA_P256_SHA256,
};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::EncodePublicKey;
use rsa::RsaPrivateKey;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo as ParsedSpki, X509Name};

use crate::cert::{certificate_id, pem_block};
/// Also reachable here for the binary; the helper lives in [`crate::files`].
pub use crate::files::write_atomic;
use crate::files::{at_path, in_private_dir, invalid_data};
use crate::state_dir::{
    CA_CERT_FILE, CA_KEY_FILE, CLAIM_CERT_FILE, CLAIM_KEY_FILE, INTERMEDIATE_CERT_FILE,
    INTERMEDIATE_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE,
};

/// Keys kept ready for CreateKeysAndCertificate; RSA-2048 generation takes ~100 ms each.
const KEY_POOL_SIZE: usize = 4;
const RSA_BITS: usize = 2048;
/// The largest RSA key ring verifies signatures for.
const RSA_MAX_BITS: usize = 8192;

const DAY: Duration = Duration::from_secs(86_400);
/// Device certificates from AWS IoT expire at the end of 2049; ours do too.
const DEVICE_NOT_AFTER_UNIX: i64 = 2_524_607_999; // 2049-12-31T23:59:59Z
/// Subject AWS gives the certificates it generates for CreateKeysAndCertificate.
const DEVICE_COMMON_NAME: &str = "AWS IoT Certificate";
/// Subject attributes the templates can read (X.520 serialNumber and dnQualifier).
const OID_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];
const OID_DN_QUALIFIER: &[u64] = &[2, 5, 4, 46];

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
        let der = pem_block(csr_pem.as_bytes(), "CERTIFICATE REQUEST")
            .or_else(|| pem_block(csr_pem.as_bytes(), "NEW CERTIFICATE REQUEST"))
            .ok_or_else(|| {
                CsrError("certificateSigningRequest is not a PEM certificate request".into())
            })?;
        let (rest, csr) = X509CertificationRequest::from_der(&der)
            .map_err(|e| CsrError(format!("the certificate request cannot be parsed: {e}")))?;
        if !rest.is_empty() {
            return Err(CsrError("the certificate request has trailing data".into()));
        }
        let info = &csr.certification_request_info;
        check_csr_key(&info.subject_pki)?;
        csr.verify_signature()
            .map_err(|_| CsrError("the certificate request's signature does not verify".into()))?;
        let dn = subject_to_dn(&info.subject)?;

        // The SPKI is copied from the CSR: rcgen picks the encoding from the key algorithm
        // found here, not from the CSR's signature algorithm, which may name another curve.
        let spki = SubjectPublicKeyInfo::from_der(info.subject_pki.raw).map_err(|_| {
            CsrError("the certificate request's public key is not supported".into())
        })?;
        let signer = self.device_signer();
        let cert = self
            .device_params(dn)?
            .signed_by(&spki, &signer.cert, &signer.key)
            .map_err(ca_err)?;
        let (_, parsed) =
            X509Certificate::from_der(cert.der()).map_err(|e| ca_err(e.to_string()))?;
        if parsed.tbs_certificate.subject_pki.raw != info.subject_pki.raw {
            return Err(CsrError(
                "the certificate request's public key encoding is not supported".into(),
            ));
        }
        Ok(self.issued_device(&cert, None))
    }
}

/// The CA from its certificate and key, each given with the file it was read from.
fn load_signer(
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

fn new_root_ca() -> Result<Signer, rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "fleetprov emulator");
    dn.push(DnType::CommonName, "fleetprov emulator root CA");
    params.distinguished_name = dn;
    // One level below it: the intermediate CA that `--intermediate-ca` issues from.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = now();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + 20 * 365 * DAY;
    params.serial_number = Some(random_serial().map_err(|e| rcgen::Error::X509(e.0))?);
    let cert = params.self_signed(&key)?;
    Ok(Signer { cert, key })
}

/// The intermediate CA: an EC P-256 key and a CA certificate signed by the root, allowing no
/// CA below it.
fn new_intermediate(root: &Signer) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "fleetprov emulator");
    dn.push(DnType::CommonName, "fleetprov emulator intermediate CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = now();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + 10 * 365 * DAY;
    params.serial_number = Some(random_serial().map_err(|e| rcgen::Error::X509(e.0))?);
    let cert = params.signed_by(&key, &root.cert, &root.key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The root's pathLenConstraint: `Some(n)`, or `None` when it sets none.
fn path_len_constraint(ca_der: &[u8]) -> Option<u32> {
    let (_, ca) = X509Certificate::from_der(ca_der).ok()?;
    let constraints = ca.basic_constraints().ok()??;
    constraints.value.path_len_constraint
}

/// Loads the intermediate CA from `dir`, or makes it (and writes its files) when missing, when
/// the root is new, or when the stored one was not signed by this root.
fn load_or_make_intermediate(
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

fn server_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = now();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + 3650 * DAY;
    params.serial_number = Some(random_serial().map_err(|e| rcgen::Error::X509(e.0))?);
    Ok(params)
}

/// Parameters of a client certificate: device certificates and claims.
fn client_params(
    dn: DistinguishedName,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CsrError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    // A minute of slack for a device whose clock runs a little behind ours.
    params.not_before = now() - Duration::from_secs(60);
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn device_params(dn: DistinguishedName) -> Result<CertificateParams, CsrError> {
    let not_after = OffsetDateTime::from_unix_timestamp(DEVICE_NOT_AFTER_UNIX).map_err(ca_err)?;
    client_params(dn, not_after)
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

/// Load a certificate + key pair from `dir`, or make and write a new one when it is missing,
/// when the CA is new, or when the stored certificate was not signed by this CA.
fn load_or_make_pair(
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

/// Accept what AWS IoT accepts from devices: RSA of 2048 bits or more, EC P-256 and P-384.
fn check_csr_key(spki: &ParsedSpki<'_>) -> Result<(), CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => bit_length(rsa.modulus),
            _ => return Err(CsrError("the RSA public key cannot be parsed".into())),
        };
        if bits < RSA_BITS {
            return Err(CsrError(format!(
                "RSA keys must have at least {RSA_BITS} bits; this one has {bits}"
            )));
        }
        if bits > RSA_MAX_BITS {
            return Err(CsrError(format!(
                "RSA keys of more than {RSA_MAX_BITS} bits are not supported"
            )));
        }
        Ok(())
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => Ok(()),
            _ => Err(CsrError("EC keys must be on curve P-256 or P-384".into())),
        }
    } else {
        Err(CsrError(format!(
            "public key algorithm {alg} is not supported (RSA 2048+, EC P-256 or P-384 are)"
        )))
    }
}

/// Number of significant bits in a big-endian unsigned integer.
fn bit_length(be: &[u8]) -> usize {
    let digits: &[u8] = {
        let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
        &be[first..]
    };
    match digits.first() {
        Some(&top) => digits.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// Copy the CSR's subject into rcgen's form, keeping each value's string type.
fn subject_to_dn(name: &X509Name<'_>) -> Result<DistinguishedName, CsrError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let arcs: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| CsrError("the subject has an attribute type that is too large".into()))?
            .collect();
        let bad = || {
            CsrError(format!(
                "subject attribute {} has an invalid value",
                attr.attr_type()
            ))
        };
        let value = attr.attr_value();
        let text = || std::str::from_utf8(value.data).map_err(|_| bad());
        let dn_value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(text()?.try_into().map_err(|_| bad())?)
            }
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(|_| bad())?),
            Tag::NumericString => DnValue::PrintableString(text()?.try_into().map_err(|_| bad())?),
            _ => {
                return Err(CsrError(format!(
                    "subject attribute {} uses a string type that is not supported",
                    attr.attr_type()
                )))
            }
        };
        let ty = match arcs.as_slice() {
            OID_SERIAL_NUMBER | OID_DN_QUALIFIER => DnType::CustomDnType(arcs.clone()),
            other => DnType::from_oid(other),
        };
        dn.push(ty, dn_value);
    }
    Ok(dn)
}

/// A positive 128-bit serial number; random so that two certificates for the same key differ.
fn random_serial() -> Result<SerialNumber, CsrError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| CsrError(format!("no randomness: {e}")))?;
    // Top bit clear keeps it positive; the next bit set keeps all 16 bytes significant.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn ca_err(e: impl std::fmt::Display) -> CsrError {
    CsrError(format!("the CA failed: {e}"))
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn generate_rsa() -> Result<RsaPrivateKey, CsrError> {
    RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
        .map_err(|e| CsrError(format!("RSA key generation failed: {e}")))
}

/// RSA keys generated ahead of need by one background thread, so that a request takes a ready
/// key. The thread ends when the pool is dropped.
struct KeyPool {
    shared: Arc<PoolShared>,
    worker: Option<JoinHandle<()>>,
}

struct PoolShared {
    state: Mutex<PoolState>,
    wake: Condvar,
    capacity: usize,
}

struct PoolState {
    keys: Vec<RsaPrivateKey>,
    closed: bool,
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic elsewhere cannot leave the key list in a broken state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KeyPool {
    fn start(capacity: usize) -> KeyPool {
        let shared = Arc::new(PoolShared {
            state: Mutex::new(PoolState {
                keys: Vec::with_capacity(capacity),
                closed: false,
            }),
            wake: Condvar::new(),
            capacity,
        });
        let for_worker = Arc::clone(&shared);
        // Without the thread, keys are generated on demand: slower, still correct.
        let worker = std::thread::Builder::new()
            .name("fleetprov-rsa-pool".into())
            .spawn(move || fill_pool(&for_worker))
            .ok();
        KeyPool { shared, worker }
    }

    fn take(&self) -> Result<RsaPrivateKey, CsrError> {
        let ready = {
            let mut state = self.shared.lock();
            let key = state.keys.pop();
            self.shared.wake.notify_all();
            key
        };
        match ready {
            Some(key) => Ok(key),
            None => generate_rsa(),
        }
    }

    #[cfg(test)]
    fn ready(&self) -> usize {
        self.shared.lock().keys.len()
    }
}

fn fill_pool(shared: &PoolShared) {
    loop {
        {
            let mut state = shared.lock();
            while !state.closed && state.keys.len() >= shared.capacity {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.closed {
                return;
            }
        }
        let Ok(key) = generate_rsa() else {
            return;
        };
        let mut state = shared.lock();
        if state.closed {
            return;
        }
        state.keys.push(key);
        shared.wake.notify_all();
    }
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            // At most one key generation in progress to wait for.
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::cert_info;
    use crate::files::mode_of;
    use rcgen::{PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256};
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    use x509_parser::extensions::ExtendedKeyUsage;

    /// P-384 key, CSR signed with ecdsa-with-SHA256 (OpenSSL's default digest), full subject.
    const P384_SHA256_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBfDCCAQICAQAwgYIxCzAJBgNVBAYTAlVTMRMwEQYDVQQIDApXYXNoaW5ndG9u
MRUwEwYDVQQKDAxFeGFtcGxlIENvcnAxEDAOBgNVBAsMB1NlbnNvcnMxEjAQBgNV
BAMMCXNlbnNvci00MjEQMA4GA1UEBRMHU04tMDA0MjEPMA0GA1UELhMGYmF0Y2g3
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEoT2OrmUmY5EvwcQZJOINMz8QjBVMGir+
zKRu7tGecOGBJkK2QE0SOwjjbW/q21I9aUXrNM735HZ1C2A9PKHVBRXOD1BKQZ2c
ca2JcJspawmLUdPHVQUp/JkacRpv31X4oAAwCgYIKoZIzj0EAwIDaAAwZQIwVute
eWn3UXdwXZ6DgCPguhnnReW3ho0v7qpJH8CXnIpapsGbHR4SGP705XLluKpxAjEA
zxuypWwZSqWfkSJQrbOI8SLag8o8Fq/2gwbflmw1lEJdUbiLJoD8Lh92vYHUqXHo
-----END CERTIFICATE REQUEST-----
";
    /// RSA-1024 key, made with `openssl req -newkey rsa:1024`.
    const RSA1024_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBTjCBuAIBADAPMQ0wCwYDVQQDDAR3ZWFrMIGfMA0GCSqGSIb3DQEBAQUAA4GN
ADCBiQKBgQDxsCdBQ1sKYplZwoB9McC7EyFmd6dgE6mNcDJQ6g/qbXNEiccNIWte
Z31s6qAGZ1eVUiImx27eSR3UBB0CQ5q9Bt4oHcECr4EtAMofBpi/b2yFc3A4iNnq
nIl4xLeWRrpZ0Woy1Vo7VzTS0Hx5H70ZFhTVcqKPQ8fJP9vhG5zZvQIDAQABoAAw
DQYJKoZIhvcNAQELBQADgYEA70Z7OqQKz7miWPNbvNnWgpWtmTYXczwJ5WSTxaS7
FGM0vfsXNRoeYGvNzeIqAeUfVB1X1A7ePYuA4/1IQgylN6X/avzS1x9npWNBjyvl
jH3Qx/RrAJtpbY8VbxanwrqjionLuzwrFdWc6FNUOeSVsX3r9otVyEqvIgPFOta7
w8Y=
-----END CERTIFICATE REQUEST-----
";
    /// P-521 key, a curve AWS IoT does not take.
    const P521_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBUjCBtAIBADAPMQ0wCwYDVQQDDARwNTIxMIGbMBAGByqGSM49AgEGBSuBBAAj
A4GGAAQA3eVC+K9Q0Qb2En9xNqK1IyXh7obMl+rwWvW/78ER0DLoxM8CyeuzBtTw
vkxNRS73EazDbY1NnT+Unedg5BCU7t0AS5pGgwuD73DCPnEcldzgVVsnHEHqCMW7
anyaTbP+E5YnGdeCTeJJr17EQucr+nKtFdXRcW9uEaQARbrxSyxyffygADAKBggq
hkjOPQQDAgOBjAAwgYgCQgDoz2oEz7ZgC+09AtAFUNH4NQBpDbyLlyNxelkXYte2
OW1d41JqIBgEIoQuY4mMvWVWq1FIBoAlmkQlsqWwXHmjrgJCAZoUPRwgJ+3U/72y
ysm0I0SzQDd7y4gFkXesuWFAuX9kLVQQlCMUctcNdZApLpRJizfzPhSumfmqHU62
qv/5TbN5
-----END CERTIFICATE REQUEST-----
";

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    /// The certificate's extended key usage, which every issued certificate must carry.
    fn eku<'a>(cert: &'a X509Certificate<'_>) -> &'a ExtendedKeyUsage<'a> {
        cert.extended_key_usage().unwrap().unwrap().value
    }

    fn verifies_against(cert_der: &[u8], ca: &Ca) {
        let ca_der = ca.ca_der();
        let ca_cert = parse(&ca_der);
        parse(cert_der)
            .verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
    }

    fn csr_spki(csr_pem: &str) -> Vec<u8> {
        let der = pem_block(csr_pem.as_bytes(), "CERTIFICATE REQUEST").unwrap();
        let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
        csr.certification_request_info.subject_pki.raw.to_vec()
    }

    fn csr_for(key: &KeyPair, cn: &str) -> rcgen::CertificateSigningRequest {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.serialize_request(key).unwrap()
    }

    fn base64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn state_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = Ca::load_or_create(&state).unwrap();
        let (ca_pem, claim, server, server_key) = (
            first.ca_pem().to_owned(),
            first.claim_der(),
            first.server_chain_der(),
            first.server_key_der(),
        );
        drop(first);

        let again = Ca::load_or_create(&state).unwrap();
        assert_eq!(again.ca_pem(), ca_pem);
        assert_eq!(fs::read_to_string(state.join("ca.pem")).unwrap(), ca_pem);
        assert_eq!(again.claim_der(), claim);
        assert_eq!(again.server_chain_der(), server);
        assert_eq!(again.server_key_der(), server_key);
        // What the reloaded CA signs chains to the CA clients already trust.
        let issued = again
            .issue_claim("after restart", 300 * Duration::from_secs(1))
            .unwrap();
        verifies_against(&issued.certificate_der, &again);
        let cert = parse(&issued.certificate_der);
        let ca_der = again.ca_der();
        assert_eq!(cert.issuer().as_raw(), parse(&ca_der).subject().as_raw());
    }

    #[test]
    fn private_files_are_0600_and_the_directory_0700() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("fresh");
        let ca = Ca::load_or_create(&state).unwrap();
        assert_eq!(mode_of(&state), 0o700);
        for key in ["ca-key.pem", "server-key.pem", "claim-key.pem"] {
            assert_eq!(mode_of(&state.join(key)), 0o600, "{key}");
        }
        for cert in ["ca.pem", "server-cert.pem", "claim-cert.pem"] {
            assert_eq!(mode_of(&state.join(cert)), 0o644, "{cert}");
        }
        let (cert_path, key_path) = ca.claim_paths();
        assert_eq!(cert_path, state.join("claim-cert.pem"));
        assert_eq!(key_path, state.join("claim-key.pem"));
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 6, "{names:?}");
    }

    #[test]
    fn a_lost_ca_key_is_an_error_not_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        drop(Ca::load_or_create(dir.path()).unwrap());
        fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
        let err = Ca::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn server_certificate_names_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let chain = ca.server_chain_der();
        assert_eq!(chain.len(), 1);
        verifies_against(&chain[0], &ca);
        let cert = parse(&chain[0]);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "DNSName(localhost)",
                "IPAddress(7f:00:00:01)",
                "IPAddress(00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01)"
            ]
        );
        assert!(eku(&cert).server_auth);
        // The key is PKCS#8 and belongs to the certificate.
        let key = KeyPair::try_from(ca.server_key_der()).unwrap();
        assert_eq!(key.public_key_der(), cert.public_key().raw);
    }

    #[test]
    fn claims_are_client_certificates_with_their_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let default_claim = ca.claim_der();
        verifies_against(&default_claim, &ca);
        let key_pem = fs::read_to_string(dir.path().join("claim-key.pem")).unwrap();
        let key = KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(key.public_key_der(), parse(&default_claim).public_key().raw);

        let temp = ca
            .issue_claim("temporary", Duration::from_secs(300))
            .unwrap();
        let cert = parse(&temp.certificate_der);
        let lifetime =
            cert.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
        assert!((290..=300).contains(&lifetime), "{lifetime}");
        assert!(eku(&cert).client_auth);
        assert_eq!(info_cn(&temp.certificate_der), Some("temporary".into()));
        assert!(temp
            .private_key_pem
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn claims_can_be_issued_with_past_validity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let now = SystemTime::now();
        let expired = ca
            .issue_claim_between("expired", now - 2 * DAY, now - DAY)
            .unwrap();
        verifies_against(&expired.certificate_der, &ca);
        let cert = parse(&expired.certificate_der);
        let ago =
            OffsetDateTime::now_utc().unix_timestamp() - cert.validity().not_after.timestamp();
        assert!((86_400..86_410).contains(&ago), "{ago}");
        assert_eq!(
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp(),
            86_400
        );
        assert!(ca.issue_claim_between("backwards", now, now - DAY).is_err());
    }

    fn info_cn(der: &[u8]) -> Option<String> {
        cert_info(der).common_name
    }

    #[test]
    fn create_keys_gives_a_pkcs1_rsa_key_that_matches_a_ca_signed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let issued = ca.create_keys_and_certificate().unwrap();
        verifies_against(&issued.certificate_der, &ca);
        assert_eq!(
            issued.certificate_id,
            certificate_id(&issued.certificate_der)
        );
        assert_eq!(issued.certificate_id.len(), 64);
        assert!(issued
            .certificate_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(
            pem_block(issued.certificate_pem.as_bytes(), "CERTIFICATE").unwrap(),
            issued.certificate_der
        );

        let key_pem = issued.private_key_pem.as_deref().unwrap();
        assert!(key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        let key = RsaPrivateKey::from_pkcs1_pem(key_pem).unwrap();
        assert_eq!(rsa::traits::PublicKeyParts::size(&key), 256);
        let cert = parse(&issued.certificate_der);
        assert_eq!(
            key.to_public_key().to_public_key_der().unwrap().as_bytes(),
            cert.public_key().raw
        );
        assert!(eku(&cert).client_auth);
        assert!(!cert.is_ca());
        assert_eq!(
            info_cn(&issued.certificate_der).as_deref(),
            Some(DEVICE_COMMON_NAME)
        );

        // Every request gets a key of its own.
        let second = ca.create_keys_and_certificate().unwrap();
        assert_ne!(second.private_key_pem, issued.private_key_pem);
        assert_ne!(second.certificate_id, issued.certificate_id);
    }

    #[test]
    fn key_pool_fills_up_and_its_thread_ends_with_it() {
        let pool = KeyPool::start(2);
        let shared = Arc::clone(&pool.shared);
        // Wait on the pool's own condition variable until the worker has filled it.
        {
            let mut state = shared.lock();
            while state.keys.len() < 2 {
                state = shared.wake.wait(state).unwrap();
            }
        }
        assert_eq!(pool.ready(), 2);
        pool.take().unwrap();
        assert!(pool.ready() <= 2);
        drop(pool);
        // The worker held the other reference: it is gone, so the thread has returned.
        assert_eq!(Arc::strong_count(&shared), 1);
    }

    #[test]
    fn csr_keys_rsa_p256_p384_keep_their_spki_and_subject() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();

        let rsa_key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pkcs8 = rsa_key.to_pkcs8_der().unwrap();
        let rsa_pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes()),
            &PKCS_RSA_SHA256,
        )
        .unwrap();
        let p256 = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();

        let mut pems = vec![P384_SHA256_CSR.to_owned()];
        for (key, cn) in [
            (&rsa_pair, "rsa-device"),
            (&p256, "p256-device"),
            (&p384, "p384-device"),
        ] {
            pems.push(csr_for(key, cn).pem().unwrap());
        }
        for pem in &pems {
            let issued = ca.sign_csr(pem).unwrap();
            assert!(issued.private_key_pem.is_none());
            verifies_against(&issued.certificate_der, &ca);
            let cert = parse(&issued.certificate_der);
            assert_eq!(cert.public_key().raw, csr_spki(pem).as_slice());
            assert!(eku(&cert).client_auth);
        }
        assert_eq!(
            info_cn(&ca.sign_csr(&pems[2]).unwrap().certificate_der).as_deref(),
            Some("p256-device")
        );

        let info = cert_info(&ca.sign_csr(P384_SHA256_CSR).unwrap().certificate_der);
        assert_eq!(info.common_name.as_deref(), Some("sensor-42"));
        assert_eq!(info.country.as_deref(), Some("US"));
        assert_eq!(info.organization.as_deref(), Some("Example Corp"));
        assert_eq!(info.organizational_unit.as_deref(), Some("Sensors"));
        assert_eq!(info.state_name.as_deref(), Some("Washington"));
        assert_eq!(info.serial_number.as_deref(), Some("SN-0042"));
        assert_eq!(info.dn_qualifier.as_deref(), Some("batch7"));
    }

    #[test]
    fn bad_csrs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();

        let err = ca.sign_csr(RSA1024_CSR).unwrap_err();
        assert!(err.0.contains("2048"), "{err}");
        let err = ca.sign_csr(P521_CSR).unwrap_err();
        assert!(err.0.contains("P-256 or P-384"), "{err}");
        let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let err = ca.sign_csr(&csr_for(&ed, "ed").pem().unwrap()).unwrap_err();
        assert!(err.0.contains("not supported"), "{err}");

        // One byte of the subject changed after signing: the signature no longer matches.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut der = csr_for(&key, "aaaaaaaaaaaa").der().to_vec();
        let at = der.windows(12).position(|w| w == b"aaaaaaaaaaaa").unwrap();
        der[at] = b'b';
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64(&der)
        );
        let err = ca.sign_csr(&tampered).unwrap_err();
        assert!(err.0.contains("signature"), "{err}");

        for junk in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            assert!(ca.sign_csr(junk).is_err(), "{junk:?}");
        }
        // A certificate is not a certificate request.
        let cert_pem = ca.create_keys_and_certificate().unwrap().certificate_pem;
        assert!(ca.sign_csr(&cert_pem).is_err());
    }

    #[test]
    fn bit_length_counts_significant_bits() {
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[]), 0);
    }
}

#[cfg(test)]
mod device_certificate_tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    fn csr_pem() -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "validity test");
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
        x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
            .map(|p| p.unwrap().contents)
            .collect()
    }

    fn unix_now() -> i64 {
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    }

    #[test]
    fn device_certificates_last_the_set_validity() {
        for secs in [30, 600, 365 * 86_400] {
            let dir = tempfile::tempdir().unwrap();
            let device = DeviceCertificates {
                validity: Some(Duration::from_secs(secs)),
                intermediate: false,
            };
            let ca = Ca::load_or_create_with(dir.path(), device).unwrap();
            let before = unix_now();
            for issued in [
                ca.sign_csr(&csr_pem()).unwrap(),
                ca.create_keys_and_certificate().unwrap(),
            ] {
                let cert = parse(&issued.certificate_der);
                let validity = cert.validity();
                let (nb, na) = (
                    validity.not_before.timestamp(),
                    validity.not_after.timestamp(),
                );
                assert_eq!(na - nb, i64::try_from(secs).unwrap(), "validity {secs} s");
                // Valid now, and backdated by a tenth of it, at most a minute.
                let back = i64::try_from((secs / 10).min(60)).unwrap();
                assert!(
                    nb <= before && nb >= before - back - 1,
                    "notBefore {nb}, now {before}"
                );
                assert_eq!(pem_blocks(&issued.certificate_pem).len(), 1);
            }
        }
        // Without a setting: the end of 2049, as before.
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let issued = ca.sign_csr(&csr_pem()).unwrap();
        assert_eq!(
            parse(&issued.certificate_der)
                .validity()
                .not_after
                .timestamp(),
            DEVICE_NOT_AFTER_UNIX
        );
        let zero = DeviceCertificates {
            validity: Some(Duration::ZERO),
            intermediate: false,
        };
        let e = Ca::load_or_create_with(dir.path(), zero).unwrap_err();
        assert!(e.to_string().contains("at least one second"), "{e}");
    }

    #[test]
    fn an_intermediate_ca_issues_device_certificates_with_its_chain() {
        let dir = tempfile::tempdir().unwrap();
        let device = DeviceCertificates {
            validity: None,
            intermediate: true,
        };
        let ca = Ca::load_or_create_with(dir.path(), device.clone()).unwrap();
        let root_der = ca.ca_der();
        let root = parse(&root_der);
        assert_eq!(path_len_constraint(&root_der), Some(1));
        for issued in [
            ca.sign_csr(&csr_pem()).unwrap(),
            ca.create_keys_and_certificate().unwrap(),
        ] {
            let blocks = pem_blocks(&issued.certificate_pem);
            assert_eq!(blocks.len(), 2, "{}", issued.certificate_pem);
            assert_eq!(blocks[0], issued.certificate_der);
            assert_eq!(issued.certificate_id, certificate_id(&blocks[0]));
            let (leaf, inter) = (parse(&blocks[0]), parse(&blocks[1]));
            assert_eq!(leaf.issuer().as_raw(), inter.subject().as_raw());
            assert_eq!(inter.issuer().as_raw(), root.subject().as_raw());
            leaf.verify_signature(Some(inter.public_key()))
                .expect("signed by the intermediate");
            inter
                .verify_signature(Some(root.public_key()))
                .expect("the intermediate is signed by the root");
            assert!(leaf.verify_signature(Some(root.public_key())).is_err());
            assert!(inter.is_ca() && !leaf.is_ca());
            assert_eq!(path_len_constraint(&blocks[1]), Some(0));
        }
        assert_eq!(
            fs::read_to_string(dir.path().join(INTERMEDIATE_CERT_FILE)).unwrap(),
            ca.intermediate_pem().unwrap()
        );
        assert_eq!(
            crate::files::mode_of(&dir.path().join(INTERMEDIATE_KEY_FILE)) & 0o777,
            0o600
        );
        // Claims still come from the root.
        let claim = ca.issue_claim("claim", Duration::from_secs(300)).unwrap();
        assert_eq!(
            parse(&claim.certificate_der).issuer().as_raw(),
            root.subject().as_raw()
        );
        let pem = ca.intermediate_pem().unwrap().to_owned();
        drop(ca);
        // A restart keeps the same intermediate; without the flag, the root issues again.
        let again = Ca::load_or_create_with(dir.path(), device).unwrap();
        assert_eq!(again.intermediate_pem(), Some(pem.as_str()));
        drop(again);
        let plain = Ca::load_or_create(dir.path()).unwrap();
        assert!(plain.intermediate_pem().is_none());
        let issued = plain.sign_csr(&csr_pem()).unwrap();
        assert_eq!(pem_blocks(&issued.certificate_pem).len(), 1);
        parse(&issued.certificate_der)
            .verify_signature(Some(root.public_key()))
            .unwrap();
    }

    #[test]
    fn a_root_that_allows_no_intermediate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        // A root as the emulator made them before: pathLenConstraint 0.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "old root");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        Ca::load_or_create(dir.path()).unwrap();
        fs::write(dir.path().join(CA_CERT_FILE), cert.pem()).unwrap();
        fs::write(dir.path().join(CA_KEY_FILE), key.serialize_pem()).unwrap();
        let device = DeviceCertificates {
            validity: None,
            intermediate: true,
        };
        let e = Ca::load_or_create_with(dir.path(), device).unwrap_err();
        assert!(
            e.to_string().contains("pathLenConstraint 0") && e.to_string().contains("ca.pem"),
            "{e}"
        );
        assert!(!dir.path().join(INTERMEDIATE_CERT_FILE).exists());
        // Without an intermediate the old root still serves.
        Ca::load_or_create(dir.path()).unwrap();
    }
}
