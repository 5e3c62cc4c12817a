//! TLS over a TCP socket through rustls's unbuffered API, holding no buffer between records.
//!
//! rustls's buffered connection keeps a 4 KiB receive buffer for as long as the connection is
//! open; with 10,000 devices in one process that was a quarter of what each connection held.
//! Here the TLS records read are kept only until they have been processed (the buffer is
//! dropped once it is empty), and what is to be sent only until it has been written.
//!
//! Reads and writes are cancel-safe: every byte read or still to write lives in the stream,
//! not in the future, so the session's `select!` can drop a read at any await point.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use rustls::client::UnbufferedClientConnection;
use rustls::unbuffered::{ConnectionState, InsufficientSizeError};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How much a read asks the socket for at least: one read takes what a broker sends in a
/// burst (CONNACK and SUBACKs, or a reply of a few KiB) in one system call.
const READ_CHUNK: usize = 4096;

pub(super) struct Stream {
    tcp: TcpStream,
    conn: UnbufferedClientConnection,
    /// Received TLS bytes not processed yet: at most a partial record between reads.
    incoming: Vec<u8>,
    /// TLS bytes to send, in order; empty once written.
    outgoing: Vec<u8>,
    /// Application data decrypted outside a read (while preparing a write), handed out by
    /// the next read.
    plain: BytesMut,
    /// The server sent close_notify: reads end (Ok(0)) once `plain` is empty.
    peer_closed: bool,
    /// TLS failed (a bad record, a protocol error): nothing more is read or sent.
    failed: bool,
}

/// A rustls error as an I/O error (`InvalidData`, the rustls error inside), the form
/// `errors::io_failure` reads back.
fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Appends what `put` writes to `out`, growing it to the size `put` asks for.
fn append(
    out: &mut Vec<u8>,
    mut put: impl FnMut(&mut [u8]) -> Result<usize, Option<InsufficientSizeError>>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match put(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(short)) if short.required_size > room => room = short.required_size,
            Err(_) => {
                out.truncate(start);
                return Err(io::Error::other("TLS could not encode a record"));
            }
        }
    }
}

fn encoded(
    r: Result<usize, rustls::unbuffered::EncodeError>,
) -> Result<usize, Option<InsufficientSizeError>> {
    match r {
        Ok(n) => Ok(n),
        Err(rustls::unbuffered::EncodeError::InsufficientSize(s)) => Err(Some(s)),
        Err(_) => Err(None),
    }
}

fn encrypted(
    r: Result<usize, rustls::unbuffered::EncryptError>,
) -> Result<usize, Option<InsufficientSizeError>> {
    match r {
        Ok(n) => Ok(n),
        Err(rustls::unbuffered::EncryptError::InsufficientSize(s)) => Err(Some(s)),
        Err(_) => Err(None),
    }
}

/// What one round of record processing reached.
enum Step {
    /// More bytes from the server are needed.
    Read,
    /// Application data may be written (the handshake is done).
    Write,
}

impl Stream {
    /// Completes the TLS handshake on `tcp`; `first` goes out as the first application data,
    /// with the handshake's last flight under TLS 1.3 (after the server's Finished under 1.2).
    pub(super) async fn connect(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        first: &[u8],
    ) -> io::Result<Stream> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_io)?;
        let mut s = Stream {
            tcp,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plain: BytesMut::new(),
            peer_closed: false,
            failed: false,
        };
        let mut first = Some(first);
        loop {
            let step = s.process_aside(&mut first, None)?;
            s.write_pending().await?;
            match step {
                Step::Write => {
                    // TLS 1.2: application data waits for the server's Finished.
                    if let Some(data) = first {
                        s.write_all(data).await?;
                    }
                    return Ok(s);
                }
                Step::Read => {
                    if s.fill().await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection during the TLS handshake",
                        ));
                    }
                }
            }
        }
    }

    /// Processes the records received until more are needed or data may be written: the
    /// handshake's messages (what they call for is queued in `outgoing`), application data
    /// (appended to `out`), close_notify. `first`, if given, is encrypted as soon as TLS
    /// allows; `send` (data, and whether close_notify follows) once the handshake is done.
    fn process(
        &mut self,
        out: &mut BytesMut,
        first: &mut Option<&[u8]>,
        send: Option<(&[u8], bool)>,
    ) -> io::Result<Step> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection has already failed",
            ));
        }
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            // The state borrows the connection and `incoming`; the closure only the other
            // fields, so the discard below is applied whatever the outcome.
            let outgoing = &mut self.outgoing;
            let peer_closed = &mut self.peer_closed;
            let step = status.state.map_err(tls_io).and_then(|state| match state {
                ConnectionState::EncodeTlsData(mut enc) => {
                    append(outgoing, |buf| encoded(enc.encode(buf)))?;
                    Ok(None)
                }
                ConnectionState::TransmitTlsData(mut tx) => {
                    if let (Some(data), Some(mut w)) = (*first, tx.may_encrypt_app_data()) {
                        append(outgoing, |buf| encrypted(w.encrypt(data, buf)))?;
                        *first = None;
                    }
                    // Written by the caller, in order, before anything queued after it.
                    tx.done();
                    Ok(None)
                }
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        out.extend_from_slice(record.map_err(tls_io)?.payload);
                    }
                    Ok(None)
                }
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    Ok(None)
                }
                ConnectionState::Closed => {
                    *peer_closed = true;
                    Ok(Some(Step::Read))
                }
                ConnectionState::BlockedHandshake => Ok(Some(Step::Read)),
                // Handshake done and nothing complete left to process: what stays in
                // `incoming`, if anything, is a partial record.
                ConnectionState::WriteTraffic(mut w) => {
                    if let Some((data, close)) = send {
                        if !data.is_empty() {
                            append(outgoing, |buf| encrypted(w.encrypt(data, buf)))?;
                        }
                        if close {
                            append(outgoing, |buf| encrypted(w.queue_close_notify(buf)))?;
                        }
                    }
                    Ok(Some(Step::Write))
                }
                _ => Err(io::Error::other(
                    "TLS reached a state this client does not handle",
                )),
            });
            self.incoming.drain(..discard);
            match step {
                Ok(None) => {}
                Ok(Some(step)) => {
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                    return Ok(step);
                }
                Err(e) => {
                    self.fail();
                    return Err(e);
                }
            }
        }
    }

    /// Marks the connection failed (every later call fails at once), and sends what rustls
    /// queued for the error, its alert, once, without waiting: the error is what counts. One
    /// call to rustls only: it gives its alert first, and a record it could not decrypt would
    /// be processed again by a second call.
    fn fail(&mut self) {
        self.failed = true;
        let status = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut enc)) = status.state {
            let _ = append(&mut self.outgoing, |buf| encoded(enc.encode(buf)));
        }
        if !self.outgoing.is_empty() {
            let _ = self.tcp.try_write(&self.outgoing);
        }
        self.outgoing = Vec::new();
        self.incoming = Vec::new();
    }

    /// [`Stream::process`] outside a read: application data that comes meanwhile waits in
    /// `plain` for the next read.
    fn process_aside(
        &mut self,
        first: &mut Option<&[u8]>,
        send: Option<(&[u8], bool)>,
    ) -> io::Result<Step> {
        let mut plain = std::mem::take(&mut self.plain);
        let step = self.process(&mut plain, first, send);
        self.plain = plain;
        step
    }

    /// Encrypts `data` (and close_notify if `close`) into `outgoing`.
    fn encrypt(&mut self, data: &[u8], close: bool) -> io::Result<()> {
        match self.process_aside(&mut None, Some((data, close)))? {
            Step::Write => Ok(()),
            Step::Read => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection is closed",
            )),
        }
    }

    /// Writes `outgoing` out. Each write takes what the socket accepted off the front, so a
    /// write dropped half-way leaves the rest to go first next time.
    async fn write_pending(&mut self) -> io::Result<()> {
        while !self.outgoing.is_empty() {
            let n = self.tcp.write(&self.outgoing).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.outgoing.drain(..n);
        }
        self.outgoing = Vec::new();
        Ok(())
    }

    /// Reads what the socket has into `incoming`; Ok(0) at the end of the stream. The room
    /// for a read is made only once the socket is readable, so an idle connection holds none.
    async fn fill(&mut self) -> io::Result<usize> {
        loop {
            self.tcp.readable().await?;
            self.incoming.reserve(READ_CHUNK);
            // One poll of a read, not `try_read`: after a read shorter than the room, tokio
            // marks the socket not readable, so the next wait needs no system call to find
            // it empty.
            let (tcp, incoming) = (&mut self.tcp, &mut self.incoming);
            let read = std::future::poll_fn(|cx| {
                let read = tcp.read_buf(incoming);
                tokio::pin!(read);
                Poll::Ready(match read.poll(cx) {
                    Poll::Ready(done) => Some(done),
                    Poll::Pending => None,
                })
            })
            .await;
            match read {
                Some(done) => return done,
                // The readiness was stale: wait again without holding the room.
                None if self.incoming.is_empty() => self.incoming = Vec::new(),
                None => {}
            }
        }
    }

    /// Reads application data into `buf`: what is there, at least one byte; Ok(0) once the
    /// server has closed TLS with close_notify; an `UnexpectedEof` error if TCP ends without it.
    pub(super) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            if !self.plain.is_empty() {
                let n = self.plain.len();
                buf.extend_from_slice(&self.plain);
                self.plain = BytesMut::new();
                return Ok(n);
            }
            if self.peer_closed {
                return Ok(0);
            }
            let before = buf.len();
            self.process(buf, &mut None, None)?;
            if buf.len() > before {
                return Ok(buf.len() - before);
            }
            if self.peer_closed {
                continue;
            }
            // What processing queued to send (an alert, such as TLS 1.2's refusal of a
            // renegotiation; a key update's answer goes with the next write, as TLS 1.3
            // allows).
            self.write_pending().await?;
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                ));
            }
        }
    }

    /// Encrypts and writes `data`, after anything still queued.
    pub(super) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.encrypt(data, false)?;
        self.write_pending().await
    }

    /// Writes `last` (if any) with close_notify, then closes the sending side of TCP.
    pub(super) async fn close(&mut self, last: &[u8]) -> io::Result<()> {
        self.encrypt(last, true)?;
        self.write_pending().await?;
        self.tcp.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::task::Poll;

    use super::*;

    /// A server configuration for "localhost" (TLS 1.2 only if `tls12`, else 1.2 and 1.3) and
    /// a client configuration that trusts it.
    fn configs(tls12: bool) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A TLS server on loopback (rustls's buffered server on a thread, blocking I/O) running
    /// `serve` on its one connection; returns the port and the client's configuration.
    fn server<T: Send + 'static>(
        tls12: bool,
        serve: impl FnOnce(&mut rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>) -> T
            + Send
            + 'static,
    ) -> (u16, Arc<rustls::ClientConfig>, std::thread::JoinHandle<T>) {
        let (server, client) = configs(tls12);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(server).unwrap();
            serve(&mut rustls::StreamOwned::new(conn, tcp))
        });
        (port, client, thread)
    }

    /// Reads the client's five first bytes, answers `answer`, waits for the test's go, then
    /// closes TLS cleanly (close_notify) or not (TCP only). Returns what it read first.
    fn answering(
        tls12: bool,
        answer: Vec<u8>,
        clean_close: bool,
    ) -> (
        u16,
        Arc<rustls::ClientConfig>,
        mpsc::Sender<()>,
        std::thread::JoinHandle<Vec<u8>>,
    ) {
        let (go, wait) = mpsc::channel::<()>();
        let (port, client, thread) = server(tls12, move |tls| {
            let mut first = [0u8; 5];
            tls.read_exact(&mut first).unwrap();
            tls.write_all(&answer).unwrap();
            tls.flush().unwrap();
            wait.recv().unwrap();
            if clean_close {
                tls.conn.send_close_notify();
                tls.flush().unwrap();
            }
            first.to_vec()
        });
        (port, client, go, thread)
    }

    async fn connect(port: u16, config: Arc<rustls::ClientConfig>) -> Stream {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        Stream::connect(tcp, config, name, b"hello").await.unwrap()
    }

    /// Reads until `n` bytes have come.
    async fn read_exactly(s: &mut Stream, n: usize) -> BytesMut {
        let mut got = BytesMut::new();
        while got.len() < n {
            assert!(s.read_buf(&mut got).await.unwrap() > 0);
            assert!(s.plain.is_empty() && s.outgoing.is_empty());
        }
        got
    }

    #[tokio::test]
    async fn data_across_records_then_close_notify_and_no_buffer_held_while_waiting() {
        // Over one TLS record (16 KiB), so the answer spans records and reads.
        let answer: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let (port, config, go, server) = answering(false, answer.clone(), true);
        let mut s = connect(port, config).await;
        let got = read_exactly(&mut s, answer.len()).await;
        assert_eq!(&got[..], &answer[..]);
        // A read started now waits (the server waits for the go): polled once, it must not
        // hold the room it reserves for a read, even when the socket's readiness is stale.
        {
            let mut buf = BytesMut::new();
            let read = s.read_buf(&mut buf);
            tokio::pin!(read);
            let polled = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
        }
        assert_eq!(s.incoming.capacity(), 0);
        go.send(()).unwrap();
        let mut rest = BytesMut::new();
        assert_eq!(
            s.read_buf(&mut rest).await.unwrap(),
            0,
            "close_notify ends reads"
        );
        assert_eq!(s.read_buf(&mut rest).await.unwrap(), 0);
        assert_eq!(server.join().unwrap(), b"hello", "the first data went out");
    }

    #[tokio::test]
    async fn tcp_end_without_close_notify_is_an_unexpected_eof() {
        let (port, config, go, server) = answering(false, b"ok".to_vec(), false);
        let mut s = connect(port, config).await;
        assert_eq!(&read_exactly(&mut s, 2).await[..], b"ok");
        go.send(()).unwrap();
        server.join().unwrap();
        let err = s.read_buf(&mut BytesMut::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn writes_arrive_in_order_and_close_sends_close_notify() {
        let (port, config, reader) = server(false, |tls| {
            let mut all = Vec::new();
            // Ok until close_notify: an end without it would be an error here.
            tls.read_to_end(&mut all).unwrap();
            all
        });
        let mut s = connect(port, config).await;
        let big: Vec<u8> = (0..30_000u32).map(|i| (i % 199) as u8).collect();
        s.write_all(b" one").await.unwrap();
        s.write_all(&big).await.unwrap();
        assert!(s.outgoing.is_empty() && s.outgoing.capacity() == 0);
        s.close(b" last").await.unwrap();
        let mut want = b"hello one".to_vec();
        want.extend(&big);
        want.extend(b" last");
        assert_eq!(reader.join().unwrap(), want);
    }

    /// Under TLS 1.2 the first data waits for the server's Finished, then goes out.
    #[tokio::test]
    async fn tls12_server_gets_the_first_data_after_the_handshake() {
        let (port, config, go, server) = answering(true, b"over 1.2".to_vec(), true);
        let mut s = connect(port, config).await;
        assert_eq!(
            s.conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert_eq!(&read_exactly(&mut s, 8).await[..], b"over 1.2");
        go.send(()).unwrap();
        assert_eq!(s.read_buf(&mut BytesMut::new()).await.unwrap(), 0);
        assert_eq!(server.join().unwrap(), b"hello");
    }

    /// A record that does not decrypt ends the stream with rustls's error (the server gets
    /// its alert); every later call fails at once, without a panic or a second alert.
    #[tokio::test]
    async fn a_record_that_does_not_decrypt_fails_the_stream_once() {
        let (port, config, server) = server(false, |tls| {
            let mut first = [0u8; 5];
            tls.read_exact(&mut first).unwrap();
            // Application data of 24 bytes that no key produced.
            let mut record = vec![0x17, 0x03, 0x03, 0x00, 24];
            record.extend([0x5a; 24]);
            tls.sock.write_all(&record).unwrap();
            let mut alert = Vec::new();
            // Until the client closes: what came is the encrypted alert.
            let _ = tls.sock.read_to_end(&mut alert);
            alert
        });
        let mut s = connect(port, config).await;
        let err = s.read_buf(&mut BytesMut::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            matches!(
                err.get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>()),
                Some(rustls::Error::DecryptError)
            ),
            "{err:?}"
        );
        let again = s.write_all(b"more").await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::BrokenPipe);
        assert!(s.close(b"bye").await.is_err());
        assert!(s.read_buf(&mut BytesMut::new()).await.is_err());
        drop(s);
        let alert = server.join().unwrap();
        // One alert record (header 0x17 under TLS 1.3's encryption), nothing after it.
        assert_eq!(alert.first(), Some(&0x17), "{alert:?}");
        let len = usize::from(u16::from_be_bytes([alert[3], alert[4]]));
        assert_eq!(alert.len(), 5 + len, "{alert:?}");
    }
}
