//! Connection options.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::Error;
use crate::pkcs11::Pkcs11Key;
use crate::protocol::PayloadFormat;
use crate::signer::Signer;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MqttVersion {
    /// MQTT 5 (the default, as in AWS's sample).
    #[default]
    V5,
    /// MQTT 3.1.1.
    V311,
}

/// PEM material: a file to read at connect time, or bytes already in memory.
#[derive(Clone)]
pub enum Pem {
    /// Path of a PEM file.
    File(PathBuf),
    /// PEM text; wiped from memory when dropped.
    Memory(Zeroizing<Vec<u8>>),
}

impl Pem {
    /// PEM held in memory (copied).
    pub fn memory(pem: impl AsRef<[u8]>) -> Pem {
        Pem::Memory(Zeroizing::new(pem.as_ref().to_vec()))
    }

    /// PEM in a file.
    pub fn file(path: impl Into<PathBuf>) -> Pem {
        Pem::File(path.into())
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => f.debug_tuple("File").field(p).finish(),
            Pem::Memory(b) => write!(f, "Memory(<{} bytes>)", b.len()),
        }
    }
}

/// Default MQTT-over-TLS port.
pub const DEFAULT_PORT: u16 = 8883;
/// Shortest keep-alive rumqttc accepts.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Everything needed to connect. Build with [`ClientOptions::new`] and set fields directly.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Host name or IP address of the endpoint; also the name the server certificate must carry.
    pub endpoint: String,
    /// TCP port, 8883 by default; on 443 the client offers ALPN `x-amzn-mqtt-ca`.
    pub port: u16,
    /// MQTT client id; `None` picks `test-<uuid v4>` as AWS's sample does.
    pub client_id: Option<String>,
    /// Client certificate chain (leaf first).
    pub cert: Option<Pem>,
    /// Private key of the client certificate: PKCS#1, PKCS#8 or SEC1 PEM.
    pub key: Option<Pem>,
    /// Instead of `key`: signs the TLS handshake with the certificate's key, which the library
    /// never holds (a secure element, an HSM, PKCS#11). Its public key must be the
    /// certificate's. Called on the thread that drives the connection, once per handshake.
    pub signer: Option<Arc<dyn Signer>>,
    /// Instead of `key`: the certificate's key in a PKCS#11 token, opened when connecting.
    pub pkcs11: Option<Pkcs11Key>,
    /// CA certificates that may sign the server's certificate; `None` uses the platform roots.
    pub ca: Option<Pem>,
    /// MQTT 5 or 3.1.1.
    pub mqtt_version: MqttVersion,
    /// Keep-alive interval, whole seconds from 5 s to 65,535 s (default 30 s).
    pub keep_alive: Duration,
    /// How long one operation may wait for its acknowledgements and reply (default 30 s),
    /// counted from when it gets its turn.
    pub operation_timeout: Duration,
    /// How long connecting (TCP, proxy, TLS, CONNACK) may take (default 30 s).
    pub connect_timeout: Duration,
    /// HTTP CONNECT proxy as (host, port).
    pub proxy: Option<(String, u16)>,
    /// Payload format of the provisioning topics and payloads (default JSON).
    pub format: PayloadFormat,
    /// The provisioning template the client will register with, if known up front. The first
    /// CreateKeysAndCertificate or CreateCertificateFromCsr then subscribes to this template's
    /// RegisterThing reply topics in the same SUBSCRIBE as its own, so RegisterThing with this
    /// template needs no subscription round trip of its own. RegisterThing with another
    /// template still works, and subscribes for itself.
    pub template_name: Option<String>,
}

impl ClientOptions {
    /// Options for `endpoint` with every default: port 8883, MQTT 5, platform roots, 30 s
    /// keep-alive and timeouts, generated client id, no client certificate yet.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientOptions {
            endpoint: endpoint.into(),
            port: DEFAULT_PORT,
            client_id: None,
            cert: None,
            key: None,
            signer: None,
            pkcs11: None,
            ca: None,
            mqtt_version: MqttVersion::V5,
            keep_alive: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            proxy: None,
            format: PayloadFormat::Json,
            template_name: None,
        }
    }

    /// Checks everything that can be checked without touching files or the network.
    pub fn validate(&self) -> Result<(), Error> {
        if self.endpoint.trim().is_empty() {
            return Err(Error::invalid("endpoint is empty"));
        }
        if rustls_pki_types::ServerName::try_from(self.endpoint.as_str()).is_err() {
            return Err(Error::invalid(endpoint_problem(&self.endpoint)));
        }
        if self.port == 0 {
            return Err(Error::invalid("port must not be 0"));
        }
        if self.keep_alive < MIN_KEEP_ALIVE || self.keep_alive.as_secs() > u64::from(u16::MAX) {
            return Err(Error::invalid(format!(
                "keep-alive must be between 5 and 65535 seconds, got {:?}",
                self.keep_alive
            )));
        }
        if self.operation_timeout.is_zero() {
            return Err(Error::invalid(
                "operation timeout must be greater than zero",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid("connect timeout must be greater than zero"));
        }
        if let Some(name) = &self.template_name {
            crate::protocol::validate_template_name(name)?;
        }
        if let Some(id) = &self.client_id {
            // MQTT strings are at most 65,535 bytes; an empty id would ask the broker to pick one,
            // which AWS IoT does not do.
            if id.is_empty() || id.len() > usize::from(u16::MAX) {
                return Err(Error::invalid(
                    "client id must be 1 to 65535 bytes long (AWS IoT allows 128)",
                ));
            }
        }
        let keys = usize::from(self.key.is_some())
            + usize::from(self.signer.is_some())
            + usize::from(self.pkcs11.is_some());
        match (&self.cert, keys) {
            (Some(_), 0) => {
                return Err(Error::invalid(
                    "a client certificate needs its private key, a signer or a PKCS#11 key",
                ))
            }
            (None, 1..) => {
                let what = if self.key.is_some() {
                    "a private key"
                } else if self.signer.is_some() {
                    "a signer"
                } else {
                    "a PKCS#11 key"
                };
                return Err(Error::invalid(format!(
                    "{what} needs its client certificate"
                )));
            }
            (_, 2..) => {
                return Err(Error::invalid(
                    "give one of a private key, a signer and a PKCS#11 key, not several",
                ))
            }
            _ => {}
        }
        if let Some(p) = &self.pkcs11 {
            p.validate()?;
        }
        if let Some((host, port)) = &self.proxy {
            if host.trim().is_empty() || *port == 0 {
                return Err(Error::invalid("proxy needs a host and a non-zero port"));
            }
        }
        Ok(())
    }

    /// The client id to use: the configured one or a fresh `test-<uuid v4>`.
    pub(crate) fn effective_client_id(&self) -> Result<String, Error> {
        match &self.client_id {
            Some(id) => Ok(id.clone()),
            None => Ok(format!("test-{}", uuid_v4()?)),
        }
    }
}

/// A random (version 4) UUID in its usual text form.
pub(crate) fn uuid_v4() -> Result<String, Error> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| {
        Error::new(
            crate::ErrorKind::Internal,
            format!("no randomness for the client id: {e}"),
        )
    })?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Why `endpoint`, which is not a host name or IP address, was refused: a URL's scheme, port
/// and path are named, to be dropped, since the endpoint is the host name alone.
fn endpoint_problem(endpoint: &str) -> String {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, endpoint),
    };
    let (host_port, path) = match rest.split_once('/') {
        Some((host_port, path)) => (host_port, Some(path)),
        None => (rest, None),
    };
    let port = host_port
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let mut parts = Vec::new();
    if let Some(scheme) = scheme {
        parts.push(format!("the {scheme}:// scheme"));
    }
    if let Some(port) = port {
        parts.push(format!("the :{port} port"));
    }
    if let Some(path) = path {
        parts.push(format!("the /{path} path"));
    }
    let Some(last) = parts.pop() else {
        return format!("endpoint {endpoint:?} is not a valid host name or IP address");
    };
    let parts = if parts.is_empty() {
        last
    } else {
        format!("{} and {last}", parts.join(", "))
    };
    let mut message = format!("drop {parts}: the endpoint is a host name or IP address only");
    if port.is_some() {
        message.push_str(&format!(
            " (the port is set on its own, {DEFAULT_PORT} by default)"
        ));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn ok_opts() -> ClientOptions {
        let mut o = ClientOptions::new("localhost");
        o.cert = Some(Pem::file("c.pem"));
        o.key = Some(Pem::file("k.pem"));
        o
    }

    #[test]
    fn defaults() {
        let o = ClientOptions::new("example.com");
        assert_eq!(o.port, 8883);
        assert_eq!(o.mqtt_version, MqttVersion::V5);
        assert_eq!(o.operation_timeout, Duration::from_secs(30));
        assert!(o.client_id.is_none() && o.ca.is_none());
        o.validate().unwrap();
    }

    #[test]
    fn invalid_options_are_refused() {
        type Edit = fn(&mut ClientOptions);
        let cases: Vec<(&str, Edit)> = vec![
            ("empty endpoint", |o| o.endpoint.clear()),
            ("bad endpoint", |o| o.endpoint = "a b/c".into()),
            ("port 0", |o| o.port = 0),
            ("keep-alive 4 s", |o| o.keep_alive = Duration::from_secs(4)),
            ("keep-alive 0", |o| o.keep_alive = Duration::ZERO),
            ("keep-alive huge", |o| {
                o.keep_alive = Duration::from_secs(70_000)
            }),
            ("op timeout 0", |o| o.operation_timeout = Duration::ZERO),
            ("connect timeout 0", |o| o.connect_timeout = Duration::ZERO),
            ("empty client id", |o| o.client_id = Some(String::new())),
            ("cert without key", |o| o.key = None),
            ("key without cert", |o| o.cert = None),
            ("key and signer", |o| {
                o.signer = Some(crate::signer::test_signer())
            }),
            ("key and pkcs11", |o| {
                o.pkcs11 = Some(Pkcs11Key {
                    module: "m.so".into(),
                    key_label: "k".into(),
                    ..Default::default()
                })
            }),
            ("pkcs11 without key label", |o| {
                o.key = None;
                o.pkcs11 = Some(Pkcs11Key {
                    module: "m.so".into(),
                    ..Default::default()
                })
            }),
            ("signer without cert", |o| {
                o.cert = None;
                o.key = None;
                o.signer = Some(crate::signer::test_signer());
            }),
            ("proxy port 0", |o| o.proxy = Some(("p".into(), 0))),
        ];
        ok_opts().validate().unwrap();
        for (name, f) in cases {
            let mut o = ok_opts();
            f(&mut o);
            assert_eq!(
                o.validate().unwrap_err().kind,
                ErrorKind::InvalidArgument,
                "{name}"
            );
        }
        let mut o = ok_opts();
        o.key = None;
        o.signer = Some(crate::signer::test_signer());
        o.validate().unwrap();
        let mut o = ok_opts();
        o.keep_alive = Duration::from_secs(5);
        o.endpoint = "127.0.0.1".into();
        o.validate().unwrap();
    }

    #[test]
    fn an_endpoint_given_as_a_url_says_what_to_drop() {
        for (endpoint, says) in [
            ("https://a.example", "drop the https:// scheme"),
            (
                "mqtts://a.example:8883/x",
                "drop the mqtts:// scheme, the :8883 port and the /x path",
            ),
            ("a.example:8883", "drop the :8883 port"),
            ("a.example/mqtt", "drop the /mqtt path"),
            ("a b", "not a valid host name or IP address"),
        ] {
            let message = ClientOptions::new(endpoint).validate().unwrap_err().message;
            assert!(message.contains(says), "{endpoint}: {message}");
        }
    }

    #[test]
    fn generated_client_ids_are_uuid_v4() {
        let o = ClientOptions::new("h");
        let a = o.effective_client_id().unwrap();
        let b = o.effective_client_id().unwrap();
        assert_ne!(a, b);
        let u = a.strip_prefix("test-").unwrap();
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(
            parts[3].chars().next(),
            Some('8' | '9' | 'a' | 'b')
        ));
        let mut o = ClientOptions::new("h");
        o.client_id = Some("dev-1".into());
        assert_eq!(o.effective_client_id().unwrap(), "dev-1");
    }

    #[test]
    fn pem_debug_hides_memory() {
        let p = Pem::memory(b"-----BEGIN PRIVATE KEY-----\nsecret");
        assert!(!format!("{p:?}").contains("secret"));
    }
}
