//! The run: reuse a stored identity or provision a new one, connecting, creating,
//! registering, saving and verifying, with the retries [`super::retry`] decides.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::device_key::{self, NewKey};
use super::options::{CheckedProvisionOptions, KeySource, Progress, Step};
use super::retry::{
    claim_verdict, connection_verdict, deadline_error, jitter, plan_retry, Verdict,
};
use super::store::{self, Found, IdentityStore, Metadata, StoredFiles};
use super::store_lock::{self, locked};
use super::Provisioned;
use crate::client::{CheckedClientOptions, Client, ClientOptions, Credentials, Pem, PrivateKey};
use crate::error::{Error, ErrorKind};
use crate::keygen;
use crate::log::{fp_log, Level};
use crate::protocol::{RegisterThingRequest, RegisterThingResponse};
use crate::x509;

// Rotation is the run's too (it uses the run's steps); it lives in its own file.
#[path = "rotate.rs"]
mod rotate;
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
        caller: "claim",
        rotating: false,
        lock: store_lock::lock_for(&opts.store_dir),
        opts,
    };
    let outcome = run.identity().await;
    outcome.map_err(|e| run.mention_abandoned(e))
}

impl Run {
    /// A pending identity first, then a stored one (reused or rotated), else a new one.
    async fn identity(&mut self) -> Result<Provisioned, Error> {
        let (dir, endpoint, force) = (
            self.opts.store_dir.clone(),
            self.opts.claim.endpoint.clone(),
            self.opts.force,
        );
        let held = Arc::clone(&self.lock);
        let (store, leftovers, found) = blocking(move || {
            let _held = held.lock().unwrap_or_else(|e| e.into_inner());
            let (store, leftovers) = IdentityStore::open_reporting(dir)?;
            let found = if force {
                None
            } else {
                Some(store.load(&endpoint)?)
            };
            Ok((store, leftovers, found))
        })
        .await?;
        for id in leftovers {
            let why = "a run stopped before it could keep or report it left its files";
            self.abandon(&id, why).await;
        }
        self.store = Some(store.clone());
        if let Some(done) = self.settle_pending(&store).await? {
            return Ok(done);
        }
        let resumed = self.take_registering(&store).await?;
        let why = match found {
            Some(Found::Usable(identity)) => {
                let (id, source) = (identity.clone(), self.opts.device_key.clone());
                match blocking(move || Ok(device_key::stored_key(&id, &source))).await? {
                    Ok(key) => {
                        let why = "the stored identity is valid and kept";
                        self.abandon_created(resumed, why).await;
                        return self.reuse_or_rotate(store, *identity, key).await;
                    }
                    Err(why) => Some(why),
                }
            }
            Some(Found::Unusable(why)) => Some(why),
            Some(Found::Nothing) | None => None,
        };
        if let Some(why) = why {
            fp_log!(
                Level::Warn,
                "identity store {}: not reusing the stored identity: {why}",
                store.dir().display()
            );
        }
        self.provision_new(store, resumed).await
    }
}

/// Runs blocking work (file I/O, key generation) off the async threads.
///
/// The work and its result travel boxed, so all of it shares one instantiation of tokio's
/// blocking-task machinery (one per result type would cost about 1.5 KB of code each).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let job: Box<dyn FnOnce() -> Box<dyn Any + Send> + Send> = Box::new(move || Box::new(f()));
    let done = tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("blocking task failed: {e}")))?;
    match done.downcast::<Result<T, Error>>() {
        Ok(result) => *result,
        Err(_) => unreachable!("the job returns its own result type"),
    }
}

/// What the create call gave.
struct Created {
    certificate_id: String,
    certificate_pem: String,
    key: NewKey,
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
    /// Who connects for the create and register half: "claim", or "device" when rotating.
    caller: &'static str,
    /// A rotation is saving its new identity: it is not kept pending, and one that fails
    /// verification is given up (the old identity stays in use).
    rotating: bool,
    /// The store directory's lock (see [`store_lock`]), held around each piece of store work.
    lock: Arc<Mutex<()>>,
}

impl Run {
    /// The device's MQTT client ID: the options' override, or `default` (the stored or
    /// registered identity's).
    fn client_id(&self, default: &str) -> String {
        self.opts
            .device_client_id
            .clone()
            .unwrap_or_else(|| default.to_owned())
    }

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
    async fn verify(
        &mut self,
        files: &StoredFiles,
        key: PrivateKey,
        client_id: &str,
    ) -> Result<(), VerifyFailure> {
        let opts = self
            .opts
            .claim
            .clone()
            .with_credentials(Credentials {
                cert: Pem::file(&files.certificate),
                key,
            })
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

    async fn reuse(
        &mut self,
        identity: store::StoredIdentity,
        key: PrivateKey,
    ) -> Result<Provisioned, Error> {
        let m = identity.metadata;
        self.progress(Step::Reusing, Duration::ZERO, m.thing_name.clone())
            .await;
        let client_id = self.client_id(&m.client_id);
        self.verify(&identity.files, key, &client_id)
            .await
            .map_err(|f| f.stored_identity(&m.thing_name))?;
        Ok(self.reused(m, identity.files, client_id))
    }

    /// The result of a run that kept the stored identity `m` (its files `files`).
    fn reused(&self, m: Metadata, files: StoredFiles, client_id: String) -> Provisioned {
        Provisioned {
            thing_name: m.thing_name,
            device_configuration: m.device_configuration,
            certificate_id: m.certificate_id,
            client_id,
            files,
            key_location: m.key_location,
            reused: true,
            rotated: false,
            previous_certificate_id: None,
            attempts: self.attempt,
            abandoned_certificates: self.abandoned.clone(),
        }
    }

    /// A new identity, from `resumed` (a create result a stopped run left) if given.
    async fn provision_new(
        &mut self,
        store: IdentityStore,
        resumed: Option<Created>,
    ) -> Result<Provisioned, Error> {
        if self.opts.claim.credentials.is_none() {
            self.abandon_created(resumed, GAVE_UP).await;
            return Err(Error::invalid(
                "the store holds no usable identity and no claim certificate is given to \
                 provision one",
            ));
        }
        if let Err(e) = check_claim_certificate(&self.opts.claim).await {
            self.abandon_created(resumed, GAVE_UP).await;
            return Err(e);
        }
        let (created, registered) = self.create_and_register(resumed).await?;
        let key_type = self.opts.device_key.name().to_owned();
        let p = self
            .save_verify_commit(&store, created, registered, key_type)
            .await?;
        fp_log!(
            Level::Info,
            "provisioned {} (certificate {}) after {} attempt(s)",
            p.thing_name,
            p.certificate_id,
            self.attempt
        );
        Ok(p)
    }

    /// The half after RegisterThing, for provisioning and rotation alike: the new files
    /// staged beside the committed identity (already, when staged before RegisterThing),
    /// recorded as pending, a connection with them, then the commit.
    async fn save_verify_commit(
        &mut self,
        store: &IdentityStore,
        created: Created,
        registered: RegisterThingResponse,
        key_type: String,
    ) -> Result<Provisioned, Error> {
        self.progress(
            Step::Saving,
            Duration::ZERO,
            store.dir().display().to_string(),
        )
        .await;
        let staged = match created.staged.clone() {
            Some(staged) => Ok(staged),
            None => {
                let id = created.certificate_id.clone();
                let cert = created.certificate_pem.clone();
                let key = created.key.clone();
                locked(&self.lock, store, move |s| stage_new(s, &id, &cert, &key)).await
            }
        };
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                self.abandon(&created.certificate_id, "it could not be saved")
                    .await;
                return Err(e);
            }
        };
        let files = store.staged_files(&staged);
        let (connect_key, store_in) = match created.key {
            NewKey::Pem(_) => (PrivateKey::Pem(Pem::file(&files.private_key)), None),
            NewKey::External {
                ref signer,
                ref store_in,
                ..
            } => (PrivateKey::Signer(signer.clone()), store_in.clone()),
        };
        let key_location = created.key.location();
        drop(created.key);
        let client_id = self.client_id(&registered.thing_name);
        let metadata = Metadata {
            version: 1,
            thing_name: registered.thing_name.clone(),
            certificate_id: created.certificate_id.clone(),
            device_configuration: registered.device_configuration.clone(),
            endpoint: self.opts.claim.endpoint.clone(),
            port: self.opts.claim.port,
            client_id: client_id.clone(),
            key_type,
            key_location: key_location.clone(),
            certificate_file: String::new(),
            private_key_file: String::new(),
            provisioned_at: 0,
            not_after: 0,
        };
        // Pending from here: a failed verification or a killed process leaves it for the
        // next run to verify, not leftovers to delete. Not a rotation's: the old identity
        // stays in use, and a killed rotation's files are reported by the next run, which
        // rotates again.
        let rotating = self.rotating;
        if let Err(e) = {
            let (staged, metadata) = (staged.clone(), metadata.clone());
            locked(&self.lock, store, move |s| match rotating {
                true => s.registered(),
                false => s.keep_pending(&staged, metadata),
            })
            .await
        } {
            self.abandon(&created.certificate_id, "it could not be saved")
                .await;
            return Err(e);
        }
        let verified = self.verify(&files, connect_key, &client_id).await;
        if let Err(failure) = verified {
            return Err(self.new_identity_failed(store, failure, &metadata).await);
        }
        if let Some(key) = store_in {
            let cert = created.certificate_pem.clone();
            blocking(move || crate::pkcs11::store_certificate(&key, &cert)).await?;
        }
        let stored = locked(&self.lock, store, move |s| s.commit(&staged, metadata)).await?;
        Ok(Provisioned {
            thing_name: registered.thing_name,
            device_configuration: registered.device_configuration,
            certificate_id: created.certificate_id,
            client_id,
            files: stored.files,
            key_location,
            reused: false,
            rotated: false,
            previous_certificate_id: None,
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
        let mut csr: Option<(String, NewKey)> = None;
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
        csr: &mut Option<(String, NewKey)>,
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
                let c = self.connect(opts, self.caller).await.map_err(claim_error)?;
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
        csr: &mut Option<(String, NewKey)>,
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
                        key: NewKey::Pem(r.private_key),
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
            } => (csr_pem.clone(), NewKey::Pem(private_key_pem.clone())),
            source @ (KeySource::Pkcs11 { .. } | KeySource::Signer(_)) => {
                if csr.is_none() {
                    let (source, subject) = (source.clone(), self.opts.csr_subject.clone());
                    *csr = blocking(move || device_key::external_csr(&source, &subject)).await?;
                }
                match csr {
                    Some((c, k)) => (c.clone(), k.clone()),
                    None => return Err(Error::new(ErrorKind::Internal, "no CSR")),
                }
            }
            KeySource::Generate(key_type) => {
                if csr.is_none() {
                    let (key_type, subject) = (*key_type, self.opts.csr_subject.clone());
                    let k = blocking(move || keygen::generate(key_type, &subject)).await?;
                    *csr = Some((k.csr_pem.clone(), NewKey::Pem(k.private_key_pem.clone())));
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
            key,
            token: r.certificate_ownership_token,
            at: Instant::now(),
            token_sent: false,
            staged: None,
        })
        .await
    }
}

/// Writes a new identity's certificate, and its key when the key is PEM, to the store (not
/// committed).
fn stage_new(
    s: &IdentityStore,
    id: &str,
    cert: &str,
    key: &NewKey,
) -> Result<store::Staged, Error> {
    match key {
        NewKey::Pem(pem) => s.stage(id, cert, pem),
        NewKey::External { signer, .. } => s.stage_certificate(id, cert, signer.public_key()),
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
