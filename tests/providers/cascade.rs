//! A whole cascade session, end to end: real recorded speech goes through the on-device front
//! end (Silero VAD, Smart Turn) into an `AgentSession` whose providers are built from a
//! hark.toml, the way the binary builds them: Deepgram streaming STT, OpenAI Chat Completions
//! and OpenAI `audio/speech`, each served by this tree's protocol test server on a local
//! socket. The reply's audio must reach the transport, and every turn metric must be there.

use std::time::Duration;

use hark::agent::configured::ConfiguredAgent;
use hark::audio::pcm::decode_pcm16;
use hark::audio::resample::Resampler;
use hark::config::Config;
use hark::listen::{FrontEnd, Models};
use hark::session::{AgentSession, AgentState, SessionEvent, SessionOptions};
use serde_json::{json, Value};

use crate::common;
use crate::sse_server::{self, ScriptedHttpServer};
use crate::stt_support::{self, WsTestServer};
use crate::support::scripted::Sink;
use crate::tts_openai::{self, SpeechTestServer};

const ANSWER: &str = "The pool is open until ten tonight.";

/// The first `seconds` of a real recording at 16 kHz, then two seconds of silence so the VAD
/// hears the end of speech and the turn detector gets its pause.
fn utterance(seconds: f64) -> Vec<f32> {
    let audio = common::speech("beckett.wav");
    let mut at_16k = Vec::new();
    let mut r = Resampler::new(audio.rate, 16_000);
    r.process(&audio.samples, &mut at_16k);
    at_16k.truncate((seconds * 16_000.0) as usize);
    at_16k.resize(at_16k.len() + 32_000, 0.0);
    at_16k
}

fn rms(samples: &[f32]) -> f64 {
    (samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

pub(crate) fn chat_chunk(delta: Value, finish: Option<&str>) -> String {
    let c = json!({"id": "chatcmpl-e2e", "object": "chat.completion.chunk",
        "created": 1_700_000_000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

/// The three protocol servers of a concierge that answers "Is the pool open?", and the
/// hark.toml sections that point at them.
pub(crate) struct Concierge {
    pub deepgram: WsTestServer,
    pub llm: ScriptedHttpServer,
    pub speech: SpeechTestServer,
    pub toml: String,
}

impl Concierge {
    /// The servers, the voice answering with 0.75 s of a tone.
    pub(crate) async fn start() -> Concierge {
        // 0.75 s of a 24 kHz tone, for whatever sentence is asked.
        let tone: Vec<u8> = (0..18_000)
            .flat_map(|i| ((((i as f32) * 0.05).sin() * 8000.0) as i16).to_le_bytes())
            .collect();
        Self::with_voice(tone).await
    }

    /// The servers, the voice answering with `pcm` (24 kHz PCM16), in two chunks.
    pub(crate) async fn with_voice(pcm: Vec<u8>) -> Concierge {
        Self::with_voice_and_answer(
            pcm,
            vec![
                chat_chunk(json!({"content": "The pool is open"}), None),
                chat_chunk(json!({"content": " until ten tonight."}), None),
                chat_chunk(json!({}), Some("stop")),
            ],
        )
        .await
    }

    /// The servers, the concierge answering with 0.75 s of tone and ending the call with the
    /// built-in `end_call` tool once it has said so (the agent needs
    /// `builtin_tools = ["end_call"]`).
    pub(crate) async fn hanging_up() -> Concierge {
        let tone: Vec<u8> = (0..18_000)
            .flat_map(|i| ((((i as f32) * 0.05).sin() * 8000.0) as i16).to_le_bytes())
            .collect();
        Self::with_voice_and_answer(
            tone,
            vec![
                chat_chunk(json!({"content": "Goodbye!"}), None),
                chat_chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_end", "type": "function",
                        "function": {"name": "end_call", "arguments": "{\"reason\": \"done\"}"}}]}),
                    None,
                ),
                chat_chunk(json!({}), Some("tool_calls")),
            ],
        )
        .await
    }

    /// The servers, the concierge answering with 0.75 s of tone and pressing `digits` on the
    /// call with the built-in `send_dtmf` tool (the agent needs `builtin_tools = ["send_dtmf"]`
    /// and `max_tool_depth = 1`: the LLM is asked once).
    pub(crate) async fn pressing(digits: &str) -> Concierge {
        let tone: Vec<u8> = (0..18_000)
            .flat_map(|i| ((((i as f32) * 0.05).sin() * 8000.0) as i16).to_le_bytes())
            .collect();
        let arguments = json!({ "digits": digits }).to_string();
        Self::with_voice_and_answer(
            tone,
            vec![
                chat_chunk(json!({"content": "Pressing it now."}), None),
                chat_chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_keys", "type": "function",
                        "function": {"name": "send_dtmf", "arguments": arguments}}]}),
                    None,
                ),
                chat_chunk(json!({}), Some("tool_calls")),
            ],
        )
        .await
    }

    /// The servers, the LLM streaming `answer` (chat completion chunks after the role).
    async fn with_voice_and_answer(pcm: Vec<u8>, answer: Vec<String>) -> Concierge {
        // Deepgram: interim results while audio flows, the final when hark sends Finalize (local
        // VAD heard the end of speech).
        let deepgram = WsTestServer::start(vec![vec![
            stt_support::Step::AwaitAudio(16_000),
            stt_support::Step::Send(crate::stt_deepgram::results("is the", false, false, false)),
            stt_support::Step::AwaitText("Finalize"),
            stt_support::Step::Send(crate::stt_deepgram::results(
                "Is the pool open?",
                true,
                true,
                true,
            )),
        ]])
        .await;
        let llm = ScriptedHttpServer::start(vec![[
            sse_server::Step::StartStream,
            sse_server::Step::Send(chat_chunk(
                json!({"role": "assistant", "content": ""}),
                None,
            )),
        ]
        .into_iter()
        .chain(answer.into_iter().map(sse_server::Step::Send))
        .chain([
            sse_server::Step::Send("data: [DONE]\n\n".into()),
            sse_server::Step::End,
        ])
        .collect()])
        .await;
        let half = pcm.len() / 4 * 2;
        let speech = SpeechTestServer::start(
            vec![],
            vec![
                tts_openai::Step::Start("audio/pcm"),
                tts_openai::Step::Send(pcm[..half].to_vec()),
                tts_openai::Step::Send(pcm[half..].to_vec()),
                tts_openai::Step::End,
            ],
        )
        .await;

        let toml = format!(
            r#"
[agent]
instructions = "You are the hotel's concierge."

[stt]
provider = "deepgram"
base_url = "{dg}"
api_key = "dg-e2e-key"

[llm]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{llm}/v1"
api_key = "sk-e2e-key"

[tts]
provider = "openai"
base_url = "{tts}"
api_key = "sk-e2e-key"
"#,
            dg = deepgram.url("/v1/listen"),
            llm = llm.base_url,
            tts = speech.base_url,
        );
        Concierge {
            deepgram,
            llm,
            speech,
            toml,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_speech_through_the_front_end_and_three_protocol_servers_becomes_a_spoken_answer()
{
    let Concierge {
        deepgram,
        llm,
        speech,
        toml,
    } = Concierge::start().await;
    let config = Config::parse(&toml, "hark.toml".as_ref()).unwrap();
    let providers = config.providers().unwrap();
    let agent = ConfiguredAgent::connect(config.agent.as_ref().unwrap())
        .await
        .unwrap();
    let sink = Sink::default();
    let session = AgentSession::start(
        std::sync::Arc::new(agent),
        providers,
        SessionOptions::default(),
        Box::new(sink.clone()),
        hark::agent::ToolContext::default(),
    )
    .await
    .unwrap();
    let mut events = session.subscribe();

    // The device's side: 20 ms frames to the front end and to the session, as the capture
    // loop does, paced at twenty times real time.
    let audio = utterance(1.3);
    let mut models = Models::load(&config.listen, &common::store()).unwrap();
    let mut front_end = FrontEnd::new(&config.listen, &mut models, 16_000).unwrap();
    let input = session.input();
    let mut heard = Vec::new();
    let mut vad_events = Vec::new();
    for frame in audio.chunks(320) {
        input.push_audio(frame);
        front_end.push(frame, &mut heard).unwrap();
        for e in heard.drain(..) {
            vad_events.push(format!("{e:?}"));
            input.user(e.into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(front_end);

    let mut metrics = None;
    let mut transcript = None;
    let mut spoke = false;
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no answer within 20 s; the front end said {vad_events:?}, the session {seen:?}, STT got {:?}", deepgram.handshakes().len())
            })
            .unwrap();
        seen.push(format!("{e:?}"));
        match e {
            SessionEvent::UserTurn { text } => transcript = Some(text),
            SessionEvent::AgentStateChanged {
                state: AgentState::Speaking,
            } => spoke = true,
            SessionEvent::AgentStateChanged {
                state: AgentState::Idle,
            } if spoke => break,
            SessionEvent::TurnMetrics(m) => metrics = Some(m),
            _ => {}
        }
    }
    assert_eq!(transcript.as_deref(), Some("Is the pool open?"));

    // Deepgram heard the recording itself, as 16 kHz PCM16, then was asked to finalise.
    let conn = deepgram.conn(0).await;
    let mut sent = Vec::new();
    for b in conn.binaries() {
        assert!(
            !decode_pcm16(&b, &mut sent),
            "whole PCM16 samples per message"
        );
    }
    assert!(
        sent.len() >= 40_000,
        "{} samples reached the STT",
        sent.len()
    );
    let rms = rms(&sent[..40_000]);
    assert!(
        rms > 0.01,
        "the recorded speech reached the STT (rms {rms})"
    );
    let handshake = &deepgram.handshakes()[0];
    assert!(
        handshake.uri.contains("sample_rate=16000"),
        "{}",
        handshake.uri
    );
    assert!(
        handshake.uri.contains("encoding=linear16"),
        "{}",
        handshake.uri
    );
    assert!(conn.texts().iter().any(|t| t.contains("Finalize")));

    // The LLM got the agent's instructions and the user's words.
    let request = sse_server::only_request(&llm);
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["authorization"], "Bearer sk-e2e-key");
    let messages = request.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[0]["content"], "You are the hotel's concierge.");
    assert_eq!(messages.last().unwrap()["role"], "user");
    assert_eq!(messages.last().unwrap()["content"], "Is the pool open?");

    // The TTS was asked to say the answer, and its audio reached the transport: 0.75 s at
    // 24 kHz is 0.75 s at the session's 16 kHz.
    let said: Vec<String> = speech
        .received()
        .iter()
        .map(|r| r.body["input"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(said.concat().trim(), ANSWER);
    let per_request = 0.75;
    let voiced = sink.voiced_seconds();
    assert!(
        (voiced - per_request * said.len() as f64).abs() < 0.02,
        "{voiced} s of reply audio for {} requests",
        said.len()
    );

    let m = match metrics {
        Some(m) => m,
        None => loop {
            if let SessionEvent::TurnMetrics(m) = events.recv().await.unwrap() {
                break m;
            }
        },
    };
    for (name, v) in [
        ("user_speech_end", m.user_speech_end),
        ("stt_final", m.stt_final),
        ("eou_decision", m.eou_decision),
        ("llm_request", m.llm_request),
        ("llm_first_token", m.llm_first_token),
        ("tts_request", m.tts_request),
        ("tts_first_byte", m.tts_first_byte),
        ("first_sample_played", m.first_sample_played),
    ] {
        assert!(v.is_some(), "{name} missing: {m:?}");
    }
    assert!(m.eou_probability.is_some(), "Smart Turn ran: {m:?}");
    session.close().await;
}
