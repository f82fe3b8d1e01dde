//! The kiosk end to end, on real ALSA: a recorded question goes into the card's microphone
//! (ALSA's `file` plugin behind `plug` at 44.1 kHz stereo), the kiosk's front end and session
//! hear it, the three protocol servers answer, and the reply comes out of the card's speaker.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hark::config::Config;
use hark::listen::Models;
use hark::service::kiosk::{self, KioskEvent};
use hark::session::{AgentState, SessionEvent};

use crate::cascade::Concierge;
use crate::common;
use crate::support::card;

const CARD_RATE: u32 = 44_100;

type KioskRun = tokio::task::JoinHandle<
    Result<std::sync::Arc<hark::transport::local::AudioStats>, kiosk::KioskError>,
>;

/// Runs the kiosk on `toml` as `hark run` does: its events, the switch that stops it, and the
/// task that returns its audio counters.
fn start_kiosk(
    toml: &str,
) -> (
    tokio::sync::broadcast::Receiver<KioskEvent>,
    tokio::sync::oneshot::Sender<()>,
    KioskRun,
) {
    let config = Config::parse(toml, "hark.toml".as_ref()).unwrap();
    let models = Models::load(&config.listen, &common::store()).unwrap();
    let (events, rx) = tokio::sync::broadcast::channel(256);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        kiosk::run(&config, models, events, async {
            let _ = stopped.await;
        })
        .await
    });
    (rx, stop, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_asked_at_the_kiosk_microphone_is_answered_through_its_speaker() {
    let concierge = Concierge::start().await;
    let (mic_in, tap, spk) = (
        card::fifo("k-mic"),
        card::fifo("k-tap"),
        card::fifo("k-spk"),
    );
    card::define(
        "kiosk_mic",
        &card::plug_body(&card::capture_body(&mic_in, &tap), CARD_RATE, 2),
    );
    card::define(
        "kiosk_spk",
        &card::plug_body(&card::playback_body(&spk), CARD_RATE, 2),
    );
    // 1.3 s of a real recording, then silence (the mic keeps delivering silence).
    let question = common::speech("beckett.wav").resampled(CARD_RATE);
    let question = &question.samples[..(1.3 * CARD_RATE as f64) as usize];
    let _tap = card::Speaker::start(tap, CARD_RATE, 2, None);
    let _mic = card::Mic::start(mic_in, CARD_RATE, 2, card::interleave(question, 2));
    let speaker = card::Speaker::start(spk, CARD_RATE, 2, None);

    let toml = format!(
        "{}\n[audio]\ncapture = \"kiosk_mic\"\nplayback = \"kiosk_spk\"\nrate = 48000\n",
        concierge.toml
    );
    let (mut rx, stop, run) = start_kiosk(&toml);

    let (mut turn, mut spoke, mut seen) = (None, false, Vec::new());
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no answer within 30 s; the kiosk said {seen:?}"))
            .unwrap();
        seen.push(format!("{e:?}"));
        match e {
            KioskEvent::Session(SessionEvent::UserTurn { text }) => turn = Some(text),
            KioskEvent::Session(SessionEvent::AgentStateChanged {
                state: AgentState::Speaking,
            }) => spoke = true,
            KioskEvent::Session(SessionEvent::AgentStateChanged {
                state: AgentState::Idle,
            }) if spoke => break,
            _ => {}
        }
    }
    assert_eq!(turn.as_deref(), Some("Is the pool open?"));
    assert!(
        seen.iter().any(|e| e.contains("StartOfSpeech")),
        "the front end heard the speech: {seen:?}"
    );

    // The reply (0.75 s of tone) came out of the card's speaker: the session has handed it
    // all over; wait until the card has played one more second (past the ring and the FIFO),
    // then look for it.
    let played_enough = speaker.len() + CARD_RATE as usize * 2;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while speaker.len() < played_enough && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = card::first_channel(&speaker.heard(), 2);
    let loud = out.iter().filter(|s| s.abs() > 0.05).count() as f64 / CARD_RATE as f64;
    assert!(
        (0.3..0.8).contains(&loud),
        "the speaker should have played the 0.75 s reply once; {loud:.2} s of it was loud"
    );
    // The STT heard the recording through the card.
    let conn = concierge.deepgram.conn(0).await;
    let mut sent = Vec::new();
    for b in conn.binaries() {
        hark::audio::pcm::decode_pcm16(&b, &mut sent);
    }
    let rms = (sent.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / sent.len() as f64).sqrt();
    assert!(
        rms > 0.01,
        "the recorded speech reached the STT (rms {rms})"
    );

    stop.send(()).unwrap();
    let stats = run.await.unwrap().unwrap();
    assert_eq!(stats.capture.dropped.load(Ordering::Relaxed), 0);
    assert!(stats.playback.frames.load(Ordering::Relaxed) > 0);
}

/// When a conversation has ended (here the wake-up timer gave up on silence), the next one starts
/// when someone speaks, and its speech-to-text hears them whole: the audio from before the
/// session existed (the silence before the first word included) is handed to it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_words_that_wake_the_next_conversation_reach_its_speech_to_text_whole() {
    const RATE: u32 = 16_000;
    let concierge = Concierge::start().await;
    let (mic_in, tap, spk) = (
        card::fifo("w-mic"),
        card::fifo("w-tap"),
        card::fifo("w-spk"),
    );
    card::define("wake_mic", &card::capture_body(&mic_in, &tap));
    card::define("wake_spk", &card::playback_body(&spk));
    // 6 s of silence (the first session gives up after 1 s of it), then the question.
    let question = common::speech("beckett.wav").resampled(RATE);
    let question = &question.samples[..(1.3 * RATE as f64) as usize];
    let mut mic = vec![0.0f32; 6 * RATE as usize];
    mic.extend_from_slice(question);
    let _tap = card::Speaker::start(tap, RATE, 1, None);
    let _mic = card::Mic::start(mic_in, RATE, 1, card::interleave(&mic, 1));
    let _speaker = card::Speaker::start(spk, RATE, 1, None);

    let toml = format!(
        "{}\n[agent.wake_up]\nafter = 1.0\n\n[audio]\ncapture = \"wake_mic\"\nplayback = \"wake_spk\"\n",
        concierge.toml
    );
    let (mut rx, stop, run) = start_kiosk(&toml);
    let (mut started, mut ended, mut turn, mut seen) = (0, 0, None, Vec::new());
    while turn.is_none() {
        let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no second conversation within 30 s; the kiosk said {seen:?}")
            })
            .unwrap();
        seen.push(format!("{e:?}"));
        match e {
            KioskEvent::SessionStarted => started += 1,
            KioskEvent::SessionEnded => ended += 1,
            KioskEvent::Session(SessionEvent::UserTurn { text }) => turn = Some(text),
            _ => {}
        }
    }
    assert_eq!((started, ended), (2, 1), "{seen:?}");
    assert_eq!(turn.as_deref(), Some("Is the pool open?"));

    // What the second session's speech-to-text heard: quiet first, then the question, about as
    // much of it as was spoken. Without the pre-roll it would start mid-word, the first words
    // lost while the VAD decided and the session started.
    let conn = concierge.deepgram.conn(1).await;
    let mut heard = Vec::new();
    for b in conn.binaries() {
        hark::audio::pcm::decode_pcm16(&b, &mut heard);
    }
    let loud = |s: &[f32]| s.iter().filter(|x| x.abs() > 0.05).count() as f64 / RATE as f64;
    let first_loud = heard
        .iter()
        .position(|x| x.abs() > 0.05)
        .expect("speech reached the STT");
    assert!(
        first_loud as f64 / RATE as f64 >= 0.3,
        "the STT's audio starts {:.2} s before the first word; it should start in the silence before it",
        first_loud as f64 / RATE as f64
    );
    let (spoken, got) = (loud(question), loud(&heard));
    assert!(
        got >= 0.9 * spoken,
        "{got:.2} s of the question's {spoken:.2} s of loud speech reached the STT"
    );
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// The kiosk hears its own loudspeaker (an echo at -10 dB, 40 ms late, with a decaying tail):
/// the echo canceller keeps the agent's voice from interrupting itself, and a person who speaks
/// over the agent still interrupts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_interrupts_the_agent_over_its_own_echo_and_the_echo_alone_does_not() {
    const RATE: u32 = 16_000;
    // The agent's answer: 6 s of real speech as the voice's 24 kHz PCM16.
    let voice = common::speech("two_cities.wav").resampled(24_000);
    let pcm: Vec<u8> = voice.samples[..6 * 24_000]
        .iter()
        .flat_map(|s| (((s * 0.8).clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let concierge = Concierge::with_voice(pcm).await;
    let (mic, spk) = (card::fifo("r-mic"), card::fifo("r-spk"));
    card::define(
        "room_mic",
        &card::capture_body(&mic, std::path::Path::new("/dev/null")),
    );
    card::define("room_spk", &card::playback_body(&spk));
    let mut question = common::speech("beckett.wav").resampled(RATE).samples;
    question.truncate((1.3 * RATE as f64) as usize);
    let mut interruption = common::speech("endgame_nagg_nell.wav")
        .resampled(RATE)
        .samples;
    interruption.truncate(2 * RATE as usize);
    let after = Duration::from_millis(3_000);
    let room = card::Room::start(
        spk,
        mic,
        RATE,
        card::Acoustics {
            delay: Duration::from_millis(40),
            gain: 0.3,
        },
        question,
        interruption,
        after,
    );

    let toml = format!(
        "{}\n[audio]\ncapture = \"room_mic\"\nplayback = \"room_spk\"\n",
        concierge.toml
    );
    let (mut rx, stop, run) = start_kiosk(&toml);

    let mut seen = Vec::new();
    let interrupted_at = loop {
        let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no interruption within 30 s; the kiosk said {seen:?}"))
            .unwrap();
        seen.push(format!("{e:?}"));
        if let KioskEvent::Session(SessionEvent::Interrupted) = e {
            break std::time::Instant::now();
        }
    };
    let log = room.log();
    let spoke = log.speaker_started.expect("the agent's answer was played");
    let person = log
        .person_started
        .filter(|p| *p <= interrupted_at)
        .unwrap_or_else(|| {
            panic!(
                "interrupted {:.2} s into the answer, before the person spoke: the echo barged in; {seen:?}",
                interrupted_at.duration_since(spoke).as_secs_f64()
            )
        });
    let reaction = interrupted_at.duration_since(person);
    assert!(
        reaction < Duration::from_millis(1_500),
        "the person was heard over the echo only after {reaction:?}; {seen:?}"
    );
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// `hark console` is the same kiosk in a terminal: what was said, what the agent answered and
/// each turn's latency are printed, and Ctrl-C ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hark_console_shows_the_conversation_and_each_turns_latency() {
    let concierge = Concierge::start().await;
    let (mic_in, tap, spk) = (
        card::fifo("h-mic"),
        card::fifo("h-tap"),
        card::fifo("h-spk"),
    );
    card::define("console_mic", &card::capture_body(&mic_in, &tap));
    card::define("console_spk", &card::playback_body(&spk));
    let question = common::speech("beckett.wav").resampled(16_000);
    let question = &question.samples[..(1.3 * 16_000.0) as usize];
    let _tap = card::Speaker::start(tap, 16_000, 1, None);
    let _mic = card::Mic::start(mic_in, 16_000, 1, card::interleave(question, 1));
    let _speaker = card::Speaker::start(spk, 16_000, 1, None);
    let dir = std::env::temp_dir().join(format!("hark-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hark.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[audio]\ncapture = \"console_mic\"\nplayback = \"console_spk\"\n",
            concierge.toml
        ),
    )
    .unwrap();
    // ALSA_CONFIG_PATH (the card's file) is inherited from this process.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .args(["--config", config.to_str().unwrap(), "--models-dir"])
        .arg(common::root().join("models"))
        .arg("console")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let mut shown = Vec::new();
    while !shown.iter().any(|l: &String| l.contains("turn 1:")) {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the console showed no turn within 30 s: {shown:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the console ended early: {shown:?}"));
        shown.push(line);
    }
    let text = shown.join("\n");
    assert!(text.contains("-- conversation started"), "{text}");
    assert!(text.contains("you: Is the pool open?"), "{text}");
    assert!(
        text.contains("agent: The pool is open until ten tonight."),
        "{text}"
    );
    assert!(
        text.contains("(turn over)"),
        "the turn detector's verdict: {text}"
    );
    let turn = shown.iter().find(|l| l.contains("turn 1:")).unwrap();
    assert!(
        turn.contains("end of speech -> reply audio") && turn.contains(" ms"),
        "{turn}"
    );
    // Ctrl-C: the session closes, the audio counters are printed, the exit status is 0.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            rest.push(l);
        }
        rest
    })
    .await
    .expect("the console ends after Ctrl-C");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}; {rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("audio: capture 0 xruns")),
        "{rest:?}"
    );
}
