//! The device side: connect over mutual TLS and run the provisioning operations.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleetprov::Error> {
//! use fleetprov::client::{Client, ClientOptions, Credentials, Pem};
//! use fleetprov::protocol::RegisterThingRequest;
//!
//! let mut opts = ClientOptions::new("example-ats.iot.eu-west-1.amazonaws.com");
//! opts.credentials = Some(Credentials::pem(
//!     Pem::file("claim-cert.pem"),
//!     Pem::file("claim-key.pem"),
//! ));
//! let client = Client::connect(opts).await?;
//! let created = client.create_keys_and_certificate().await?;
//! let req = RegisterThingRequest {
//!     certificate_ownership_token: created.certificate_ownership_token.clone(),
//!     parameters: [("SerialNumber".to_owned(), "1".to_owned())].into(),
//! };
//! let thing = client.register_thing("FleetTemplate", &req).await?;
//! println!("registered {}", thing.thing_name);
//! client.disconnect().await;
//! # Ok(()) }
//! ```

pub(crate) mod lifecycle;
mod options;
mod ownership;
mod session;
mod signal;
mod tls;
mod tls_cache;
mod verify_cache;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroize;

pub use lifecycle::{CatchUnwind, Event, Lifecycle, Ticket};
pub use options::{
    CheckedClientOptions, ClientOptions, Credentials, MqttVersion, Pem, PrivateKey, DEFAULT_PORT,
    MIN_KEEP_ALIVE,
};
pub use tls::AWS_MQTT_ALPN;

use crate::error::{Error, ErrorKind};
use crate::log::{fp_log, Level};
use crate::protocol::{
    create_from_csr_topics, create_keys_request, create_keys_topics, register_thing_topics,
    CreateFromCsrRequest, CreateFromCsrResponse, CreateKeysResponse, Operation, PayloadFormat,
    RegisterThingRequest, RegisterThingResponse, Rejection, TemplateName, Topics, MAX_PAYLOAD_LEN,
};
use session::{Reply, Session};

/// A connected provisioning client. Cheap to clone; all clones share one connection.
///
/// Operations of the same kind run one at a time (the API has no correlation token, so that
/// is the only way replies cannot be mixed up); different kinds run concurrently. Once the
/// connection is lost every pending and later operation fails with
/// [`ErrorKind::Disconnected`]; the client never reconnects on its own.
///
/// Nothing in the API ties a reply to its request. When an operation ends without its reply
/// (timeout, or its future dropped), the client unsubscribes from that kind's reply topics
/// and the next operation of the kind subscribes afresh, so an answer the service sent
/// before that, or sends while nobody is subscribed, is never taken for the next request's.
/// One case remains: if the service answers the abandoned request only after the next
/// request of its kind has subscribed, the two answers cannot be told apart. After a
/// timeout, a fresh connection is the safe choice.
///
/// A CreateCertificateFromCsr reply can be told apart: one whose certificate does not carry the
/// CSR's public key answers someone else's request (a broker that delivers replies to every
/// subscriber hands them out), and is logged and passed over while the wait goes on.
///
/// The private key in a [`CreateKeysResponse`] is decoded straight into a buffer that is
/// wiped when dropped. The raw reply also sits in rustls's and rumqttc's receive buffers,
/// which are freed without wiping; the payload is wiped only when no such buffer shares it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    /// Per operation kind: serialises requests and remembers which request topics already
    /// have their reply subscriptions.
    ops: [tokio::sync::Mutex<HashSet<String>>; 3],
    operation_timeout: Duration,
    format: PayloadFormat,
    client_id: String,
    /// RegisterThing's topics for [`ClientOptions::template_name`], subscribed together with
    /// the first create operation's.
    register_ahead: Option<Topics>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.inner.client_id)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Client {
    /// Connects (TCP, TLS, MQTT CONNECT/CONNACK) and returns when the session is up, or the
    /// error. Reads the PEM files first and refuses a key that does not match its certificate
    /// before any network I/O. Must be called inside a tokio runtime, which then runs the
    /// connection's tasks.
    ///
    /// Takes [`ClientOptions`] (checked here, [`ErrorKind::InvalidArgument`] if they cannot
    /// work) or [`CheckedClientOptions`] (checked before).
    pub async fn connect<O>(opts: O) -> Result<Client, Error>
    where
        O: TryInto<CheckedClientOptions>,
        O::Error: Into<Error>,
    {
        let opts = opts.try_into().map_err(Into::into)?;
        let (opts, tls) = tls_cache::config_for(opts).await?;
        let client_id = opts.effective_client_id()?;
        let register_ahead = opts
            .template_name
            .as_ref()
            .map(|name| register_thing_topics(name, opts.format));
        let session = Session::connect(&opts, tls, client_id.clone()).await?;
        fp_log!(
            Level::Info,
            "connected to {}:{} as {client_id} ({})",
            opts.endpoint,
            opts.port,
            match opts.mqtt_version {
                MqttVersion::V5 => "MQTT 5",
                MqttVersion::V311 => "MQTT 3.1.1",
            }
        );
        Ok(Client {
            inner: Arc::new(Inner {
                session,
                ops: Default::default(),
                operation_timeout: opts.operation_timeout,
                format: opts.format,
                client_id,
                register_ahead,
            }),
        })
    }

    /// The MQTT client id in use.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// CreateKeysAndCertificate: a new key pair and certificate from the service.
    pub async fn create_keys_and_certificate(&self) -> Result<CreateKeysResponse, Error> {
        let topics = create_keys_topics(self.inner.format);
        let reply = self
            .request(
                Operation::CreateKeys,
                topics,
                create_keys_request(self.inner.format).to_vec(),
            )
            .await?;
        let parsed = CreateKeysResponse::parse(&reply.payload, self.inner.format);
        if !wipe(reply.payload) {
            fp_log!(Level::Trace, "reply buffer still shared; left to its owner");
        }
        parsed
    }

    /// CreateCertificateFromCsr: a certificate for the key behind `csr_pem`.
    ///
    /// Accepted replies whose certificate (the first of `certificatePem`) carries another
    /// public key are not ours: each is logged at warning level and passed over. If the
    /// operation timeout passes after some were, the error is [`ErrorKind::BadReply`] naming
    /// them; a reply whose certificate cannot be read is [`ErrorKind::BadReply`] at once. A CSR
    /// whose public key cannot be read here is sent as it is, and the first reply taken.
    pub async fn create_certificate_from_csr(
        &self,
        csr_pem: &str,
    ) -> Result<CreateFromCsrResponse, Error> {
        if csr_pem.trim().is_empty() {
            return Err(Error::invalid("the CSR is empty"));
        }
        let payload = CreateFromCsrRequest {
            certificate_signing_request: csr_pem,
        }
        .encode(self.inner.format);
        let topics = create_from_csr_topics(self.inner.format);
        // The CSR's key, when it can be read here: a reply whose certificate carries another
        // key is someone else's answer (see `ownership`), passed over.
        let ours = ownership::csr_public_key(csr_pem);
        if ours.is_none() {
            fp_log!(
                Level::Debug,
                "the CSR's public key cannot be read here; replies are taken as they come"
            );
        }
        let format = self.inner.format;
        let foreign = |payload: &[u8]| -> Option<String> {
            let ours = ours.as_ref()?;
            let r = CreateFromCsrResponse::parse(payload, format).ok()?;
            (ownership::owner(ours, &r.certificate_pem) == ownership::Owner::Another)
                .then_some(r.certificate_id)
        };
        let reply = self
            .request_filtered(Operation::CreateFromCsr, topics, payload, Some(&foreign))
            .await?;
        let r = CreateFromCsrResponse::parse(&reply.payload, self.inner.format)?;
        if let Some(ours) = &ours {
            if let ownership::Owner::Unreadable(why) = ownership::owner(ours, &r.certificate_pem) {
                return Err(Error::bad_reply(format!(
                    "CreateCertificateFromCsr: the certificatePem of certificate {} cannot be \
                     read: {why}",
                    r.certificate_id
                )));
            }
        }
        Ok(r)
    }

    /// RegisterThing with the template `template_name`: a [`TemplateName`], or a string that is
    /// checked as one before anything is sent ([`ErrorKind::InvalidArgument`]).
    pub async fn register_thing<T>(
        &self,
        template_name: T,
        req: &RegisterThingRequest,
    ) -> Result<RegisterThingResponse, Error>
    where
        T: TryInto<TemplateName>,
        T::Error: Into<Error>,
    {
        let template_name = template_name.try_into().map_err(Into::into)?;
        let topics = register_thing_topics(&template_name, self.inner.format);
        let reply = self
            .request(
                Operation::RegisterThing,
                topics,
                req.encode(self.inner.format),
            )
            .await?;
        RegisterThingResponse::parse(&reply.payload, self.inner.format)
    }

    /// Publishes `payload` to `topic` at QoS 1 and waits for the PUBACK, within the operation
    /// timeout. Shows that a new identity works.
    pub async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), Error> {
        validate_topic(topic)?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::invalid(format!(
                "payload of {} bytes is over the {MAX_PAYLOAD_LEN}-byte limit",
                payload.len()
            )));
        }
        let ack = self
            .inner
            .session
            .start_publish(topic.to_owned(), payload.to_vec())?;
        let timeout = self.inner.operation_timeout;
        match tokio::time::timeout(timeout, ack).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.inner.session.not_connected()),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no PUBACK for {topic} within {timeout:?}"),
            )),
        }
    }

    /// Sends DISCONNECT and closes the connection. Pending operations fail with
    /// [`ErrorKind::Cancelled`]; later ones with [`ErrorKind::Disconnected`].
    pub async fn disconnect(&self) {
        self.inner.session.disconnect().await;
    }

    /// Resolves when the connection has ended, with the reason; at once if it already has.
    ///
    /// The reason is the error pending operations received: [`ErrorKind::Disconnected`] when
    /// the connection was lost or the broker closed it, [`ErrorKind::BadReply`] when the broker
    /// sent a packet over the size limit, [`ErrorKind::Cancelled`] after [`Client::disconnect`]
    /// Any number of callers may wait at once.
    pub async fn closed(&self) -> Error {
        self.inner.session.closed().await
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.session.is_connected()
    }

    /// For a create operation, RegisterThing's lock and topics when its reply subscriptions
    /// should join this SUBSCRIBE: a template was named, nothing holds RegisterThing's turn,
    /// and its topics are not subscribed yet.
    fn register_ahead(
        &self,
        op: Operation,
    ) -> Option<(tokio::sync::MutexGuard<'_, HashSet<String>>, &Topics)> {
        if op == Operation::RegisterThing {
            return None;
        }
        let topics = self.inner.register_ahead.as_ref()?;
        let guard = self.inner.ops[Operation::RegisterThing.index()]
            .try_lock()
            .ok()?;
        (!guard.contains(&topics.request)).then_some((guard, topics))
    }

    /// The request engine: serialise per kind, subscribe once, publish, await the reply.
    async fn request(
        &self,
        op: Operation,
        topics: Topics,
        payload: Vec<u8>,
    ) -> Result<Reply, Error> {
        self.request_filtered(op, topics, payload, None).await
    }

    /// [`Client::request`], passing over accepted replies for which `foreign` gives a
    /// certificate id (answers to another client's request): each is logged and the wait goes
    /// on, within the same operation timeout. A wait that ends after passing some over fails
    /// with [`ErrorKind::BadReply`] naming them.
    async fn request_filtered(
        &self,
        op: Operation,
        topics: Topics,
        payload: Vec<u8>,
        foreign: Option<ForeignReply<'_>>,
    ) -> Result<Reply, Error> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::invalid(format!(
                "{} request of {} bytes is over the {MAX_PAYLOAD_LEN}-byte limit",
                op.name(),
                payload.len()
            )));
        }
        let session = &self.inner.session;
        if !session.is_connected() {
            return Err(session.not_connected());
        }
        let mut kind = KindTurn {
            subscribed: self.inner.ops[op.index()].lock().await,
            session,
            topics: &topics,
            awaiting_reply: false,
        };
        let timeout = self.inner.operation_timeout;
        let mut waiting_for = "the reply";
        // Certificate ids of the accepted replies passed over as not ours.
        let mut passed_over: Vec<String> = Vec::new();
        let outcome = tokio::time::timeout(timeout, async {
            if !kind.subscribed.contains(&topics.request) {
                waiting_for = "the SUBACK";
                let mut filters = vec![topics.accepted.clone(), topics.rejected.clone()];
                let own = filters.len();
                // RegisterThing's subscription rides along when its template is known, unless
                // one of its operations is running (it then subscribes for itself).
                let mut ahead = self.register_ahead(op);
                if let Some((_, t)) = &ahead {
                    filters.extend([t.accepted.clone(), t.rejected.clone()]);
                }
                let rx = session.start_subscribe(filters.clone())?;
                let outcome = rx.await.map_err(|_| session.not_connected())??;
                check_suback(&filters, &outcome, own)?;
                kind.subscribed.insert(topics.request.clone());
                // Refused filters of RegisterThing are not an error of this operation: its
                // own next operation subscribes again and reports the refusal.
                if let Some((mut register, t)) = ahead.take() {
                    if outcome[own..].iter().all(Option::is_none) {
                        register.insert(t.request.clone());
                    }
                }
            }
            waiting_for = "the reply";
            // Registered only now, after the SUBACK: a late reply to an abandoned request
            // arrives before that SUBACK (see `KindTurn`) and so finds nobody to take it.
            let (_slot, mut reply_rx) = match foreign {
                // Every message until ours: a foreign answer and ours may come back to back.
                Some(_) => session.expect_replies(&topics)?,
                None => session.expect_reply(&topics)?,
            };
            kind.awaiting_reply = true;
            let puback = session.start_publish(topics.request.clone(), payload)?;
            tokio::pin!(puback);
            let mut acked = false;
            // The reply may overtake the PUBACK; a refused PUBACK (MQTT 5) ends the wait early.
            loop {
                tokio::select! {
                    // The reply first: when it arrived just before the connection ended, the
                    // PUBACK's waiter may already hold the loss, and the reply must win.
                    biased;
                    r = reply_rx.recv() => {
                        let reply = r.ok_or_else(|| session.not_connected())??;
                        if let Some(id) = foreign
                            .filter(|_| reply.accepted)
                            .and_then(|f| f(&reply.payload))
                        {
                            fp_log!(
                                Level::Warn,
                                "{}: ignoring an accepted reply for another key (certificate \
                                 {id}): not the answer to our request",
                                op.name()
                            );
                            passed_over.push(id);
                            continue;
                        }
                        kind.awaiting_reply = false;
                        return Ok::<_, Error>(reply);
                    }
                    p = &mut puback, if !acked => {
                        p.map_err(|_| session.not_connected())??;
                        acked = true;
                    }
                }
            }
        })
        .await;
        let reply = match outcome {
            Ok(r) => r?,
            Err(_) if !passed_over.is_empty() => {
                const NAMED: usize = 4;
                let mut ids = passed_over[..passed_over.len().min(NAMED)].join(", ");
                if passed_over.len() > NAMED {
                    ids.push_str(&format!(" and {} more", passed_over.len() - NAMED));
                }
                return Err(Error::bad_reply(format!(
                    "{} got no answer of its own within {timeout:?}: {} accepted repl{} carried \
                     a certificate for another key (certificate {ids}); the broker delivers \
                     other clients' replies",
                    op.name(),
                    passed_over.len(),
                    if passed_over.len() == 1 { "y" } else { "ies" },
                )));
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{} got no answer: waited {timeout:?} for {waiting_for}",
                        op.name()
                    ),
                ))
            }
        };
        drop(kind);
        if reply.payload.len() > MAX_PAYLOAD_LEN {
            let n = reply.payload.len();
            let _ = wipe(reply.payload);
            return Err(Error::bad_reply(format!(
                "{} reply of {n} bytes is over the {MAX_PAYLOAD_LEN}-byte limit",
                op.name()
            )));
        }
        if reply.accepted {
            fp_log!(Level::Info, "{} accepted", op.name());
            Ok(reply)
        } else {
            let rejection = Rejection::parse(&reply.payload, self.inner.format).map_err(|e| {
                Error::bad_reply(format!("{} on {}: {}", op.name(), reply.topic, e.message))
            })?;
            fp_log!(
                Level::Warn,
                "{} rejected: {} {}",
                op.name(),
                rejection.status_code,
                rejection.error_code
            );
            Err(Error::rejected(op.name(), rejection))
        }
    }
}

/// Given an accepted reply's payload, the certificate id it carries when it answers another
/// client's request, or `None` when it may be ours.
type ForeignReply<'a> = &'a (dyn Fn(&[u8]) -> Option<String> + Sync);

/// One operation's turn at its kind: holds the kind's lock and, if the operation ends
/// without its reply once the request may have gone out (timeout, a refused PUBACK, or the
/// caller dropping the future), drops the kind's reply subscriptions on the way out.
///
/// The service may still answer the abandoned request. Unsubscribing makes it discard an
/// answer it produces from then on, and the next operation of the kind must subscribe again
/// and see the SUBACK before it listens: MQTT keeps one connection's packets in order, so an
/// answer already sent arrives before that SUBACK and is ignored.
struct KindTurn<'a> {
    subscribed: tokio::sync::MutexGuard<'a, HashSet<String>>,
    session: &'a Session,
    topics: &'a Topics,
    awaiting_reply: bool,
}

impl Drop for KindTurn<'_> {
    fn drop(&mut self) {
        if !self.awaiting_reply {
            return;
        }
        // Still under the kind's lock, so the next operation sees the subscription gone.
        self.subscribed.remove(&self.topics.request);
        fp_log!(
            Level::Debug,
            "{} ended without its reply; unsubscribing so a late answer cannot reach the next request",
            self.topics.request
        );
        self.session.unsubscribe(vec![
            self.topics.accepted.clone(),
            self.topics.rejected.clone(),
        ]);
    }
}

/// Checks a SUBACK: one reason code per filter, and none of the first `own` filters refused
/// (the others, if any, are another kind's, subscribed ahead, and their refusal is theirs).
fn check_suback(filters: &[String], outcome: &[Option<String>], own: usize) -> Result<(), Error> {
    if outcome.len() != filters.len() {
        return Err(Error::bad_reply(format!(
            "SUBACK has {} reason codes for {} filters",
            outcome.len(),
            filters.len()
        )));
    }
    for (filter, code) in filters.iter().zip(outcome).take(own) {
        if let Some(reason) = code {
            return Err(Error::new(
                ErrorKind::SubscribeRefused,
                format!("the broker refused the subscription to {filter}: {reason}"),
            ));
        }
    }
    Ok(())
}

fn validate_topic(topic: &str) -> Result<(), Error> {
    if topic.is_empty() || topic.len() > usize::from(u16::MAX) {
        return Err(Error::invalid("topic must be 1 to 65535 bytes long"));
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(Error::invalid(format!(
            "topic {topic:?} must not contain '+', '#' or NUL"
        )));
    }
    Ok(())
}

/// Zeroes a received payload if nothing else shares its buffer, and says whether it could.
/// rumqttc's and rustls's receive buffers hold their own copies of the bytes, which we cannot
/// reach.
fn wipe(payload: bytes::Bytes) -> bool {
    match payload.try_into_mut() {
        Ok(mut owned) => {
            owned.as_mut().zeroize();
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_validation() {
        validate_topic("devices/1/hello").unwrap();
        for bad in ["", "a/+", "#", "a\0b"] {
            assert_eq!(
                validate_topic(bad).unwrap_err().kind,
                ErrorKind::InvalidArgument
            );
        }
    }

    #[test]
    fn suback_codes_are_checked_per_filter() {
        let f = vec!["a/accepted".to_owned(), "a/rejected".to_owned()];
        check_suback(&f, &[None, None], 2).unwrap();
        let e = check_suback(&f, &[None, Some("NotAuthorized".into())], 2).unwrap_err();
        assert_eq!(e.kind, ErrorKind::SubscribeRefused);
        assert!(e.message.contains("a/rejected") && e.message.contains("NotAuthorized"));
        assert_eq!(
            check_suback(&f, &[None], 2).unwrap_err().kind,
            ErrorKind::BadReply
        );
    }

    #[test]
    fn wipe_zeroes_an_unshared_buffer() {
        assert!(wipe(bytes::Bytes::from(vec![7u8; 32])));
        // A shared buffer is left alone rather than written through an alias.
        let shared = bytes::Bytes::from(vec![7u8; 32]);
        let other = shared.clone();
        assert!(!wipe(shared));
        assert_eq!(other[0], 7);
    }

    #[tokio::test]
    async fn invalid_options_fail_before_network() {
        let mut o = ClientOptions::new("localhost");
        o.keep_alive = Duration::from_secs(1);
        let e = Client::connect(o).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }
}
