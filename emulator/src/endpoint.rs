//! The endpoint's side of the broker: how a connecting certificate is identified and
//! authorized, how requests are admitted and answered by the provisioning service, and the
//! server's TLS configuration.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::access;
use crate::broker::{Access, Backend};
use crate::ca::Ca;
use crate::cert;
use crate::policy;
use crate::registry::CertStatus;
use crate::service::Service;
use crate::throttle::{self, Throttle};

/// ALPN protocol AWS IoT expects from MQTT clients on port 443; offering none is fine too.
pub const ALPN_MQTT: &[u8] = b"x-amzn-mqtt-ca";

/// Connects the endpoint to the service and the registry.
pub(crate) struct ServiceBackend {
    pub(crate) service: Arc<Service>,
    pub(crate) policies: Arc<access::store::PolicyStore>,
    pub(crate) claims_dir: PathBuf,
    pub(crate) throttle: Arc<Throttle>,
}

impl Backend for ServiceBackend {
    fn identify(&self, cert_der: &[u8]) -> (String, Access) {
        let id = cert::certificate_id(cert_der);
        let registry = self.service.registry();
        let mut status = registry.cert_status(&id);
        // A claim issued by the `claim` command while this server runs: take it in now.
        if status.is_none() && self.claims_dir.join(&id).is_file() {
            registry.add_claim(&id);
            status = registry.cert_status(&id);
        }
        let access = match status {
            Some(CertStatus::Claim) => Access::Claim,
            Some(CertStatus::Active) => Access::Device,
            _ => Access::Denied,
        };
        self.throttle.count_connection(access == Access::Claim);
        (id, access)
    }

    fn authorize(
        &self,
        cert_der: &[u8],
        client_id: &str,
    ) -> Result<(access::store::Authorizer, Vec<String>), String> {
        let cert = policy::context::CertFields::from_der(cert_der);
        self.policies
            .authorizer(self.service.registry(), &cert, client_id, None)
    }

    fn admit(&self, topic: &str) -> throttle::Admission {
        self.throttle.admit(topic)
    }

    fn handle(
        &self,
        topic: &str,
        payload: &[u8],
        cert_id: &str,
        client_id: &str,
    ) -> Option<(String, Vec<u8>)> {
        self.service
            .handle_from(topic, payload, cert_id, client_id)
            .map(|reply| (reply.topic, reply.payload))
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// TLS 1.2/1.3 with the ring provider; the client must present a certificate from our CA.
pub(crate) fn server_tls(ca: &Ca) -> io::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.ca_der()))
        .map_err(invalid)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(invalid)?;
    let chain = ca
        .server_chain_der()
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.server_key_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(invalid)?;
    config.alpn_protocols = vec![ALPN_MQTT.to_vec(), b"mqtt".to_vec()];
    Ok(config)
}
