#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla::fuzzing::group_state(data));
