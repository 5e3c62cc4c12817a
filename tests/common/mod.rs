//! Shared fixtures for the Rust integration tests: an in-process emulator and a CONNECT proxy.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetprov::client::{ClientOptions, MqttVersion, Pem};
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
        let dir = tempfile::tempdir().unwrap();
        let emu = Emulator::start(EmulatorConfig::new(dir.path()))
            .await
            .unwrap();
        Env { emu, dir }
    }

    /// Options that connect to the emulator as the claim certificate.
    pub fn claim_opts(&self, version: MqttVersion) -> ClientOptions {
        let mut o = ClientOptions::new("localhost");
        o.port = self.emu.port();
        o.mqtt_version = version;
        o.ca = Some(Pem::file(self.emu.ca_path()));
        o.cert = Some(Pem::file(self.emu.claim_cert_path()));
        o.key = Some(Pem::file(self.emu.claim_key_path()));
        o.operation_timeout = Duration::from_secs(20);
        o.connect_timeout = Duration::from_secs(10);
        o
    }
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
