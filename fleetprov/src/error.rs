//! The one error type of the library.

use std::fmt;

use serde::Serialize;

/// What went wrong, coarse enough for a program to act on. The C surface maps each kind to
/// its own result code.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An argument or option is invalid (empty endpoint, template name with `/`, keep-alive
    /// under 5 s, parameters that are not a JSON object of strings, ...). Nothing was sent.
    InvalidArgument,
    /// A file could not be read (missing certificate, key or CA file).
    Io,
    /// TLS setup or handshake failed: PEM without a certificate or key, a key that does not
    /// match the certificate, a server certificate from an unknown CA, expired, or issued for
    /// another name, or the server refusing our client certificate.
    Tls,
    /// The broker answered CONNECT with a refusal (the reason is in the message).
    ConnectionRefused,
    /// The connection could not be set up: DNS, TCP, proxy, or the broker closing it before
    /// CONNACK.
    Connection,
    /// The connection was lost while the operation was pending, or before it started.
    Disconnected,
    /// No answer within the configured time (CONNACK, SUBACK, PUBACK or the service's reply).
    Timeout,
    /// The broker refused to subscribe to a reply topic (SUBACK failure code), or its Maximum
    /// Packet Size (MQTT 5 CONNACK) is smaller than the SUBSCRIBE, which was not sent.
    SubscribeRefused,
    /// The service refused the request: [`Error::rejection`] holds AWS's `statusCode`,
    /// `errorCode` and `errorMessage` as received on the `/rejected` topic.
    Rejected,
    /// The service answered with something we cannot use: not JSON, wrong shape or types,
    /// or larger than the 128 KiB AWS allows.
    BadReply,
    /// The operation was abandoned because the client was disconnected by its owner.
    Cancelled,
    /// The operation found no connection: it was never started, or had already ended
    /// (see [`crate::client::Lifecycle`]).
    NotConnected,
    /// A bug or an impossible state inside the library.
    Internal,
    /// The broker broke the MQTT protocol (a malformed packet, a topic alias the client never
    /// allowed, an impossible CONNACK, a packet a broker never sends); the library closed the
    /// connection. The message says what was received.
    Protocol,
    /// The broker refused our PUBLISH (an MQTT 5 PUBACK with a failure reason code, such as
    /// 0x87 not authorized), or its Maximum Packet Size (MQTT 5 CONNACK) is smaller than the
    /// request, which was not sent; the reason is in the message. Nothing reached the service.
    PublishRefused,
    /// The signer of a key the library does not hold failed: the application's signer
    /// callback returned an error or a signature that does not verify with the key, or the
    /// PKCS#11 module, token, PIN or key could not be used. The message names the cause.
    Signer,
    /// The identity store (a directory) cannot be created, read or written, or is not a
    /// directory.
    Store,
}

impl ErrorKind {
    /// A short, stable name for the kind (for logs and tests).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Io => "I/O error",
            ErrorKind::Tls => "TLS error",
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::Connection => "connection failed",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Timeout => "timed out",
            ErrorKind::SubscribeRefused => "subscription refused",
            ErrorKind::Rejected => "rejected",
            ErrorKind::BadReply => "bad reply",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::NotConnected => "not connected",
            ErrorKind::Internal => "internal error",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::PublishRefused => "publish refused",
            ErrorKind::Signer => "signer failed",
            ErrorKind::Store => "identity store error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected reply: `{"statusCode", "errorCode", "errorMessage"}`, as received on a
/// `/rejected` topic. Missing fields are left at 0 or empty, since AWS documents no guarantees
/// about them. The protocol module parses it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// `statusCode`, e.g. 400.
    pub status_code: i64,
    /// `errorCode`, e.g. `InvalidCertificateOwnershipToken`.
    pub error_code: String,
    /// `errorMessage`.
    pub error_message: String,
}

/// An error with its kind, a message for humans and, for service rejections, AWS's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A one-line explanation; never contains key material.
    pub message: String,
    /// AWS's rejection as received, when the service answered on a `/rejected` topic.
    pub rejection: Option<Rejection>,
}

impl Error {
    /// An error of `kind` with `message` and no rejection.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            rejection: None,
        }
    }

    /// The error for a service rejection; the message summarises AWS's fields.
    pub fn rejected(operation: &str, rejection: Rejection) -> Error {
        Error {
            kind: ErrorKind::Rejected,
            message: format!(
                "{operation} rejected: {} {}: {}",
                rejection.status_code, rejection.error_code, rejection.error_message
            ),
            rejection: Some(rejection),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn bad_reply(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadReply, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// For conversions that cannot fail, such as a [`TemplateName`](crate::TemplateName) passed where
/// anything that may become one is taken.
impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Error {
        match never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_message() {
        let e = Error::new(ErrorKind::Timeout, "no reply within 2 s");
        assert_eq!(e.to_string(), "no reply within 2 s");
        assert!(e.rejection.is_none());
    }

    #[test]
    fn rejection_keeps_aws_fields() {
        let r = Rejection {
            status_code: 400,
            error_code: "InvalidCertificateOwnershipToken".into(),
            error_message: "Certificate ownership token cannot be empty.".into(),
        };
        let e = Error::rejected("RegisterThing", r.clone());
        assert_eq!(e.kind, ErrorKind::Rejected);
        assert_eq!(e.rejection.as_ref(), Some(&r));
        assert!(e.message.contains("400 InvalidCertificateOwnershipToken"));
    }
}
