//! The options of [`provision`](super::provision): what to provision, where to keep it, and
//! how; [`ProvisionOptions::check`] is the one place they are checked.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::client::{CheckedClientOptions, ClientOptions};
use crate::error::Error;
use crate::keygen::{CsrSubject, KeyType};
use crate::pkcs11::Pkcs11Key;
use crate::protocol::TemplateName;
use crate::signer::{KeyAlgorithm, Signer};

/// Where the device's key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// Generated here (the key never leaves the device), with a CSR built here:
    /// CreateCertificateFromCsr.
    Generate(KeyType),
    /// The service generates key and certificate: CreateKeysAndCertificate.
    Service,
    /// The caller's CSR and the private key it was made with: CreateCertificateFromCsr.
    Csr {
        /// The CSR, PEM.
        csr_pem: String,
        /// Its private key, PEM; wiped when dropped.
        private_key_pem: Zeroizing<String>,
    },
    /// A key in a PKCS#11 token: the token's private key labelled `key.key_label`, generated
    /// there (sensitive, not extractable, of `algorithm`) if the token has none; the CSR is
    /// signed by the token: CreateCertificateFromCsr. No key file is written; `identity.json`
    /// records the module, token and key label (never the PIN), and reusing the identity opens
    /// the key with the PIN given here again.
    Pkcs11 {
        /// Module, token, PIN and key label.
        key: Pkcs11Key,
        /// The algorithm of a key generated in the token.
        algorithm: KeyAlgorithm,
        /// Also store the issued certificate in the token (with the key's label and id).
        store_certificate: bool,
    },
    /// The caller's key behind a [`Signer`]: the CSR is signed by it, and the device
    /// connections too: CreateCertificateFromCsr. No key file is written; reusing the
    /// identity needs the same signer here again.
    Signer(Arc<dyn Signer>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Generate(t) => write!(f, "Generate({t:?})"),
            KeySource::Service => f.write_str("Service"),
            KeySource::Csr { .. } => f.write_str("Csr(<user CSR and key>)"),
            KeySource::Pkcs11 {
                key,
                algorithm,
                store_certificate,
            } => f
                .debug_struct("Pkcs11")
                .field("key", key)
                .field("algorithm", algorithm)
                .field("store_certificate", store_certificate)
                .finish(),
            KeySource::Signer(s) => f.debug_tuple("Signer").field(s).finish(),
        }
    }
}

impl KeySource {
    pub(super) fn name(&self) -> &'static str {
        match self {
            KeySource::Generate(t) => t.as_str(),
            KeySource::Service => "service",
            KeySource::Csr { .. } => "user",
            KeySource::Pkcs11 { .. } => "pkcs11",
            KeySource::Signer(_) => "signer",
        }
    }
}

/// How failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1). Default 8.
    pub max_attempts: u32,
    /// Backoff before the second try is drawn from 0 to this; it doubles with each try.
    /// Default 500 ms.
    pub base_delay: Duration,
    /// The backoff's upper bound never exceeds this. Default 20 s.
    pub max_delay: Duration,
    /// The whole call, reuse or provisioning, ends by then. Default 5 minutes.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            deadline: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    fn check(&self) -> Result<(), Error> {
        if self.max_attempts == 0 {
            return Err(Error::invalid("max_attempts must be at least 1"));
        }
        if self.base_delay.is_zero() || self.max_delay < self.base_delay {
            return Err(Error::invalid(
                "retry delays must satisfy 0 < base delay <= maximum delay",
            ));
        }
        if self.deadline.is_zero() {
            return Err(Error::invalid("the deadline must be greater than zero"));
        }
        Ok(())
    }
}

/// When a stored, still valid identity is renewed (rotated) instead of reused: once the time
/// left until its certificate's `notAfter` is below the window. A certificate within a minute
/// of its end is not used at all (it is treated as expired and provisioned anew with the
/// claim), so a window shorter than that never rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateBefore {
    /// Never rotate: reuse until expired, then provision again with the claim.
    Never,
    /// Rotate once at most this much time is left.
    Remaining(Duration),
    /// Rotate once at most this percentage (1 to 100) of the certificate's lifetime
    /// (`notAfter - notBefore`) is left; 100 rotates on every run.
    PercentOfLifetime(u8),
}

impl Default for RotateBefore {
    /// In the last third of the lifetime: a certificate valid a year is renewed four months
    /// before its end, one valid a day eight hours before, leaving room for a device that is
    /// offline for a while to try again.
    fn default() -> Self {
        RotateBefore::PercentOfLifetime(33)
    }
}

impl RotateBefore {
    fn check(&self) -> Result<(), Error> {
        match self {
            RotateBefore::PercentOfLifetime(p) if *p == 0 || *p > 100 => Err(Error::invalid(
                format!("the rotation window must be 1 to 100 % of the lifetime, not {p} %"),
            )),
            _ => Ok(()),
        }
    }

    /// The window for a certificate with this lifetime.
    pub(super) fn window(&self, lifetime: Duration) -> Duration {
        match self {
            RotateBefore::Never => Duration::ZERO,
            RotateBefore::Remaining(d) => *d,
            RotateBefore::PercentOfLifetime(p) => lifetime / 100 * u32::from(*p),
        }
    }
}

/// The steps [`Progress`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// A connection is being made; the detail is `claim` or `device`.
    Connecting,
    /// The create call (CreateCertificateFromCsr or CreateKeysAndCertificate) is sent.
    Creating,
    /// RegisterThing is sent.
    Registering,
    /// The new certificate and key are written to the store.
    Saving,
    /// The identity is proved by connecting with it (CONNACK accepted).
    Verifying,
    /// A failure will be retried after [`Progress::delay`]; the detail says why.
    RetryScheduled,
    /// A valid stored identity was found and will be reused; the detail is its thing name.
    Reusing,
    /// The stored identity is inside its rotation window and is renewed with itself (see
    /// [`RotateBefore`]); the detail is its thing name and when its certificate expires.
    Rotating,
    /// A certificate this run obtained will not be kept; the detail is its id. It may be
    /// Active on the thing (its RegisterThing went through): a backend should deactivate it.
    CertificateAbandoned,
}

impl Step {
    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connecting => "connecting",
            Step::Creating => "creating",
            Step::Registering => "registering",
            Step::Saving => "saving",
            Step::Verifying => "verifying",
            Step::RetryScheduled => "retry scheduled",
            Step::Reusing => "reusing",
            Step::Rotating => "rotating",
            Step::CertificateAbandoned => "certificate abandoned",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What is happening.
    pub step: Step,
    /// The try it belongs to, from 1.
    pub attempt: u32,
    /// For [`Step::RetryScheduled`]: how long until the retry; zero otherwise.
    pub delay: Duration,
    /// See [`Step`]; never holds key material.
    pub detail: String,
}

/// A future a progress sink returns; the next step starts once it resolves.
pub type ProgressFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Receives progress events, in order; the next step waits until the returned future is done.
pub type ProgressSink = Arc<dyn Fn(Progress) -> ProgressFuture + Send + Sync>;

/// What to provision, where to keep it, and how. [`ProvisionOptions::check`] (which
/// [`provision`](super::provision) calls when given these) turns them into
/// [`CheckedProvisionOptions`].
#[derive(Clone)]
pub struct ProvisionOptions {
    /// The claim connection: endpoint, port, CA, claim certificate and key, MQTT version,
    /// timeouts, proxy. The device connection uses the same settings with the new identity.
    /// Without credentials, only a stored identity can be reused or rotated.
    pub claim: ClientOptions,
    /// The provisioning template's name.
    pub template_name: TemplateName,
    /// The template's parameters.
    pub parameters: BTreeMap<String, String>,
    /// The identity store's directory (created 0700 if missing).
    pub store_dir: PathBuf,
    /// Where the device's key comes from (default: an EC P-256 key generated here).
    pub device_key: KeySource,
    /// The subject of a CSR built here (default: empty).
    pub csr_subject: CsrSubject,
    /// Client id of the device connection; `None`: the thing name.
    pub device_client_id: Option<String>,
    /// Provision anew even if the store holds a valid identity; the old one is replaced only
    /// once the new one is verified.
    pub force: bool,
    /// Retries, backoff and the deadline.
    pub retry: RetryPolicy,
    /// Progress events; `None` for none.
    pub progress: Option<ProgressSink>,
    /// When a stored identity is renewed with itself rather than reused (default: in the last
    /// third of its certificate's lifetime); see [`RotateBefore`].
    pub rotate_before: RotateBefore,
    /// The template RegisterThing uses when rotating; `None`: `template_name`. AWS's
    /// documented pattern is a second template that attaches the new certificate to the
    /// existing thing, which the device policy (not the claim's) allows.
    pub rotation_template: Option<TemplateName>,
    /// Rotate to a new certificate for the key in use instead of a new key (default: a new
    /// key of the same kind as `device_key`).
    pub rotation_reuse_key: bool,
}

impl std::fmt::Debug for ProvisionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionOptions")
            .field("claim", &self.claim)
            .field("template_name", &self.template_name)
            .field("store_dir", &self.store_dir)
            .field("device_key", &self.device_key)
            .field("force", &self.force)
            .field("retry", &self.retry)
            .field("rotate_before", &self.rotate_before)
            .field("rotation_template", &self.rotation_template)
            .field("rotation_reuse_key", &self.rotation_reuse_key)
            .finish_non_exhaustive()
    }
}

impl ProvisionOptions {
    /// Options with every default: EC P-256 key made here, CSR flow, default retries.
    pub fn new(
        claim: ClientOptions,
        template_name: TemplateName,
        store_dir: impl Into<PathBuf>,
    ) -> ProvisionOptions {
        ProvisionOptions {
            claim,
            template_name,
            parameters: BTreeMap::new(),
            store_dir: store_dir.into(),
            device_key: KeySource::Generate(KeyType::EcP256),
            csr_subject: CsrSubject::default(),
            device_client_id: None,
            force: false,
            retry: RetryPolicy::default(),
            progress: None,
            rotate_before: RotateBefore::default(),
            rotation_template: None,
            rotation_reuse_key: false,
        }
    }

    /// Sets a progress callback that runs inline: keep it short, it delays the next step.
    pub fn on_progress(&mut self, f: impl Fn(&Progress) + Send + Sync + 'static) {
        self.progress = Some(Arc::new(move |p: Progress| {
            f(&p);
            Box::pin(async {}) as ProgressFuture
        }));
    }

    /// Checks everything that can be checked without touching files or the network (the claim
    /// options with [`ClientOptions::check`]), once; [`ErrorKind::InvalidArgument`] says what
    /// is wrong.
    ///
    /// [`ErrorKind::InvalidArgument`]: crate::ErrorKind::InvalidArgument
    pub fn check(self) -> Result<CheckedProvisionOptions, Error> {
        // Without a claim certificate only a stored identity can be reused or rotated; the run
        // says so if there is none.
        let claim = self.claim.check()?;
        self.rotate_before.check()?;
        self.retry.check()?;
        if let Some(id) = &self.device_client_id {
            if id.is_empty() || id.len() > usize::from(u16::MAX) {
                return Err(Error::invalid("the device client id must not be empty"));
            }
        }
        if matches!(self.device_key, KeySource::Generate(KeyType::Rsa2048))
            && !cfg!(feature = "rsa-keygen")
        {
            return Err(Error::invalid(
                "RSA-2048 key generation is not built into this library (cargo feature \
                 rsa-keygen); use EC P-256 or P-384, or keys from the service",
            ));
        }
        if let KeySource::Csr {
            csr_pem,
            private_key_pem,
        } = &self.device_key
        {
            if csr_pem.trim().is_empty() || private_key_pem.trim().is_empty() {
                return Err(Error::invalid(
                    "a user CSR needs its PEM and its private key",
                ));
            }
        }
        if let KeySource::Pkcs11 { key, algorithm, .. } = &self.device_key {
            key.validate()?;
            if matches!(algorithm, KeyAlgorithm::Rsa { bits } if !(2048..=4096).contains(bits)) {
                return Err(Error::invalid(
                    "PKCS#11: generated RSA keys have 2048 to 4096 bits",
                ));
            }
        }
        Ok(CheckedProvisionOptions {
            claim,
            template_name: self.template_name,
            parameters: self.parameters,
            store_dir: self.store_dir,
            device_key: self.device_key,
            csr_subject: self.csr_subject,
            device_client_id: self.device_client_id,
            force: self.force,
            retry: self.retry,
            progress: self.progress,
            rotate_before: self.rotate_before,
            rotation_template: self.rotation_template,
            rotation_reuse_key: self.rotation_reuse_key,
        })
    }
}

/// [`ProvisionOptions`] that passed [`ProvisionOptions::check`]: provisioning with them checks
/// nothing again. The fields are those of [`ProvisionOptions`], the claim options checked.
#[derive(Clone)]
pub struct CheckedProvisionOptions {
    pub(super) claim: CheckedClientOptions,
    pub(super) template_name: TemplateName,
    pub(super) parameters: BTreeMap<String, String>,
    pub(super) store_dir: PathBuf,
    pub(super) device_key: KeySource,
    pub(super) csr_subject: CsrSubject,
    pub(super) device_client_id: Option<String>,
    pub(super) force: bool,
    pub(super) retry: RetryPolicy,
    pub(super) progress: Option<ProgressSink>,
    pub(super) rotate_before: RotateBefore,
    pub(super) rotation_template: Option<TemplateName>,
    pub(super) rotation_reuse_key: bool,
}

impl std::fmt::Debug for CheckedProvisionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedProvisionOptions")
            .field("claim", &self.claim)
            .field("template_name", &self.template_name)
            .field("store_dir", &self.store_dir)
            .field("device_key", &self.device_key)
            .field("force", &self.force)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl TryFrom<ProvisionOptions> for CheckedProvisionOptions {
    type Error = Error;
    fn try_from(opts: ProvisionOptions) -> Result<CheckedProvisionOptions, Error> {
        opts.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Credentials, Pem};
    use crate::error::ErrorKind;

    #[test]
    fn policy_and_options_are_checked() {
        let mut p = RetryPolicy::default();
        p.check().unwrap();
        p.max_attempts = 0;
        assert!(p.check().is_err());
        let p = RetryPolicy {
            max_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        assert!(p.check().is_err());
        let template = TemplateName::new("FleetTemplate").unwrap();
        let mut claim = ClientOptions::new("localhost");
        // No claim: allowed (a stored identity can still be reused or rotated).
        let mut o = ProvisionOptions::new(claim.clone(), template.clone(), "/tmp/x");
        o.clone().check().unwrap();
        for bad in [0, 101] {
            o.rotate_before = RotateBefore::PercentOfLifetime(bad);
            assert_eq!(
                o.clone().check().unwrap_err().kind,
                ErrorKind::InvalidArgument
            );
        }
        claim.credentials = Some(Credentials::pem(Pem::file("c"), Pem::file("k")));
        assert_eq!(
            TemplateName::new("Fleet/Template").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        let mut o = ProvisionOptions::new(claim, template, "/tmp/x");
        o.clone().check().unwrap();
        o.device_client_id = Some(String::new());
        assert_eq!(
            o.clone().check().unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        o.device_client_id = None;
        o.device_key = KeySource::Csr {
            csr_pem: " ".into(),
            private_key_pem: Zeroizing::new("k".into()),
        };
        assert_eq!(o.check().unwrap_err().kind, ErrorKind::InvalidArgument);
    }
}
