//! # fleetprov
//!
//! AWS IoT Fleet Provisioning over mutual-TLS MQTT for devices: CreateKeysAndCertificate,
//! CreateCertificateFromCsr and RegisterThing, with MQTT 5 or 3.1.1 and rustls. The MQTT
//! session is the library's own (`client::session`: connect, keep-alive, subscriptions,
//! acknowledgements, limits); of rumqttc only the packet codec is used.
//!
//! - [`protocol`]: topic names and JSON payloads with AWS's exact field names; no I/O.
//! - [`client`]: the connection and the request engine (one SUBSCRIBE per operation kind,
//!   SUBACK checked before the request is published, replies matched, per-operation timeout).
//! - [`error`]: one [`Error`] with an [`ErrorKind`] and, for service rejections, AWS's fields.
//! - [`log`]: a process-wide logging callback; keys are never logged.
//! - [`signer`]: keys the library never holds (a secure element, an HSM): a [`signer::Signer`]
//!   signs for the TLS client authentication and for certificate signing requests.
//! - [`keygen`]: device keys (EC P-256, P-384, RSA-2048) and CSRs made on the device.
//! - [`provision`](mod@provision): one call from claim certificate to a verified, stored
//!   identity, with retries; [`provision::store`] is the identity store.
//!
//! The C surface (crate `fleetprov-ffi`, header `libfleetprov/include/fleetprov.h`) is a thin
//! layer over this core.

pub mod client;
pub mod error;
pub mod keygen;
pub mod log;
pub mod pkcs11;
pub mod protocol;
pub mod provision;
pub mod signer;
mod x509;

pub use client::{
    CheckedClientOptions, Client, ClientOptions, Credentials, MqttVersion, Pem, PrivateKey,
};
pub use error::{Error, ErrorKind};
pub use keygen::{CsrSubject, KeyType};
pub use protocol::{
    CreateFromCsrResponse, CreateKeysResponse, PayloadFormat, RegisterThingRequest,
    RegisterThingResponse, Rejection, TemplateName,
};
pub use provision::{
    provision, CheckedProvisionOptions, KeySource, Progress, ProvisionOptions, Provisioned,
    RetryPolicy, RotateBefore,
};
