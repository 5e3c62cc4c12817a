//! The run: reuse a stored identity or provision a new one, connecting, creating,
//! registering, saving and verifying, with the retries [`super::retry`] decides.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use zeroize::Zeroizing;

use super::options::{CheckedProvisionOptions, KeySource, Progress, Step};
use super::retry::{
    claim_verdict, connection_verdict, deadline_error, jitter, plan_retry, Verdict,
};
use super::store::{self, Found, IdentityStore, Metadata, StoredFiles};
use super::Provisioned;
use crate::client::{CheckedClientOptions, Client, ClientOptions, Pem};
use crate::error::{Error, ErrorKind};
use crate::keygen;
use crate::log::{fp_log, Level};
use crate::protocol::{RegisterThingRequest, RegisterThingResponse};
use crate::x509;

mod settle;
use settle::VerifyFailure;

/// Provisions, or reuses, the identity `opts` describe.
pub(super) async fn run(opts: CheckedProvisionOptions) -> Result<Provisioned, Error> {
    let mut run = Run {
        started: Instant::now(),
        attempt: 1,
        last_connect: HashMap::new(),
        abandoned: Vec::new(),
        store: None,
        opts,
    };
    let outcome = run.identity().await;
    outcome.map_err(|e| run.mention_abandoned(e))
}

impl Run {
    /// A pending identity first, then a stored one, else a new one.
    async fn identity(&mut self) -> Result<Provisioned, Error> {
        let dir = self.opts.store_dir.clone();
        let (store, leftovers) = blocking(move || IdentityStore::open_reporting(dir)).await?;
        for id in leftovers {
            let why = "a run stopped before it could keep or report it left its files";
            self.abandon(&id, why).await;
        }
        self.store = Some(store.clone());
        if let Some(done) = self.settle_pending(&store).await? {
            return Ok(done);
        }
        let resumed = self.take_registering(&store).await?;
        if !self.opts.force {
            let (s, endpoint) = (store.clone(), self.opts.claim.endpoint.clone());
            match blocking(move || s.load(&endpoint)).await? {
                Found::Usable(identity) => {
                    let why = "the stored identity is valid and kept";
                    self.abandon_created(resumed, why).await;
                    return self.reuse(*identity).await;
                }
                Found::Unusable(why) => fp_log!(
                    Level::Warn,
                    "identity store {}: not reusing the stored identity: {why}",
                    store.dir().display()
                ),
                Found::Nothing => {}
            }
        }
        self.provision_new(store, resumed).await
    }
}

/// Runs blocking work (file I/O, key generation) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("blocking task failed: {e}")))?
}

/// What the create call gave.
struct Created {
    certificate_id: String,
    certificate_pem: String,
    private_key_pem: Zeroizing<String>,
    token: String,
    at: Instant,
    /// RegisterThing was sent with this token at least once.
    token_sent: bool,
    /// Its certificate and key in the store, not committed.
    staged: Option<store::Staged>,
}

/// AWS's ownership tokens live one hour; one older than this is not retried.
const TOKEN_LIFETIME: Duration = Duration::from_secs(55 * 60);
/// Why a create result is given up when the claim half ends in failure.
const GAVE_UP: &str = "provisioning gave up before its registration was confirmed";
/// AWS IoT accepts one CONNECT per second per client id.
const CONNECT_SPACING: Duration = Duration::from_secs(1);

struct Run {
    opts: CheckedProvisionOptions,
    started: Instant,
    attempt: u32,
    last_connect: HashMap<String, Instant>,
    /// Certificates obtained and not kept, reported as they were given up.
    abandoned: Vec<String>,
    /// The store, once open: each create result is staged in it before RegisterThing, so a
    /// run killed meanwhile leaves files the next run reports.
    store: Option<IdentityStore>,
}

impl Run {
    async fn progress(&self, step: Step, delay: Duration, detail: impl Into<String>) {
        if let Some(sink) = &self.opts.progress {
            sink(Progress {
                step,
                attempt: self.attempt,
                delay,
                detail: detail.into(),
            })
            .await;
        }
    }

    fn remaining(&self) -> Duration {
        self.opts
            .retry
            .deadline
            .saturating_sub(self.started.elapsed())
    }

    /// Runs `fut` within what is left of the deadline.
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let deadline = self.opts.retry.deadline;
        tokio::time::timeout(self.remaining(), fut)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("provisioning deadline of {deadline:?} passed while {what}"),
                ))
            })
    }

    /// After a retryable failure: waits the backoff, or gives up with `e` when attempts or
    /// the deadline are used up.
    async fn backoff(&mut self, e: Error) -> Result<(), Error> {
        let remaining = self.remaining();
        let delay = plan_retry(&self.opts.retry, self.attempt, remaining, jitter, e.clone())?;
        fp_log!(
            Level::Info,
            "provisioning attempt {} failed ({}); retrying in {} ms",
            self.attempt,
            e.message,
            delay.as_millis()
        );
        self.progress(Step::RetryScheduled, delay, e.message.clone())
            .await;
        tokio::time::sleep(delay).await;
        self.attempt += 1;
        Ok(())
    }

    /// Connects with `opts`, at most once a second per client id.
    async fn connect(&mut self, opts: CheckedClientOptions, what: &str) -> Result<Client, Error> {
        self.progress(Step::Connecting, Duration::ZERO, what).await;
        // A generated id is fixed here, so the spacing below knows it.
        let id = opts.effective_client_id()?;
        let opts = opts.with_client_id(id.clone())?;
        if let Some(last) = self.last_connect.get(&id) {
            let wait = CONNECT_SPACING.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        self.last_connect.insert(id, Instant::now());
        self.bounded(&format!("connecting ({what})"), Client::connect(opts))
            .await
    }

    /// Connects with an identity, proves it (CONNACK accepted) and disconnects; retries
    /// connection-level failures. A failure says whether the identity itself was refused or
    /// only could not be tried.
    async fn verify(&mut self, files: &StoredFiles, client_id: &str) -> Result<(), VerifyFailure> {
        let opts = self
            .opts
            .claim
            .clone()
            .with_pem_credentials(Pem::file(&files.certificate), Pem::file(&files.private_key))
            .with_client_id(client_id.to_owned())
            .map_err(VerifyFailure::Unusable)?;
        loop {
            self.progress(Step::Verifying, Duration::ZERO, client_id)
                .await;
            match self.connect(opts.clone(), "device").await {
                Ok(client) => {
                    client.disconnect().await;
                    return Ok(());
                }
                Err(e) => match connection_verdict(&e) {
                    Some(_) if !deadline_error(&e) => {
                        self.backoff(e).await.map_err(VerifyFailure::NotVerified)?
                    }
                    Some(_) => return Err(VerifyFailure::NotVerified(e)),
                    None => return Err(VerifyFailure::Unusable(e)),
                },
            }
        }
    }

    async fn reuse(&mut self, identity: store::StoredIdentity) -> Result<Provisioned, Error> {
        let m = identity.metadata;
        self.progress(Step::Reusing, Duration::ZERO, m.thing_name.clone())
            .await;
        let client_id = self
            .opts
            .device_client_id
            .clone()
            .unwrap_or_else(|| m.client_id.clone());
        self.verify(&identity.files, &client_id)
            .await
            .map_err(|f| f.stored_identity(&m.thing_name))?;
        Ok(Provisioned {
            thing_name: m.thing_name,
            device_configuration: m.device_configuration,
            certificate_id: m.certificate_id,
            client_id,
            files: identity.files,
            reused: true,
            attempts: self.attempt,
            abandoned_certificates: self.abandoned.clone(),
        })
    }

    /// A new identity, from `resumed` (a create result a stopped run left) if given.
    async fn provision_new(
        &mut self,
        store: IdentityStore,
        resumed: Option<Created>,
    ) -> Result<Provisioned, Error> {
        if let Err(e) = check_claim_certificate(&self.opts.claim).await {
            self.abandon_created(resumed, GAVE_UP).await;
            return Err(e);
        }
        let (created, registered) = self.create_and_register(resumed).await?;
        self.progress(
            Step::Saving,
            Duration::ZERO,
            store.dir().display().to_string(),
        )
        .await;
        let staged = match created.staged.clone() {
            Some(staged) => Ok(staged),
            None => {
                let store = store.clone();
                let id = created.certificate_id.clone();
                let cert = created.certificate_pem.clone();
                let key = created.private_key_pem.clone();
                blocking(move || store.stage(&id, &cert, &key)).await
            }
        };
        drop(created.private_key_pem);
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                self.abandon(&created.certificate_id, "it could not be saved")
                    .await;
                return Err(e);
            }
        };
        let client_id = self
            .opts
            .device_client_id
            .clone()
            .unwrap_or_else(|| registered.thing_name.clone());
        let metadata = Metadata {
            version: 1,
            thing_name: registered.thing_name.clone(),
            certificate_id: created.certificate_id.clone(),
            device_configuration: registered.device_configuration.clone(),
            endpoint: self.opts.claim.endpoint.clone(),
            port: self.opts.claim.port,
            client_id: client_id.clone(),
            key_type: self.opts.device_key.name().to_owned(),
            certificate_file: String::new(),
            private_key_file: String::new(),
            provisioned_at: 0,
            not_after: 0,
        };
        // Pending from here: a failed verification or a killed process leaves it for the
        // next run to verify, not leftovers to delete.
        if let Err(e) = {
            let (store, staged, metadata) = (store.clone(), staged.clone(), metadata.clone());
            blocking(move || store.keep_pending(&staged, metadata)).await
        } {
            self.abandon(&created.certificate_id, "it could not be saved")
                .await;
            return Err(e);
        }
        let verified = self.verify(&store.staged_files(&staged), &client_id).await;
        if let Err(failure) = verified {
            return Err(self.new_identity_failed(&store, failure, &metadata).await);
        }
        let stored = blocking(move || store.commit(&staged, metadata)).await?;
        fp_log!(
            Level::Info,
            "provisioned {} (certificate {}) after {} attempt(s)",
            registered.thing_name,
            created.certificate_id,
            self.attempt
        );
        Ok(Provisioned {
            thing_name: registered.thing_name,
            device_configuration: registered.device_configuration,
            certificate_id: created.certificate_id,
            client_id,
            files: stored.files,
            reused: false,
            attempts: self.attempt,
            abandoned_certificates: self.abandoned.clone(),
        })
    }

    /// The claim half: connect, create, register, with retries; disconnects at the end.
    async fn create_and_register(
        &mut self,
        resumed: Option<Created>,
    ) -> Result<(Created, RegisterThingResponse), Error> {
        let mut claim: Option<Client> = None;
        let mut created: Option<Created> = resumed;
        // The key and CSR made here, once: every create try signs the same CSR.
        let mut csr: Option<(String, Zeroizing<String>)> = None;
        loop {
            let outcome = self.claim_try(&mut claim, &mut created, &mut csr).await;
            let e = match outcome {
                Ok(registered) => {
                    if let Some(c) = claim.take() {
                        c.disconnect().await;
                    }
                    let Some(created) = created else {
                        return Err(Error::new(
                            ErrorKind::Internal,
                            "registered without a certificate",
                        ));
                    };
                    return Ok((created, registered));
                }
                Err(e) => e,
            };
            let token_sent = created.as_ref().is_some_and(|c| c.token_sent);
            let verdict = claim_verdict(&e, token_sent);
            match verdict {
                Verdict::Fatal => {
                    if let Some(c) = claim.take() {
                        c.disconnect().await;
                    }
                    self.abandon_created(created.take(), GAVE_UP).await;
                    return Err(e);
                }
                Verdict::Retry { restart, reconnect } => {
                    if restart {
                        let why = "the service says its ownership token is spent: an earlier \
                                   RegisterThing with it went through and its answer was lost";
                        self.abandon_created(created.take(), why).await;
                    }
                    if reconnect || claim.as_ref().is_some_and(|c| !c.is_connected()) {
                        if let Some(c) = claim.take() {
                            c.disconnect().await;
                        }
                    }
                    if let Err(e) = self.backoff(e).await {
                        if let Some(c) = claim.take() {
                            c.disconnect().await;
                        }
                        self.abandon_created(created.take(), GAVE_UP).await;
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn claim_try(
        &mut self,
        claim: &mut Option<Client>,
        created: &mut Option<Created>,
        csr: &mut Option<(String, Zeroizing<String>)>,
    ) -> Result<RegisterThingResponse, Error> {
        if created
            .as_ref()
            .is_some_and(|c| c.at.elapsed() > TOKEN_LIFETIME)
        {
            let why = "its ownership token is too old to use";
            self.abandon_created(created.take(), why).await;
        }
        let client = match claim {
            Some(c) if c.is_connected() => c.clone(),
            _ => {
                // RegisterThing's subscription rides along with the create operation's.
                let opts = self
                    .opts
                    .claim
                    .clone()
                    .with_template_name(self.opts.template_name.clone());
                let c = self.connect(opts, "claim").await.map_err(claim_error)?;
                *claim = Some(c.clone());
                c
            }
        };
        if created.is_none() {
            *created = Some(self.create(&client, csr).await?);
        }
        let Some(c) = created.as_mut() else {
            return Err(Error::new(ErrorKind::Internal, "no create result"));
        };
        self.progress(
            Step::Registering,
            Duration::ZERO,
            self.opts.template_name.to_string(),
        )
        .await;
        let request = RegisterThingRequest {
            certificate_ownership_token: c.token.clone(),
            parameters: self.opts.parameters.clone(),
        };
        c.token_sent = true;
        let template = &self.opts.template_name;
        self.bounded("registering", client.register_thing(template, &request))
            .await
    }

    async fn create(
        &mut self,
        client: &Client,
        csr: &mut Option<(String, Zeroizing<String>)>,
    ) -> Result<Created, Error> {
        let (csr_pem, key) = match &self.opts.device_key {
            KeySource::Service => {
                self.progress(Step::Creating, Duration::ZERO, "CreateKeysAndCertificate")
                    .await;
                let r = self
                    .bounded("creating", client.create_keys_and_certificate())
                    .await?;
                return self
                    .stage_created(Created {
                        certificate_id: r.certificate_id,
                        certificate_pem: r.certificate_pem,
                        private_key_pem: r.private_key,
                        token: r.certificate_ownership_token,
                        at: Instant::now(),
                        token_sent: false,
                        staged: None,
                    })
                    .await;
            }
            KeySource::Csr {
                csr_pem,
                private_key_pem,
            } => (csr_pem.clone(), private_key_pem.clone()),
            KeySource::Generate(key_type) => {
                if csr.is_none() {
                    let (key_type, subject) = (*key_type, self.opts.csr_subject.clone());
                    let k = blocking(move || keygen::generate(key_type, &subject)).await?;
                    *csr = Some((k.csr_pem.clone(), k.private_key_pem.clone()));
                }
                match csr {
                    Some((c, k)) => (c.clone(), k.clone()),
                    None => return Err(Error::new(ErrorKind::Internal, "no CSR")),
                }
            }
        };
        self.progress(Step::Creating, Duration::ZERO, "CreateCertificateFromCsr")
            .await;
        let r = self
            .bounded("creating", client.create_certificate_from_csr(&csr_pem))
            .await?;
        self.stage_created(Created {
            certificate_id: r.certificate_id,
            certificate_pem: r.certificate_pem,
            private_key_pem: key,
            token: r.certificate_ownership_token,
            at: Instant::now(),
            token_sent: false,
            staged: None,
        })
        .await
    }
}

/// Names the claim certificate in a TLS failure of the claim connection.
fn claim_error(e: Error) -> Error {
    if e.kind == ErrorKind::Tls && e.message.contains("expired") {
        return Error {
            message: format!(
                "the claim certificate was refused as expired (temporary claim certificates \
                 are valid for five minutes): {}",
                e.message
            ),
            ..e
        };
    }
    e
}

/// Refuses an expired claim certificate before connecting, with its own message.
async fn check_claim_certificate(claim: &ClientOptions) -> Result<(), Error> {
    let Some(pem) = claim.credentials.as_ref().map(|c| c.cert.clone()) else {
        return Ok(());
    };
    let bytes = match pem {
        Pem::Memory(b) => b.to_vec(),
        // Unreadable: the connection reports it with the usual I/O error.
        Pem::File(path) => match blocking(move || Ok(std::fs::read(path).ok())).await? {
            Some(b) => b,
            None => return Ok(()),
        },
    };
    let Some(validity) = x509::first_certificate(&bytes).and_then(|c| x509::validity(&c)) else {
        return Ok(());
    };
    let now = SystemTime::now();
    if let Ok(ago) = now.duration_since(validity.not_after) {
        return Err(Error::new(
            ErrorKind::Tls,
            format!(
                "the claim certificate expired {} s ago; temporary claim certificates \
                 (create-provisioning-claim) are valid for five minutes: get a new one",
                ago.as_secs()
            ),
        ));
    }
    Ok(())
}
