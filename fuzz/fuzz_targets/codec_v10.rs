#![no_main]
// OffsetCommit v10, OffsetFetch v10 and InitProducerId v6 bodies, decoded
// by the broker's own codec (`ottla_broker::api::codec_v10`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla_broker::fuzzing::codec_v10(data));
