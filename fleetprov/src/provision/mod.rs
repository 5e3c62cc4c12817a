//! One call from a claim certificate to a verified, persisted device identity.
//!
//! [`provision`] reuses a valid identity from the store (no claim connection at all) and
//! proves it by connecting with it. Otherwise it connects with the claim certificate, gets a
//! certificate (by default for a key generated here, through CreateCertificateFromCsr),
//! registers the thing, writes the certificate and key to the store, disconnects, connects
//! with the new identity (client id = thing name unless set), and only once that CONNACK is
//! accepted commits the identity (`identity.json`). See [`store`] for the files.
//!
//! A stored identity whose certificate is inside its rotation window ([`RotateBefore`],
//! by default the last third of its lifetime) is renewed with itself instead of reused: a
//! connection as the device, the create call with a new key (or the same one), RegisterThing
//! on the rotation template, the new files written, a connection with the new identity, and
//! then the commit, which removes the old files. The claim is used only if the device
//! identity is refused and a claim certificate is given.
//!
//! Retries follow [`RetryPolicy`]: exponential backoff with full jitter, bounded by attempts
//! and an overall deadline, for throttling, service-side 5xx, lost connections and timeouts
//! only. RegisterThing is retried with the same ownership token, on a new connection when its
//! answer was lost (timeout, lost connection, a throttling service closing the connection),
//! while the token is under 55 minutes old; only a token the service says is spent starts
//! again from the create call. At most one CONNECT per second per client id, as AWS IoT
//! allows.
//!
//! An identity that was registered but could not be verified (every verification connection
//! failed, the deadline passed, or the process was killed) is kept as pending in the store and
//! verified first by the next run, before anything new is provisioned.
//!
//! Every certificate the run obtained and does not keep (an earlier try's, whose answer was
//! lost; one whose registration or verification failed for good) is reported: a
//! [`Step::CertificateAbandoned`] progress event and a warning log line naming its id, on
//! success and failure alike, and [`Provisioned::abandoned_certificates`] on success, so a
//! backend can deactivate it.
//!
//! Dropping the future returned by [`provision`] cancels the run, leaving the previous
//! identity or none (see its "Cancellation" section).
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
mod store_lock;

use std::collections::BTreeMap;

use crate::error::Error;
use store::StoredFiles;

pub use device_key::KeyLocation;
pub use options::{
    CheckedProvisionOptions, KeySource, Progress, ProgressFuture, ProgressSink, ProvisionOptions,
    RetryPolicy, RotateBefore, Step,
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
    /// Whether the stored identity was renewed with itself (rotated): the certificate is new,
    /// no claim connection was made.
    pub rotated: bool,
    /// When rotated: the id of the certificate it replaced, whose files are gone from the
    /// store. It is still Active in the account: deactivate it there once the device is known
    /// to use the new one.
    pub previous_certificate_id: Option<String>,
    /// Tries made, the first included.
    pub attempts: u32,
    /// Ids of the certificates this run obtained and did not keep, in the order they were
    /// given up (also reported by [`Step::CertificateAbandoned`]). Each may be Active on the
    /// thing: deactivate it from a backend.
    pub abandoned_certificates: Vec<String>,
}

/// Provisions, or reuses, the device identity described by `opts`. See the module docs.
///
/// Errors: [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for bad options
/// (nothing sent); [`ErrorKind::Store`](crate::ErrorKind::Store) when the store cannot be
/// used; otherwise the error of the step that failed for good (a non-retryable one at once, a
/// retryable one once the attempts or the deadline are used up, its message then saying so).
///
/// Takes [`ProvisionOptions`] (checked here) or [`CheckedProvisionOptions`] (checked before).
///
/// # Cancellation
///
/// Dropping the future cancels the run, at any step; wrap it in `tokio::time::timeout` or a
/// `select!` to bound or stop it. What a drop leaves:
///
/// - the store holds the identity it held before, or none, never a mixture:
///   `identity.json`, the commit point, is written only after the new identity was verified.
///   Beside it the store may hold what the dropped run obtained, as after a killed process:
///   its create result, staged with `registering.json` (dropped after [`Step::Creating`]),
///   which the next run registers with the same token or, when it keeps another identity,
///   reports as abandoned; or its registered identity, kept pending (dropped while
///   [`Step::Saving`] or [`Step::Verifying`]), which the next run verifies and commits. A
///   rotation's new identity is not kept pending: the next run reports it and rotates again.
///   Store work already running on the blocking pool (a write, or the commit itself) cannot
///   be interrupted and finishes in the background; the next run in this process on the same
///   directory waits for it, so it sees the old identity or the new one, whole.
/// - connections close: the claim or device connection, and one being made, are dropped with
///   the future (no DISCONNECT is sent; the broker sees the TCP connection close).
/// - the service may have issued a certificate (dropped after [`Step::Creating`]) or
///   registered a thing (after [`Step::Registering`]) that no device will hold.
///
/// ```no_run
/// # async fn demo(opts: fleetprov::provision::ProvisionOptions) {
/// use std::time::Duration;
/// match tokio::time::timeout(Duration::from_secs(30), fleetprov::provision::provision(opts)).await {
///     Ok(Ok(identity)) => println!("{}", identity.thing_name),
///     Ok(Err(e)) => eprintln!("failed: {e}"),
///     Err(_) => eprintln!("stopped after 30 s; the previous identity, if any, is intact"),
/// }
/// # }
/// ```
pub async fn provision<O>(opts: O) -> Result<Provisioned, Error>
where
    O: TryInto<CheckedProvisionOptions>,
    O::Error: Into<Error>,
{
    run::run(opts.try_into().map_err(Into::into)?).await
}
