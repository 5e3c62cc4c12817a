//! Responder mode: the provisioning service attached to another MQTT broker as an ordinary client.
//!
//! It subscribes to the three request topics on that broker and publishes each reply on the
//! matching reply topic. Limits, because an ordinary broker is not AWS IoT:
//! - the broker does not say who published a request, so every request is treated as coming from
//!   one fixed requester ([`REQUESTER_ID`]): an ownership token is then usable by any client of
//!   that broker, not only by the connection that asked for it;
//! - the broker delivers a reply to every subscriber of the reply topic, so on a shared broker
//!   other devices can read CreateKeysAndCertificate replies, private key included. The CSR flow,
//!   whose private key never leaves the device, is the safe one there;
//! - who may connect and publish is the broker's ACL, not the claim policy.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::service::Service;

/// The requester identity given to the service for every request seen through a broker.
pub const REQUESTER_ID: &str = "responder";

/// The request topics the responder subscribes to: JSON and CBOR, as AWS serves both.
pub const REQUEST_FILTERS: [&str; 6] = [
    "$aws/certificates/create/json",
    "$aws/certificates/create-from-csr/json",
    "$aws/provisioning-templates/+/provision/json",
    "$aws/certificates/create/cbor",
    "$aws/certificates/create-from-csr/cbor",
    "$aws/provisioning-templates/+/provision/cbor",
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where and how to attach.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    pub host: String,
    pub port: u16,
    /// CA that signed the broker's server certificate (PEM).
    pub ca: PathBuf,
    /// Client certificate and key (PEM) the responder presents to the broker.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The emulator state directory: its CA signs the new device certificates.
    pub state_dir: PathBuf,
    /// Templates as (name, file); empty serves the seed template as `FleetTemplate`.
    pub templates: Vec<(String, PathBuf)>,
    pub client_id: String,
}

/// A running responder.
pub struct Responder {
    broker: String,
    service: Arc<Service>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

debug_one_field!(Responder, broker);

impl Responder {
    /// Connect, subscribe, and return once the broker has granted all three subscriptions.
    /// Later connection losses are retried (and the subscriptions renewed) until [`stop`](Self::stop).
    pub async fn start(cfg: ResponderConfig) -> io::Result<Responder> {
        let tls = client_tls(&cfg)?;
        let (dir, templates) = (cfg.state_dir.clone(), cfg.templates.clone());
        let service = tokio::task::spawn_blocking(move || {
            crate::open::open_service(
                &dir,
                &templates,
                None,
                Default::default(),
                Default::default(),
            )
        })
        .await
        .map_err(io::Error::other)??;

        let mut options = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        // Room for CSRs and certificate replies; the endpoint's own limit is the same.
        let max = crate::broker::MAX_REMAINING;
        options.set_max_packet_size(max, max);
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
        let (client, mut events) = AsyncClient::new(options, 64);

        // First connection: fail start() instead of retrying a configuration that cannot work.
        let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe_many(filters())
                            .await
                            .map_err(io::Error::other)?;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                            return Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                "the broker refused a request-topic subscription",
                            ));
                        }
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            format!("cannot connect to {}:{}: {e}", cfg.host, cfg.port),
                        ))
                    }
                }
            }
        })
        .await;
        match first {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no CONNACK/SUBACK from the broker at {}:{}",
                        cfg.host, cfg.port
                    ),
                ))
            }
        }

        let (stop, stop_rx) = watch::channel(false);
        let broker = format!("{}:{}", cfg.host, cfg.port);
        let task = tokio::spawn(run(
            client,
            events,
            Arc::clone(&service),
            broker.clone(),
            stop_rx,
        ));
        Ok(Responder {
            broker,
            service,
            stop,
            task,
        })
    }

    /// `host:port` of the broker.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Disconnect and wait for the replies in progress.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here.
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

fn filters() -> Vec<SubscribeFilter> {
    REQUEST_FILTERS
        .iter()
        .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce))
        .collect()
}

async fn run(
    client: AsyncClient,
    mut events: rumqttc::EventLoop,
    service: Arc<Service>,
    broker: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut replies = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            event = events.poll() => match event {
                // A reconnect starts a clean session: subscribe again.
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Err(e) = client.try_subscribe_many(filters()) {
                        log::warn!("responder: cannot resubscribe: {e}");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let (service, client) = (Arc::clone(&service), client.clone());
                    log::info!("responder: request on {}", p.topic);
                    replies.spawn(async move {
                        let topic = p.topic;
                        let payload = p.payload;
                        let reply = tokio::task::spawn_blocking(move || {
                            service.handle(&topic, &payload, REQUESTER_ID)
                        })
                        .await
                        .ok()
                        .flatten();
                        if let Some(reply) = reply {
                            let _ = client
                                .publish(reply.topic, QoS::AtLeastOnce, false, reply.payload)
                                .await;
                        }
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    log::warn!("responder: connection to {broker}: {e}; retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            },
            Some(_) = replies.join_next(), if !replies.is_empty() => {}
        }
    }
    // Let the replies in progress be queued, then say goodbye and flush.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while replies.join_next().await.is_some() {}
    })
    .await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(event) = events.poll().await {
            if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                break;
            }
        }
    })
    .await;
}

fn client_tls(cfg: &ResponderConfig) -> io::Result<rustls::ClientConfig> {
    let bad = |path: &PathBuf, e: rustls::pki_types::pem::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&cfg.ca).map_err(|e| bad(&cfg.ca, e))? {
        roots.add(cert.map_err(|e| bad(&cfg.ca, e))?).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", cfg.ca.display()),
            )
        })?;
    }
    let chain = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| bad(&cfg.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&cfg.cert, e))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| bad(&cfg.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_topic::{request_format, Format};

    #[test]
    fn the_responders_filters_are_request_topics() {
        let mut formats = Vec::new();
        for filter in REQUEST_FILTERS {
            let topic = filter.replace('+', "FleetTemplate");
            let format = request_format(&topic);
            assert!(format.is_some(), "{filter}");
            formats.push(format);
        }
        // Every request in both formats.
        for format in [Format::Json, Format::Cbor] {
            let n = formats.iter().filter(|f| **f == Some(format)).count();
            assert_eq!(n, 3, "{format:?}");
        }
    }
}
