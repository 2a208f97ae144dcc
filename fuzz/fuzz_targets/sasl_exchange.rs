#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla_broker::fuzzing::sasl_oracle_for_process().check(data));
