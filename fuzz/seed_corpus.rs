//! Writes the seed corpus (valid inputs made by the engine itself) to
//! `corpus/<target>/seed-<name>`: `cargo run --bin seed_corpus`.

fn main() -> std::io::Result<()> {
    for (target, name, bytes) in ottla_client::fuzzing::seed_corpus() {
        let dir = std::path::Path::new("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    let frames = ottla_broker::fuzzing::seed_corpus().map_err(std::io::Error::other)?;
    let dir = std::path::Path::new("corpus").join("request_frame");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in frames {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    let dir = std::path::Path::new("corpus").join("sasl_exchange");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in ottla_broker::fuzzing::sasl_seed_corpus() {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    let dir = std::path::Path::new("corpus").join("codec_v10");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in ottla_broker::fuzzing::codec_v10_seed_corpus() {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    let dir = std::path::Path::new("corpus").join("consumer_protocol");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in ottla_broker::fuzzing::consumer_protocol_seed_corpus() {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
