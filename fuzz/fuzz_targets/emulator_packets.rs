//! The emulator's handling of raw bytes from a client: CONNECT peek, both MQTT codecs, topic
//! checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetprov_emulator::fuzz_packets(data));
