//! The request budget: a bound, across all connections, on the bytes of
//! request frames being read or handled (Kafka's `queued.max.request.bytes`).
//!
//! A connection that learns from a frame's 4-byte size prefix that the frame
//! needs a buffer of its own (anything larger than its read chunk) takes that
//! many bytes from the budget before it allocates the buffer or reads a byte
//! of the body, and holds them until the request is handled, when the
//! frame's bytes are freed (or the frame dropped, or the connection gone);
//! not while the response is written, which a client that does not read
//! would stall for good, pinning the budget. When the budget is spent, connections
//! wait for it without reading their sockets: the kernel's socket buffers
//! fill and TCP flow control pushes back on the clients, instead of the
//! broker allocating.
//!
//! Waiters are served first come, first served (tokio's semaphore is fair),
//! so a frame of `max_request_bytes` is not starved by smaller ones; the
//! budget is at least `max_request_bytes` (checked by `Broker::start`), so
//! every frame the broker accepts can be read.
//!
//! Smaller frames are read into the connection's own read buffer, which
//! exists anyway, and are not charged: they cost each connection at most two
//! read chunks, whatever they claim. They keep flowing while large requests
//! wait, so a flood of large Produce requests does not starve the small
//! requests of everyone else (heartbeats, Metadata, Fetch).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of the budget, held until dropped.
pub type Held = OwnedSemaphorePermit;

#[derive(Clone)]
pub struct RequestBudget {
    /// `None`: unbounded (Kafka's `queued.max.request.bytes` = -1).
    bytes: Option<Arc<Semaphore>>,
}

impl RequestBudget {
    /// A budget of `bytes` (`None` for no bound).
    pub fn new(bytes: Option<usize>) -> RequestBudget {
        RequestBudget {
            bytes: bytes.map(|b| Arc::new(Semaphore::new(b.min(Semaphore::MAX_PERMITS)))),
        }
    }

    /// `n` bytes of the budget, once they are free; `None` when unbounded.
    /// `n` must not exceed the budget (a frame's size is checked against
    /// `max_request_bytes` first, which does not exceed it).
    pub async fn take(&self, n: usize) -> Option<Held> {
        let sem = self.bytes.as_ref()?;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        // The semaphore is never closed, so acquiring fails never; a failure
        // would mean no bound, not a stuck connection.
        sem.clone().acquire_many_owned(n).await.ok()
    }

    /// The bytes free now (for tests and diagnostics); `None` when unbounded.
    pub fn available(&self) -> Option<usize> {
        self.bytes.as_ref().map(|s| s.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn bytes_taken_are_given_back_when_dropped() {
        let b = RequestBudget::new(Some(100));
        let a = b.take(60).await;
        assert_eq!(b.available(), Some(40));
        // A second take of 60 waits until the first is dropped.
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.take(60).await.map(|h| h.num_permits()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.ok().flatten(), Some(60));
        assert_eq!(b.available(), Some(100));
        assert!(RequestBudget::new(None).take(1 << 30).await.is_none());
    }

    /// A frame of `n` bytes (size prefix included) that ApiVersions v0
    /// answers: a header, then padding the handler ignores.
    fn padded_api_versions(n: usize, correlation: u8) -> Vec<u8> {
        let mut f = vec![0u8; n];
        f[..4].copy_from_slice(&((n - 4) as u32).to_be_bytes());
        f[4..14].copy_from_slice(&[0, 18, 0, 0, 0, 0, 0, correlation, 0xff, 0xff]);
        f
    }

    fn answered(s: &mut TcpStream, correlation: u8) -> bool {
        let mut size = [0u8; 4];
        if s.read_exact(&mut size).is_err() {
            return false;
        }
        let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
        s.read_exact(&mut body).is_ok() && body[..4] == [0, 0, 0, correlation]
    }

    #[test]
    fn a_frame_waits_for_the_budget_and_small_ones_do_not() {
        // The budget is exactly one frame of the largest size.
        const MAX: usize = 1 << 20;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ottla_storage::store::Store::open(dir.path()).expect("store");
        let config = crate::BrokerConfig {
            max_request_bytes: MAX,
            queued_max_request_bytes: Some(MAX),
            ..Default::default()
        };
        let broker = crate::Broker::start(store, config).expect("start");
        let addr = broker.local_addr();
        let budget = || broker.shared.as_ref().map(|s| s.request_budget.clone());
        let free = || budget().and_then(|b| b.available());

        // A frame of the largest size is read and answered, and gives its
        // bytes back.
        let mut a = TcpStream::connect(addr).expect("connect");
        a.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        a.write_all(&padded_api_versions(MAX + 4, 1))
            .expect("write");
        assert!(answered(&mut a, 1));
        // Held until the connection asks for its next frame.
        let deadline = Instant::now() + Duration::from_secs(5);
        while free() != Some(MAX) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(free(), Some(MAX));

        // A started frame holds the whole budget; another waits, unread.
        let first = padded_api_versions(MAX + 4, 2);
        a.write_all(&first[..MAX / 2]).expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        while free() != Some(0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(free(), Some(0));
        let mut b = TcpStream::connect(addr).expect("connect");
        b.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let second = padded_api_versions(MAX + 4, 3);
        b.write_all(&second[..64]).expect("write");
        assert!(!answered(&mut b, 3), "nothing to answer yet");

        // Small requests are not charged: answered meanwhile.
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(&padded_api_versions(64, 4)).expect("write");
        assert!(answered(&mut c, 4));

        // The first frame ends and is answered; the second gets the budget.
        a.write_all(&first[MAX / 2..]).expect("write");
        assert!(answered(&mut a, 2));
        b.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        b.write_all(&second[64..]).expect("write");
        assert!(answered(&mut b, 3));
        drop(broker);
    }
}
