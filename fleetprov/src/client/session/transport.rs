//! The byte stream under the session: TCP (directly or through an HTTP CONNECT proxy), then TLS.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::errors::{io_failure, Phase};
pub(super) use super::tls_stream::Stream;
use crate::client::options::ClientOptions;
use crate::error::{Error, ErrorKind};

/// The longest proxy answer header we read before giving up on it.
const MAX_PROXY_RESPONSE: usize = 8 * 1024;

/// Opens TCP (through the proxy if one is set) and completes the TLS handshake; `first` is
/// sent as the first application data, with the handshake's last flight under TLS 1.3.
pub(super) async fn open(
    opts: &ClientOptions,
    tls: Arc<rustls::ClientConfig>,
    endpoint: &str,
    first: &[u8],
) -> Result<Stream, Error> {
    let host = opts.endpoint.as_str();
    let tcp = match &opts.proxy {
        None => {
            let addrs = resolve(host, opts.port)
                .await
                .map_err(|e| io_failure(&e, endpoint, host, Phase::Tcp))?;
            TcpStream::connect(&addrs[..])
                .await
                .map_err(|e| io_failure(&e, endpoint, host, Phase::Tcp))?
        }
        Some((proxy_host, proxy_port)) => {
            let mut tcp = TcpStream::connect((proxy_host.as_str(), *proxy_port))
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Connection,
                        format!(
                            "cannot reach {endpoint} through the proxy {proxy_host}:{proxy_port}: {e}"
                        ),
                    )
                })?;
            http_connect(&mut tcp, host, opts.port)
                .await
                .map_err(|why| {
                    Error::new(
                        ErrorKind::Connection,
                        format!("cannot reach {endpoint} through the proxy {proxy_host}:{proxy_port}: {why}"),
                    )
                })?;
            tcp
        }
    };
    // Requests and replies are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("{host:?} is not a valid server name"),
        )
    })?;
    Stream::connect(tcp, tls, name, first)
        .await
        .map_err(|e| io_failure(&e, endpoint, host, Phase::Handshake))
}

/// A name lookup in progress, shared by the connections that want the same name meanwhile.
type Lookup = Arc<tokio::sync::OnceCell<Result<Vec<SocketAddr>, (std::io::ErrorKind, String)>>>;

/// The lookups in progress (a few at most: one per name being resolved right now).
static LOOKUPS: Mutex<Vec<((String, u16), Lookup)>> = Mutex::new(Vec::new());

fn lookups() -> std::sync::MutexGuard<'static, Vec<((String, u16), Lookup)>> {
    // Every update leaves the list consistent.
    LOOKUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The addresses of `host`. An IP address is used as it is; a name is looked up by the system
/// resolver on the blocking pool, and connections asking for a name while its lookup runs
/// wait for that lookup rather than start their own (a fleet of clients started at once asks
/// the resolver once). Nothing is kept once the lookup is over: the next connection asks anew.
async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = {
        let mut pending = lookups();
        match pending.iter().find(|(k, _)| k.0 == host && k.1 == port) {
            Some((_, lookup)) => Arc::clone(lookup),
            None => {
                let lookup = Lookup::default();
                pending.push(((host.to_owned(), port), Arc::clone(&lookup)));
                lookup
            }
        }
    };
    // If the connection running the lookup is dropped meanwhile, a waiting one takes it over.
    let outcome = lookup
        .get_or_init(|| async {
            match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => Ok(addrs.collect::<Vec<_>>()),
                Err(e) => Err((e.kind(), e.to_string())),
            }
        })
        .await
        .clone();
    lookups().retain(|(_, l)| !Arc::ptr_eq(l, &lookup));
    match outcome {
        Ok(addrs) if addrs.is_empty() => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )),
        Ok(addrs) => Ok(addrs),
        Err((kind, message)) => Err(std::io::Error::new(kind, message)),
    }
}

/// Asks an HTTP proxy for a tunnel to `host:port` and reads its answer up to the blank line.
async fn http_connect(tcp: &mut TcpStream, host: &str, port: u16) -> Result<(), String> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // Byte by byte: nothing past the header may be consumed, it belongs to TLS.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_RESPONSE {
            return Err(format!(
                "its answer header is over {MAX_PROXY_RESPONSE} bytes"
            ));
        }
        let mut byte = [0u8; 1];
        match tcp.read(&mut byte).await {
            Ok(0) => return Err("it closed the connection".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let status = head
        .split(|&b| b == b'\r')
        .next()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    let code = status.split_whitespace().nth(1);
    if status.starts_with("HTTP/1.") && code == Some("200") {
        Ok(())
    } else {
        Err(format!("it answered {status:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lookups_at_once_share_one_and_leave_nothing_behind() {
        let all: Vec<_> = (0..8)
            .map(|_| tokio::spawn(async { resolve("localhost", 8883).await }))
            .collect();
        for one in all {
            let addrs = one.await.unwrap().unwrap();
            assert!(addrs
                .iter()
                .all(|a| a.port() == 8883 && a.ip().is_loopback()));
        }
        assert!(lookups().iter().all(|(k, _)| k.0 != "localhost"));
        // An address is used as it is.
        assert_eq!(
            resolve("127.0.0.1", 1).await.unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 1))]
        );
    }
}
