//! A local stand-in for the AWS IoT Core fleet-provisioning MQTT endpoint.
//!
//! [`Emulator`] serves MQTT 5 and 3.1.1 over mutual TLS on a loopback port, with its own CA,
//! a claim certificate, provisioning templates, and a persistent registry in a state directory.
//! Tests start it in-process ([`Emulator::start`], or [`Emulator::start_blocking`] outside
//! async code); the `fleetprov-emulator` binary runs the same thing from the command line.
//!
//! Connections, refusals and registry trouble are reported through the `log` crate (never a
//! payload or a key): silent unless the process installs a logger, as the binary does.

/// `impl Debug` printing `Name { field: value, .. }`: the one field worth showing of a type whose
/// other fields are keys or large state.
macro_rules! debug_one_field {
    ($name:ident, $field:ident) => {
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field(stringify!($field), &self.$field)
                    .finish_non_exhaustive()
            }
        }
    };
}

pub mod access;
pub mod account;
pub mod aws_limits;
pub mod ca;
pub mod cert;
pub mod files;
pub mod hook;
pub mod policy;
pub mod registry;
mod request_topic;
pub mod service;
pub mod template;
pub mod throttle;

mod broker;
mod endpoint;
mod open;
pub mod responder;
pub mod state_dir;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

pub use aws_limits::valid_template_name;
#[doc(hidden)]
pub use broker::fuzz_packets;
pub use broker::{Fault, MAX_PAYLOAD};
pub use endpoint::ALPN_MQTT;
pub use open::{SEED_TEMPLATE, SEED_TEMPLATE_NAME};
pub use state_dir::CLAIMS_DIR;

use broker::Broker;
use endpoint::{server_tls, ServiceBackend};
use service::Service;
use throttle::Throttle;

/// How to run an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// CA, server and claim certificates and the registry live here (created if missing).
    pub state_dir: PathBuf,
    /// Address to listen on; loopback by default.
    pub bind: IpAddr,
    /// Port to listen on; 0 picks a free one ([`EmulatorView::port`] tells which).
    pub port: u16,
    /// Provisioning templates as (name, file); empty serves the seed template as `FleetTemplate`.
    pub templates: Vec<(String, PathBuf)>,
    /// Fault injected from the start; [`EmulatorView::set_fault`] changes it later.
    pub fault: Fault,
    /// The account templates are checked against (see [`account`]); `None` lets every
    /// referenced thing type, group and policy exist.
    pub account: Option<PathBuf>,
    /// Pre-provisioning hooks as (template name, shell command); see [`hook`].
    pub hooks: Vec<(String, String)>,
    /// How long a hook may take; AWS's 5 seconds by default.
    pub hook_timeout: Duration,
    /// The claim certificates' policy document (see [`access::store`]); `None` serves AWS's
    /// sample claim policy for each template.
    pub claim_policy: Option<PathBuf>,
    /// How device certificates are issued: their validity, and from an intermediate CA or
    /// the root (see [`ca::DeviceCertificates`]).
    pub device_certificates: ca::DeviceCertificates,
}

impl EmulatorConfig {
    /// Loopback, ephemeral port, the seed template, no fault.
    pub fn new(state_dir: impl Into<PathBuf>) -> EmulatorConfig {
        EmulatorConfig {
            state_dir: state_dir.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            templates: Vec::new(),
            fault: Fault::None,
            account: None,
            hooks: Vec::new(),
            hook_timeout: hook::DEFAULT_TIMEOUT,
            claim_policy: None,
            device_certificates: ca::DeviceCertificates::default(),
        }
    }
}

/// A running emulator. What it is reached by is its [`EmulatorView`] (through `Deref`).
pub struct Emulator {
    broker: Broker,
    view: EmulatorView,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.view.addr)
            .field("state_dir", &self.view.state_dir)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Emulator {
    type Target = EmulatorView;

    fn deref(&self) -> &EmulatorView {
        &self.view
    }
}

impl Emulator {
    /// Create or load the state directory and start listening. Must run inside a tokio runtime
    /// (multi-threaded or not).
    pub async fn start(cfg: EmulatorConfig) -> io::Result<Emulator> {
        let (dir, templates) = (cfg.state_dir.clone(), cfg.templates.clone());
        let account_path = cfg.account.clone();
        let hooks: BTreeMap<String, hook::Hook> = cfg
            .hooks
            .iter()
            .map(|(name, command)| {
                let hook = hook::Hook {
                    command: command.clone(),
                    timeout: cfg.hook_timeout,
                };
                (name.clone(), hook)
            })
            .collect();
        // Key generation and file I/O: keep them off the async workers.
        let device = cfg.device_certificates.clone();
        let service = tokio::task::spawn_blocking(move || {
            open::open_service(&dir, &templates, account_path.as_deref(), hooks, device)
        })
        .await
        .map_err(io::Error::other)??;
        let account = cfg
            .account
            .as_deref()
            .map(account::Account::load)
            .transpose()?;
        let tls = Arc::new(server_tls(service.ca())?);
        let (claim_cert, claim_key) = service.ca().claim_paths();
        let throttle = Arc::new(Throttle::default());
        let policies = Arc::new(access::store::PolicyStore::new(
            account.as_ref(),
            cfg.claim_policy.as_deref(),
            &service
                .template_names()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )?);
        let backend = Arc::new(ServiceBackend {
            service: Arc::clone(&service),
            policies,
            claims_dir: cfg.state_dir.join(CLAIMS_DIR),
            throttle: Arc::clone(&throttle),
        });
        let addr = SocketAddr::new(cfg.bind, cfg.port);
        let broker = Broker::start(addr, tls, backend, cfg.fault).await?;
        let view = EmulatorView {
            addr: broker.local_addr(),
            service,
            fault: broker.fault_switch(),
            state_dir: cfg.state_dir,
            claim_cert,
            claim_key,
            throttle,
        };
        Ok(Emulator { broker, view })
    }

    /// Start on a runtime of its own, on a thread of its own, for code that is not async.
    /// Dropping the handle stops the emulator and waits for it.
    pub fn start_blocking(cfg: EmulatorConfig) -> io::Result<EmulatorHandle> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("fleetprov-emulator".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let emulator = match Emulator::start(cfg).await {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let view = emulator.view.clone();
                    if ready_tx.send(Ok(view)).is_err() {
                        return emulator.stop().await;
                    }
                    // Also resolves when the handle is dropped.
                    let _ = stop_rx.await;
                    emulator.stop().await;
                });
            })?;
        match ready_rx.recv() {
            Ok(Ok(view)) => Ok(EmulatorHandle {
                view,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other("emulator thread ended during start"))
            }
        }
    }

    /// Stop accepting, close every connection, and wait for the connection tasks to end.
    pub async fn stop(self) {
        self.broker.stop().await;
    }
}

/// What a running emulator is reached by: its address, files, service and switches. Both
/// [`Emulator`] and [`EmulatorHandle`] dereference to it.
#[derive(Clone)]
pub struct EmulatorView {
    addr: SocketAddr,
    service: Arc<Service>,
    fault: broker::FaultSwitch,
    state_dir: PathBuf,
    claim_cert: PathBuf,
    claim_key: PathBuf,
    throttle: Arc<Throttle>,
}

impl EmulatorView {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The root CA certificate (PEM) a device uses to verify the server.
    pub fn ca_path(&self) -> PathBuf {
        self.state_dir.join(state_dir::CA_CERT_FILE)
    }

    /// The claim certificate (PEM).
    pub fn claim_cert_path(&self) -> PathBuf {
        self.claim_cert.clone()
    }

    /// The claim certificate's private key (PEM, mode 0600).
    pub fn claim_key_path(&self) -> PathBuf {
        self.claim_key.clone()
    }

    /// The provisioning service (registry and CA inside), e.g. to inspect registered things.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Inject `fault` from now on (affects new events on open connections too).
    pub fn set_fault(&self, fault: Fault) {
        self.fault.set(fault);
    }

    /// Rate limits, how throttled requests are answered, and connection counts.
    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }
}

/// An emulator running on its own thread (see [`Emulator::start_blocking`]); stopped on drop.
pub struct EmulatorHandle {
    view: EmulatorView,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.view.addr)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for EmulatorHandle {
    type Target = EmulatorView;

    fn deref(&self) -> &EmulatorView {
        &self.view
    }
}

impl EmulatorHandle {
    /// Stop and wait (the same as dropping the handle).
    pub fn stop(self) {}
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Record a claim issued outside the running server (see [`CLAIMS_DIR`]): the file is named by
/// the certificate id and holds the certificate PEM.
pub fn record_claim(state_dir: &Path, issued: &ca::Issued) -> io::Result<()> {
    state_dir::record_claim(state_dir, &issued.certificate_id, &issued.certificate_pem)
}

/// The things registered in `state_dir`, read without disturbing a server that is using it:
/// the registry files are copied to a scratch directory and opened there.
pub fn list_things(state_dir: &Path) -> io::Result<Vec<registry::ThingRecord>> {
    Ok(registry::RegistryCopy::open(state_dir, "things")?
        .registry
        .things())
}
