//! One call from a claim certificate to a verified, persisted device identity.
//!
//! [`provision`] reuses a valid identity from the store (no claim connection at all) and
//! proves it by connecting with it. Otherwise it connects with the claim certificate, gets a
//! certificate (by default for a key generated here, through CreateCertificateFromCsr),
//! registers the thing, writes the certificate and key to the store, disconnects, connects
//! with the new identity (client id = thing name unless set), and only once that CONNACK is
//! accepted commits the identity (`identity.json`). See [`store`] for the files.
//!
//! Retries follow [`RetryPolicy`]: exponential backoff with full jitter, bounded by attempts
//! and an overall deadline, for throttling, service-side 5xx, lost connections and timeouts
//! only. RegisterThing is retried with the same ownership token while the service cannot have
//! spent it (it answered with a throttling or 5xx rejection); when its answer was lost
//! (timeout, lost connection) the token may have been spent, so the next attempt starts again
//! from the create call. At most one CONNECT per second per client id, as AWS IoT allows.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleetprov::Error> {
//! use fleetprov::client::{ClientOptions, Credentials, Pem};
//! use fleetprov::protocol::TemplateName;
//! use fleetprov::provision::{provision, ProvisionOptions};
//!
//! let mut claim = ClientOptions::new("example-ats.iot.eu-west-1.amazonaws.com");
//! claim.credentials = Some(Credentials::pem(
//!     Pem::file("claim-cert.pem"),
//!     Pem::file("claim-key.pem"),
//! ));
//! let mut opts = ProvisionOptions::new(claim, TemplateName::new("FleetTemplate")?, "identity");
//! opts.parameters.insert("SerialNumber".into(), "1".into());
//! let identity = provision(opts).await?;
//! println!("{} in {}", identity.thing_name, identity.files.metadata.display());
//! # Ok(()) }
//! ```

pub mod store;

mod device_key;
mod options;
mod retry;
mod run;

use std::collections::BTreeMap;

use crate::error::Error;
use store::StoredFiles;

pub use device_key::KeyLocation;
pub use options::{
    CheckedProvisionOptions, KeySource, Progress, ProgressFuture, ProgressSink, ProvisionOptions,
    RetryPolicy, Step,
};

/// A verified device identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The thing's name.
    pub thing_name: String,
    /// The template's `DeviceConfiguration`.
    pub device_configuration: BTreeMap<String, String>,
    /// The certificate's id.
    pub certificate_id: String,
    /// The client id the identity was verified with.
    pub client_id: String,
    /// The store's files (no key file when the key is in a token or behind a signer).
    pub files: StoredFiles,
    /// Where the private key is.
    pub key_location: KeyLocation,
    /// Whether a stored identity was reused (no claim connection was made).
    pub reused: bool,
    /// Tries made, the first included.
    pub attempts: u32,
}

/// Provisions, or reuses, the device identity described by `opts`. See the module docs.
///
/// Errors: [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for bad options
/// (nothing sent); [`ErrorKind::Store`](crate::ErrorKind::Store) when the store cannot be
/// used; otherwise the error of the step that failed for good (a non-retryable one at once, a
/// retryable one once the attempts or the deadline are used up, its message then saying so).
///
/// Takes [`ProvisionOptions`] (checked here) or [`CheckedProvisionOptions`] (checked before).
pub async fn provision<O>(opts: O) -> Result<Provisioned, Error>
where
    O: TryInto<CheckedProvisionOptions>,
    O::Error: Into<Error>,
{
    run::run(opts.try_into().map_err(Into::into)?).await
}
