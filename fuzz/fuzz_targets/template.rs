//! The emulator's template evaluator on hostile templates: the input is split at the first NUL
//! into a template body and a JSON object of request parameters.
#![no_main]
use std::collections::BTreeMap;

use fleetprov_emulator::cert::CertInfo;
use fleetprov_emulator::template::Template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (body, params) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(body) = std::str::from_utf8(body) else { return };
    let Ok(template) = Template::parse(body) else { return };
    let params: BTreeMap<String, String> = serde_json_params(params);
    let cert = CertInfo {
        certificate_id: "0".repeat(64),
        common_name: Some("device".into()),
        ..CertInfo::default()
    };
    let _ = template.evaluate(&params, &cert);
});

/// Parameters as a flat JSON object of strings; anything else gives the seed's usual pair.
fn serde_json_params(data: &[u8]) -> BTreeMap<String, String> {
    let text = std::str::from_utf8(data).unwrap_or("");
    fleetprov::protocol::parse_template_parameters(text).unwrap_or_else(|_| {
        BTreeMap::from([
            ("SerialNumber".to_string(), "1".to_string()),
            ("DeviceLocation".to_string(), "Seattle".to_string()),
        ])
    })
}
