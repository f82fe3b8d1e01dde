//! SIP over TCP (RFC 3261 §18): a listener on `[sip].bind`, outgoing connections opened on
//! demand, and one task per connection that frames the byte stream into messages by their
//! `Content-Length` (mandatory on a stream, §18.3) and answers RFC 5626 §4.4.1 keep-alive pings.
//!
//! SIP over TLS (§26.2.1) is the same with each connection encrypted ([`TlsSetup`]): a
//! connection hark opens is used only once the peer's certificate checked out for the name
//! hark resolved to reach it ([`TcpTransport::name`]) or its IP address, so a bad certificate
//! fails the request at once with the reason; a connection a peer opens gets hark's
//! certificate, and is refused when hark has none.
//!
//! Connections are keyed by the peer's address, so a response sent to the address a request
//! came from goes back on the connection it came on (§18.2.2) and the rest of the user agent
//! keeps addressing peers by `SocketAddr` whatever the transport.
//!
//! Everything a peer can make grow is bounded: at most [`MAX_CONNECTIONS`] connections, a
//! message at most [`MAX_MESSAGE`] bytes (a bigger `Content-Length`, or a head that never ends,
//! closes that connection only), a message must arrive within [`MESSAGE_DEADLINE`] of its first
//! byte (a slow sender is cut off), a connection idle for [`IDLE`] is closed, and what hark
//! writes to a peer that does not read is queued at most [`WRITE_QUEUE`] messages deep for at
//! most [`WRITE_TIMEOUT`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::message::MAX_MESSAGE;
use super::worth_logging;
use crate::config::sip::SipTransport;
use crate::config::SipConfig;
use crate::providers::tls::{self, TlsFileError};

/// Most connections open at once (accepted and opened together); more are refused.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection with no traffic this long is closed (unless someone watches it; see
/// [`TcpTransport::closed`]).
pub const IDLE: Duration = Duration::from_secs(120);
/// A message must be complete this long after its first byte arrived.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(30);
/// How often a watched connection is pinged (CRLFCRLF, RFC 5626 §4.4.1).
pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a pong may take once the peer has shown it answers pings (RFC 5626 §4.4.1: 10 s).
pub const PONG_WAIT: Duration = Duration::from_secs(10);
/// How long opening a connection (with its TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing one message may take before the connection is given up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for one connection's writer; a peer that does not read loses what is beyond.
pub const WRITE_QUEUE: usize = 32;
/// Messages read from all connections and not yet taken by the endpoint.
const INBOX: usize = 256;
/// Bytes read from a socket at a time.
const CHUNK: usize = 8192;
/// Host names remembered for checking certificates; the oldest are forgotten beyond this.
const NAMES: usize = 256;

/// What makes the transport SIP over TLS.
#[derive(Clone)]
pub struct TlsSetup {
    /// Checks the certificates of the peers hark connects to.
    pub client: Arc<rustls::ClientConfig>,
    /// Hark's certificate, for peers that connect to it; none refuses their connections.
    pub server: Option<Arc<rustls::ServerConfig>>,
}

impl TlsSetup {
    /// What `[sip]` asks for: `None` unless `transport = "tls"`; the certificate and CA files
    /// are read now, so a bad one fails at start (and in `hark check`) naming the file.
    pub fn from_config(config: &SipConfig) -> Result<Option<TlsSetup>, TlsFileError> {
        if config.transport != SipTransport::Tls {
            return Ok(None);
        }
        let client = tls::client_config_trusting(config.tls_ca.as_deref().map(Path::new))?;
        let server = match (&config.tls_certificate, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_config(Path::new(cert), Path::new(key))?),
            _ => None,
        };
        Ok(Some(TlsSetup { client, server }))
    }
}

/// [`TlsSetup`] ready for use.
struct Tls {
    connector: TlsConnector,
    acceptor: Option<TlsAcceptor>,
    /// The names hark resolved to reach addresses (for checking their certificates).
    names: Mutex<HashMap<SocketAddr, ServerName<'static>>>,
}

/// Why the byte stream of a connection cannot be framed; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No blank line ending the headers within the size cap.
    #[error("no end of headers within {0} bytes")]
    HeadTooLarge(usize),
    /// A message without `Content-Length`.
    #[error("no Content-Length (mandatory over a stream, RFC 3261 §18.3)")]
    NoContentLength,
    /// `Content-Length` not a number.
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// A message larger than the cap.
    #[error("Content-Length {0} makes the message larger than the {1}-byte cap")]
    TooLarge(usize, usize),
}

/// One unit of a SIP byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message (head and body), to parse.
    Message(Vec<u8>),
    /// A keep-alive ping (CRLFCRLF), to answer with a pong.
    Ping,
    /// A keep-alive pong (CRLF).
    Pong,
}

/// Splits a byte stream into messages by `Content-Length`; holds at most one message (plus one
/// read) at a time.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    cap: usize,
}

impl Framer {
    /// A framer refusing messages over `cap` bytes.
    pub fn new(cap: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            cap,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether part of a message is waiting for the rest.
    pub fn is_mid_message(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete frame, `None` when more bytes are needed, or why the stream is broken
    /// (after which the framer must not be used again).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.starts_with(b"\r\n") {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.drain(..4);
                return Ok(Some(Frame::Ping));
            }
            if self.buf.len() == 3 && self.buf[2] == b'\r' {
                return Ok(None); // perhaps a ping split after its third byte
            }
            self.buf.drain(..2);
            return Ok(Some(Frame::Pong));
        }
        let window = &self.buf[..self.buf.len().min(self.cap)];
        let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
            return if self.buf.len() >= self.cap {
                Err(FrameError::HeadTooLarge(self.cap))
            } else {
                Ok(None)
            };
        };
        let body = content_length(&self.buf[..end])?;
        let total = (end + 4)
            .checked_add(body)
            .filter(|t| *t <= self.cap)
            .ok_or(FrameError::TooLarge(body, self.cap))?;
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        Ok(Some(Frame::Message(msg)))
    }
}

/// The `Content-Length` (or compact `l`) of a message head.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    for line in head.split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            let value = value.trim();
            return value.parse().map_err(|_| {
                FrameError::BadContentLength(value.chars().take(40).collect::<String>())
            });
        }
    }
    Err(FrameError::NoContentLength)
}

/// Writes the transport's name into the top `Via` of a request (RFC 3261 §18.1.1: the
/// transport fills in the sent-protocol), so the layers above may write `SIP/2.0/UDP`
/// whatever carries the message. Responses are returned unchanged (their `Via` is the
/// requester's).
pub fn stamp_via(bytes: &[u8], protocol: &str) -> Option<Vec<u8>> {
    if bytes.starts_with(b"SIP/2.0 ") {
        return None;
    }
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut at = 0;
    while let Some(nl) = bytes[at..head_end].iter().position(|b| *b == b'\n') {
        let line = at + nl + 1;
        let colon = bytes[line..head_end].iter().position(|b| *b == b':')?;
        let name = String::from_utf8_lossy(&bytes[line..line + colon]);
        if name.trim().eq_ignore_ascii_case("via") || name.trim().eq_ignore_ascii_case("v") {
            let value = line + colon + 1;
            let skip = bytes[value..head_end]
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count();
            let proto = value + skip;
            let old = b"SIP/2.0/UDP";
            if bytes[proto..head_end]
                .get(..old.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(old))
            {
                let mut out = Vec::with_capacity(bytes.len() + protocol.len());
                out.extend_from_slice(&bytes[..proto]);
                out.extend_from_slice(b"SIP/2.0/");
                out.extend_from_slice(protocol.as_bytes());
                out.extend_from_slice(&bytes[proto + old.len()..]);
                return Some(out);
            }
            return None;
        }
        at = line;
    }
    None
}

/// Why a message could not be handed to a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    /// Opening the connection failed or took longer than [`CONNECT_TIMEOUT`].
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    /// [`MAX_CONNECTIONS`] are open.
    #[error("no connection to {0}: {MAX_CONNECTIONS} connections are open")]
    TooManyConnections(SocketAddr),
    /// The connection's write queue is full (the peer does not read) or it just closed.
    #[error("connection to {0} is not taking more: {1}")]
    Queue(SocketAddr, &'static str),
}

/// Counts of what the transport did and refused, for logs and tests.
#[derive(Debug, Default)]
pub struct TcpStats {
    /// Connections accepted from peers.
    pub accepted: AtomicU64,
    /// Connections opened to peers.
    pub opened: AtomicU64,
    /// Connections refused or not opened because [`MAX_CONNECTIONS`] were open.
    pub refused: AtomicU64,
    /// Connections closed because their stream could not be framed, or was too slow.
    pub broken: AtomicU64,
    /// Connections closed after [`IDLE`] without traffic, or a missing pong.
    pub idle_closed: AtomicU64,
    /// Keep-alive pings answered.
    pub pings: AtomicU64,
    /// TLS handshakes that failed (a certificate refused either way, a peer speaking plain
    /// SIP to the TLS port, no certificate of hark's to present).
    pub handshakes_failed: AtomicU64,
}

/// An open connection as the senders see it.
struct Conn {
    id: u64,
    out: mpsc::Sender<Vec<u8>>,
    closed: watch::Receiver<()>,
    watchers: Arc<AtomicUsize>,
    task: AbortHandle,
}

struct Inner {
    conns: Mutex<HashMap<SocketAddr, Conn>>,
    inbox: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    next_id: AtomicU64,
    stats: TcpStats,
    tls: Option<Tls>,
}

/// A connection before it is served.
enum Opened {
    Plain(TcpStream),
    /// Accepted; the TLS handshake is still to come.
    Accepting(TcpStream),
    /// Opened by hark, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

/// The TCP (or TLS) transport: a listener and the connections open now.
pub struct TcpTransport {
    inner: Arc<Inner>,
    local: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    acceptor: JoinHandle<()>,
}

impl TcpTransport {
    /// Listens on `addr` and starts accepting connections.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpTransport> {
        Self::start(addr, None).await
    }

    /// [`TcpTransport::bind`], with every connection over TLS.
    pub async fn bind_tls(addr: SocketAddr, tls: TlsSetup) -> std::io::Result<TcpTransport> {
        Self::start(addr, Some(tls)).await
    }

    async fn start(addr: SocketAddr, tls: Option<TlsSetup>) -> std::io::Result<TcpTransport> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(INBOX);
        let inner = Arc::new(Inner {
            conns: Mutex::new(HashMap::new()),
            inbox: tx,
            next_id: AtomicU64::new(0),
            stats: TcpStats::default(),
            tls: tls.map(|t| Tls {
                connector: TlsConnector::from(t.client),
                acceptor: t.server.map(TlsAcceptor::from),
                names: Mutex::new(HashMap::new()),
            }),
        });
        let acceptor = tokio::spawn(accept_loop(inner.clone(), listener));
        Ok(TcpTransport {
            inner,
            local,
            inbox: tokio::sync::Mutex::new(rx),
            acceptor,
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// Notes that `host` (a name from a configured address or a URI) resolved to `addr`, so a
    /// TLS connection to `addr` checks the certificate against that name (RFC 5922 §4);
    /// without a name it is checked against the IP address. Does nothing over plain TCP.
    pub fn name(&self, addr: SocketAddr, host: &str) {
        let Some(tls) = &self.inner.tls else { return };
        if host.parse::<std::net::IpAddr>().is_ok() {
            return;
        }
        let Ok(name) = ServerName::try_from(host.to_owned()) else {
            return;
        };
        let mut names = tls.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.len() >= NAMES && !names.contains_key(&addr) {
            names.clear();
        }
        names.insert(addr, name);
    }

    /// The next message any connection delivered, with the peer it came from.
    pub async fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        self.inbox.lock().await.recv().await
    }

    /// Queues `bytes` on the connection to `to`, opening one when there is none, and returns
    /// a receiver that changes (errors) when that connection closes.
    pub async fn send(
        &self,
        bytes: Vec<u8>,
        to: SocketAddr,
    ) -> Result<watch::Receiver<()>, TcpError> {
        let (out, closed) = match self.existing(to) {
            Some(c) => c,
            None => self.connect(to).await?,
        };
        match out.try_send(bytes) {
            Ok(()) => Ok(closed),
            Err(mpsc::error::TrySendError::Full(_)) => Err(TcpError::Queue(to, "write queue full")),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TcpError::Queue(to, "closed")),
        }
    }

    /// Waits until the connection to `to` closes (at once when there is none). While anyone
    /// waits, the connection is kept open by keep-alive pings instead of being closed when
    /// idle, and closed when a peer that answered pings before stops answering them.
    pub async fn closed(&self, to: SocketAddr) {
        let found = {
            let conns = self.inner.lock();
            conns
                .get(&to)
                .map(|c| (c.closed.clone(), c.watchers.clone()))
        };
        let Some((mut closed, watchers)) = found else {
            return;
        };
        watchers.fetch_add(1, Ordering::Relaxed);
        struct Unwatch(Arc<AtomicUsize>);
        impl Drop for Unwatch {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _unwatch = Unwatch(watchers);
        while closed.changed().await.is_ok() {}
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.inner.lock().len()
    }

    /// What the transport did and refused so far.
    pub fn stats(&self) -> &TcpStats {
        &self.inner.stats
    }

    fn existing(&self, to: SocketAddr) -> Option<(mpsc::Sender<Vec<u8>>, watch::Receiver<()>)> {
        self.inner
            .lock()
            .get(&to)
            .map(|c| (c.out.clone(), c.closed.clone()))
    }

    async fn connect(
        &self,
        to: SocketAddr,
    ) -> Result<(mpsc::Sender<Vec<u8>>, watch::Receiver<()>), TcpError> {
        if self.connections() >= MAX_CONNECTIONS {
            self.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(TcpError::TooManyConnections(to));
        }
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, self.open(to))
            .await
            .map_err(|_| {
                TcpError::Connect(to, format!("no answer within {CONNECT_TIMEOUT:?}"))
            })??;
        // Another task may have connected meanwhile: use the first connection.
        if let Some(c) = self.existing(to) {
            return Ok(c);
        }
        self.inner.stats.opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = %to, "sip: TCP connection opened");
        Inner::adopt(&self.inner, opened, to).ok_or(TcpError::TooManyConnections(to))
    }

    /// Connects to `to`, and over TLS checks its certificate.
    async fn open(&self, to: SocketAddr) -> Result<Opened, TcpError> {
        let stream = TcpStream::connect(to)
            .await
            .map_err(|e| TcpError::Connect(to, e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.inner.tls else {
            return Ok(Opened::Plain(stream));
        };
        let name = {
            let names = tls.names.lock().unwrap_or_else(|e| e.into_inner());
            names.get(&to).cloned()
        }
        .unwrap_or_else(|| ServerName::IpAddress(to.ip().into()));
        match tls.connector.connect(name.clone(), stream).await {
            Ok(s) => Ok(Opened::Tls(Box::new(TlsStream::Client(s)))),
            Err(e) => {
                self.inner
                    .stats
                    .handshakes_failed
                    .fetch_add(1, Ordering::Relaxed);
                Err(TcpError::Connect(
                    to,
                    format!("TLS with {}: {e}", name.to_str()),
                ))
            }
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.acceptor.abort();
        for (_, c) in self.inner.lock().drain() {
            c.task.abort();
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `stream` and starts serving it; `None` when the limit is reached.
    fn adopt(
        inner: &Arc<Inner>,
        stream: Opened,
        peer: SocketAddr,
    ) -> Option<(mpsc::Sender<Vec<u8>>, watch::Receiver<()>)> {
        let mut conns = inner.lock();
        if conns.len() >= MAX_CONNECTIONS {
            inner.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        let (closed_tx, closed_rx) = watch::channel(());
        let watchers = Arc::new(AtomicUsize::new(0));
        let conn = Connection {
            inner: inner.clone(),
            peer,
            id,
            out: out_rx,
            closed: closed_tx,
            watchers: watchers.clone(),
        };
        let task = tokio::spawn(conn.run(stream));
        conns.insert(
            peer,
            Conn {
                id,
                out: out_tx.clone(),
                closed: closed_rx.clone(),
                watchers,
                task: task.abort_handle(),
            },
        );
        Some((out_tx, closed_rx))
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "sip: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let opened = if inner.tls.is_some() {
            Opened::Accepting(stream)
        } else {
            Opened::Plain(stream)
        };
        if Inner::adopt(&inner, opened, peer).is_none() {
            let n = inner.stats.refused.load(Ordering::Relaxed);
            if worth_logging(n, 100) {
                tracing::warn!(%peer, count = n, "sip: TCP connection refused: {MAX_CONNECTIONS} are open");
            }
            continue;
        }
        inner.stats.accepted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "sip: TCP connection accepted");
    }
}

/// Why a connection ended (for the log).
enum End {
    Eof,
    Io(std::io::Error),
    Broken(String),
    Idle,
    NoPong,
    Dropped,
}

/// One connection's serving task and what it reports to.
struct Connection {
    inner: Arc<Inner>,
    peer: SocketAddr,
    id: u64,
    out: mpsc::Receiver<Vec<u8>>,
    closed: watch::Sender<()>,
    watchers: Arc<AtomicUsize>,
}

impl Connection {
    /// Completes the TLS handshake of an accepted connection, then serves it.
    async fn run(self, opened: Opened) {
        match opened {
            Opened::Plain(s) => self.serve(s).await,
            Opened::Tls(s) => self.serve(*s).await,
            Opened::Accepting(s) => {
                let acceptor = self.inner.tls.as_ref().and_then(|t| t.acceptor.clone());
                let accepted = match acceptor {
                    None => Err("hark has no tls_certificate to present".to_owned()),
                    Some(a) => match tokio::time::timeout(CONNECT_TIMEOUT, a.accept(s)).await {
                        Ok(Ok(s)) => Ok(s),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no handshake within {CONNECT_TIMEOUT:?}")),
                    },
                };
                match accepted {
                    Ok(s) => self.serve(TlsStream::Server(s)).await,
                    Err(why) => {
                        let n = self
                            .inner
                            .stats
                            .handshakes_failed
                            .fetch_add(1, Ordering::Relaxed)
                            + 1;
                        if worth_logging(n, 100) {
                            tracing::warn!(peer = %self.peer, count = n, "sip: TLS connection refused: {why}");
                        }
                        forget(&self.inner, self.peer, self.id);
                    }
                }
            }
        }
    }

    /// Reads, frames and writes the connection until it ends, then forgets it.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(self, mut stream: S) {
        let Connection {
            inner,
            peer,
            id,
            mut out,
            closed,
            watchers,
        } = self;
        let mut framer = Framer::new(MAX_MESSAGE);
        let mut chunk = vec![0u8; CHUNK];
        let mut last_traffic = Instant::now();
        let mut message_started: Option<Instant> = None;
        let mut ping_sent: Option<Instant> = None;
        let mut answers_pings = false;
        let end = 'conn: loop {
            let watched = watchers.load(Ordering::Relaxed) > 0;
            let mut wake = if watched {
                match ping_sent {
                    Some(at) if answers_pings => at + PONG_WAIT,
                    Some(at) => at + KEEPALIVE,
                    None => last_traffic + KEEPALIVE,
                }
            } else {
                last_traffic + IDLE
            };
            if let Some(at) = message_started {
                wake = wake.min(at + MESSAGE_DEADLINE);
            }
            tokio::select! {
                read = stream.read(&mut chunk) => {
                    let n = match read {
                        Ok(0) => break End::Eof,
                        Ok(n) => n,
                        Err(e) => break End::Io(e),
                    };
                    last_traffic = Instant::now();
                    framer.push(&chunk[..n]);
                    loop {
                        match framer.next_frame() {
                            Ok(Some(Frame::Message(m))) => {
                                message_started = None;
                                if inner.inbox.send((m, peer)).await.is_err() {
                                    break 'conn End::Dropped;
                                }
                            }
                            Ok(Some(Frame::Ping)) => {
                                inner.stats.pings.fetch_add(1, Ordering::Relaxed);
                                if let Err(e) = write(&mut stream, b"\r\n").await {
                                    break 'conn End::Io(e);
                                }
                            }
                            Ok(Some(Frame::Pong)) => {
                                if ping_sent.take().is_some() {
                                    answers_pings = true;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => break 'conn End::Broken(e.to_string()),
                        }
                    }
                    if framer.is_mid_message() {
                        message_started.get_or_insert(last_traffic);
                    }
                }
                bytes = out.recv() => {
                    let Some(bytes) = bytes else { break End::Dropped };
                    if let Err(e) = write(&mut stream, &bytes).await {
                        break End::Io(e);
                    }
                    last_traffic = Instant::now();
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if message_started.is_some_and(|at| now >= at + MESSAGE_DEADLINE) {
                        break End::Broken(format!("a message took longer than {MESSAGE_DEADLINE:?}"));
                    }
                    if !watched {
                        if now >= last_traffic + IDLE {
                            break End::Idle;
                        }
                    } else if let Some(at) = ping_sent {
                        if answers_pings && now >= at + PONG_WAIT {
                            break End::NoPong;
                        }
                        if now >= at + KEEPALIVE {
                            ping_sent = None; // a peer that never answers: just ping again
                        }
                    } else if now >= last_traffic + KEEPALIVE {
                        if let Err(e) = write(&mut stream, b"\r\n\r\n").await {
                            break End::Io(e);
                        }
                        ping_sent = Some(now);
                        last_traffic = now;
                    }
                }
            }
        };
        forget(&inner, peer, id);
        drop(closed);
        match end {
            End::Eof => tracing::debug!(%peer, "sip: TCP connection closed by the peer"),
            End::Io(e) => tracing::debug!(%peer, error = %e, "sip: TCP connection failed"),
            End::Broken(why) => {
                let n = inner.stats.broken.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n, 100) {
                    tracing::warn!(%peer, count = n, "sip: TCP connection closed: {why}");
                }
            }
            End::Idle | End::NoPong => {
                inner.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                let why = if matches!(end, End::Idle) {
                    "idle"
                } else {
                    "no keep-alive pong"
                };
                tracing::debug!(%peer, "sip: TCP connection closed: {why}");
            }
            End::Dropped => {}
        }
    }
}

/// Removes connection `id` from the open ones (unless a newer one to `peer` replaced it).
fn forget(inner: &Inner, peer: SocketAddr, id: u64) {
    let mut conns = inner.lock();
    if conns.get(&peer).is_some_and(|c| c.id == id) {
        conns.remove(&peer);
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    // A TLS stream may keep records back until flushed.
    let written = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, written).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer does not read",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str =
        "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK1\r\n\
        From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
        Content-Length: 4\r\n\r\nbody";

    fn frames(f: &mut Framer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(fr) = f.next_frame().unwrap() {
            out.push(fr);
        }
        out
    }

    #[test]
    fn a_message_split_anywhere_comes_out_whole_once_its_body_arrived() {
        let bytes = OPTIONS.as_bytes();
        for cut in 1..bytes.len() {
            let mut f = Framer::new(MAX_MESSAGE);
            f.push(&bytes[..cut]);
            assert_eq!(frames(&mut f), [], "cut at {cut}");
            f.push(&bytes[cut..]);
            assert_eq!(frames(&mut f), [Frame::Message(bytes.to_vec())]);
            assert!(!f.is_mid_message());
        }
    }

    #[test]
    fn back_to_back_messages_and_keep_alives_are_told_apart() {
        let mut f = Framer::new(MAX_MESSAGE);
        let compact = OPTIONS.replace("Content-Length: 4", "l:4");
        f.push(format!("\r\n\r\n{OPTIONS}\r\n{compact}").as_bytes());
        assert_eq!(
            frames(&mut f),
            [
                Frame::Ping,
                Frame::Message(OPTIONS.as_bytes().to_vec()),
                Frame::Pong,
                Frame::Message(compact.into_bytes()),
            ]
        );
    }

    #[test]
    fn a_stream_that_cannot_be_framed_is_an_error() {
        let missing = OPTIONS.replace("Content-Length: 4\r\n", "");
        let huge = OPTIONS.replace("Content-Length: 4", "Content-Length: 70000");
        let overflow = OPTIONS.replace("Content-Length: 4", "Content-Length: 18446744073709551615");
        let bad = OPTIONS.replace("Content-Length: 4", "Content-Length: four");
        for (text, want) in [
            (missing, FrameError::NoContentLength),
            (huge, FrameError::TooLarge(70_000, MAX_MESSAGE)),
            (overflow, FrameError::TooLarge(usize::MAX, MAX_MESSAGE)),
            (bad, FrameError::BadContentLength("four".into())),
        ] {
            let mut f = Framer::new(MAX_MESSAGE);
            f.push(text.as_bytes());
            assert_eq!(f.next_frame(), Err(want));
        }
        let mut f = Framer::new(1000);
        f.push(&[b'x'; 999]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(b"x");
        assert_eq!(f.next_frame(), Err(FrameError::HeadTooLarge(1000)));
    }

    #[test]
    fn the_transport_names_itself_in_the_top_via_of_requests_only() {
        let req = "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK2\r\n\
            Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK3\r\nContent-Length: 0\r\n\r\n";
        let out = String::from_utf8(stamp_via(req.as_bytes(), "TCP").unwrap()).unwrap();
        assert_eq!(
            out,
            req.replacen("SIP/2.0/UDP 10.0.0.1", "SIP/2.0/TCP 10.0.0.1", 1)
        );
        let compact = "ACK sip:a@b SIP/2.0\r\nv:SIP/2.0/UDP 10.0.0.1\r\nl: 0\r\n\r\n";
        let out = String::from_utf8(stamp_via(compact.as_bytes(), "TCP").unwrap()).unwrap();
        assert!(out.contains("v:SIP/2.0/TCP 10.0.0.1"), "{out}");
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(stamp_via(resp.as_bytes(), "TCP"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_chunks_never_panic_the_framer(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            cuts in proptest::collection::vec(0usize..3000, 0..8),
        ) {
            let mut f = Framer::new(1024);
            let mut at = 0;
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.push(data.len());
            for cut in cuts {
                let cut = cut.min(data.len()).max(at);
                f.push(&data[at..cut]);
                at = cut;
                loop {
                    match f.next_frame() {
                        Ok(Some(Frame::Message(m))) => proptest::prop_assert!(m.len() <= 1024),
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                proptest::prop_assert!(f.buf.len() <= 1024 + 3000);
            }
        }

        #[test]
        fn stamping_arbitrary_bytes_never_panics(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            let _ = stamp_via(&data, "TCP");
        }
    }

    async fn pair() -> (TcpTransport, TcpStream) {
        let t = TcpTransport::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let s = TcpStream::connect(t.local_addr()).await.unwrap();
        (t, s)
    }

    #[tokio::test]
    async fn a_ping_gets_a_pong_and_a_message_is_delivered_with_its_peer() {
        let (t, mut s) = pair().await;
        s.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut pong))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&pong, b"\r\n");
        s.write_all(OPTIONS.as_bytes()).await.unwrap();
        let (msg, from) = tokio::time::timeout(Duration::from_secs(5), t.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg, OPTIONS.as_bytes());
        assert_eq!(from, s.local_addr().unwrap());
        // A reply to that address goes back on this connection.
        t.send(b"SIP/2.0 200 OK\r\n\r\n".to_vec(), from)
            .await
            .unwrap();
        let mut back = [0u8; 18];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(t.connections(), 1);
    }

    #[tokio::test]
    async fn a_huge_content_length_closes_that_connection_only() {
        let (t, mut bad) = pair().await;
        let mut good = TcpStream::connect(t.local_addr()).await.unwrap();
        let huge = OPTIONS.replace("Content-Length: 4", "Content-Length: 999999");
        bad.write_all(huge.as_bytes()).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut buf))
            .await
            .expect("the connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        assert_eq!(t.stats().broken.load(Ordering::Relaxed), 1);
        good.write_all(OPTIONS.as_bytes()).await.unwrap();
        let (_, from) = tokio::time::timeout(Duration::from_secs(5), t.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, good.local_addr().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_sender_is_cut_off_and_an_idle_connection_closed() {
        let (t, mut slow) = pair().await;
        let idle = TcpStream::connect(t.local_addr()).await.unwrap();
        slow.write_all(&OPTIONS.as_bytes()[..20]).await.unwrap();
        let mut buf = [0u8; 16];
        let started = Instant::now();
        let n = slow.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        let took = started.elapsed();
        assert!(
            took >= MESSAGE_DEADLINE && took < MESSAGE_DEADLINE + Duration::from_secs(2),
            "{took:?}"
        );
        drop(idle);
        let mut idle = TcpStream::connect(t.local_addr()).await.unwrap();
        let started = Instant::now();
        let n = idle.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= IDLE, "{:?}", started.elapsed());
        assert_eq!(t.stats().broken.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn no_more_than_the_cap_of_connections_are_kept() {
        let t = TcpTransport::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 3 {
            held.push(TcpStream::connect(t.local_addr()).await.unwrap());
        }
        // Accepted in the order they connected: the last three are refused (closed at once).
        for s in &mut held[MAX_CONNECTIONS..] {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
                .await
                .expect("a refused connection is closed")
                .unwrap_or(0);
            assert_eq!(n, 0);
        }
        let mut b = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(100), held[0].read(&mut b))
                .await
                .is_err(),
            "an accepted connection stays open"
        );
        assert_eq!(t.connections(), MAX_CONNECTIONS);
        assert_eq!(t.stats().refused.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_watched_connection_reports_its_loss() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = server.local_addr().unwrap();
        let t = TcpTransport::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        t.send(OPTIONS.as_bytes().to_vec(), to).await.unwrap();
        let (mut peer, _) = server.accept().await.unwrap();
        let mut got = vec![0u8; OPTIONS.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, OPTIONS.as_bytes());
        let lost = t.closed(to);
        tokio::pin!(lost);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut lost)
                .await
                .is_err(),
            "not lost while open"
        );
        drop(peer);
        tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("the loss is reported");
        assert_eq!(t.connections(), 0);
    }

    /// A file of the test PKI in `tests/tls` (a CA, a certificate for 127.0.0.1 and
    /// `localhost` it signed, and an unrelated CA).
    fn pki(file: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/tls")
            .join(file)
    }

    async fn tls_transport(trusting: &str, with_certificate: bool) -> TcpTransport {
        let setup = TlsSetup {
            client: tls::client_config_trusting(Some(&pki(trusting))).unwrap(),
            server: with_certificate
                .then(|| tls::server_config(&pki("peer.pem"), &pki("peer.key")).unwrap()),
        };
        TcpTransport::bind_tls("127.0.0.1:0".parse().unwrap(), setup)
            .await
            .unwrap()
    }

    async fn next(t: &TcpTransport) -> (Vec<u8>, SocketAddr) {
        tokio::time::timeout(Duration::from_secs(5), t.recv())
            .await
            .expect("a message within 5 s")
            .unwrap()
    }

    const OK: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";

    #[tokio::test]
    async fn over_tls_a_request_and_its_response_share_the_connection_whose_certificate_checked_out(
    ) {
        let hark = tls_transport("ca.pem", false).await;
        let pbx = tls_transport("ca.pem", true).await;
        assert!(hark.is_tls());
        // Checked against the name hark resolved (in the certificate), then against the IP.
        hark.name(pbx.local_addr(), "localhost");
        hark.send(OPTIONS.as_bytes().to_vec(), pbx.local_addr())
            .await
            .unwrap();
        let (msg, from) = next(&pbx).await;
        assert_eq!(msg, OPTIONS.as_bytes());
        pbx.send(OK.to_vec(), from).await.unwrap();
        assert_eq!(next(&hark).await, (OK.to_vec(), pbx.local_addr()));
        assert_eq!((hark.connections(), pbx.connections()), (1, 1));
        assert_eq!(pbx.stats().accepted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_certificate_that_does_not_check_out_fails_the_send_at_once_saying_why() {
        let pbx = tls_transport("ca.pem", true).await;
        let to = pbx.local_addr();
        let cases = [
            // Signed by a CA hark was not told to trust.
            ("other-ca.pem", None, "invalid peer certificate"),
            // Trusted CA, but not issued for the name hark dialled.
            ("ca.pem", Some("pbx.example.com"), "not valid for name"),
        ];
        for (ca, name, why) in cases {
            let hark = tls_transport(ca, false).await;
            if let Some(n) = name {
                hark.name(to, n);
            }
            let err = hark
                .send(OPTIONS.as_bytes().to_vec(), to)
                .await
                .expect_err("refused");
            let text = err.to_string();
            assert!(
                matches!(err, TcpError::Connect(..))
                    && text.contains("TLS with")
                    && text.contains(why),
                "{ca} {name:?}: {text}"
            );
            assert_eq!(hark.connections(), 0);
            assert_eq!(hark.stats().handshakes_failed.load(Ordering::Relaxed), 1);
        }
    }

    #[tokio::test]
    async fn a_peer_speaking_plain_sip_to_the_tls_port_is_cut_off_and_tls_peers_are_still_served() {
        let pbx = tls_transport("ca.pem", true).await;
        let mut plain = TcpStream::connect(pbx.local_addr()).await.unwrap();
        plain.write_all(OPTIONS.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        // Whatever alert comes back, the connection ends and nothing was delivered.
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest))
            .await
            .expect("closed within 5 s");
        assert!(!rest.windows(3).any(|w| w == b"SIP"), "{rest:?}");
        let hark = tls_transport("ca.pem", false).await;
        hark.send(OPTIONS.as_bytes().to_vec(), pbx.local_addr())
            .await
            .unwrap();
        let (msg, _) = next(&pbx).await;
        assert_eq!(msg, OPTIONS.as_bytes());
        assert_eq!(pbx.stats().handshakes_failed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn without_a_certificate_hark_refuses_tls_connections_but_opens_its_own() {
        let hark = tls_transport("ca.pem", false).await;
        let caller = tls_transport("ca.pem", true).await;
        let err = caller
            .send(OPTIONS.as_bytes().to_vec(), hark.local_addr())
            .await
            .expect_err("no certificate to present");
        assert!(err.to_string().contains("TLS with 127.0.0.1"), "{err}");
        hark.send(OPTIONS.as_bytes().to_vec(), caller.local_addr())
            .await
            .unwrap();
        assert_eq!(next(&caller).await.0, OPTIONS.as_bytes());
    }
}
