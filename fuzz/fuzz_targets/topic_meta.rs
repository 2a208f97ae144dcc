#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla::fuzzing::topic_meta(data));
