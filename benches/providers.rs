//! What the streaming providers cost hark, measured against local peers that speak each wire
//! protocol (never the services themselves):
//!
//! 1. Latency: from the moment a peer starts writing a message to the socket to the moment the
//!    provider hands what it decoded to the session (an STT transcript, TTS samples, a
//!    realtime model's audio). The bar: 2 ms.
//! 2. Memory: the heap the client side holds per open stream (N streams open at once, each past
//!    its first answer). The bar: 1 MB.
//!
//! The peers run on their own thread and runtime; only the client thread's allocations count.
//! `cargo bench --bench providers`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hark::providers::http::ApiKey;
use hark::providers::realtime::gemini::{GeminiLive, GeminiLiveConfig};
use hark::providers::realtime::openai::{OpenAiRealtime, OpenAiRealtimeConfig};
use hark::providers::realtime::{Realtime, RealtimeEvent, RealtimeModality, RealtimeSetup};
use hark::providers::stt::{DeepgramConfig, DeepgramStt};
use hark::providers::tts::{
    CartesiaConfig, CartesiaTts, ElevenLabsConfig, ElevenLabsTts, OpenAiTts, OpenAiTtsConfig,
};
use hark::providers::{AudioStream, Stt, SttEvent, Tts};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

// ---- live heap bytes of the thread that opted in -------------------------------------------

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

fn add_live(bytes: isize) {
    if counting() {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add_live(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add_live(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add_live(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add_live(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---- the peers -----------------------------------------------------------------------------

/// When a peer last started writing a measured message, in nanoseconds since [`epoch`].
static SENT_AT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Microseconds from the last measured write to now.
fn since_sent_us() -> f64 {
    (now_ns() - SENT_AT.load(Ordering::SeqCst)) as f64 / 1000.0
}

/// 20 ms of PCM16 at 24 kHz, base64 (what TTS and realtime peers send).
fn audio_b64() -> &'static str {
    static A: OnceLock<String> = OnceLock::new();
    A.get_or_init(|| {
        let pcm: Vec<u8> = (0..480i32)
            .flat_map(|i| (((i * 1237) % 20_000) as i16).to_le_bytes())
            .collect();
        base64::engine::general_purpose::STANDARD.encode(pcm)
    })
}

/// What a WebSocket peer answers one client message with; `true` marks a measured answer.
type Reply = fn(&Message) -> Vec<(String, bool)>;

fn text(m: &Message) -> Option<Value> {
    match m {
        Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
        Message::Binary(b) => serde_json::from_slice(b).ok(),
        _ => None,
    }
}

/// A WebSocket peer answering each client message with `reply`.
async fn ws_peer(reply: Reply) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    for (out, measured) in reply(&m) {
                        if measured {
                            SENT_AT.store(now_ns(), Ordering::SeqCst);
                        }
                        if ws.send(Message::text(out)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

/// Deepgram: every audio frame is answered with an interim `Results`.
fn deepgram_peer(m: &Message) -> Vec<(String, bool)> {
    if !matches!(m, Message::Binary(_)) {
        return vec![];
    }
    let results = json!({"type": "Results", "channel_index": [0, 1], "duration": 0.04,
        "start": 0.0, "is_final": false, "speech_final": false, "from_finalize": false,
        "channel": {"alternatives": [{"transcript": "hello there", "confidence": 0.9,
            "words": []}]}});
    vec![(results.to_string(), true)]
}

fn elevenlabs_peer(m: &Message) -> Vec<(String, bool)> {
    let Some(m) = text(m) else { return vec![] };
    match m["text"].as_str() {
        Some("") => vec![(json!({"isFinal": true}).to_string(), false)],
        Some(t) if !t.trim().is_empty() => vec![(
            json!({"audio": audio_b64(), "normalizedAlignment": {"chars": ["H"],
                   "charStartTimesMs": [0], "charsDurationsMs": [20]}})
            .to_string(),
            true,
        )],
        _ => vec![],
    }
}

fn cartesia_peer(m: &Message) -> Vec<(String, bool)> {
    let Some(m) = text(m) else { return vec![] };
    let ctx = m["context_id"].clone();
    let mut out = Vec::new();
    if m["transcript"].as_str().is_some_and(|t| !t.is_empty()) {
        let chunk = json!({"type": "chunk", "data": audio_b64(), "done": false,
            "status_code": 206, "step_time": 1.0, "context_id": ctx});
        out.push((chunk.to_string(), true));
    }
    if m["continue"] == json!(false) {
        let done = json!({"type": "done", "done": true, "status_code": 206, "context_id": ctx});
        out.push((done.to_string(), false));
    }
    out
}

/// OpenAI Realtime: `session.updated` for the configuration, an audio delta for each append.
fn openai_realtime_peer(m: &Message) -> Vec<(String, bool)> {
    let Some(m) = text(m) else { return vec![] };
    match m["type"].as_str() {
        Some("session.update") => {
            vec![(
                json!({"type": "session.updated", "session": {}}).to_string(),
                false,
            )]
        }
        Some("input_audio_buffer.append") => vec![(
            json!({"type": "response.output_audio.delta", "event_id": "ev",
                   "response_id": "resp_1", "item_id": "item_a", "output_index": 0,
                   "content_index": 0, "delta": audio_b64()})
            .to_string(),
            true,
        )],
        _ => vec![],
    }
}

/// Gemini Live: `setupComplete` for the setup, a model turn's audio for each input.
fn gemini_live_peer(m: &Message) -> Vec<(String, bool)> {
    let Some(m) = text(m) else { return vec![] };
    if m.get("setup").is_some() {
        return vec![(json!({"setupComplete": {}}).to_string(), false)];
    }
    if m.get("realtimeInput").is_some() {
        let audio = json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {
            "mimeType": "audio/pcm;rate=24000", "data": audio_b64()}}]}}});
        return vec![(audio.to_string(), true)];
    }
    vec![]
}

/// An OpenAI `audio/speech` peer: each request gets 20 ms of PCM in a chunked body, then
/// (after `hold`) the end.
async fn speech_peer(hold: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                loop {
                    let n = tcp.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if got.len() >= i + 4 + len {
                            break;
                        }
                    }
                }
                let audio = base64::engine::general_purpose::STANDARD
                    .decode(audio_b64())
                    .unwrap();
                let mut reply = b"HTTP/1.1 200 OK\r\ncontent-type: audio/pcm\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                reply.extend_from_slice(format!("{:x}\r\n", audio.len()).as_bytes());
                reply.extend_from_slice(&audio);
                reply.extend_from_slice(b"\r\n");
                SENT_AT.store(now_ns(), Ordering::SeqCst);
                if tcp.write_all(&reply).await.is_err() {
                    return;
                }
                tokio::time::sleep(hold).await;
                let _ = tcp.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    url
}

struct Peers {
    deepgram: String,
    elevenlabs: String,
    cartesia: String,
    speech: String,
    speech_held: String,
    openai_realtime: String,
    gemini_live: String,
}

fn start_peers() -> Peers {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let peers = Peers {
                deepgram: ws_peer(deepgram_peer).await,
                elevenlabs: ws_peer(elevenlabs_peer).await,
                cartesia: ws_peer(cartesia_peer).await,
                speech: speech_peer(Duration::ZERO).await,
                speech_held: speech_peer(Duration::from_secs(3600)).await,
                openai_realtime: ws_peer(openai_realtime_peer).await,
                gemini_live: ws_peer(gemini_live_peer).await,
            };
            tx.send(peers).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

// ---- one measured stream per kind ----------------------------------------------------------

/// A stream, open and past its first answer; kept to measure what it holds.
type Held = Box<dyn std::any::Any>;

/// Opens a stream, gets its first measured answer, and returns the latency and the stream.
trait Probe {
    async fn first(&self) -> (f64, Held);
}

struct SttProbe(DeepgramStt);

impl Probe for SttProbe {
    async fn first(&self) -> (f64, Held) {
        let mut s = self.0.connect().await.unwrap();
        let frame = [0.1f32; 640]; // 40 ms at 16 kHz
        s.input.push_audio(&frame);
        loop {
            match s.events.recv().await.unwrap() {
                SttEvent::Interim(_) => return (since_sent_us(), Box::new(s)),
                SttEvent::Error(e) => panic!("{e}"),
                _ => {}
            }
        }
    }
}

struct TtsProbe(Arc<dyn Tts>);

impl Probe for TtsProbe {
    async fn first(&self) -> (f64, Held) {
        let (tx, rx) = mpsc::channel(4);
        let mut stream: AudioStream = self.0.synthesize(rx).await.unwrap();
        tx.send("Hello there.".into()).await.unwrap();
        let chunk = stream.recv().await.unwrap().unwrap();
        let us = since_sent_us();
        assert!(!chunk.is_empty());
        (us, Box::new((tx, stream)))
    }
}

struct RealtimeProbe(Arc<dyn Realtime>);

impl Probe for RealtimeProbe {
    async fn first(&self) -> (f64, Held) {
        let setup = RealtimeSetup {
            instructions: "You are a hotel concierge.".into(),
            tools: vec![],
            modality: RealtimeModality::Audio,
            audio_input: true,
        };
        let mut s = self.0.connect(setup).await.unwrap();
        let samples = vec![0.1f32; self.0.input_rate() as usize / 10]; // 100 ms
        s.input.push_audio(&samples);
        loop {
            match s.events.recv().await.unwrap() {
                RealtimeEvent::Audio { .. } => return (since_sent_us(), Box::new(s)),
                RealtimeEvent::Error(e) => panic!("{e}"),
                _ => {}
            }
        }
    }
}

/// Latency over `runs` fresh streams (after a warm-up), then the heap held by `open` streams.
async fn measure(name: &str, latency: &impl Probe, memory: &impl Probe) {
    const RUNS: usize = 200;
    const OPEN: usize = 32;
    for _ in 0..20 {
        drop(latency.first().await);
    }
    let mut us = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (t, held) = latency.first().await;
        us.push(t);
        drop(held);
    }
    us.sort_by(f64::total_cmp);
    let pct = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:>16}: first message on the socket -> the session: median {:.0} µs, p99 {:.0} µs, max {:.0} µs ({RUNS} streams)",
        pct(0.5),
        pct(0.99),
        us[RUNS - 1]
    );

    // Let the closed streams' tasks finish before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = LIVE.load(Ordering::Relaxed);
    let mut open = Vec::with_capacity(OPEN);
    for _ in 0..OPEN {
        open.push(memory.first().await.1);
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "{name:>16}: {} KiB held per open stream ({OPEN} open, client side)",
        held / OPEN as isize / 1024
    );
    drop(open);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn main() {
    epoch();
    let peers = start_peers();
    let key = Some(ApiKey::new("bench-key"));

    // The client: the session's side, on a thread whose allocations are counted.
    COUNTING.with(|c| c.set(true));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deepgram = SttProbe(
            DeepgramStt::new(DeepgramConfig {
                url: format!("{}/v1/listen", peers.deepgram),
                api_key: key.clone(),
                ..DeepgramConfig::new()
            })
            .unwrap(),
        );
        measure("deepgram stt", &deepgram, &deepgram).await;

        let elevenlabs = TtsProbe(Arc::new(
            ElevenLabsTts::new(ElevenLabsConfig {
                base_url: format!("{}/v1", peers.elevenlabs),
                api_key: key.clone(),
                ..ElevenLabsConfig::new("voice")
            })
            .unwrap(),
        ));
        measure("elevenlabs tts", &elevenlabs, &elevenlabs).await;

        let cartesia = TtsProbe(Arc::new(
            CartesiaTts::new(CartesiaConfig {
                base_url: peers.cartesia.clone(),
                api_key: key.clone(),
                ..CartesiaConfig::new("voice")
            })
            .unwrap(),
        ));
        measure("cartesia tts", &cartesia, &cartesia).await;

        let speech = |base: &str| {
            TtsProbe(Arc::new(
                OpenAiTts::new(OpenAiTtsConfig {
                    base_url: base.to_owned(),
                    api_key: key.clone(),
                    ..OpenAiTtsConfig::new()
                })
                .unwrap(),
            ))
        };
        // The held peer never ends its body, so each measured stream stays open.
        measure(
            "openai tts",
            &speech(&peers.speech),
            &speech(&peers.speech_held),
        )
        .await;

        let openai = RealtimeProbe(Arc::new(
            OpenAiRealtime::new(OpenAiRealtimeConfig {
                url: format!("{}/v1/realtime", peers.openai_realtime),
                api_key: key.clone(),
                ..OpenAiRealtimeConfig::new("gpt-realtime")
            })
            .unwrap(),
        ));
        measure("openai realtime", &openai, &openai).await;

        let gemini = RealtimeProbe(Arc::new(
            GeminiLive::new(GeminiLiveConfig {
                url: format!("{}/ws/live", peers.gemini_live),
                api_key: key.clone(),
                ..GeminiLiveConfig::new("gemini-live-2.5-flash-preview")
            })
            .unwrap(),
        ));
        measure("gemini live", &gemini, &gemini).await;
    });
}
