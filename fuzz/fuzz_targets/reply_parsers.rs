//! Every parser of data that arrives from the network or from the user: the three accepted
//! replies, the rejection shape and the template parameters. None may panic.
#![no_main]
use fleetprov::protocol::{
    parse_template_parameters, CreateFromCsrResponse, CreateKeysResponse, Rejection,
    RegisterThingResponse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = CreateKeysResponse::from_json(data);
    let _ = CreateFromCsrResponse::from_json(data);
    let _ = RegisterThingResponse::from_json(data);
    let _ = Rejection::from_json(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_template_parameters(text);
        let _ = fleetprov::protocol::TemplateName::new(text);
    }
});
