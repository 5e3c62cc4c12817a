//! What the run does with certificates it cannot keep and identities it could not verify:
//! every certificate given up is reported, a registered identity that could not be tried is
//! kept pending and tried first by the next run.

use std::time::Duration;

use std::time::Instant;

use super::{blocking, locked, stage_new, Created, Run, TOKEN_LIFETIME};
use crate::error::{Error, ErrorKind};
use crate::log::{fp_log, Level};
use crate::provision::device_key::{self, NewKey};
use crate::provision::options::Step;
use crate::provision::store::{IdentityStore, KeyLocation, Metadata, Pending};
use crate::provision::Provisioned;

/// Why a verification connection did not prove an identity.
#[derive(Debug)]
pub(super) enum VerifyFailure {
    /// The identity itself was refused or cannot be used (TLS or CONNACK refusal, unreadable
    /// files): it is worth nothing.
    Unusable(Error),
    /// It could not be tried: every connection failed, or the deadline passed. It may be
    /// perfectly good.
    NotVerified(Error),
}

impl VerifyFailure {
    /// The error for a stored identity (committed or pending) whose check failed.
    pub(super) fn stored_identity(self, thing_name: &str) -> Error {
        match self {
            VerifyFailure::Unusable(e) => unusable(e),
            VerifyFailure::NotVerified(e) => Error {
                message: format!(
                    "the stored identity of {thing_name} could not be verified (it stays in \
                     the store): {}",
                    e.message
                ),
                ..e
            },
        }
    }
}

/// "Refused" only for what a refusal is: a TLS failure or a CONNACK refusal.
fn unusable(e: Error) -> Error {
    let what = match e.kind {
        ErrorKind::Tls | ErrorKind::ConnectionRefused => "was refused",
        _ => "cannot be used",
    };
    Error {
        message: format!("the device identity {what}: {}", e.message),
        ..e
    }
}

impl Run {
    /// Reports a certificate this run obtained and does not keep: a log line and a progress
    /// event with its id, and the result's list.
    pub(super) async fn abandon(&mut self, certificate_id: &str, why: &str) {
        fp_log!(
            Level::Warn,
            "certificate {certificate_id} is not kept ({why}); it may be Active on the thing: \
             deactivate it from a backend"
        );
        self.abandoned.push(certificate_id.to_owned());
        self.progress(Step::CertificateAbandoned, Duration::ZERO, certificate_id)
            .await;
    }

    /// [`Run::abandon`] for a create result being dropped, if there is one; its staged files
    /// go (reported now, they are not reported again by the next run).
    pub(super) async fn abandon_created(&mut self, created: Option<Created>, why: &str) {
        let Some(c) = created else { return };
        self.abandon(&c.certificate_id, why).await;
        if let (Some(store), Some(staged)) = (self.store.clone(), c.staged) {
            if let Err(e) = locked(&self.lock, &store, move |s| s.discard(&staged)).await {
                fp_log!(Level::Warn, "{}", e.message);
            }
        }
    }

    /// Writes a create result's certificate and key to the store (not committed) before
    /// RegisterThing can activate the certificate: a run killed from here on leaves files the
    /// next run reports. A certificate that cannot be written, or is not for our key, is
    /// reported and the error returned.
    pub(super) async fn stage_created(&mut self, mut c: Created) -> Result<Created, Error> {
        let Some(store) = self.store.clone() else {
            return Ok(c);
        };
        let (id, cert, key, location) = (
            c.certificate_id.clone(),
            c.certificate_pem.clone(),
            c.key.clone(),
            c.key.location(),
        );
        let (token, endpoint) = (c.token.clone(), self.opts.claim.endpoint.clone());
        let staged = locked(&self.lock, &store, move |s| {
            let staged = stage_new(s, &id, &cert, &key)?;
            if let Err(e) = s.keep_registering(&staged, &id, &token, &endpoint, location) {
                let _ = s.discard(&staged);
                return Err(e);
            }
            Ok(staged)
        })
        .await;
        match staged {
            Ok(staged) => {
                c.staged = Some(staged);
                Ok(c)
            }
            Err(e) => {
                self.abandon(&c.certificate_id, "it could not be saved")
                    .await;
                Err(e)
            }
        }
    }

    /// The create result a stopped run left in the store, to send RegisterThing with its
    /// token again; one that cannot be used or whose token is too old is reported and removed.
    pub(super) async fn take_registering(
        &mut self,
        store: &IdentityStore,
    ) -> Result<Option<Created>, Error> {
        let (endpoint, source) = (
            self.opts.claim.endpoint.clone(),
            self.opts.device_key.clone(),
        );
        let found = locked(&self.lock, store, move |s| {
            let r = match s.registering(&endpoint)? {
                None => return Ok(None),
                Some(Err(unusable)) => return Ok(Some(Err(unusable))),
                Some(Ok(r)) => r,
            };
            // A key in a token or behind a signer is reached as the options say, as for a
            // stored identity.
            let key = match (&r.private_key_pem, &r.key_location) {
                (Some(pem), _) => Ok(NewKey::Pem(pem.clone())),
                (None, KeyLocation::File) => Err("its key file cannot be read".to_owned()),
                (None, location) => {
                    let certificate = s.staged_files(&r.staged).certificate;
                    device_key::reopen(location, &certificate, &source)
                }
            };
            Ok(Some(match key {
                Ok(key) => Ok((r, key)),
                Err(why) => Err((r.certificate_id, why)),
            }))
        })
        .await?;
        let (r, key) = match found {
            None => return Ok(None),
            Some(Ok(found)) => found,
            Some(Err((id, why))) => {
                self.abandon(&id, &format!("a stopped run's certificate: {why}"))
                    .await;
                locked(&self.lock, store, |s| s.forget_registering()).await?;
                return Ok(None);
            }
        };
        let created = Created {
            certificate_id: r.certificate_id,
            certificate_pem: r.certificate_pem,
            key,
            token: r.token,
            at: Instant::now()
                .checked_sub(r.age)
                .unwrap_or_else(Instant::now),
            // Whether the stopped run sent RegisterThing is unknown: a spent token then
            // means the certificate is registered, and it is reported.
            token_sent: true,
            staged: Some(r.staged),
        };
        if r.age > TOKEN_LIFETIME {
            let why = "its ownership token is too old to use";
            self.abandon_created(Some(created), why).await;
            return Ok(None);
        }
        fp_log!(
            Level::Info,
            "identity store {}: sending RegisterThing again for certificate {}, left by a \
             stopped run",
            store.dir().display(),
            created.certificate_id
        );
        Ok(Some(created))
    }

    /// A failed run's error, naming the certificates it reported as abandoned.
    pub(super) fn mention_abandoned(&self, e: Error) -> Error {
        if self.abandoned.is_empty() {
            return e;
        }
        Error {
            message: format!(
                "{} (certificates obtained and not kept, reported as abandoned: {})",
                e.message,
                self.abandoned.join(", ")
            ),
            ..e
        }
    }

    /// A pending identity goes first: verified and committed (the run's result), or reported
    /// and dropped when it is unusable, refused or `force` asks for a new one (`None`: the run
    /// goes on). When it could not be tried, the run ends here and it stays pending.
    pub(super) async fn settle_pending(
        &mut self,
        store: &IdentityStore,
    ) -> Result<Option<Provisioned>, Error> {
        let endpoint = self.opts.claim.endpoint.clone();
        let identity = match locked(&self.lock, store, move |s| s.pending(&endpoint)).await? {
            None => return Ok(None),
            Some(Pending::Unusable {
                certificate_id,
                why,
            }) => {
                fp_log!(
                    Level::Warn,
                    "identity store {}: the pending identity cannot be used: {why}",
                    store.dir().display()
                );
                if !certificate_id.is_empty() {
                    self.abandon(&certificate_id, "the pending identity cannot be used")
                        .await;
                }
                self.drop_pending(store).await?;
                return Ok(None);
            }
            Some(Pending::Usable(identity)) => *identity,
        };
        let m = identity.metadata.clone();
        if self.opts.force {
            let why = "a new identity was asked for (force) before it was verified";
            self.abandon(&m.certificate_id, why).await;
            self.drop_pending(store).await?;
            return Ok(None);
        }
        fp_log!(
            Level::Info,
            "identity store {}: verifying the pending identity of {} (certificate {})",
            store.dir().display(),
            m.thing_name,
            m.certificate_id
        );
        self.progress(Step::Reusing, Duration::ZERO, m.thing_name.clone())
            .await;
        let client_id = self.client_id(&m.client_id);
        // Its key as a stored identity's is reached: a file, or the options' token or signer.
        let (id, source) = (identity.clone(), self.opts.device_key.clone());
        let key = match blocking(move || Ok(device_key::stored_key(&id, &source))).await? {
            Ok(key) => key,
            Err(why) => {
                fp_log!(
                    Level::Warn,
                    "identity store {}: the pending identity cannot be used: {why}",
                    store.dir().display()
                );
                self.abandon(&m.certificate_id, "the pending identity cannot be used")
                    .await;
                self.drop_pending(store).await?;
                return Ok(None);
            }
        };
        match self.verify(&identity.files, key, &client_id).await {
            Ok(()) => {}
            Err(VerifyFailure::Unusable(e)) => {
                let e = unusable(e);
                fp_log!(Level::Warn, "the pending identity: {}", e.message);
                self.abandon(&m.certificate_id, "the pending identity was refused")
                    .await;
                self.drop_pending(store).await?;
                return Ok(None);
            }
            Err(VerifyFailure::NotVerified(e)) => {
                return Err(not_verified(e, &m, store));
            }
        }
        if let Some(key) = device_key::store_in(&m.key_location, &self.opts.device_key) {
            let cert = identity.files.certificate.clone();
            blocking(move || {
                let pem = std::fs::read_to_string(&cert).map_err(|e| {
                    Error::new(
                        ErrorKind::Store,
                        format!("identity store: cannot read {}: {e}", cert.display()),
                    )
                })?;
                crate::pkcs11::store_certificate(&key, &pem)
            })
            .await?;
        }
        let stored = locked(&self.lock, store, move |s| s.commit_pending(&identity)).await?;
        fp_log!(
            Level::Info,
            "provisioned {} (certificate {}): the pending identity is verified",
            m.thing_name,
            m.certificate_id
        );
        Ok(Some(self.reused(m, stored.files, client_id)))
    }

    async fn drop_pending(&self, store: &IdentityStore) -> Result<(), Error> {
        locked(&self.lock, store, |s| s.drop_pending()).await
    }

    /// The error for a new identity (registered, saved as pending) whose verification
    /// failed: a refused one is reported and dropped; one that could not be tried stays
    /// pending, except a rotation's (not pending), which is given up: the old identity stays.
    pub(super) async fn new_identity_failed(
        &mut self,
        store: &IdentityStore,
        failure: VerifyFailure,
        m: &Metadata,
    ) -> Error {
        match failure {
            VerifyFailure::Unusable(e) => {
                self.abandon(&m.certificate_id, "the new identity was refused")
                    .await;
                if let Err(d) = self.drop_pending(store).await {
                    fp_log!(Level::Warn, "{}", d.message);
                }
                unusable(e)
            }
            VerifyFailure::NotVerified(e) if self.rotating => {
                self.abandon(
                    &m.certificate_id,
                    "the rotation's new identity could not be verified; the current one is kept",
                )
                .await;
                if let Err(d) = self.drop_pending(store).await {
                    fp_log!(Level::Warn, "{}", d.message);
                }
                e
            }
            VerifyFailure::NotVerified(e) => not_verified(e, m, store),
        }
    }
}

/// Says that the identity exists and is kept, not that provisioning failed to start.
fn not_verified(e: Error, m: &Metadata, store: &IdentityStore) -> Error {
    Error {
        message: format!(
            "{} was registered (certificate {}) but could not be verified: {}; the identity is \
             kept pending in {} and verified again by the next run",
            m.thing_name,
            m.certificate_id,
            e.message,
            store.dir().display()
        ),
        ..e
    }
}
