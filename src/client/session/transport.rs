//! The byte stream under the session: TCP (directly or through an HTTP CONNECT proxy), then TLS.

use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::errors::{io_failure, Phase};
use crate::client::options::ClientOptions;
use crate::error::{Error, ErrorKind};

pub(super) type Stream = TlsStream<TcpStream>;

/// The longest proxy answer header we read before giving up on it.
const MAX_PROXY_RESPONSE: usize = 8 * 1024;

/// Opens TCP (through the proxy if one is set) and completes the TLS handshake.
pub(super) async fn open(
    opts: &ClientOptions,
    tls: Arc<rustls::ClientConfig>,
    endpoint: &str,
) -> Result<Stream, Error> {
    let host = opts.endpoint.as_str();
    let tcp = match &opts.proxy {
        None => TcpStream::connect((host, opts.port))
            .await
            .map_err(|e| io_failure(&e, endpoint, host, Phase::Tcp))?,
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
    TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| io_failure(&e, endpoint, host, Phase::Handshake))
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
