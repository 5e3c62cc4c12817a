//! How failures of the connection read to the user: which `ErrorKind`, which words.

use std::io;

use super::super::tls::{describe_tls_error, tls_error};
use crate::error::{Error, ErrorKind};

/// Where in the connection's life an I/O error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Tcp,
    Handshake,
    /// TLS done, waiting for CONNACK.
    Connack,
    /// The session is up.
    Session,
}

/// The rustls error inside an I/O error, if that is what it is.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

fn peer_went_away(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
    )
}

/// Maps an I/O error (TCP, TLS, or a read or write of the session).
pub(super) fn io_failure(e: &io::Error, endpoint: &str, host: &str, phase: Phase) -> Error {
    if let Some(r) = rustls_error(e) {
        let what = describe_tls_error(r, host);
        return match phase {
            Phase::Session => Error::new(
                ErrorKind::Disconnected,
                format!("connection to {endpoint} lost: {what}"),
            ),
            // The signer's own failures keep their kind (ErrorKind::Signer).
            _ => tls_error(r, host),
        };
    }
    match phase {
        Phase::Tcp => Error::new(
            ErrorKind::Connection,
            format!("cannot connect to {endpoint}: {e}"),
        ),
        Phase::Handshake | Phase::Connack if peer_went_away(e) => Error::new(
            ErrorKind::Connection,
            format!("{endpoint} closed the connection before CONNACK"),
        ),
        Phase::Handshake | Phase::Connack => Error::new(
            ErrorKind::Connection,
            format!("{endpoint} failed before CONNACK: {e}"),
        ),
        Phase::Session if peer_went_away(e) => Error::new(
            ErrorKind::Disconnected,
            format!("{endpoint} closed the connection"),
        ),
        Phase::Session => Error::new(
            ErrorKind::Disconnected,
            format!("connection to {endpoint} lost: {e}"),
        ),
    }
}

/// The end of the stream (no error) in `phase`; `partial` if it cut a packet short.
pub(super) fn eof(endpoint: &str, phase: Phase, partial: bool) -> Error {
    let cut = if partial {
        " in the middle of a packet"
    } else {
        ""
    };
    match phase {
        Phase::Session => Error::new(
            ErrorKind::Disconnected,
            format!("{endpoint} closed the connection{cut}"),
        ),
        _ => Error::new(
            ErrorKind::Connection,
            format!("{endpoint} closed the connection before CONNACK{cut}"),
        ),
    }
}

/// The broker broke the protocol; the library closes the connection.
pub(super) fn protocol(endpoint: &str, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("{endpoint} broke the MQTT protocol: {what}; connection closed"),
    )
}

/// A packet over our size limit.
pub(super) fn oversized(endpoint: &str, size: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::BadReply,
        format!(
            "{endpoint} sent a packet of {size} bytes, over the {max}-byte limit; connection closed"
        ),
    )
}
