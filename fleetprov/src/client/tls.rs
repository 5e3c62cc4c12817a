//! The rustls client configuration: roots, client identity, ALPN.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use zeroize::Zeroizing;

use super::options::{ClientOptions, Credentials, Pem, PrivateKey};
use super::verify_cache::RememberingVerifier;
use crate::error::{Error, ErrorKind};
use crate::log::{fp_log, Level};
use crate::signer::{sign_checked, KeyAlgorithm, SignatureScheme, Signer};

/// ALPN protocol AWS IoT expects for MQTT over port 443.
pub const AWS_MQTT_ALPN: &[u8] = b"x-amzn-mqtt-ca";

/// Builds the TLS configuration for `opts`: reads the PEM files, checks that the key matches
/// the certificate, and uses the ring provider without touching the process default.
pub(crate) fn client_config(opts: &ClientOptions) -> Result<Arc<ClientConfig>, Error> {
    let roots = root_store(opts.ca.as_ref())?;
    let provider = Arc::new(provider());
    let setup =
        |e: &dyn std::fmt::Display| Error::new(ErrorKind::Internal, format!("TLS setup: {e}"));
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| setup(&e))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RememberingVerifier::new(webpki)));
    let mut config = match &opts.credentials {
        None => builder.with_no_client_auth(),
        Some(Credentials { cert, key }) => {
            let chain = load_certs(cert, "client certificate")?;
            match key {
                PrivateKey::Pem(key) => {
                    let key_der = load_key(key)?;
                    builder
                        .with_client_auth_cert(chain, key_der)
                        .map_err(|e| match e {
                            rustls::Error::InconsistentKeys(_) => Error::new(
                                ErrorKind::Tls,
                                format!(
                                    "the private key ({}) does not match the client \
                                     certificate ({})",
                                    describe_pem(key),
                                    describe_pem(cert)
                                ),
                            ),
                            other => Error::new(
                                ErrorKind::Tls,
                                format!(
                                    "cannot use the private key {}: {other}",
                                    describe_pem(key)
                                ),
                            ),
                        })?
                }
                PrivateKey::Signer(signer) => with_signer(builder, cert, chain, signer.clone())?,
                PrivateKey::Pkcs11(p) => {
                    let known = crate::signer::PublicKey::from_certificate_der(&chain[0]).ok();
                    let signer = crate::pkcs11::open(p, known.as_ref())?;
                    with_signer(builder, cert, chain, signer)?
                }
            }
        }
    };
    if opts.port == 443 {
        config.alpn_protocols = vec![AWS_MQTT_ALPN.to_vec()];
    }
    Ok(Arc::new(config))
}

/// The client certificate `chain` (from `cert`) with its key behind `signer`.
fn with_signer(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    cert: &Pem,
    chain: Vec<CertificateDer<'static>>,
    signer: Arc<dyn Signer>,
) -> Result<ClientConfig, Error> {
    let certified = CertifiedKey::new(chain, Arc::new(TlsKey(signer.clone())));
    certified.keys_match().map_err(|e| {
        Error::new(
            ErrorKind::Signer,
            match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the signer's public key ({}) is not the key of the client certificate ({})",
                    signer.public_key().algorithm(),
                    describe_pem(cert)
                ),
                other => format!(
                    "the client certificate ({}) is not usable: {other}",
                    describe_pem(cert)
                ),
            },
        )
    })?;
    Ok(builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified))))
}

/// ring's cryptography with TLS 1.3's AES-128-GCM-SHA256 first: the suite every TLS 1.3 peer
/// has (RFC 8446, 9.1) and the cheapest here, where SHA-256 has CPU instructions on x86-64 and
/// ARMv8 and SHA-384 often has not. The server picks among the same suites as before.
///
/// And P-256 first among the key exchange groups (the client's one key share is for it): ring
/// computes P-256 in assembly on x86-64 and AArch64, while its X25519 there is partly or
/// wholly C, which a size-optimised build leaves slow (`bench/fleet`: 0.82x to 0.88x the
/// floor's CPU per connection). Every group is still offered: a server without P-256 asks for
/// another (TLS 1.3's HelloRetryRequest).
fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let suite = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
    put_first(&mut provider.cipher_suites, |s| s.suite() == suite);
    let group = rustls::NamedGroup::secp256r1;
    put_first(&mut provider.kx_groups, |g| g.name() == group);
    provider
}

/// Moves the first item that `is` picks to the front, keeping the others in their order.
fn put_first<T>(items: &mut [T], is: impl Fn(&T) -> bool) {
    if let Some(at) = items.iter().position(is) {
        items[..=at].rotate_right(1);
    }
}

/// A [`Signer`] as rustls's signing key for the client certificate.
#[derive(Debug)]
struct TlsKey(Arc<dyn Signer>);

impl rustls::sign::SigningKey for TlsKey {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        let ours = self.0.public_key().algorithm().schemes();
        let scheme = ours
            .iter()
            .copied()
            .find(|s| offered.contains(&s.to_rustls()))?;
        Some(Box::new(TlsSigner {
            signer: self.0.clone(),
            scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(
            self.0.public_key().spki_der(),
        ))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        match self.0.public_key().algorithm() {
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => rustls::SignatureAlgorithm::ECDSA,
            KeyAlgorithm::Rsa { .. } => rustls::SignatureAlgorithm::RSA,
        }
    }
}

/// One handshake signature by a [`Signer`], with the scheme rustls agreed on.
#[derive(Debug)]
struct TlsSigner {
    signer: Arc<dyn Signer>,
    scheme: SignatureScheme,
}

/// A signer's failure inside rustls, so [`tls_error`] can give it back its own kind.
#[derive(Debug)]
struct SignerFailure(Error);

impl std::fmt::Display for SignerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for SignerFailure {}

impl rustls::sign::Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        sign_checked(self.signer.as_ref(), self.scheme, message).map_err(|e| {
            fp_log!(Level::Error, "TLS client authentication: {}", e.message);
            rustls::Error::Other(rustls::OtherError(Arc::new(SignerFailure(e))))
        })
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        self.scheme.to_rustls()
    }
}

/// The error for a TLS failure while connecting: [`ErrorKind::Signer`] when the signer
/// failed, [`ErrorKind::Tls`] otherwise.
pub(crate) fn tls_error(e: &rustls::Error, endpoint: &str) -> Error {
    if let rustls::Error::Other(other) = e {
        if let Some(SignerFailure(inner)) = other.0.downcast_ref::<SignerFailure>() {
            return Error::new(
                ErrorKind::Signer,
                format!(
                    "TLS with {endpoint} stopped: client authentication failed: {}",
                    inner.message
                ),
            );
        }
    }
    Error::new(ErrorKind::Tls, describe_tls_error(e, endpoint))
}

fn describe_pem(pem: &Pem) -> String {
    match pem {
        Pem::File(p) => p.display().to_string(),
        Pem::Memory(_) => "given in memory".to_owned(),
    }
}

/// Reads PEM bytes; file contents go straight into a wiping buffer since they may be a key.
fn read_pem(pem: &Pem, what: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    match pem {
        Pem::Memory(b) => Ok(b.clone()),
        Pem::File(path) => std::fs::read(path).map(Zeroizing::new).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot read the {what} file {}: {e}", path.display()),
            )
        }),
    }
}

fn load_certs(pem: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read_pem(pem, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::Tls,
                format!("the {what} ({}) is not valid PEM: {e}", describe_pem(pem)),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Tls,
            format!("no CERTIFICATE found in the {what} ({})", describe_pem(pem)),
        ));
    }
    Ok(certs)
}

fn load_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read_pem(pem, "private key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PKCS#1, PKCS#8 or SEC1 private key found".to_owned()
            }
            other => format!("not valid PEM: {other}"),
        };
        Error::new(
            ErrorKind::Tls,
            format!("private key ({}): {why}", describe_pem(pem)),
        )
    })
}

fn root_store(ca: Option<&Pem>) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(pem) => {
            for (i, cert) in load_certs(pem, "CA")?.into_iter().enumerate() {
                roots.add(cert).map_err(|e| {
                    Error::new(
                        ErrorKind::Tls,
                        format!(
                            "CA certificate #{} in {} is not usable: {e}",
                            i + 1,
                            describe_pem(pem)
                        ),
                    )
                })?;
            }
        }
        None => {
            // Only here are the platform roots read: parsing them costs time and memory.
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                fp_log!(Level::Warn, "platform root certificates: {e}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::new(
                    ErrorKind::Tls,
                    "no CA given and no usable platform root certificates found",
                ));
            }
            fp_log!(Level::Debug, "loaded {added} platform root certificates");
        }
    }
    Ok(roots)
}

/// Explains a rustls failure in words that tell the likely cause apart.
pub(crate) fn describe_tls_error(e: &rustls::Error, endpoint: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer => format!(
                "server certificate of {endpoint} is not signed by a trusted CA (wrong CA file?): {e}"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("server certificate of {endpoint} has expired: {e}")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("server certificate of {endpoint} is not valid yet: {e}")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("server certificate is not valid for the name {endpoint:?}: {e}")
            }
            _ => format!("server certificate of {endpoint} rejected: {e}"),
        },
        rustls::Error::AlertReceived(alert) => describe_alert(*alert, endpoint),
        other => format!("TLS with {endpoint} failed: {other}"),
    }
}

/// Explains a TLS alert from the server. During the handshake these are nearly always about
/// the client certificate, which only the server can judge (its clock, its CA list).
fn describe_alert(alert: AlertDescription, endpoint: &str) -> String {
    use AlertDescription as A;
    let why = match alert {
        A::CertificateExpired => {
            "it has expired or is not valid yet (check its dates, and the device's clock)"
        }
        A::UnknownCA => "its issuer is not a CA the server trusts (not registered with it?)",
        A::CertificateRevoked => "it has been revoked",
        A::CertificateRequired => "none was given, and the server requires one",
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
            "the server found it unusable"
        }
        A::DecryptError => "its signature or the handshake signature did not verify",
        A::AccessDenied => "the server denied access with it (inactive or not allowed?)",
        other => {
            return format!(
                "{endpoint} ended the TLS session with alert {other:?}: it did not accept the \
                 client certificate or the TLS parameters"
            )
        }
    };
    format!("{endpoint} did not accept the client certificate (TLS alert {alert:?}): {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_io_errors() {
        let mut o = ClientOptions::new("localhost");
        o.ca = Some(Pem::file("/nonexistent/ca.pem"));
        let e = client_config(&o).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.message.contains("/nonexistent/ca.pem"), "{}", e.message);
    }

    #[test]
    fn non_pem_is_a_tls_error() {
        let mut o = ClientOptions::new("localhost");
        o.ca = Some(Pem::memory("hello"));
        let e = client_config(&o).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Tls);
        assert!(e.message.contains("no CERTIFICATE"), "{}", e.message);
        let e = load_key(&Pem::memory(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ))
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Tls);
        assert!(e.message.contains("no PKCS#1"), "{}", e.message);
    }

    /// The codes of `items`, sorted: what is offered, whatever the order.
    fn offered<T>(items: &[T], code: impl Fn(&T) -> u16) -> Vec<u16> {
        let mut codes: Vec<u16> = items.iter().map(code).collect();
        codes.sort_unstable();
        codes
    }

    #[test]
    fn aes_128_gcm_sha256_is_offered_first_and_nothing_is_dropped() {
        let ours = provider();
        let default = rustls::crypto::ring::default_provider();
        assert_eq!(
            ours.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        let code = |s: &rustls::SupportedCipherSuite| u16::from(s.suite());
        assert_eq!(
            offered(&ours.cipher_suites, code),
            offered(&default.cipher_suites, code)
        );
    }

    #[test]
    fn p256_key_share_first_and_every_group_still_offered() {
        let ours = provider();
        let default = rustls::crypto::ring::default_provider();
        assert_eq!(ours.kx_groups[0].name(), rustls::NamedGroup::secp256r1);
        let code = |g: &&'static dyn rustls::crypto::SupportedKxGroup| u16::from(g.name());
        assert_eq!(
            offered(&ours.kx_groups, code),
            offered(&default.kx_groups, code)
        );
    }

    #[test]
    fn alpn_only_on_port_443() {
        let mut o = ClientOptions::new("localhost");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["test-ca".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        o.ca = Some(Pem::memory(ca.pem()));
        assert!(client_config(&o).unwrap().alpn_protocols.is_empty());
        o.port = 443;
        assert_eq!(
            client_config(&o).unwrap().alpn_protocols,
            vec![b"x-amzn-mqtt-ca".to_vec()]
        );
    }

    #[test]
    fn messages_tell_causes_apart() {
        let m = |ce| describe_tls_error(&rustls::Error::InvalidCertificate(ce), "h");
        assert!(m(CertificateError::UnknownIssuer).contains("trusted CA"));
        assert!(m(CertificateError::Expired).contains("expired"));
        assert!(m(CertificateError::NotValidForName).contains("not valid for the name"));
        let a = |alert| describe_tls_error(&rustls::Error::AlertReceived(alert), "h");
        assert!(a(AlertDescription::CertificateExpired).contains("expired"));
        assert!(a(AlertDescription::UnknownCA).contains("not a CA the server trusts"));
        for alert in [
            AlertDescription::CertificateExpired,
            AlertDescription::UnknownCA,
            AlertDescription::CertificateRevoked,
            AlertDescription::HandshakeFailure,
        ] {
            assert!(a(alert).contains("did not accept the client certificate"));
        }
    }
}
