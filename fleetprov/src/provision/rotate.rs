//! Rotation: a stored identity inside its rotation window renews itself.
//!
//! The device connects with its own certificate (client id as stored), asks for a new
//! certificate (CreateCertificateFromCsr with a new key, or the same key when
//! `rotation_reuse_key` is set; CreateKeysAndCertificate for service keys), registers it
//! through the rotation template, writes the new files beside the old ones, proves them by
//! connecting, and commits: `identity.json` names the new files, and only then are the old
//! ones removed. Until that commit the store holds the old identity, so a process killed at
//! any step leaves the old identity, still valid, and the next run rotates again.
//!
//! The claim is used only when the device identity is refused (TLS or CONNACK refusal) and a
//! claim certificate is given. Any other failure leaves the old identity in place: it is
//! still valid, so it is reused (verified by connecting) and a warning says why rotation
//! failed; the next run tries again.

use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::{blocking, Run};
use crate::client::{Credentials, Pem, PrivateKey};
use crate::error::{Error, ErrorKind};
use crate::keygen;
use crate::log::{fp_log, Level};
use crate::provision::options::{KeySource, RotateBefore};
use crate::provision::retry::connection_verdict;
use crate::provision::store::{IdentityStore, StoredIdentity};
use crate::provision::{Provisioned, Step};
use crate::x509::{self, Validity};

/// How long until `validity` ends, if that is at most the window `before` gives for its
/// lifetime: the identity is due for rotation.
fn due(validity: Validity, before: RotateBefore, now: SystemTime) -> Option<Duration> {
    let lifetime = validity
        .not_after
        .duration_since(validity.not_before)
        .unwrap_or_default();
    let left = validity.not_after.duration_since(now).unwrap_or_default();
    let window = before.window(lifetime);
    (!window.is_zero() && left <= window).then_some(left)
}

/// The device identity itself was refused: the TLS handshake or the CONNACK said no, and not
/// as "try later".
fn refused(e: &Error) -> bool {
    matches!(e.kind, ErrorKind::Tls | ErrorKind::ConnectionRefused)
        && connection_verdict(e).is_none()
}

/// The validity of the certificate in `path`, if it can be read.
async fn validity_of(path: std::path::PathBuf) -> Result<Option<Validity>, Error> {
    blocking(move || {
        Ok(std::fs::read(path)
            .ok()
            .and_then(|pem| x509::first_certificate(&pem))
            .and_then(|der| x509::validity(&der)))
    })
    .await
}

impl Run {
    /// Reuses a usable stored identity, or rotates it when it is inside its window.
    pub(super) async fn reuse_or_rotate(
        &mut self,
        store: IdentityStore,
        identity: StoredIdentity,
        key: PrivateKey,
    ) -> Result<Provisioned, Error> {
        let validity = validity_of(identity.files.certificate.clone()).await?;
        let left = validity.and_then(|v| due(v, self.opts.rotate_before, SystemTime::now()));
        match left {
            Some(left) => self.rotate(store, identity, key, left).await,
            None => self.reuse(identity, key).await,
        }
    }

    async fn rotate(
        &mut self,
        store: IdentityStore,
        identity: StoredIdentity,
        key: PrivateKey,
        left: Duration,
    ) -> Result<Provisioned, Error> {
        let old = identity.metadata.clone();
        self.progress(
            Step::Rotating,
            Duration::ZERO,
            format!(
                "{}: certificate expires in {} s",
                old.thing_name,
                left.as_secs()
            ),
        )
        .await;
        fp_log!(
            Level::Info,
            "rotating {}: certificate {} expires in {} s",
            old.thing_name,
            old.certificate_id,
            left.as_secs()
        );
        let client_id = self.client_id(&old.client_id);
        let device = match self
            .opts
            .claim
            .clone()
            .with_credentials(Credentials {
                cert: Pem::file(&identity.files.certificate),
                key: key.clone(),
            })
            .with_client_id(client_id)
        {
            Ok(d) => d,
            Err(e) => return self.keep(identity, key, "rotating", e).await,
        };
        let key_source =
            if let (true, PrivateKey::Signer(signer)) = (self.opts.rotation_reuse_key, &key) {
                // A key in a token or behind a signer signs the new CSR where it is.
                KeySource::Signer(signer.clone())
            } else if self.opts.rotation_reuse_key {
                let (key_path, subject) = (
                    identity.files.private_key.clone(),
                    self.opts.csr_subject.clone(),
                );
                let made = blocking(move || {
                    let key = std::fs::read_to_string(&key_path)
                        .map(Zeroizing::new)
                        .map_err(|e| {
                            Error::new(
                                ErrorKind::Store,
                                format!("identity store: cannot read {}: {e}", key_path.display()),
                            )
                        })?;
                    Ok((keygen::csr_for_key(&key, &subject)?, key))
                })
                .await;
                // A key that cannot sign a CSR here (a service key in PKCS#1) leaves the
                // identity as it is.
                let (csr_pem, private_key_pem) = match made {
                    Ok(m) => m,
                    Err(e) => {
                        return self
                            .keep(identity, key, "rotating with the same key", e)
                            .await
                    }
                };
                KeySource::Csr {
                    csr_pem,
                    private_key_pem,
                }
            } else {
                self.opts.device_key.clone()
            };
        let key_type = if self.opts.rotation_reuse_key {
            old.key_type.clone()
        } else {
            self.opts.device_key.name().to_owned()
        };
        let template = self
            .opts
            .rotation_template
            .clone()
            .unwrap_or_else(|| self.opts.template_name.clone());

        // The create and register half, as the device: its connection, its template, its key.
        let claim = std::mem::replace(&mut self.opts.claim, device);
        let template = std::mem::replace(&mut self.opts.template_name, template);
        let device_key = std::mem::replace(&mut self.opts.device_key, key_source);
        self.caller = "device";
        let outcome = self.create_and_register(None).await;
        self.opts.claim = claim;
        let rotation_template = std::mem::replace(&mut self.opts.template_name, template);
        self.opts.device_key = device_key;
        self.caller = "claim";

        let (created, registered) = match outcome {
            Ok(r) => r,
            Err(e) if refused(&e) && self.opts.claim.credentials.is_some() => {
                fp_log!(
                    Level::Warn,
                    "rotating {}: the device identity was refused ({}); provisioning anew \
                     with the claim",
                    old.thing_name,
                    e.message
                );
                return self.provision_new(store, None).await;
            }
            Err(e) if refused(&e) => {
                return Err(Error {
                    message: format!(
                        "the device identity was refused while rotating, and no claim \
                         certificate is given: {}",
                        e.message
                    ),
                    ..e
                })
            }
            Err(e) => return self.keep(identity, key, "rotating", e).await,
        };

        let certificate_id = created.certificate_id.clone();
        // A new identity that fails verification is given up (reported as abandoned): the
        // old one is still valid and stays in use.
        self.rotating = true;
        let saved = self
            .save_verify_commit(&store, created, registered, key_type)
            .await;
        self.rotating = false;
        let mut p = match saved {
            Ok(p) => p,
            Err(e) => {
                let e = Error {
                    message: format!(
                        "certificate {certificate_id} (registered through \
                         {rotation_template}) was not taken into use: {}",
                        e.message
                    ),
                    ..e
                };
                return self.keep(identity, key, "rotating", e).await;
            }
        };
        fp_log!(
            Level::Info,
            "rotated {}: certificate {} replaces {} (deactivate the old one once the device \
             uses the new one)",
            p.thing_name,
            p.certificate_id,
            old.certificate_id
        );
        p.rotated = true;
        p.previous_certificate_id = Some(old.certificate_id);
        Ok(p)
    }

    /// After a rotation that failed with `e` while `what`: the old identity is still valid,
    /// so it is kept and reused.
    async fn keep(
        &mut self,
        identity: StoredIdentity,
        key: PrivateKey,
        what: &str,
        e: Error,
    ) -> Result<Provisioned, Error> {
        fp_log!(
            Level::Warn,
            "{what} {} failed ({}); keeping the current identity, valid until {} s after the \
             epoch, and rotating on a later run",
            identity.metadata.thing_name,
            e.message,
            identity.metadata.not_after
        );
        self.reuse(identity, key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn validity(from: u64, to: u64) -> Validity {
        Validity {
            not_before: UNIX_EPOCH + Duration::from_secs(from),
            not_after: UNIX_EPOCH + Duration::from_secs(to),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_window_is_a_share_of_the_lifetime_or_a_duration() {
        let v = validity(1000, 1300);
        let third = RotateBefore::default();
        assert_eq!(third, RotateBefore::PercentOfLifetime(33));
        // 99 s of 300 is the window: rotate once less than that is left.
        assert_eq!(due(v, third, at(1000)), None);
        assert_eq!(due(v, third, at(1200)), None);
        assert_eq!(due(v, third, at(1202)), Some(Duration::from_secs(98)));
        assert_eq!(
            due(v, RotateBefore::PercentOfLifetime(100), at(1000)),
            Some(Duration::from_secs(300))
        );
        let minute = RotateBefore::Remaining(Duration::from_secs(60));
        assert_eq!(due(v, minute, at(1239)), None);
        assert_eq!(due(v, minute, at(1241)), Some(Duration::from_secs(59)));
        assert_eq!(due(v, RotateBefore::Never, at(1299)), None);
        // Past the end: nothing left, due (the store refuses it before this is asked).
        assert_eq!(due(v, third, at(2000)), Some(Duration::ZERO));
        // A certificate valid before it starts (bad clock) counts as a lifetime of zero.
        assert_eq!(due(validity(1300, 1000), third, at(900)), None);
    }

    #[test]
    fn only_a_refusal_of_the_identity_counts_as_refused() {
        assert!(refused(&Error::new(ErrorKind::Tls, "certificate revoked")));
        assert!(refused(&Error::new(
            ErrorKind::ConnectionRefused,
            "CONNACK NotAuthorized"
        )));
        assert!(!refused(&Error::new(
            ErrorKind::ConnectionRefused,
            "CONNACK ServerBusy"
        )));
        assert!(!refused(&Error::new(ErrorKind::Connection, "closed")));
        assert!(!refused(&Error::new(ErrorKind::Rejected, "403")));
    }
}
