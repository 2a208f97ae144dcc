#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla::fuzzing::index_files(data));
