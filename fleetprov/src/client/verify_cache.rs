//! The server's certificate chain, verified once for the clients that share a configuration.
//!
//! Every connection of a fleet (or every reconnection of one device) is shown the same chain by
//! the same endpoint. Path building and the CA's signature check on it cost about as much as
//! the rest of the client's handshake signatures; this verifier remembers a chain it accepted
//! and accepts exactly that chain again, for the same server name, for a short while. What
//! proves the server holds the certificate's key, its handshake signature, is checked on every
//! connection as before.
//!
//! A chain is remembered only if it verified both now and [`REMEMBERED_FOR`] from now: a
//! certificate's validity is one interval, so the chain is valid throughout the time it is
//! remembered and a remembered answer is the answer a full check would give. That second check
//! is made when the chain is seen a second time, so a configuration used for one connection
//! pays for one check, as without this verifier. Nothing is remembered of a refusal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// How long an accepted chain is accepted again without a new check.
pub(crate) const REMEMBERED_FOR: Duration = Duration::from_secs(600);

/// How many chains are remembered (endpoints a configuration talks to at the same time).
const CAPACITY: usize = 8;

/// One accepted chain: exactly these bytes, for this name. Accepted again in `[from, until]`
/// once `proven` (valid at both ends); until then only a note that it was seen.
struct Accepted {
    chain: Vec<Vec<u8>>,
    ocsp: Vec<u8>,
    name: String,
    from: u64,
    until: u64,
    proven: bool,
}

impl Accepted {
    fn matches(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &str,
        ocsp: &[u8],
    ) -> bool {
        self.name == name
            && self.ocsp == ocsp
            && self.chain.len() == intermediates.len() + 1
            && self
                .chain
                .iter()
                .zip(std::iter::once(end_entity).chain(intermediates))
                .all(|(kept, shown)| kept.as_slice() == shown.as_ref())
    }
}

/// A [`ServerCertVerifier`] that remembers the chains `inner` accepted.
pub(crate) struct RememberingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    accepted: Mutex<Vec<Accepted>>,
}

impl std::fmt::Debug for RememberingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RememberingVerifier")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl RememberingVerifier {
    pub(crate) fn new(inner: Arc<dyn ServerCertVerifier>) -> RememberingVerifier {
        RememberingVerifier {
            inner,
            accepted: Mutex::new(Vec::new()),
        }
    }

    fn accepted(&self) -> std::sync::MutexGuard<'_, Vec<Accepted>> {
        // Every update leaves the list consistent.
        self.accepted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many chains are accepted without a check now (for tests).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.accepted().iter().filter(|a| a.proven).count()
    }
}

fn name_of(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

impl ServerCertVerifier for RememberingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = name_of(server_name);
        let secs = now.as_secs();
        let seen = {
            let mut accepted = self.accepted();
            accepted.retain(|a| a.until >= secs);
            match accepted
                .iter()
                .find(|a| a.matches(end_entity, intermediates, &name, ocsp_response))
            {
                Some(a) if a.proven && a.from <= secs => return Ok(ServerCertVerified::assertion()),
                Some(_) => true,
                None => false,
            }
        };
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let until = secs.saturating_add(REMEMBERED_FOR.as_secs());
        // Seen before: worth proving it for the window. First sight: a note, nothing more.
        let proven = seen && {
            let later = UnixTime::since_unix_epoch(Duration::from_secs(until));
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, later)
                .is_ok()
        };
        let mut accepted = self.accepted();
        accepted.retain(|a| !a.matches(end_entity, intermediates, &name, ocsp_response));
        if accepted.len() >= CAPACITY {
            accepted.remove(0);
        }
        accepted.push(Accepted {
            chain: std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.as_ref().to_vec())
                .collect(),
            ocsp: ocsp_response.to_vec(),
            name,
            from: secs,
            until,
            proven,
        });
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::WebPkiServerVerifier;
    use rustls::RootCertStore;

    struct Pki {
        ca: CertificateDer<'static>,
        server: CertificateDer<'static>,
        other_server: CertificateDer<'static>,
    }

    /// A CA and two server certificates for "localhost" it signed, valid for `secs` from now.
    fn pki(secs: i64) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let server = |secs: i64| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - time::Duration::days(1);
            p.not_after = now + time::Duration::seconds(secs);
            p.signed_by(&key, &ca_cert, &ca_key).unwrap().der().clone()
        };
        Pki {
            ca: ca_cert.der().clone(),
            server: server(secs),
            other_server: server(secs),
        }
    }

    fn verifier(ca: &CertificateDer<'static>) -> RememberingVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        RememberingVerifier::new(inner)
    }

    fn localhost() -> ServerName<'static> {
        ServerName::try_from("localhost").unwrap()
    }

    #[test]
    fn an_accepted_chain_is_remembered_for_its_name_only() {
        let p = pki(30 * 86_400);
        let v = verifier(&p.ca);
        let now = UnixTime::now();
        // Checked in full the first two times (proven for the window the second time).
        v.verify_server_cert(&p.server, &[], &localhost(), &[], now)
            .unwrap();
        assert_eq!(v.remembered(), 0);
        v.verify_server_cert(&p.server, &[], &localhost(), &[], now)
            .unwrap();
        assert_eq!(v.remembered(), 1);
        v.verify_server_cert(&p.server, &[], &localhost(), &[], now)
            .unwrap();
        assert_eq!(v.remembered(), 1);
        // Another name is checked in full, and refused: the certificate is for localhost.
        let other = ServerName::try_from("example.com").unwrap();
        assert!(v
            .verify_server_cert(&p.server, &[], &other, &[], now)
            .is_err());
        // Another certificate is checked in full too, and remembered beside the first.
        for _ in 0..2 {
            v.verify_server_cert(&p.other_server, &[], &localhost(), &[], now)
                .unwrap();
        }
        assert_eq!(v.remembered(), 2);
        // Past the remembered window the chain is checked again (and is still fine).
        let later = UnixTime::since_unix_epoch(Duration::from_secs(
            now.as_secs() + REMEMBERED_FOR.as_secs() + 1,
        ));
        v.verify_server_cert(&p.server, &[], &localhost(), &[], later)
            .unwrap();
    }

    #[test]
    fn a_refused_chain_or_one_about_to_expire_is_not_remembered() {
        let p = pki(30 * 86_400);
        let stranger = pki(30 * 86_400);
        let v = verifier(&p.ca);
        let now = UnixTime::now();
        // Signed by a CA the verifier does not trust.
        for _ in 0..2 {
            assert!(v
                .verify_server_cert(&stranger.server, &[], &localhost(), &[], now)
                .is_err());
        }
        assert_eq!(v.remembered(), 0);
        // Valid now, expired before the window would end: accepted, not remembered, so a
        // connection after its expiry is refused.
        let short = pki(60);
        let v = verifier(&short.ca);
        for _ in 0..3 {
            v.verify_server_cert(&short.server, &[], &localhost(), &[], now)
                .unwrap();
        }
        assert_eq!(v.remembered(), 0);
        let expired = UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs() + 2 * 86_400));
        assert!(v
            .verify_server_cert(&short.server, &[], &localhost(), &[], expired)
            .is_err());
    }
}
