//! The accept loop: one task per connection until shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::connection::Connection;
use crate::Shared;

pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    // EMFILE and friends: back off briefly instead of spinning.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let conn = Connection::new(socket, peer, shared.clone(), shutdown.clone(), done.clone());
                tokio::spawn(conn.run());
            }
        }
    }
}
