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

pub mod store;
mod x509;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use zeroize::Zeroizing;

use crate::client::{Client, ClientOptions, Pem};
use crate::error::{Error, ErrorKind};
use crate::keygen::{self, CsrSubject, KeyType};
use crate::log::{fp_log, Level};
use crate::protocol::{validate_template_name, RegisterThingRequest, RegisterThingResponse};
use store::{Found, IdentityStore, Metadata, StoredFiles};

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
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Generate(t) => write!(f, "Generate({t:?})"),
            KeySource::Service => f.write_str("Service"),
            KeySource::Csr { .. } => f.write_str("Csr(<user CSR and key>)"),
        }
    }
}

impl KeySource {
    fn name(&self) -> &'static str {
        match self {
            KeySource::Generate(t) => t.as_str(),
            KeySource::Service => "service",
            KeySource::Csr { .. } => "user",
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
    fn validate(&self) -> Result<(), Error> {
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

    /// The upper bound of the backoff after `failures` failed tries (1 or more).
    fn ceiling(&self, failures: u32) -> Duration {
        let doubled = self
            .base_delay
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.max_delay)
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

/// What to provision, where to keep it, and how.
#[derive(Clone)]
pub struct ProvisionOptions {
    /// The claim connection: endpoint, port, CA, claim certificate and key, MQTT version,
    /// timeouts, proxy. The device connection uses the same settings with the new identity.
    pub claim: ClientOptions,
    /// The provisioning template's name.
    pub template_name: String,
    /// The template's parameters.
    pub parameters: BTreeMap<String, String>,
    /// The identity store's directory (created 0700 if missing).
    pub store_dir: PathBuf,
    /// Where the key comes from (default: an EC P-256 key generated here).
    pub key: KeySource,
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
}

impl std::fmt::Debug for ProvisionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionOptions")
            .field("claim", &self.claim)
            .field("template_name", &self.template_name)
            .field("store_dir", &self.store_dir)
            .field("key", &self.key)
            .field("force", &self.force)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ProvisionOptions {
    /// Options with every default: EC P-256 key made here, CSR flow, default retries.
    pub fn new(
        claim: ClientOptions,
        template_name: impl Into<String>,
        store_dir: impl Into<PathBuf>,
    ) -> ProvisionOptions {
        ProvisionOptions {
            claim,
            template_name: template_name.into(),
            parameters: BTreeMap::new(),
            store_dir: store_dir.into(),
            key: KeySource::Generate(KeyType::EcP256),
            csr_subject: CsrSubject::default(),
            device_client_id: None,
            force: false,
            retry: RetryPolicy::default(),
            progress: None,
        }
    }

    /// Sets a progress callback that runs inline: keep it short, it delays the next step.
    pub fn on_progress(&mut self, f: impl Fn(&Progress) + Send + Sync + 'static) {
        self.progress = Some(Arc::new(move |p: Progress| {
            f(&p);
            Box::pin(async {}) as ProgressFuture
        }));
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.claim.validate()?;
        if self.claim.cert.is_none() {
            return Err(Error::invalid("the claim certificate and key are required"));
        }
        validate_template_name(&self.template_name)?;
        self.retry.validate()?;
        if let Some(id) = &self.device_client_id {
            if id.is_empty() || id.len() > usize::from(u16::MAX) {
                return Err(Error::invalid("the device client id must not be empty"));
            }
        }
        if matches!(self.key, KeySource::Generate(KeyType::Rsa2048))
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
        } = &self.key
        {
            if csr_pem.trim().is_empty() || private_key_pem.trim().is_empty() {
                return Err(Error::invalid(
                    "a user CSR needs its PEM and its private key",
                ));
            }
        }
        Ok(())
    }
}

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
    /// The store's files.
    pub files: StoredFiles,
    /// Whether a stored identity was reused (no claim connection was made).
    pub reused: bool,
    /// Tries made, the first included.
    pub attempts: u32,
}

/// Provisions, or reuses, the device identity described by `opts`. See the module docs.
///
/// Errors: [`ErrorKind::InvalidArgument`] for bad options (nothing sent);
/// [`ErrorKind::Store`] when the store cannot be used; otherwise the error of the step that
/// failed for good (a non-retryable one at once, a retryable one once the attempts or the
/// deadline are used up, its message then saying so).
pub async fn provision(opts: ProvisionOptions) -> Result<Provisioned, Error> {
    opts.validate()?;
    let run = Run {
        started: Instant::now(),
        attempt: 1,
        last_connect: HashMap::new(),
        opts,
    };
    let dir = run.opts.store_dir.clone();
    let store = blocking(move || IdentityStore::open(dir)).await?;
    if !run.opts.force {
        let (s, endpoint) = (store.clone(), run.opts.claim.endpoint.clone());
        match blocking(move || s.load(&endpoint)).await? {
            Found::Usable(identity) => return run.reuse(*identity).await,
            Found::Unusable(why) => fp_log!(
                Level::Warn,
                "identity store {}: not reusing the stored identity: {why}",
                store.dir().display()
            ),
            Found::Nothing => {}
        }
    }
    run.provision_new(store).await
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
}

/// AWS's ownership tokens live one hour; one older than this is not retried.
const TOKEN_LIFETIME: Duration = Duration::from_secs(55 * 60);
/// AWS IoT accepts one CONNECT per second per client id.
const CONNECT_SPACING: Duration = Duration::from_secs(1);

/// Whether and how a failure is retried.
enum Verdict {
    /// Not retryable: end now.
    Fatal,
    /// Retry; `restart` drops the create result (its token may be spent), `reconnect` drops
    /// the connection.
    Retry { restart: bool, reconnect: bool },
}

/// A rejection that says "try later": throttling or a service-side failure.
fn transient_rejection(e: &Error) -> bool {
    let Some(r) = &e.rejection else {
        return false;
    };
    let code = r.error_code.to_ascii_lowercase();
    r.status_code == 429
        || (500..600).contains(&r.status_code)
        || code.contains("throttl")
        || code.contains("serviceunavailable")
        || code.contains("internalfailure")
        || code.contains("internalerror")
}

/// A CONNACK refusal that says "try later" (MQTT 5 reason names, 3.1.1 return code name).
fn transient_refusal(e: &Error) -> bool {
    e.kind == ErrorKind::ConnectionRefused
        && [
            "ServerUnavailable",
            "ServiceUnavailable",
            "ServerBusy",
            "QuotaExceeded",
            "ConnectionRateExceeded",
        ]
        .iter()
        .any(|name| e.message.contains(name))
}

/// The classification of connection-level failures, shared by every step.
fn connection_verdict(e: &Error) -> Option<Verdict> {
    match e.kind {
        ErrorKind::Connection | ErrorKind::Disconnected | ErrorKind::Timeout => {
            Some(Verdict::Retry {
                restart: false,
                reconnect: true,
            })
        }
        _ if transient_refusal(e) => Some(Verdict::Retry {
            restart: false,
            reconnect: true,
        }),
        _ => None,
    }
}

struct Run {
    opts: ProvisionOptions,
    started: Instant,
    attempt: u32,
    last_connect: HashMap<String, Instant>,
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
        let policy = self.opts.retry;
        if self.attempt >= policy.max_attempts {
            return Err(Error {
                message: format!("gave up after {} attempts: {}", self.attempt, e.message),
                ..e
            });
        }
        let ceiling = policy.ceiling(self.attempt);
        let delay = jitter(ceiling);
        if delay >= self.remaining() {
            return Err(Error {
                kind: ErrorKind::Timeout,
                message: format!(
                    "gave up: the provisioning deadline of {:?} leaves no time to retry after: {}",
                    policy.deadline, e.message
                ),
                ..e
            });
        }
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
    async fn connect(&mut self, mut opts: ClientOptions, what: &str) -> Result<Client, Error> {
        self.progress(Step::Connecting, Duration::ZERO, what).await;
        // A generated id is fixed here, so the spacing below knows it.
        let id = opts.effective_client_id()?;
        opts.client_id = Some(id.clone());
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
    /// connection-level failures.
    async fn verify(&mut self, files: &StoredFiles, client_id: &str) -> Result<(), Error> {
        let mut opts = self.opts.claim.clone();
        opts.cert = Some(Pem::file(&files.certificate));
        opts.key = Some(Pem::file(&files.private_key));
        opts.client_id = Some(client_id.to_owned());
        loop {
            self.progress(Step::Verifying, Duration::ZERO, client_id)
                .await;
            match self.connect(opts.clone(), "device").await {
                Ok(client) => {
                    client.disconnect().await;
                    return Ok(());
                }
                Err(e) => match connection_verdict(&e) {
                    Some(_) if !deadline_error(&e) => self.backoff(e).await?,
                    _ => {
                        return Err(Error {
                            message: format!("the device identity was refused: {}", e.message),
                            ..e
                        })
                    }
                },
            }
        }
    }

    async fn reuse(mut self, identity: store::StoredIdentity) -> Result<Provisioned, Error> {
        let m = identity.metadata;
        self.progress(Step::Reusing, Duration::ZERO, m.thing_name.clone())
            .await;
        let client_id = self
            .opts
            .device_client_id
            .clone()
            .unwrap_or_else(|| m.client_id.clone());
        self.verify(&identity.files, &client_id).await?;
        Ok(Provisioned {
            thing_name: m.thing_name,
            device_configuration: m.device_configuration,
            certificate_id: m.certificate_id,
            client_id,
            files: identity.files,
            reused: true,
            attempts: self.attempt,
        })
    }

    async fn provision_new(mut self, store: IdentityStore) -> Result<Provisioned, Error> {
        check_claim_certificate(&self.opts.claim).await?;
        let (created, registered) = self.create_and_register().await?;
        self.progress(
            Step::Saving,
            Duration::ZERO,
            store.dir().display().to_string(),
        )
        .await;
        let staged = {
            let store = store.clone();
            let id = created.certificate_id.clone();
            let cert = created.certificate_pem.clone();
            let key = created.private_key_pem.clone();
            blocking(move || store.stage(&id, &cert, &key)).await?
        };
        drop(created.private_key_pem);
        let client_id = self
            .opts
            .device_client_id
            .clone()
            .unwrap_or_else(|| registered.thing_name.clone());
        self.verify(&store.staged_files(&staged), &client_id)
            .await?;
        let metadata = Metadata {
            version: 1,
            thing_name: registered.thing_name.clone(),
            certificate_id: created.certificate_id.clone(),
            device_configuration: registered.device_configuration.clone(),
            endpoint: self.opts.claim.endpoint.clone(),
            port: self.opts.claim.port,
            client_id: client_id.clone(),
            key_type: self.opts.key.name().to_owned(),
            certificate_file: String::new(),
            private_key_file: String::new(),
            provisioned_at: 0,
            not_after: 0,
        };
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
        })
    }

    /// The claim half: connect, create, register, with retries; disconnects at the end.
    async fn create_and_register(&mut self) -> Result<(Created, RegisterThingResponse), Error> {
        let mut claim: Option<Client> = None;
        let mut created: Option<Created> = None;
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
            let verdict = if deadline_error(&e) {
                Verdict::Fatal
            } else if let Some(v) = connection_verdict(&e) {
                // A lost answer to RegisterThing: the token may have been spent.
                let restart = created.as_ref().is_some_and(|c| c.token_sent);
                match v {
                    Verdict::Retry { reconnect, .. } => Verdict::Retry { restart, reconnect },
                    Verdict::Fatal => Verdict::Fatal,
                }
            } else if transient_rejection(&e) {
                // The service refused the request: a token it refused is not spent.
                Verdict::Retry {
                    restart: false,
                    reconnect: false,
                }
            } else if spent_token(&e) && created.as_ref().is_some_and(|c| c.token_sent) {
                // Refused after an earlier try with it whose answer may have been lost.
                Verdict::Retry {
                    restart: true,
                    reconnect: false,
                }
            } else {
                Verdict::Fatal
            };
            match verdict {
                Verdict::Fatal => {
                    if let Some(c) = claim.take() {
                        c.disconnect().await;
                    }
                    return Err(e);
                }
                Verdict::Retry { restart, reconnect } => {
                    if restart {
                        created = None;
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
            *created = None;
        }
        let client = match claim {
            Some(c) if c.is_connected() => c.clone(),
            _ => {
                // RegisterThing's subscription rides along with the create operation's.
                let mut opts = self.opts.claim.clone();
                opts.template_name = Some(self.opts.template_name.clone());
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
            self.opts.template_name.clone(),
        )
        .await;
        let request = RegisterThingRequest {
            certificate_ownership_token: c.token.clone(),
            parameters: self.opts.parameters.clone(),
        };
        c.token_sent = true;
        let template = self.opts.template_name.clone();
        self.bounded("registering", client.register_thing(&template, &request))
            .await
    }

    async fn create(
        &mut self,
        client: &Client,
        csr: &mut Option<(String, Zeroizing<String>)>,
    ) -> Result<Created, Error> {
        let (csr_pem, key) = match &self.opts.key {
            KeySource::Service => {
                self.progress(Step::Creating, Duration::ZERO, "CreateKeysAndCertificate")
                    .await;
                let r = self
                    .bounded("creating", client.create_keys_and_certificate())
                    .await?;
                return Ok(Created {
                    certificate_id: r.certificate_id,
                    certificate_pem: r.certificate_pem,
                    private_key_pem: r.private_key,
                    token: r.certificate_ownership_token,
                    at: Instant::now(),
                    token_sent: false,
                });
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
        Ok(Created {
            certificate_id: r.certificate_id,
            certificate_pem: r.certificate_pem,
            private_key_pem: key,
            token: r.certificate_ownership_token,
            at: Instant::now(),
            token_sent: false,
        })
    }
}

/// The deadline's own timeout, which is never retried.
fn deadline_error(e: &Error) -> bool {
    e.kind == ErrorKind::Timeout && e.message.starts_with("provisioning deadline")
}

/// A rejection of the ownership token.
fn spent_token(e: &Error) -> bool {
    e.rejection
        .as_ref()
        .is_some_and(|r| r.error_code == "InvalidCertificateOwnershipToken")
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
    let Some(pem) = claim.cert.clone() else {
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

/// A delay drawn uniformly from 0 to `ceiling` (full jitter).
fn jitter(ceiling: Duration) -> Duration {
    let mut b = [0u8; 8];
    // Without randomness, the ceiling itself: still a backoff, just not spread.
    if getrandom::getrandom(&mut b).is_err() {
        return ceiling;
    }
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(u64::from_le_bytes(b) % ms.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Rejection;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_full_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(500));
        assert_eq!(p.ceiling(2), Duration::from_secs(1));
        assert_eq!(p.ceiling(4), Duration::from_secs(4));
        assert_eq!(p.ceiling(10), Duration::from_secs(20));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(20));
        let draws: Vec<Duration> = (0..200).map(|_| jitter(Duration::from_secs(1))).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(1)));
        // Spread over the range, not a constant.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(300)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(700)));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    fn rejected(status: i64, code: &str) -> Error {
        Error::rejected(
            "RegisterThing",
            Rejection {
                status_code: status,
                error_code: code.into(),
                error_message: String::new(),
            },
        )
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(transient_rejection(&rejected(429, "ThrottlingException")));
        assert!(transient_rejection(&rejected(400, "Throttling")));
        assert!(transient_rejection(&rejected(503, "ServiceUnavailable")));
        assert!(transient_rejection(&rejected(500, "InternalFailure")));
        assert!(!transient_rejection(&rejected(400, "InvalidParameters")));
        assert!(!transient_rejection(&rejected(404, "ResourceNotFound")));
        assert!(!transient_rejection(&Error::new(ErrorKind::Tls, "x")));
        for kind in [
            ErrorKind::Connection,
            ErrorKind::Disconnected,
            ErrorKind::Timeout,
        ] {
            assert!(connection_verdict(&Error::new(kind, "x")).is_some());
        }
        for kind in [
            ErrorKind::Tls,
            ErrorKind::InvalidArgument,
            ErrorKind::SubscribeRefused,
            ErrorKind::BadReply,
        ] {
            assert!(connection_verdict(&Error::new(kind, "x")).is_none());
        }
        let busy = Error::new(
            ErrorKind::ConnectionRefused,
            "h refused the connection: ServerBusy",
        );
        assert!(connection_verdict(&busy).is_some());
        let denied = Error::new(ErrorKind::ConnectionRefused, "h refused: NotAuthorized");
        assert!(connection_verdict(&denied).is_none());
        assert!(deadline_error(&Error::new(
            ErrorKind::Timeout,
            "provisioning deadline of 1s passed while registering"
        )));
    }

    #[test]
    fn policy_and_options_are_checked() {
        let mut p = RetryPolicy::default();
        p.validate().unwrap();
        p.max_attempts = 0;
        assert!(p.validate().is_err());
        let p = RetryPolicy {
            max_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        assert!(p.validate().is_err());
        let mut claim = ClientOptions::new("localhost");
        let o = ProvisionOptions::new(claim.clone(), "FleetTemplate", "/tmp/x");
        assert_eq!(o.validate().unwrap_err().kind, ErrorKind::InvalidArgument);
        claim.cert = Some(Pem::file("c"));
        claim.key = Some(Pem::file("k"));
        let mut o = ProvisionOptions::new(claim, "Fleet/Template", "/tmp/x");
        assert_eq!(o.validate().unwrap_err().kind, ErrorKind::InvalidArgument);
        o.template_name = "FleetTemplate".into();
        o.validate().unwrap();
    }
}
