//! Raw ingest through the broker: several connections producing 1 KiB
//! records in 256 KiB batches over loopback, pipelined, acks=1.
//!
//!     cargo bench --bench broker_ingest -- [connections] [seconds]
//!
//! The broker runs in this process on a temporary directory; the load
//! generator speaks the protocol directly (kafka-protocol's client side), so
//! the number is the broker's ingest rate, not a client library's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use ottla_broker::{Broker, BrokerConfig};
use ottla_record::BatchBuilder;
use ottla_storage::store::Store;

const RECORD: usize = 1024;
const BATCH_RECORDS: usize = 256;
const IN_FLIGHT: usize = 8;
const VERSION: i16 = 7;

fn request(partition: i32, batch: &[u8], correlation: i32) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Produce as i16;
    header.request_api_version = VERSION;
    header.correlation_id = correlation;
    header.client_id = Some(StrBytes::from_static_str("ingest"));
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(bytes::Bytes::copy_from_slice(batch));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("ingest"));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = 1;
    req.timeout_ms = 30_000;
    req.topic_data = vec![td];
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let hv = ApiKey::Produce.request_header_version(VERSION);
    if header.encode(&mut buf, hv).is_err() || req.encode(&mut buf, VERSION).is_err() {
        eprintln!("cannot encode the request");
        std::process::exit(1);
    }
    let n = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&n.to_be_bytes());
    buf.to_vec()
}

fn read_response(s: &mut TcpStream) -> std::io::Result<()> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    s.read_exact(&mut body)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    store.create_topic("ingest", connections as u32, &[])?;
    let broker = Broker::start(store, BrokerConfig::default())?;
    let addr = broker.local_addr();

    let mut b = BatchBuilder::with_capacity(RECORD * BATCH_RECORDS + 4096);
    let value = vec![b'x'; RECORD];
    for _ in 0..BATCH_RECORDS {
        b.append(ottla_storage::log::now_ms(), None, Some(&value), &[]);
    }
    let batch = b.finish().to_vec();
    let bytes_sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|c| {
            let (sent, stop, batch) = (bytes_sent.clone(), stop.clone(), batch.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                let req = request(c as i32, &batch, 1);
                let mut pending = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    while pending < IN_FLIGHT {
                        s.write_all(&req)?;
                        pending += 1;
                    }
                    read_response(&mut s)?;
                    pending -= 1;
                    sent.fetch_add((RECORD * BATCH_RECORDS) as u64, Ordering::Relaxed);
                }
                for _ in 0..pending {
                    read_response(&mut s)?;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        if let Ok(Err(e)) = w.join() {
            eprintln!("connection failed: {e}");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let total = bytes_sent.load(Ordering::Relaxed) as f64;
    println!(
        "broker ingest: {connections} connections, {} KiB batches of 1 KiB records: {:.0} MB/s ({:.0} records/s)",
        RECORD * BATCH_RECORDS / 1024,
        total / secs / 1e6,
        total / RECORD as f64 / secs
    );
    drop(broker);
    Ok(())
}
