//! Deterministic fuzzing of the broker's request path in `cargo test`: the
//! request-frame oracle (`ottla_broker::fuzzing`) replayed on the seed
//! corpus and thousands of mutants of it from a fixed seed, in a process of
//! its own with the broker's allocator installed (as `ottla._core` installs
//! it), so its peak resident size measures what the requests cost.

use ottla_broker::fuzzing::{
    codec_v10, codec_v10_seed_corpus, consumer_protocol, consumer_protocol_seed_corpus,
    peer_messages, peer_seed_corpus, sasl_seed_corpus, seed_corpus, RequestOracle, SaslOracle,
};
use ottla_client::fuzzing::Rng;

#[global_allocator]
static GLOBAL: ottla_broker::alloc::Allocator = ottla_broker::alloc::Allocator;

/// The mutations libFuzzer makes most, aimed at a frame: bit flips, random
/// bytes, cuts, inserts, and edge values over lengths and counts.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(v.len());
        match rng.below(7) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = rng.next_u64() as u8,
            2 => v.truncate(at.max(4)),
            3 => {
                let n = rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 if v.len() >= at + 4 => {
                let edge = [0i32, -1, 1, i32::MAX, i32::MIN, 0x7f, 0x80, 1 << 20][rng.below(8)];
                v[at..at + 4].copy_from_slice(&edge.to_be_bytes());
            }
            5 if v.len() >= at + 2 => {
                let edge = [0i16, -1, 1, i16::MAX, i16::MIN, 0x7f][rng.below(6)];
                v[at..at + 2].copy_from_slice(&edge.to_be_bytes());
            }
            6 if v.len() >= 4 => {
                // Another version of the same API (bytes 2-3).
                let version = rng.below(20) as i16;
                v[2..4].copy_from_slice(&version.to_be_bytes());
            }
            _ => {}
        }
    }
    v
}

/// The process's peak resident size, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn request_frames_survive_mutation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let oracle = RequestOracle::start(dir.path()).expect("broker");
    let seeds = seed_corpus().expect("seeds");
    assert!(seeds.len() > 20, "{} seeds", seeds.len());
    for (name, seed) in &seeds {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| oracle.check(seed)));
        assert!(r.is_ok(), "seed {name} broke a promise");
    }
    let mut rng = Rng(0x0e11_b001);
    for i in 0..10_000 {
        let (_, seed) = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| oracle.check(&input)));
        assert!(r.is_ok(), "input {i} broke a promise: {input:02x?}");
    }
    // Claimed counts size vectors the allocator serves untouched: what the
    // requests made resident stays small.
    let peak = peak_rss_kib();
    assert!(peak < 512 * 1024, "peak resident size {peak} KiB");
}

#[test]
fn sasl_exchanges_survive_mutation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let oracle = SaslOracle::new(dir.path()).expect("oracle");
    let seeds = sasl_seed_corpus();
    for (name, seed) in &seeds {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| oracle.check(seed)));
        assert!(r.is_ok(), "seed {name} broke a promise");
    }
    let mut rng = Rng(0x5a51_0018);
    for i in 0..20_000 {
        let (_, seed) = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| oracle.check(&input)));
        assert!(r.is_ok(), "input {i} broke a promise: {input:02x?}");
    }
}

#[test]
fn codec_v10_bodies_survive_mutation() {
    let seeds = codec_v10_seed_corpus();
    for (name, seed) in &seeds {
        let r = std::panic::catch_unwind(|| codec_v10(seed));
        assert!(r.is_ok(), "seed {name} broke a promise");
    }
    let mut rng = Rng(0x0c0d_ec10);
    for i in 0..50_000 {
        let (_, seed) = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(|| codec_v10(&input));
        assert!(r.is_ok(), "input {i} broke a promise: {input:02x?}");
    }
}

#[test]
fn peer_messages_survive_mutation() {
    let seeds = peer_seed_corpus();
    for (name, seed) in &seeds {
        let r = std::panic::catch_unwind(|| peer_messages(seed));
        assert!(r.is_ok(), "seed {name} broke a promise");
    }
    let mut rng = Rng(0x9ee4_0018);
    for i in 0..20_000 {
        let (_, seed) = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(|| peer_messages(&input));
        assert!(r.is_ok(), "input {i} broke a promise: {input:02x?}");
    }
}

#[test]
fn consumer_protocol_decoders_survive_mutation() {
    let seeds = consumer_protocol_seed_corpus();
    for (name, seed) in &seeds {
        let r = std::panic::catch_unwind(|| consumer_protocol(seed));
        assert!(r.is_ok(), "seed {name} broke a promise");
    }
    let mut rng = Rng(0x0848_c1a5);
    for i in 0..50_000 {
        let (_, seed) = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(|| consumer_protocol(&input));
        assert!(r.is_ok(), "input {i} broke a promise: {input:02x?}");
    }
}
