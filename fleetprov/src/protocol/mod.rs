//! The fleet-provisioning MQTT API: topic names and payloads. No I/O here.

mod cbor;
mod payloads;
mod topics;

pub use payloads::{
    create_keys_request, parse_template_parameters, CreateFromCsrRequest, CreateFromCsrResponse,
    CreateKeysResponse, RegisterThingRequest, RegisterThingResponse, CREATE_KEYS_REQUEST,
    MAX_PAYLOAD_LEN,
};
pub use topics::{
    create_from_csr_topics, create_keys_topics, register_thing_topics, Operation, PayloadFormat,
    TemplateName, Topics, MAX_TEMPLATE_NAME_LEN,
};

/// The rejection AWS sends on a `/rejected` topic; defined beside [`crate::Error`], which
/// carries it.
pub use crate::error::Rejection;
