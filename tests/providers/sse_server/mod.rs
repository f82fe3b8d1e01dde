//! Shared by the LLM provider tests: a scripted HTTP/1.1 server on a local socket that answers
//! each request with the steps of a script (an error reply, or an event stream sent chunk by
//! chunk with chunked transfer encoding, a cut, a stall), recording what it was sent. Each test
//! file makes it a protocol test server by scripting the events its API documents.
//!
//! Also: collecting a stream's events, capturing tracing output, and measuring the time from
//! an event leaving the server to the provider's event reaching the caller.
#![allow(dead_code)]

pub mod checks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hark::agent::context::{ChatContext, ChatRole, ImageContent};
use hark::agent::ToolSpec;
use hark::providers::{LlmEvent, LlmRequest, LlmStream, ProviderError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// One step of the server's answer to a request.
#[derive(Clone)]
pub enum Step {
    /// Status line, headers and a `Content-Length` JSON body, then close: an error reply.
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// `200` with `text/event-stream` and chunked encoding; the body follows in `Send`s.
    StartStream,
    /// One chunk of the chunked body (bytes as given).
    Send(String),
    /// Wait until the test says go on.
    Wait(Arc<Notify>),
    /// The terminating zero-length chunk, then close: a complete body.
    End,
    /// Close the socket now (mid-body: a cut connection).
    Cut,
    /// Send nothing more; report when the client closes the connection.
    Hold,
}

/// A request as the server read it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The path with its query string.
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    /// When it arrived, on tokio's clock (paused in the tests that wait).
    pub at: Instant,
}

/// The scripted server: the n-th request gets the n-th script (the last one repeats).
pub struct ScriptedHttpServer {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    /// When each `Send` step started writing, on the real clock.
    sent: Arc<Mutex<Vec<std::time::Instant>>>,
    /// One message each time a `Hold` sees the client close the connection.
    pub disconnects: mpsc::UnboundedReceiver<()>,
}

impl ScriptedHttpServer {
    pub async fn start(scripts: Vec<Vec<Step>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (disconnect_tx, disconnects) = mpsc::unbounded_channel();
        let (log, sent_log) = (received.clone(), sent.clone());
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let script = scripts[n.min(scripts.len() - 1)].clone();
                n += 1;
                let conn = Connection {
                    log: log.clone(),
                    sent: sent_log.clone(),
                    disconnected: disconnect_tx.clone(),
                };
                tokio::spawn(conn.serve(socket, script));
            }
        });
        ScriptedHttpServer {
            base_url,
            received,
            sent,
            disconnects,
        }
    }

    /// A server whose answer to each request is `route`'s script for it (for several sessions
    /// sharing one server, whose requests come in no fixed order).
    pub async fn routed(route: impl Fn(&Received) -> Vec<Step> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (disconnect_tx, disconnects) = mpsc::unbounded_channel();
        let (log, sent_log) = (received.clone(), sent.clone());
        let route = Arc::new(route);
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let conn = Connection {
                    log: log.clone(),
                    sent: sent_log.clone(),
                    disconnected: disconnect_tx.clone(),
                };
                let route = route.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    let script = route(&request);
                    conn.log.lock().unwrap().push(request);
                    conn.answer(socket, script).await;
                });
            }
        });
        ScriptedHttpServer {
            base_url,
            received,
            sent,
            disconnects,
        }
    }

    /// The requests so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// When each `Send` step so far started writing (real clock).
    pub fn sent_at(&self) -> Vec<std::time::Instant> {
        self.sent.lock().unwrap().clone()
    }
}

struct Connection {
    log: Arc<Mutex<Vec<Received>>>,
    sent: Arc<Mutex<Vec<std::time::Instant>>>,
    disconnected: mpsc::UnboundedSender<()>,
}

impl Connection {
    async fn serve(self, mut socket: TcpStream, script: Vec<Step>) {
        let Some(request) = read_request(&mut socket).await else {
            return;
        };
        self.log.lock().unwrap().push(request);
        self.answer(socket, script).await;
    }

    async fn answer(self, mut socket: TcpStream, script: Vec<Step>) {
        for step in script {
            match step {
                Step::Reply {
                    status,
                    headers,
                    body,
                } => {
                    let mut head = format!(
                        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        reason(status),
                        body.len()
                    );
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                    return;
                }
                Step::StartStream => {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
                    let _ = socket.write_all(head.as_bytes()).await;
                }
                Step::Send(data) => {
                    let chunk = format!("{:x}\r\n{data}\r\n", data.len());
                    self.sent.lock().unwrap().push(std::time::Instant::now());
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = socket.flush().await;
                }
                Step::Wait(go) => go.notified().await,
                Step::End => {
                    let _ = socket.write_all(b"0\r\n\r\n").await;
                    return;
                }
                Step::Cut => return,
                Step::Hold => {
                    let mut buf = [0u8; 64];
                    // Returns when the client closes (0 bytes) or resets the connection.
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                    let _ = self.disconnected.send(());
                    return;
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let (method, path) = (
        first.next().unwrap().to_owned(),
        first.next().unwrap().to_owned(),
    );
    let headers: BTreeMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    // A GET has no body and no length.
    let length: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some(Received {
        method,
        path,
        headers,
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        },
        at: Instant::now(),
    })
}

/// A request with instructions and one user turn, no tools.
pub fn hello() -> LlmRequest {
    let mut context = ChatContext::new();
    context.add_message(ChatRole::System, "Be brief.");
    context.add_message(ChatRole::User, "Hi!");
    LlmRequest {
        context,
        tools: vec![],
    }
}

/// The conversation the request-shape tests send: instructions (system and developer), the
/// agent's greeting first, a question with a JPEG photo and an image URL, the model's words
/// and two parallel calls (ids as given) of which the second failed, then the person again;
/// with a tool taking a city and one taking nothing.
pub fn weather_request(first_call: &str, second_call: &str) -> LlmRequest {
    let mut ctx = ChatContext::new();
    ctx.add_message(ChatRole::System, "You are a weather kiosk.");
    ctx.add_message(ChatRole::Developer, "Answer in one sentence.");
    ctx.add_message(ChatRole::Assistant, "Hello! Ask me about the weather.");
    ctx.add_message(
        ChatRole::User,
        vec![
            "Weather in Oslo and Bergen? Here is the sky:".into(),
            ImageContent::inline(vec![0xff, 0xd8, 0xff], "image/jpeg").into(),
            ImageContent::url("https://example.com/sky.png").into(),
        ],
    );
    ctx.add_message(ChatRole::Assistant, "Let me check.");
    ctx.add_function_call("weather", r#"{"city":"Oslo"}"#, Some(first_call.into()));
    ctx.add_function_call("weather", r#"{"city":"Bergen"}"#, Some(second_call.into()));
    ctx.add_function_output("weather", "rain, 8°C", first_call, false);
    ctx.add_function_output("weather", "weather service down", second_call, true);
    ctx.add_message(ChatRole::User, "And tomorrow?");
    let tools = vec![
        ToolSpec {
            name: "weather".into(),
            description: "Current weather in a city.".into(),
            parameters: serde_json::json!({"type": "object", "title": "WeatherArgs",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        },
        ToolSpec {
            name: "end_call".into(),
            description: "Hang up.".into(),
            parameters: Value::Null,
        },
    ];
    LlmRequest {
        context: ctx,
        tools,
    }
}

/// The one request the server received (a failure naming them all if there were more).
pub fn only_request(server: &ScriptedHttpServer) -> Received {
    let received = server.received();
    let [req] = &received[..] else {
        panic!("expected one request: {received:?}")
    };
    req.clone()
}

/// Everything the stream yields until it closes.
pub async fn collect(mut stream: LlmStream) -> Vec<Result<LlmEvent, ProviderError>> {
    let mut out = Vec::new();
    while let Some(e) = stream.recv().await {
        out.push(e);
    }
    out
}

/// A text event, as the tests expect them.
pub fn t(s: &str) -> Result<LlmEvent, ProviderError> {
    Ok(LlmEvent::Text(s.into()))
}

/// The steps of a stream paced by `go`: each event sent alone, the next only after the test
/// has received what the previous one became.
pub fn paced(events: impl IntoIterator<Item = String>, go: &Arc<Notify>) -> Vec<Step> {
    events
        .into_iter()
        .flat_map(|e| [Step::Send(e), Step::Wait(go.clone())])
        .collect()
}

/// For `n` paced events that each become one text event: the time from the server starting to
/// write an event to the caller receiving the text (socket, HTTP, SSE decoding, JSON, the
/// channel), printed as median, 90th percentile and maximum. Measures, never asserts.
pub async fn print_event_latency(
    label: &str,
    server: &ScriptedHttpServer,
    stream: &mut LlmStream,
    go: &Notify,
    n: usize,
) {
    let mut latencies = Vec::with_capacity(n);
    while latencies.len() < n {
        match stream.recv().await {
            Some(Ok(LlmEvent::Text(_))) => {
                let now = std::time::Instant::now();
                let sent = *server.sent_at().last().expect("an event was sent");
                latencies.push(now - sent);
                go.notify_one();
            }
            Some(Ok(_)) => {}
            other => panic!("the stream ended early: {other:?}"),
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((n - 1) as f64 * q).round() as usize];
    println!(
        "{label}: first SSE byte on the socket -> LlmEvent received, {n} events: median {:?}, p90 {:?}, max {:?}",
        at(0.5),
        at(0.9),
        latencies[n - 1]
    );
}

/// A duration that reads well in assertions about paused-clock waits.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
