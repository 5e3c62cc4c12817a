//! Connection options.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::Error;
use crate::pkcs11::Pkcs11Key;
use crate::protocol::{PayloadFormat, TemplateName};
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

/// The private key of a client certificate: where it is and who signs with it.
#[derive(Clone)]
pub enum PrivateKey {
    /// PKCS#1, PKCS#8 or SEC1 PEM, read by the library.
    Pem(Pem),
    /// A key the library never holds (a secure element, an HSM): the signer signs the TLS
    /// handshake with it. Called on the thread that drives the connection, once per handshake.
    Signer(Arc<dyn Signer>),
    /// A key in a PKCS#11 token, opened when connecting.
    Pkcs11(Pkcs11Key),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivateKey::Pem(p) => f.debug_tuple("Pem").field(p).finish(),
            PrivateKey::Signer(s) => f.debug_tuple("Signer").field(s).finish(),
            PrivateKey::Pkcs11(k) => f.debug_tuple("Pkcs11").field(k).finish(),
        }
    }
}

/// A client certificate and its private key: one of each, so neither can be missing.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The client certificate chain (leaf first).
    pub cert: Pem,
    /// Its private key. A signer's or a PKCS#11 key's public key must be the certificate's.
    pub key: PrivateKey,
}

impl Credentials {
    /// A certificate and its private key, both PEM.
    pub fn pem(cert: Pem, key: Pem) -> Credentials {
        Credentials {
            cert,
            key: PrivateKey::Pem(key),
        }
    }

    /// A certificate whose key signs through `signer`.
    pub fn signer(cert: Pem, signer: Arc<dyn Signer>) -> Credentials {
        Credentials {
            cert,
            key: PrivateKey::Signer(signer),
        }
    }

    /// A certificate whose key is in a PKCS#11 token.
    pub fn pkcs11(cert: Pem, key: Pkcs11Key) -> Credentials {
        Credentials {
            cert,
            key: PrivateKey::Pkcs11(key),
        }
    }
}

/// Everything needed to connect. Build with [`ClientOptions::new`] and set fields directly;
/// [`ClientOptions::check`] turns them into [`CheckedClientOptions`], which connecting takes.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Host name or IP address of the endpoint; also the name the server certificate must carry.
    pub endpoint: String,
    /// TCP port, 8883 by default; on 443 the client offers ALPN `x-amzn-mqtt-ca`.
    pub port: u16,
    /// MQTT client id; `None` picks `test-<uuid v4>` as AWS's sample does.
    pub client_id: Option<String>,
    /// The client certificate and its key; `None` connects without a client certificate.
    pub credentials: Option<Credentials>,
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
    pub template_name: Option<TemplateName>,
}

impl ClientOptions {
    /// Options for `endpoint` with every default: port 8883, MQTT 5, platform roots, 30 s
    /// keep-alive and timeouts, generated client id, no client certificate yet.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientOptions {
            endpoint: endpoint.into(),
            port: DEFAULT_PORT,
            client_id: None,
            credentials: None,
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

    /// Checks everything that can be checked without touching files or the network, the one
    /// place these options are checked; [`ErrorKind::InvalidArgument`](crate::ErrorKind) says
    /// what is wrong.
    pub fn check(self) -> Result<CheckedClientOptions, Error> {
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
        if let Some(id) = &self.client_id {
            check_client_id(id)?;
        }
        if let Some(Credentials {
            key: PrivateKey::Pkcs11(p),
            ..
        }) = &self.credentials
        {
            p.validate()?;
        }
        if let Some((host, port)) = &self.proxy {
            if host.trim().is_empty() || *port == 0 {
                return Err(Error::invalid("proxy needs a host and a non-zero port"));
            }
        }
        Ok(CheckedClientOptions(self))
    }

    /// The client id to use: the configured one or a fresh `test-<uuid v4>`.
    pub(crate) fn effective_client_id(&self) -> Result<String, Error> {
        match &self.client_id {
            Some(id) => Ok(id.clone()),
            None => Ok(format!("test-{}", uuid_v4()?)),
        }
    }
}

/// MQTT strings are at most 65,535 bytes; an empty id would ask the broker to pick one, which
/// AWS IoT does not do.
fn check_client_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > usize::from(u16::MAX) {
        return Err(Error::invalid(
            "client id must be 1 to 65535 bytes long (AWS IoT allows 128)",
        ));
    }
    Ok(())
}

/// [`ClientOptions`] that passed [`ClientOptions::check`]: connecting with them checks nothing
/// again. Read the options through `Deref`; [`CheckedClientOptions::into_options`] gives them
/// back for changing (and checking again).
#[derive(Debug, Clone)]
pub struct CheckedClientOptions(ClientOptions);

impl CheckedClientOptions {
    /// The options, to change and check again.
    pub fn into_options(self) -> ClientOptions {
        self.0
    }

    /// The same options with another client id, which is checked.
    pub(crate) fn with_client_id(mut self, id: String) -> Result<CheckedClientOptions, Error> {
        check_client_id(&id)?;
        self.0.client_id = Some(id);
        Ok(self)
    }

    /// The same options with another template name (valid by its type).
    pub(crate) fn with_template_name(mut self, name: TemplateName) -> CheckedClientOptions {
        self.0.template_name = Some(name);
        self
    }

    /// The same options with credentials whose key needs no check (PEM or a signer).
    pub(crate) fn with_credentials(mut self, credentials: Credentials) -> CheckedClientOptions {
        self.0.credentials = Some(credentials);
        self
    }
}

impl std::ops::Deref for CheckedClientOptions {
    type Target = ClientOptions;
    fn deref(&self) -> &ClientOptions {
        &self.0
    }
}

impl TryFrom<ClientOptions> for CheckedClientOptions {
    type Error = Error;
    fn try_from(opts: ClientOptions) -> Result<CheckedClientOptions, Error> {
        opts.check()
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
        o.credentials = Some(Credentials::pem(Pem::file("c.pem"), Pem::file("k.pem")));
        o
    }

    #[test]
    fn defaults() {
        let o = ClientOptions::new("example.com");
        assert_eq!(o.port, 8883);
        assert_eq!(o.mqtt_version, MqttVersion::V5);
        assert_eq!(o.operation_timeout, Duration::from_secs(30));
        assert!(o.client_id.is_none() && o.ca.is_none());
        o.check().unwrap();
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
            // A certificate without its key, a key without its certificate, or two keys
            // cannot be expressed: `Credentials` holds exactly one of each.
            ("pkcs11 without key label", |o| {
                o.credentials = Some(Credentials::pkcs11(
                    Pem::file("c.pem"),
                    Pkcs11Key {
                        module: "m.so".into(),
                        ..Default::default()
                    },
                ))
            }),
            ("proxy port 0", |o| o.proxy = Some(("p".into(), 0))),
        ];
        ok_opts().check().unwrap();
        for (name, f) in cases {
            let mut o = ok_opts();
            f(&mut o);
            assert_eq!(
                o.check().unwrap_err().kind,
                ErrorKind::InvalidArgument,
                "{name}"
            );
        }
        let mut o = ok_opts();
        o.credentials = Some(Credentials::signer(
            Pem::file("c.pem"),
            crate::signer::test_signer(),
        ));
        o.clone().check().unwrap();
        o.credentials = Some(Credentials::pkcs11(
            Pem::file("c.pem"),
            Pkcs11Key {
                module: "m.so".into(),
                key_label: "k".into(),
                ..Default::default()
            },
        ));
        o.check().unwrap();
        let mut o = ok_opts();
        o.keep_alive = Duration::from_secs(5);
        o.endpoint = "127.0.0.1".into();
        o.check().unwrap();
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
            let message = ClientOptions::new(endpoint).check().unwrap_err().message;
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
