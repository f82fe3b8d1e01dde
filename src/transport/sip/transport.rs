//! The endpoint's signalling transport (a UDP socket, or TCP connections: [`super::tcp`]) and
//! its client transactions (RFC 3261 §17.1.2): a request is sent, sent again at T1, 2·T1, ...
//! (capped at T2) until a response arrives, and given up on after 64·T1; responses are matched
//! to their request by the top `Via` branch. Over TCP nothing is sent again (Timers A and E do
//! not run on a reliable transport, §17.1.1.2, §17.1.2.2), the 64·T1 limit (Timers B and F)
//! still holds, and a transaction whose connection closes fails at once.
//!
//! This is the one place that knows which transport carries a message: the layers above
//! address peers by `SocketAddr` (over TCP, the connection a request came on is reused for its
//! responses) and write `Via: SIP/2.0/UDP`, which the TCP transport rewrites (§18.1.1).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::message::Message;
use super::tcp::{stamp_via, TcpTransport};

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

/// What carries the messages.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpTransport),
}

/// The signalling transport and the requests waiting for responses.
pub struct SipSocket {
    link: Link,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
    /// Sends that failed, for rate-limited logging.
    send_failures: AtomicU64,
}

impl SipSocket {
    /// Wraps a bound UDP socket.
    pub fn new(socket: UdpSocket) -> SipSocket {
        SipSocket {
            link: Link::Udp(socket),
            pending: Mutex::new(HashMap::new()),
            send_failures: AtomicU64::new(0),
        }
    }

    /// Wraps a listening TCP transport.
    pub fn tcp(transport: TcpTransport) -> SipSocket {
        SipSocket {
            link: Link::Tcp(transport),
            pending: Mutex::new(HashMap::new()),
            send_failures: AtomicU64::new(0),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.link {
            Link::Udp(s) => s.local_addr(),
            Link::Tcp(t) => Ok(t.local_addr()),
        }
    }

    /// The `transport` URI parameter for Contact (`;transport=tcp`), empty for UDP (the
    /// default, RFC 3261 §19.1.1).
    pub fn uri_param(&self) -> &'static str {
        match &self.link {
            Link::Udp(_) => "",
            Link::Tcp(t) if t.is_tls() => ";transport=tls",
            Link::Tcp(_) => ";transport=tcp",
        }
    }

    /// The port a peer listens on when its URI names none: 5061 over TLS, else 5060.
    pub fn default_port(&self) -> u16 {
        match &self.link {
            Link::Tcp(t) if t.is_tls() => 5061,
            _ => 5060,
        }
    }

    /// Notes that `host` resolved to `addr`, for checking its TLS certificate by name.
    pub fn name(&self, addr: SocketAddr, host: &str) {
        if let Link::Tcp(t) = &self.link {
            t.name(addr, host);
        }
    }

    /// The TCP transport, when that is what carries the messages (for its counters).
    pub fn tcp_transport(&self) -> Option<&TcpTransport> {
        match &self.link {
            Link::Udp(_) => None,
            Link::Tcp(t) => Some(t),
        }
    }

    /// Receives one message (a datagram, or a message framed from a TCP connection) into
    /// `buf`. A framed message is at most `MAX_MESSAGE` bytes; `buf` must hold one more.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match &self.link {
            Link::Udp(s) => s.recv_from(buf).await,
            Link::Tcp(t) => {
                let (msg, from) = t.recv().await.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "TCP transport stopped")
                })?;
                let n = msg.len().min(buf.len());
                buf[..n].copy_from_slice(&msg[..n]);
                Ok((n, from))
            }
        }
    }

    /// Waits until the connection to `to` closes; never for UDP (no connection to lose). A
    /// connection someone waits on is kept open with keep-alive pings (RFC 5626 §4.4.1).
    pub async fn connection_lost(&self, to: SocketAddr) {
        match &self.link {
            Link::Udp(_) => std::future::pending().await,
            Link::Tcp(t) => t.closed(to).await,
        }
    }

    /// Sends a message; a failure is logged, not returned (UDP gives no delivery promise
    /// anyway, and the transaction timers cover a lost datagram).
    pub async fn send(&self, msg: &Message, to: SocketAddr) {
        self.send_bytes(&msg.to_bytes(), to).await;
    }

    /// Sends bytes already written (a cached response).
    pub async fn send_bytes(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.send_raw(bytes, to).await {
            // Answers to a flood from unreachable sources would otherwise log one line each.
            let n = self.send_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if super::worth_logging(n, 100) {
                tracing::warn!(%to, error = %e, failures = n, "sip: send failed");
            }
        }
    }

    /// Sends `bytes`; over TCP, returns what reports the connection's loss.
    async fn send_raw(
        &self,
        bytes: &[u8],
        to: SocketAddr,
    ) -> Result<Option<watch::Receiver<()>>, String> {
        match &self.link {
            Link::Udp(s) => s
                .send_to(bytes, to)
                .await
                .map(|_| None)
                .map_err(|e| e.to_string()),
            Link::Tcp(t) => {
                let protocol = if t.is_tls() { "TLS" } else { "TCP" };
                let bytes = stamp_via(bytes, protocol).unwrap_or_else(|| bytes.to_vec());
                t.send(bytes, to).await.map(Some).map_err(|e| e.to_string())
            }
        }
    }

    /// Hands a response to the transaction waiting for it; false when none is (a stray or late
    /// response).
    pub fn deliver(&self, response: Message) -> bool {
        let Some(branch) = response.branch() else {
            return false;
        };
        let key = transaction_key(&branch, response.method());
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get(&key) {
            Some(tx) => tx.send(response).is_ok(),
            None => false,
        }
    }

    /// Takes the responses to the request sent with `branch` and `method` (RFC 3261 §17.1.3
    /// matches both: a CANCEL shares its INVITE's branch) until the returned value is dropped.
    pub fn expect(&self, branch: &str, method: &str) -> Responses<'_> {
        let key = transaction_key(branch, method);
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), tx);
        Responses {
            rx,
            _registered: Unregister { socket: self, key },
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
        let mut responses = self.expect(&request.branch().unwrap_or_default(), request.method());
        let rx = &mut responses.rx;
        let bytes = request.to_bytes();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut gap = T1;
        let mut provisional = false;
        let connection = self
            .send_raw(&bytes, to)
            .await
            .map_err(|e| TransactionError::Send(to, e))?;
        // Over TCP: no resends (Timers A/E), and the connection's loss ends the transaction.
        let reliable = connection.is_some();
        let lost = async move {
            match connection {
                Some(mut closed) => while closed.changed().await.is_ok() {},
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lost);
        loop {
            let wake = if reliable {
                deadline
            } else {
                (tokio::time::Instant::now() + gap).min(deadline)
            };
            let got = tokio::select! {
                biased;
                got = tokio::time::timeout_at(wake, rx.recv()) => got,
                () = &mut lost => return Err(TransactionError::Send(
                    to,
                    "the connection closed before a final response".into(),
                )),
            };
            match got {
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

/// The responses to one client transaction (see [`SipSocket::expect`]).
pub struct Responses<'a> {
    rx: mpsc::UnboundedReceiver<Message>,
    _registered: Unregister<'a>,
}

impl Responses<'_> {
    /// The next final response, if one comes within `limit`.
    pub async fn final_within(&mut self, limit: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(resp)) if resp.code().is_some_and(|c| c >= 200) => return Some(resp),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

fn transaction_key(branch: &str, method: &str) -> String {
    format!("{branch} {method}")
}

struct Unregister<'a> {
    socket: &'a SipSocket,
    key: String,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.socket
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
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

    #[tokio::test]
    async fn over_tcp_a_request_is_sent_once_and_fails_when_its_connection_closes() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = server.local_addr().unwrap();
        let a = SipSocket::tcp(
            TcpTransport::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
        assert_eq!(a.uri_param(), ";transport=tcp");
        let mut req = Message::request("OPTIONS", "sip:x@127.0.0.1");
        req.push("Via", format!("SIP/2.0/UDP 127.0.0.1;branch={}", branch()))
            .push("CSeq", "1 OPTIONS");
        // The peer reads for 1.6 s (UDP would have resent at 0.5 and 1.5 s), then hangs up.
        let peer = async {
            use tokio::io::AsyncReadExt;
            let (mut s, _) = server.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let until = tokio::time::Instant::now() + Duration::from_millis(1600);
            while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let started = tokio::time::Instant::now();
        let (result, got) = tokio::join!(a.transact(&req, to, T1 * 64), peer);
        let got = String::from_utf8(got).unwrap();
        assert_eq!(got.matches("OPTIONS sip:").count(), 1, "sent once: {got}");
        assert!(got.contains("Via: SIP/2.0/TCP 127.0.0.1;branch="), "{got}");
        assert!(
            matches!(result, Err(TransactionError::Send(..))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "failed when the connection closed, not at Timer F"
        );
    }
}
