//! The endpoint's UDP socket and its client transactions (RFC 3261 §17.1.2): a request is sent,
//! sent again at T1, 2·T1, ... (capped at T2) until a response arrives, and given up on after
//! 64·T1; responses are matched to their request by the top `Via` branch.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::message::Message;

/// RFC 3261's T1: the round-trip estimate retransmissions start from.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261's T2: the longest gap between retransmissions of a non-INVITE request.
pub const T2: Duration = Duration::from_secs(4);

/// Why a request got no final response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// No final response within 64·T1 (32 s).
    #[error("no response from {0} to {1} within {2:?}")]
    Timeout(SocketAddr, String, Duration),
    /// The socket refused to send.
    #[error("cannot send to {0}: {1}")]
    Send(SocketAddr, String),
}

/// The signalling socket and the requests waiting for responses.
pub struct SipSocket {
    socket: UdpSocket,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
}

impl SipSocket {
    /// Wraps a bound socket.
    pub fn new(socket: UdpSocket) -> SipSocket {
        SipSocket {
            socket,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }

    /// Sends a message; a failure is logged, not returned (UDP gives no delivery promise
    /// anyway, and the transaction timers cover a lost datagram).
    pub async fn send(&self, msg: &Message, to: SocketAddr) {
        self.send_bytes(&msg.to_bytes(), to).await;
    }

    /// Sends bytes already written (a cached response).
    pub async fn send_bytes(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, to).await {
            tracing::warn!(%to, error = %e, "sip: send failed");
        }
    }

    /// Hands a response to the transaction waiting for it; false when none is (a stray or late
    /// response).
    pub fn deliver(&self, response: Message) -> bool {
        let Some(branch) = response.branch() else {
            return false;
        };
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get(&branch) {
            Some(tx) => tx.send(response).is_ok(),
            None => false,
        }
    }

    /// Sends `request` (its top `Via` branch must be fresh) to `to` and returns its final
    /// response; provisional responses are skipped. Not for INVITE's ACK.
    pub async fn transact(
        &self,
        request: &Message,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<Message, TransactionError> {
        let branch = request.branch().unwrap_or_default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(branch.clone(), tx);
        let _guard = Unregister {
            socket: self,
            branch,
        };
        let bytes = request.to_bytes();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut gap = T1;
        let mut provisional = false;
        if let Err(e) = self.socket.send_to(&bytes, to).await {
            return Err(TransactionError::Send(to, e.to_string()));
        }
        loop {
            let wake = (tokio::time::Instant::now() + gap).min(deadline);
            match tokio::time::timeout_at(wake, rx.recv()).await {
                Ok(Some(resp)) => match resp.code() {
                    Some(c) if c >= 200 => return Ok(resp),
                    _ => {
                        // A provisional response: the far end has it; keep waiting (at T2).
                        provisional = true;
                        gap = T2;
                    }
                },
                // The sender lives in `pending` while this transaction does; treat a closed
                // channel like silence.
                Ok(None) | Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(TransactionError::Timeout(
                        to,
                        request.method().to_owned(),
                        timeout,
                    ));
                }
                Ok(None) | Err(_) => {
                    if !provisional || request.method() != "INVITE" {
                        self.send_bytes(&bytes, to).await;
                    }
                    gap = (gap * 2).min(T2);
                }
            }
        }
    }
}

struct Unregister<'a> {
    socket: &'a SipSocket,
    branch: String,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.socket
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.branch);
    }
}

/// A fresh unguessable token (tags, Call-IDs, branches, client nonces): 128 bits from the
/// standard library's randomly keyed hasher, so no extra random-number crate is needed.
pub fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = String::with_capacity(32);
    for i in 0..2u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A new `Via` branch (with RFC 3261's magic cookie).
pub fn branch() -> String {
    format!("z9hG4bK{}", &token()[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_branches_carry_the_magic_cookie() {
        let a: std::collections::HashSet<String> = (0..1000).map(|_| token()).collect();
        assert_eq!(a.len(), 1000);
        assert!(branch().starts_with("z9hG4bK"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_nobody_answers_is_resent_then_times_out() {
        let a = SipSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut req = Message::request("OPTIONS", "sip:x@127.0.0.1");
        req.push("Via", format!("SIP/2.0/UDP 127.0.0.1;branch={}", branch()));
        let to = peer.local_addr().unwrap();
        let err = a
            .transact(&req, to, Duration::from_secs(8))
            .await
            .unwrap_err();
        assert!(matches!(err, TransactionError::Timeout(..)));
        // T1, 2T1, 4T1, T2: the first send and 4 resends within 8 s.
        let mut buf = [0u8; 2048];
        let mut sent = 0;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(1), peer.recv_from(&mut buf)).await
        {
            sent += 1;
        }
        assert_eq!(sent, 5, "first send plus resends at 0.5, 1.5, 3.5, 7.5 s");
    }
}
