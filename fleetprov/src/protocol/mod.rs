//! The fleet-provisioning MQTT API: topic names and payloads. No I/O here.

mod cbor;
mod payloads;
mod topics;

pub use payloads::{
    create_keys_request, parse_template_parameters, CreateFromCsrRequest, CreateFromCsrResponse,
    CreateKeysResponse, RegisterThingRequest, RegisterThingResponse, Rejection,
    CREATE_KEYS_REQUEST, MAX_PAYLOAD_LEN,
};
pub use topics::{
    create_from_csr_topics, create_keys_topics, register_thing_topics, validate_template_name,
    Operation, PayloadFormat, Topics, MAX_TEMPLATE_NAME_LEN,
};
