#![no_main]
// The broker's allocator, as `ottla._core` installs it: a claimed array
// count sizes a vector without touching memory.
#[global_allocator]
static GLOBAL: ottla_broker::alloc::Allocator = ottla_broker::alloc::Allocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ottla_broker::fuzzing::oracle_for_process().check(data));
