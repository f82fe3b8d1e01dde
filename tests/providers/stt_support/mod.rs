//! A scriptable WebSocket protocol test server for the streaming speech-to-text tests, written
//! here on tokio-tungstenite's server side: each connection follows a script (answer the
//! upgrade or refuse it with an HTTP status, send text messages, wait for what the client
//! sends, close with a code, cut the connection, stop reading), and records the handshake and
//! every frame the client sent, with the (possibly paused) tokio clock's time.
//!
//! The scripts speak whichever service's protocol a test needs: the messages are the test's.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// One step of a connection's script.
#[derive(Clone)]
pub enum Step {
    /// Refuse the upgrade with this status, headers and body (only as the first step).
    Refuse {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Send a text message.
    Send(String),
    /// Wait until a text message containing this has arrived.
    AwaitText(&'static str),
    /// Wait until this many bytes of binary messages have arrived in all.
    AwaitAudio(usize),
    /// Wait until the test says go on.
    Wait(Arc<Notify>),
    /// Send a close frame with this code and reason, then read on until the client goes.
    Close(u16, String),
    /// Drop the connection without a close frame.
    Cut,
    /// Stop reading (nothing more is read, pings go unanswered); the socket stays open.
    StopReading,
}

/// What the client sent, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping,
    Close(Option<u16>),
    /// The connection ended (after a close, or cut).
    Eof,
}

/// The upgrade request as the server read it.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Path and query, e.g. `/v1/listen?model=nova-3&…`.
    pub uri: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    pub at: Instant,
}

/// One accepted connection.
pub struct Conn {
    pub handshake: Handshake,
    log: Mutex<Vec<(Instant, Frame)>>,
    changed: watch::Sender<u64>,
    /// When each `Send` step's message went out (real time, for latency figures).
    pub sent_at: Mutex<Vec<std::time::Instant>>,
}

impl Conn {
    /// Everything received so far.
    pub fn frames(&self) -> Vec<(Instant, Frame)> {
        self.log.lock().unwrap().clone()
    }

    /// The text messages received so far.
    pub fn texts(&self) -> Vec<String> {
        self.frames()
            .into_iter()
            .filter_map(|(_, f)| match f {
                Frame::Text(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// The binary messages received so far.
    pub fn binaries(&self) -> Vec<Vec<u8>> {
        self.frames()
            .into_iter()
            .filter_map(|(_, f)| match f {
                Frame::Binary(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Waits until `done` holds for what was received.
    pub async fn wait_until(&self, done: impl Fn(&[(Instant, Frame)]) -> bool) {
        let mut rx = self.changed.subscribe();
        let _ = rx.wait_for(|_| done(&self.log.lock().unwrap())).await;
    }

    /// Waits until the client has closed or dropped the connection.
    pub async fn wait_eof(&self) {
        self.wait_until(|f| f.iter().any(|(_, f)| *f == Frame::Eof))
            .await
    }

    fn push(&self, frame: Frame) {
        self.log.lock().unwrap().push((Instant::now(), frame));
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The server: the n-th connection gets the n-th script (the last one repeats).
pub struct WsTestServer {
    addr: std::net::SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    accepted: watch::Receiver<usize>,
}

impl WsTestServer {
    pub async fn start(scripts: Vec<Vec<Step>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (accepted_tx, accepted) = watch::channel(0usize);
        let (h, c) = (handshakes.clone(), conns.clone());
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let script = scripts[n.min(scripts.len() - 1)].clone();
                n += 1;
                let (h, c, accepted_tx) = (h.clone(), c.clone(), accepted_tx.clone());
                tokio::spawn(serve(tcp, script, h, c, accepted_tx));
            }
        });
        WsTestServer {
            addr,
            handshakes,
            conns,
            accepted,
        }
    }

    /// `ws://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Every upgrade request, refused ones included.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }

    /// The `i`-th accepted connection, once it exists.
    pub async fn conn(&self, i: usize) -> Arc<Conn> {
        let mut rx = self.accepted.clone();
        rx.wait_for(|n| *n > i).await.unwrap();
        self.conns.lock().unwrap()[i].clone()
    }
}

#[allow(clippy::result_large_err)]
async fn serve(
    tcp: tokio::net::TcpStream,
    script: Vec<Step>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    accepted: watch::Sender<usize>,
) {
    let refusal = match script.first() {
        Some(Step::Refuse {
            status,
            headers,
            body,
        }) => Some((*status, headers.clone(), body.clone())),
        _ => None,
    };
    let seen = Arc::new(Mutex::new(None));
    let seen_cb = seen.clone();
    let check = move |req: &Request, resp: Response| {
        let handshake = Handshake {
            uri: req.uri().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        v.to_str().unwrap_or("").to_owned(),
                    )
                })
                .collect(),
            at: Instant::now(),
        };
        *seen_cb.lock().unwrap() = Some(handshake);
        match &refusal {
            None => Ok(resp),
            Some((status, headers, body)) => {
                let mut r = http::Response::new(Some(body.clone()));
                *r.status_mut() = http::StatusCode::from_u16(*status).unwrap();
                for (k, v) in headers {
                    r.headers_mut()
                        .insert(*k, http::HeaderValue::from_str(v).unwrap());
                }
                Err(r)
            }
        }
    };
    let ws = tokio_tungstenite::accept_hdr_async(tcp, check).await;
    let handshake = seen.lock().unwrap().take();
    if let Some(h) = handshake.clone() {
        handshakes.lock().unwrap().push(h);
    }
    let Ok(ws) = ws else {
        return;
    };
    let (changed, _) = watch::channel(0);
    let conn = Arc::new(Conn {
        handshake: handshake.unwrap(),
        log: Mutex::new(Vec::new()),
        changed,
        sent_at: Mutex::new(Vec::new()),
    });
    {
        let mut all = conns.lock().unwrap();
        all.push(conn.clone());
        accepted.send_replace(all.len());
    }
    let (mut sink, mut stream) = ws.split();
    let reading = conn.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                Message::Text(t) => reading.push(Frame::Text(t.to_string())),
                Message::Binary(b) => reading.push(Frame::Binary(b.to_vec())),
                Message::Ping(_) => reading.push(Frame::Ping),
                Message::Close(f) => reading.push(Frame::Close(f.map(|f| u16::from(f.code)))),
                _ => {}
            }
        }
        reading.push(Frame::Eof);
    });
    for step in script {
        match step {
            Step::Refuse { .. } => unreachable!("a refused upgrade has no connection"),
            Step::Send(text) => {
                conn.sent_at.lock().unwrap().push(std::time::Instant::now());
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            Step::AwaitText(needle) => {
                conn.wait_until(|f| {
                    f.iter()
                        .any(|(_, f)| matches!(f, Frame::Text(t) if t.contains(needle)))
                })
                .await
            }
            Step::AwaitAudio(bytes) => {
                conn.wait_until(|f| {
                    f.iter()
                        .map(|(_, f)| match f {
                            Frame::Binary(b) => b.len(),
                            _ => 0,
                        })
                        .sum::<usize>()
                        >= bytes
                })
                .await
            }
            Step::Wait(go) => go.notified().await,
            Step::Close(code, reason) => {
                let frame = CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                break;
            }
            Step::Cut => {
                reader.abort();
                let _ = reader.await;
                conn.push(Frame::Eof);
                return; // dropping the sink drops the socket: no close frame
            }
            Step::StopReading => {
                reader.abort();
                // Hold the socket open, unread, for as long as the test runs.
                std::future::pending::<()>().await;
            }
        }
    }
    // Read on until the client goes; keep the sink so the socket stays open meanwhile.
    let _ = reader.await;
    drop(sink);
}
