#![no_main]
// KIP-848's online migration: a classic member's subscription, an
// assignment, a member record with its ClassicMemberMetadata.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla_broker::fuzzing::consumer_protocol(data));
