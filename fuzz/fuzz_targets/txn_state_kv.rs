#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla_client::fuzzing::txn_state_kv(data));
