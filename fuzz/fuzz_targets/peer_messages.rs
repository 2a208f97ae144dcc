#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla_broker::fuzzing::peer_messages(data));
