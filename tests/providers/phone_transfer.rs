//! Calls hark places, and warm transfers, over SIP with real phones (baresip): hark calls a
//! phone and an answering machine picks up; a caller asks for a supervisor, is held while a
//! second phone is called and briefed, and ends up talking to that phone, or back with the
//! agent when the supervisor declines. The providers are this tree's protocol test servers;
//! one chat server answers every session by what each request asks (the sessions' requests
//! interleave in no fixed order).

use std::time::Duration;

use hark::config::Config;
use hark::service::phone::{self, PhoneEvent};
use hark::session::SessionEvent;
use hark::telephony::warm_transfer::{self, WarmTransferPhase as Phase};
use hark::transport::sip::HangupReason;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::cascade::chat_chunk;
use crate::common;
use crate::phone::{start_phone, until};
use crate::sse_server::{Received, ScriptedHttpServer, Step};
use crate::stt_support::{self, WsTestServer};
use crate::support::sip_peers::{require_peers, Baresip};
use crate::tts_openai::{self, SpeechTestServer};

const RATE: u32 = 8_000;

/// A streamed chat completion: `text`, or a call of `tool` with `arguments`.
fn completion(text: &str, tool: Option<(&str, Value)>) -> Vec<Step> {
    let mut steps = vec![
        Step::StartStream,
        Step::Send(chat_chunk(
            json!({"role": "assistant", "content": ""}),
            None,
        )),
    ];
    if !text.is_empty() {
        steps.push(Step::Send(chat_chunk(json!({ "content": text }), None)));
    }
    let finish = match tool {
        Some((name, arguments)) => {
            steps.push(Step::Send(chat_chunk(
                json!({"tool_calls": [{"index": 0, "id": format!("call_{name}"), "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()}}]}),
                None,
            )));
            "tool_calls"
        }
        None => "stop",
    };
    steps.push(Step::Send(chat_chunk(json!({}), Some(finish))));
    steps.push(Step::Send("data: [DONE]\n\n".into()));
    steps.push(Step::End);
    steps
}

fn content(m: &Value) -> String {
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// What each session's LLM says: the primary agent hands a caller who asks for a supervisor
/// to `warm_transfer`; the summariser summarises; the voicemail classifier says `voicemail`;
/// the briefing agent narrates, then takes "ready" as yes and "can't" as no.
fn chat(voicemail: &'static str) -> impl Fn(&Received) -> Vec<Step> + Send + Sync {
    move |r| {
        let messages = r.body["messages"].as_array().cloned().unwrap_or_default();
        let system = messages.first().map(content).unwrap_or_default();
        let last = messages.last().cloned().unwrap_or_default();
        let said = content(&last);
        if system.contains("You summarize phone calls") {
            completion("The caller was charged twice and wants a supervisor.", None)
        } else if system.contains("You classify the start") {
            completion(voicemail, None)
        } else if system.contains("CALL SUMMARY TO BRIEF SUPERVISOR") {
            if last["role"] != "user" || said.starts_with("Narrate") {
                completion("A caller was charged twice. Can you take the call?", None)
            } else if said.contains("ready") {
                completion("", Some(("done_briefing", json!({}))))
            } else if said.contains("can't") {
                completion(
                    "",
                    Some(("decline_transfer", json!({"reason": "in a meeting"}))),
                )
            } else {
                completion("Can you take the call?", None)
            }
        } else if last["role"] == "user" && said.contains("supervisor") {
            completion("", Some(("warm_transfer", json!({}))))
        } else {
            completion("Hello, this is the hotel.", None)
        }
    }
}

/// One Deepgram stream that hears speech and, when hark finalizes, says `transcript`.
fn hears(transcript: &str) -> Vec<stt_support::Step> {
    vec![
        stt_support::Step::AwaitAudio(16_000),
        stt_support::Step::AwaitText("Finalize"),
        stt_support::Step::Send(crate::stt_deepgram::results(transcript, true, true, true)),
    ]
}

/// The protocol servers and the config sections pointing at them (and `extra`).
struct Servers {
    _deepgram: WsTestServer,
    llm: ScriptedHttpServer,
    _speech: SpeechTestServer,
    toml: String,
}

async fn servers(
    streams: Vec<Vec<stt_support::Step>>,
    voicemail: &'static str,
    extra: &str,
) -> Servers {
    let deepgram = WsTestServer::start(streams).await;
    let llm = ScriptedHttpServer::routed(chat(voicemail)).await;
    // Every utterance: 0.75 s of a 191 Hz tone (24 kHz PCM16).
    let tone: Vec<u8> = (0..18_000)
        .flat_map(|i| ((((i as f32) * 0.05).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    let speech = SpeechTestServer::start(
        vec![],
        vec![
            tts_openai::Step::Start("audio/pcm"),
            tts_openai::Step::Send(tone),
            tts_openai::Step::End,
        ],
    )
    .await;
    let toml = format!(
        r#"
[agent]
instructions = "You are the hotel's concierge."
{extra}

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
    Servers {
        _deepgram: deepgram,
        llm,
        _speech: speech,
        toml,
    }
}

/// `speech` (the first 1.3 s of a real recording) after `before` seconds of silence, then
/// silence until `tone_at`, then a `freq` tone for 30 s: the tone marks audio that only a
/// joined call can carry.
fn microphone(before: f64, tone_at: f64, freq: f32) -> hark::audio::Audio {
    let speech = common::speech("beckett.wav").resampled(RATE);
    let mut samples = vec![0.0f32; (before * RATE as f64) as usize];
    samples.extend_from_slice(&speech.samples[..(1.3 * RATE as f64) as usize]);
    samples.resize((tone_at * RATE as f64) as usize, 0.0);
    let n = samples.len();
    samples.extend(
        (0..30 * RATE as usize).map(|i| {
            0.3 * (2.0 * std::f32::consts::PI * freq * (n + i) as f32 / RATE as f32).sin()
        }),
    );
    hark::audio::Audio {
        rate: RATE,
        samples,
    }
}

/// Seconds of `audio` in which a `freq` tone is clearly present (20 ms blocks whose
/// amplitude at `freq` is over 0.05).
fn tone_seconds(audio: &hark::audio::Audio, freq: f32) -> f64 {
    let block = audio.rate as usize / 50;
    let w = 2.0 * std::f64::consts::PI * f64::from(freq) / f64::from(audio.rate);
    let loud = audio
        .samples
        .chunks_exact(block)
        .enumerate()
        .filter(|(k, b)| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, s) in b.iter().enumerate() {
                let t = (k * block + i) as f64 * w;
                re += f64::from(*s) * t.cos();
                im += f64::from(*s) * t.sin();
            }
            2.0 * (re * re + im * im).sqrt() / block as f64 > 0.05
        })
        .count();
    loud as f64 * 0.02
}

/// The warm transfer's phases as the caller's session published them, until `last`, and
/// every event seen meanwhile.
async fn phases_until(
    rx: &mut broadcast::Receiver<PhoneEvent>,
    limit: Duration,
    last: &[Phase],
) -> (Vec<(Phase, Value)>, Vec<String>) {
    let mut phases = Vec::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let Ok(e) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            let log = crate::logs::logs().text();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            panic!(
                "the transfer did not end within {limit:?}: {phases:#?}\nhark's log, last lines first:\n{}",
                tail.join("\n")
            );
        };
        let e = e.unwrap();
        seen.push(format!("{e:?}"));
        if let PhoneEvent::Session {
            event: SessionEvent::WarmTransfer { phase, data },
            ..
        } = e
        {
            phases.push((phase, data));
            if last.contains(&phase) {
                return (phases, seen);
            }
        }
    }
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// hark calls baresip `sam` (auto-answering, saying something at 0.3 s) with an agent on the
/// protocol servers `s`: sam, hark's events, and the call's outcome.
async fn hark_calls_sam(
    s: &Servers,
) -> (
    Baresip,
    broadcast::Receiver<PhoneEvent>,
    tokio::task::JoinHandle<Result<HangupReason, phone::PhoneError>>,
) {
    let toml = format!("{}\n[sip]\nbind = \"127.0.0.1:0\"\n", s.toml);
    let config = Config::parse(&toml, "hark.toml".as_ref()).unwrap();
    let voice = microphone(0.3, 20.0, 1000.0);
    let phone = blocking(|| Baresip::start_with("sam", None, true, Some(&voice)));
    let target = format!("sip:sam@{}", phone.sip_addr);
    let (events, rx) = broadcast::channel(1024);
    let call = tokio::spawn(async move {
        phone::call(
            &config,
            common::store(),
            events,
            &target,
            Duration::from_secs(10),
            std::future::pending(),
        )
        .await
    });
    (phone, rx, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hark_calls_a_phone_and_hangs_up_when_an_answering_machine_picks_up() {
    require_peers();
    let s = servers(
        vec![hears(
            "Hi, you have reached Sam. Please leave a message after the tone.",
        )],
        "Yes",
        "[agent.voicemail]\nlisten = 1.0\naction = \"hang_up\"",
    )
    .await;
    let (mut phone, mut rx, call) = hark_calls_sam(&s).await;
    let mut verdict = None;
    let seen = until(&mut rx, Duration::from_secs(30), |e| match e {
        PhoneEvent::Session {
            event: SessionEvent::Voicemail { detected },
            ..
        } => {
            verdict = Some(*detected);
            false
        }
        PhoneEvent::CallEnded { .. } => true,
        _ => false,
    })
    .await;
    assert_eq!(verdict, Some(true), "{seen:#?}");
    assert_eq!(call.await.unwrap().unwrap(), HangupReason::Local);
    blocking(|| phone.wait_event(&["CALL_CLOSED"], Duration::from_secs(10)));
    let asked = s
        .llm
        .received()
        .iter()
        .any(|r| r.body.to_string().contains("Hi, you have reached Sam."));
    assert!(asked, "the classifier was given what the callee said");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_person_answers_hark_calls_on_with_the_agent_until_they_hang_up() {
    require_peers();
    let s = servers(
        vec![hears("Hello, who is this?")],
        "No",
        "[agent.voicemail]\nlisten = 1.0",
    )
    .await;
    let (mut phone, mut rx, call) = hark_calls_sam(&s).await;
    let (mut verdict, mut answered) = (None, false);
    until(&mut rx, Duration::from_secs(30), |e| match e {
        PhoneEvent::Session {
            event: SessionEvent::Voicemail { detected },
            ..
        } => {
            verdict = Some(*detected);
            answered && verdict.is_some()
        }
        PhoneEvent::Session {
            event: SessionEvent::AgentText { text },
            ..
        } => {
            answered |= text.contains("this is the hotel");
            answered && verdict.is_some()
        }
        PhoneEvent::CallEnded { .. } => panic!("the call ended early"),
        _ => false,
    })
    .await;
    assert_eq!(verdict, Some(false));
    blocking(|| phone.command("hangup", ""));
    assert_eq!(call.await.unwrap().unwrap(), HangupReason::Remote);
}

/// A caller, hark, and a supervisor's phone: the caller asks for a supervisor, and the
/// supervisor answers the briefing with `reply`.
struct Transfer {
    caller: Baresip,
    supervisor: Baresip,
    rx: broadcast::Receiver<PhoneEvent>,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<Result<(), phone::PhoneError>>,
    _servers: Servers,
}

async fn transfer(reply: &str) -> Transfer {
    require_peers();
    crate::logs::logs();
    // The supervisor speaks at 2.5 s (the briefing is under way), then sends a 1 kHz tone;
    // the caller asks at 0.5 s, then sends a 1.5 kHz tone from 6 s (muted until the switch).
    let supervisor =
        blocking(|| Baresip::start_with("boss", None, true, Some(&microphone(2.5, 7.0, 1000.0))));
    let extra = format!(
        "builtin_tools = [\"warm_transfer\"]\n[agent.warm_transfer]\ndestination = \"sip:boss@{}\"\nsupervisor_join_timeout = 10.0\nbriefing_timeout = 20.0",
        supervisor.sip_addr
    );
    let s = servers(
        vec![hears("I want to talk to a supervisor."), hears(reply)],
        "No",
        &extra,
    )
    .await;
    let toml = format!(
        "{}\n[sip]\nbind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n",
        s.toml
    );
    let (rx, stop, run, address) = start_phone(&toml).await;
    let mut caller = blocking(|| {
        Baresip::start_with("caller", None, false, Some(&microphone(0.5, 6.0, 1500.0)))
    });
    caller.command("dial", &format!("sip:agent@{address}"));
    Transfer {
        caller,
        supervisor,
        rx,
        stop,
        run,
        _servers: s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_transfer_holds_the_caller_briefs_the_supervisor_and_joins_them() {
    let mut t = transfer("Yes, I'm ready.").await;
    let (phases, _) = phases_until(
        &mut t.rx,
        Duration::from_secs(40),
        &[
            Phase::TransferComplete,
            Phase::TransferCancelled,
            Phase::TransferFailed,
        ],
    )
    .await;
    let names: Vec<Phase> = phases.iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        [
            Phase::Started,
            Phase::SummaryGenerating,
            Phase::SummaryReady,
            Phase::CallerOnHold,
            Phase::ConsultationRoomCreated,
            Phase::SupervisorDialed,
            Phase::SupervisorJoined,
            Phase::BriefingStarted,
            Phase::BriefingComplete,
            Phase::CallSwitched,
            Phase::TransferComplete,
        ],
        "{phases:#?}"
    );
    assert_eq!(
        phases[2].1["summary"],
        "The caller was charged twice and wants a supervisor."
    );

    // Joined: the caller's tone flows to the supervisor for a while;
    // then the caller hangs up, and hark hangs up the supervisor.
    tokio::time::sleep(Duration::from_secs(8)).await;
    blocking(|| t.caller.command("hangup", ""));
    let mut ended = Vec::new();
    until(&mut t.rx, Duration::from_secs(15), |e| {
        if let PhoneEvent::CallEnded { reason, .. } = e {
            ended.push(reason.clone());
        }
        ended.len() == 2
    })
    .await;
    assert!(ended.contains(&HangupReason::Remote), "{ended:?}");
    blocking(|| {
        t.caller
            .wait_event(&["CALL_CLOSED"], Duration::from_secs(10));
        t.supervisor
            .wait_event(&["CALL_CLOSED"], Duration::from_secs(10));
    });
    // The supervisor hears the caller: its recording holds the caller's tone. (The other way
    // is the same bridge mirrored; the caller's recording cannot show it: baresip 1.0 stops
    // recording a call after any re-INVITE, and the caller's had the hold and the resume.)
    let from_caller: f64 = t
        .supervisor
        .heard()
        .iter()
        .map(|a| tone_seconds(a, 1500.0))
        .sum();
    let agent_tone: f64 = t
        .supervisor
        .heard()
        .iter()
        .map(|a| tone_seconds(a, 191.0))
        .sum();
    eprintln!(
        "joined: the supervisor heard {from_caller:.1} s of the caller's tone and {agent_tone:.1} s of the briefing agent"
    );
    assert!(
        from_caller > 3.0,
        "the supervisor heard the caller after the switch"
    );
    assert!(agent_tone > 0.5, "the supervisor heard the briefing first");
    t.stop.send(()).unwrap();
    t.run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_who_declines_is_hung_up_and_the_caller_is_back_with_the_agent() {
    let mut t = transfer("No, I can't take it now.").await;
    let (phases, seen) = phases_until(
        &mut t.rx,
        Duration::from_secs(40),
        &[
            Phase::TransferComplete,
            Phase::TransferCancelled,
            Phase::TransferFailed,
        ],
    )
    .await;
    let (last, data) = phases.last().unwrap().clone();
    assert_eq!(last, Phase::TransferCancelled, "{phases:#?}");
    assert_eq!(data["reason"], "declined");
    // The caller hears the apology, the supervisor's phone is hung up, and the caller stays on
    // the line with the agent.
    let apology = warm_transfer::briefing_apology("declined");
    assert!(
        seen.iter().any(|e| e.contains(apology)),
        "the apology was said: {seen:#?}"
    );
    blocking(|| {
        t.supervisor
            .wait_event(&["CALL_CLOSED"], Duration::from_secs(10))
    });
    blocking(|| t.caller.command("hangup", ""));
    // The supervisor's call ended (hark hung up); the caller's lasted until they hung up.
    let mut ended = Vec::new();
    until(&mut t.rx, Duration::from_secs(10), |e| {
        if let PhoneEvent::CallEnded { reason, .. } = e {
            ended.push(reason.clone());
        }
        ended.contains(&HangupReason::Remote)
    })
    .await;
    assert!(
        !seen
            .iter()
            .any(|e| e.contains("CallEnded") && !e.contains("Local")),
        "only the supervisor's call ended during the transfer: {seen:#?}"
    );
    t.stop.send(()).unwrap();
    t.run.await.unwrap().unwrap();
}
