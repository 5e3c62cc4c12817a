//! TLS configurations shared by the clients of a process that have the same identity and trust.
//!
//! Building a configuration reads and parses the PEM files, checks the key against the
//! certificate and, without a CA file, loads the platform's roots: most of what a connection
//! costs besides the handshake. Clients with the same certificate, key, CA and ALPN share one
//! configuration while any of them holds it, and with it rustls's session cache, so a gateway
//! or a provisioning station connecting many clients with one claim resumes TLS sessions
//! instead of repeating the full handshake.
//!
//! Clients started together (a fleet connecting at once) would all miss the cache before the
//! first configuration is built; one build runs at a time, and whoever waited for it looks
//! again first, so a burst of connections reads the files and checks the key once.
//!
//! A file counts as the same while its path, size, modification time and inode are; a file
//! replaced on disk (a renewed certificate) gives a new configuration. The cache holds only
//! weak references: a configuration lives as long as a client uses it.

use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use rustls::ClientConfig;
use zeroize::Zeroizing;

use super::options::{CheckedClientOptions, ClientOptions, Credentials, Pem, PrivateKey};
use crate::error::{Error, ErrorKind};

/// The configuration for `opts`: the shared one if a client holds it already, else a new one
/// (shared from then on when `opts` can be cached). Reading files and the platform roots runs
/// on the blocking pool, off the I/O thread.
pub(crate) async fn config_for(
    opts: CheckedClientOptions,
) -> Result<(CheckedClientOptions, Arc<ClientConfig>), Error> {
    let key = ConfigKey::of(&opts);
    if let Some(tls) = key.as_ref().and_then(lookup) {
        return Ok((opts, tls));
    }
    // One build at a time: a burst of clients with the same sources builds one configuration.
    static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = match key {
        Some(_) => Some(BUILDING.lock().await),
        None => None,
    };
    if let Some(tls) = key.as_ref().and_then(lookup) {
        return Ok((opts, tls));
    }
    #[cfg(test)]
    BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Boxed, in the form provisioning's blocking work has (`provision/run.rs` `blocking()`),
    // so that all of the library's blocking tasks share one instantiation of tokio's
    // blocking-task machinery.
    let job: Box<dyn FnOnce() -> Box<dyn Any + Send> + Send> = Box::new(move || {
        let tls = super::tls::client_config(&opts);
        Box::new((opts, tls))
    });
    let built = tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("TLS setup failed: {e}")))?;
    let Ok(built) = built.downcast::<(CheckedClientOptions, Result<Arc<ClientConfig>, Error>)>()
    else {
        unreachable!("the job returns its own result type")
    };
    let (opts, tls) = *built;
    let tls = tls?;
    if let Some(key) = key {
        insert(key, &tls);
    }
    Ok((opts, tls))
}

/// What identifies one PEM source.
#[derive(PartialEq, Eq)]
enum Source {
    File {
        path: PathBuf,
        len: u64,
        modified: Option<SystemTime>,
        inode: u64,
    },
    Memory(Zeroizing<Vec<u8>>),
}

impl Source {
    /// `None` if the file cannot be inspected: the configuration is then built (and its error
    /// reported) without the cache.
    fn of(pem: &Pem) -> Option<Source> {
        Some(match pem {
            Pem::File(path) => {
                let meta = std::fs::metadata(path).ok()?;
                Source::File {
                    path: path.clone(),
                    len: meta.len(),
                    modified: meta.modified().ok(),
                    inode: inode(&meta),
                }
            }
            Pem::Memory(bytes) => Source::Memory(bytes.clone()),
        })
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// Everything a client configuration is built from.
#[derive(PartialEq, Eq)]
pub(crate) struct ConfigKey {
    cert: Option<Source>,
    key: Option<Source>,
    ca: Option<Source>,
    alpn: bool,
}

impl ConfigKey {
    /// The key for `opts`, or `None` when they cannot be cached.
    pub(crate) fn of(opts: &ClientOptions) -> Option<ConfigKey> {
        let (cert, key) = match &opts.credentials {
            None => (None, None),
            Some(Credentials {
                cert,
                key: PrivateKey::Pem(key),
            }) => (Some(cert), Some(key)),
            // A signer or a PKCS#11 key is not identified by the PEM sources: never shared.
            Some(_) => return None,
        };
        let source = |p: Option<&Pem>| match p {
            None => Some(None),
            Some(p) => Source::of(p).map(Some),
        };
        Some(ConfigKey {
            cert: source(cert)?,
            key: source(key)?,
            ca: source(opts.ca.as_ref())?,
            alpn: opts.port == 443,
        })
    }
}

/// Configurations built so far (for tests).
#[cfg(test)]
static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

static CACHE: Mutex<Vec<(ConfigKey, Weak<ClientConfig>)>> = Mutex::new(Vec::new());

fn cache() -> std::sync::MutexGuard<'static, Vec<(ConfigKey, Weak<ClientConfig>)>> {
    // Every update leaves the list consistent.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live configuration built from `key`, if a client still holds one.
pub(crate) fn lookup(key: &ConfigKey) -> Option<Arc<ClientConfig>> {
    let mut entries = cache();
    entries.retain(|(_, weak)| weak.strong_count() > 0);
    entries
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, weak)| weak.upgrade())
}

/// Remembers `config` as the one built from `key`.
pub(crate) fn insert(key: ConfigKey, config: &Arc<ClientConfig>) {
    let mut entries = cache();
    entries.retain(|(k, weak)| weak.strong_count() > 0 && *k != key);
    entries.push((key, Arc::downgrade(config)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_sources_same_key_and_a_changed_file_another() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let cert = dir.join("c.pem");
        std::fs::write(&cert, b"one").unwrap();
        let mut o = ClientOptions::new("localhost");
        o.credentials = Some(Credentials::pem(Pem::file(&cert), Pem::memory("secret")));
        let a = ConfigKey::of(&o).unwrap();
        assert!(a == ConfigKey::of(&o).unwrap());
        std::fs::write(&cert, b"three").unwrap();
        assert!(a != ConfigKey::of(&o).unwrap());
        o.credentials = Some(Credentials::pem(Pem::file(&cert), Pem::memory("other")));
        let b = ConfigKey::of(&o).unwrap();
        o.port = 443;
        assert!(b != ConfigKey::of(&o).unwrap());
        o.credentials = Some(Credentials::pem(
            Pem::file(dir.join("missing.pem")),
            Pem::memory("other"),
        ));
        assert!(ConfigKey::of(&o).is_none());
        // Keys held elsewhere: two signers over one certificate are two identities.
        o.credentials = Some(Credentials::signer(
            Pem::memory("cert"),
            crate::signer::test_signer(),
        ));
        assert!(ConfigKey::of(&o).is_none());
        o.credentials = Some(Credentials::pkcs11(Pem::memory("cert"), Default::default()));
        assert!(ConfigKey::of(&o).is_none());
    }

    /// Clients started together with the same files: one configuration is built, all share it.
    #[tokio::test]
    async fn a_burst_of_clients_builds_one_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["burst".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let mut o = ClientOptions::new("localhost");
        o.credentials = Some(Credentials::pem(
            Pem::file(&cert_file),
            Pem::file(&key_file),
        ));
        o.ca = Some(Pem::file(&cert_file));
        let o = o.check().unwrap();
        let before = BUILDS.load(std::sync::atomic::Ordering::Relaxed);
        let burst: Vec<_> = (0..16)
            .map(|_| tokio::spawn(config_for(o.clone())))
            .collect();
        let mut configs = Vec::new();
        for b in burst {
            configs.push(b.await.unwrap().unwrap().1);
        }
        let built = BUILDS.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(built, 1, "16 clients at once built {built} configurations");
        assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
    }

    #[test]
    fn entries_live_only_as_long_as_their_configuration() {
        let mut o = ClientOptions::new("localhost");
        o.ca = Some(Pem::memory(
            "entries_live_only_as_long_as_their_configuration",
        ));
        let config = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        insert(ConfigKey::of(&o).unwrap(), &config);
        let found = lookup(&ConfigKey::of(&o).unwrap()).unwrap();
        assert!(Arc::ptr_eq(&found, &config));
        drop((found, config));
        assert!(lookup(&ConfigKey::of(&o).unwrap()).is_none());
    }
}
