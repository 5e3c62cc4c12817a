//! An in-process emulator with the claim's client options, a CONNECT proxy, a relay that can
//! hold traffic, CSRs, and polling with a deadline.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetprov::client::{ClientOptions, Credentials, MqttVersion, Pem};
use fleetprov::provision::{Progress, ProvisionOptions, Step};
use fleetprov::TemplateName;
use fleetprov_emulator::{Emulator, EmulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An emulator on an ephemeral loopback port with its own state directory.
pub struct Env {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    /// An emulator whose configuration `configure` adjusts first.
    pub async fn start_with(configure: impl FnOnce(&mut EmulatorConfig)) -> Env {
        Env::start_configured(|cfg, _| configure(cfg)).await
    }

    /// An emulator whose configuration `configure` adjusts first, given the state directory
    /// (for files the configuration names).
    pub async fn start_configured(configure: impl FnOnce(&mut EmulatorConfig, &Path)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmulatorConfig::new(dir.path());
        configure(&mut cfg, dir.path());
        let emu = Emulator::start(cfg).await.unwrap();
        Env { emu, dir }
    }

    /// An emulator serving `templates` (name, body), written to files in its state directory,
    /// with `configure` applied after.
    pub async fn start_serving(
        templates: &[(&str, serde_json::Value)],
        configure: impl FnOnce(&mut EmulatorConfig, &Path),
    ) -> Env {
        Env::start_configured(|cfg, dir| {
            for (name, body) in templates {
                let path = dir.join(format!("{name}.json"));
                std::fs::write(&path, body.to_string()).unwrap();
                cfg.templates.push(((*name).to_owned(), path));
            }
            configure(cfg, dir)
        })
        .await
    }

    /// An emulator whose claim policy allows every template's topics (the sample's policy with
    /// `*` for the template), so that a request naming a template it does not serve reaches
    /// the service and gets AWS's 404 rejection instead of a refused SUBSCRIBE.
    pub async fn start_any_template() -> Env {
        Env::start_configured(|cfg, dir| cfg.claim_policy = Some(any_template_policy(dir))).await
    }

    /// Options that connect to the emulator as the claim certificate.
    pub fn claim_opts(&self, version: MqttVersion) -> ClientOptions {
        let mut o = ClientOptions::new("localhost");
        o.port = self.emu.port();
        o.mqtt_version = version;
        o.ca = Some(Pem::file(self.emu.ca_path()));
        o.credentials = Some(Credentials::pem(
            Pem::file(self.emu.claim_cert_path()),
            Pem::file(self.emu.claim_key_path()),
        ));
        o.operation_timeout = Duration::from_secs(20);
        o.connect_timeout = Duration::from_secs(10);
        o
    }
}

/// Writes the any-template claim policy (see [`Env::start_any_template`]) into `dir` and returns
/// its path, for `EmulatorConfig::claim_policy`.
pub fn any_template_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("claim-policy-any-template.json");
    std::fs::write(
        &path,
        fleetprov_emulator::access::store::ANY_TEMPLATE_CLAIM_POLICY,
    )
    .unwrap();
    path
}

/// Options that provision the device `serial` through the emulator's FleetTemplate as the
/// claim (MQTT 5), keeping the identity in `store`.
pub fn provision_options(env: &Env, store: &Path, serial: &str) -> ProvisionOptions {
    let mut o = ProvisionOptions::new(
        env.claim_opts(MqttVersion::V5),
        TemplateName::new("FleetTemplate").unwrap(),
        store.to_path_buf(),
    );
    o.parameters = params(serial);
    o
}

/// The progress events of a run, in the order it reported them.
pub type Seen = Arc<Mutex<Vec<Progress>>>;

/// Makes the run `o` configures record every progress event.
pub fn record(o: &mut ProvisionOptions) -> Seen {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    o.on_progress(move |p| sink.lock().unwrap().push(p.clone()));
    seen
}

/// The steps recorded, in order.
pub fn steps(seen: &Seen) -> Vec<Step> {
    seen.lock().unwrap().iter().map(|p| p.step).collect()
}

/// The details of the events recorded at `step`, in order.
pub fn details(seen: &Seen, step: Step) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|p| p.step == step)
        .map(|p| p.detail.clone())
        .collect()
}

pub fn params(serial: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("SerialNumber".to_owned(), serial.to_owned()),
        ("DeviceLocation".to_owned(), "Seattle".to_owned()),
    ])
}

/// A fresh EC P-256 key and a CSR for it, as a device would make them.
pub struct Csr {
    pub key: rcgen::KeyPair,
    pub pem: String,
}

pub fn make_csr(common_name: &str) -> Csr {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    Csr { key, pem }
}

/// The DER of the first certificate in `pem`.
pub fn cert_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A minimal HTTP CONNECT proxy on loopback that sends every tunnel to `target_port` on
/// 127.0.0.1, whatever host the client asked for, and records the request lines.
pub struct Proxy {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_proxy(target_port: u16) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                seen.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or("").to_owned());
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Proxy {
        port,
        requests,
        task,
    }
}

/// A TCP relay on loopback to `target_port` that can hold back what the server sends, in
/// order, while passing on what the client sends. TLS runs end to end through it; it only
/// counts bytes. Holding stands in for a slow network: packets the server has sent stay
/// queued, ahead of anything it sends later.
pub struct Relay {
    pub port: u16,
    hold: tokio::sync::watch::Sender<bool>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    from_client: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// From now on, keep what the server sends.
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Pass on everything held, in order, and stop holding.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Bytes the server sent that are being held.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes the client has sent so far (all connections).
    pub fn sent_by_client(&self) -> usize {
        self.from_client.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Waits until `cond` holds, checking every few milliseconds; panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn start_relay(target_port: u16) -> Relay {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (hold, hold_rx) = tokio::sync::watch::channel(false);
    let held = Arc::new(AtomicUsize::new(0));
    let from_client = Arc::new(AtomicUsize::new(0));
    let (held_c, from_client_c) = (held.clone(), from_client.clone());
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                return;
            };
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let (mut client_rd, mut client_wr) = client.into_split();
            let (mut server_rd, mut server_wr) = server.into_split();
            let counter = from_client_c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match client_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if server_wr.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    counter.fetch_add(n, Ordering::SeqCst);
                }
                let _ = server_wr.shutdown().await;
            });
            let mut hold_rx = hold_rx.clone();
            let held = held_c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut pending = Vec::new();
                let mut open = true;
                while open {
                    tokio::select! {
                        r = server_rd.read(&mut buf) => match r {
                            Ok(0) | Err(_) => open = false,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        },
                        r = hold_rx.changed() => if r.is_err() { open = false },
                    }
                    if !*hold_rx.borrow_and_update() || !open {
                        if client_wr.write_all(&pending).await.is_err() {
                            break;
                        }
                        pending.clear();
                    }
                    held.store(pending.len(), Ordering::SeqCst);
                }
                let _ = client_wr.shutdown().await;
            });
        }
    });
    Relay {
        port,
        hold,
        held,
        from_client,
        task,
    }
}

/// An EC P-256 certificate signing request (its key was thrown away: only the service's
/// signature over the public key matters here).
pub const CSR_PEM: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIHUMH0CAQAwGzEZMBcGA1UEAwwQZmxlZXRwcm92LWMtdGVzdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABACAY7h3p4d7Uh+nfeUmCEVW3rxF83h2ADtjC4obDqPC
SyqiAgvXezTvjbs0ZmEDG/6I1VwkxrKYpzEaUWfakUigADAKBggqhkjOPQQDAgNH
ADBEAiA58EUnHiuUy88he3bLsoUTpnMZx9I6pQaCgvixSs3M9AIgHaX7SkGt3WAQ
5ST9/qISA+geLhDrY0xkrgK6gbbp/1I=
-----END CERTIFICATE REQUEST-----
";
