//! The offline voice: the real `espeak-ng` program (Debian package espeak-ng, installed by
//! scripts/setup.sh), and stand-in programs (shell scripts written here) for what espeak-ng
//! does not do on request: hang, or get killed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hark::providers::tts::{EspeakConfig, EspeakTts};
use hark::providers::{AudioStream, ProviderError, Tts};
use tokio::sync::mpsc;

fn text(sentences: &[&str]) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    for s in sentences {
        tx.try_send(s.to_string()).unwrap();
    }
    rx
}

async fn collect(mut stream: AudioStream) -> (Vec<f32>, Option<ProviderError>) {
    let mut samples = Vec::new();
    while let Some(chunk) = stream.recv().await {
        match chunk {
            Ok(c) => samples.extend(c),
            Err(e) => {
                assert!(stream.recv().await.is_none(), "nothing after the error");
                return (samples, Some(e));
            }
        }
    }
    (samples, None)
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

fn seconds(x: &[f32]) -> f32 {
    x.len() as f32 / 22_050.0
}

#[tokio::test]
async fn espeak_ng_speaks_a_sentence_at_22050_hz() {
    let tts = EspeakTts::new(EspeakConfig::default()).unwrap();
    assert_eq!((tts.label(), tts.sample_rate()), ("espeak", 22_050));
    let (samples, error) = collect(
        tts.synthesize(text(&["Sorry, I cannot reach the network right now."]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error, None);
    let (duration, level) = (seconds(&samples), rms(&samples));
    eprintln!("espeak-ng: {duration:.2} s, RMS {level:.3}");
    // Ten words at 175 words per minute: about three seconds.
    assert!((1.5..6.0).contains(&duration), "{duration} s");
    assert!(level > 0.02, "not silent: RMS {level}");
    assert!(samples.iter().all(|s| (-1.0..=1.0).contains(s)));
}

#[tokio::test]
async fn sentences_are_spoken_in_order_and_speed_shortens_them() {
    let normal = EspeakTts::new(EspeakConfig::default()).unwrap();
    let fast = EspeakTts::new(EspeakConfig {
        speed: Some(2.0),
        ..EspeakConfig::default()
    })
    .unwrap();
    let sentence = "The quick brown fox jumps over the lazy dog.";
    let (one, _) = collect(normal.synthesize(text(&[sentence])).await.unwrap()).await;
    let (two, e) = collect(
        normal
            .synthesize(text(&[sentence, "", sentence]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e, None);
    assert_eq!(two.len(), 2 * one.len(), "two runs of the same sentence");
    assert_eq!(&two[..one.len()], &one[..], "espeak-ng is deterministic");
    let (quick, _) = collect(fast.synthesize(text(&[sentence])).await.unwrap()).await;
    let ratio = quick.len() as f32 / one.len() as f32;
    assert!((0.4..0.75).contains(&ratio), "twice the speed: {ratio}");
}

#[tokio::test]
async fn text_that_looks_like_options_is_spoken_not_obeyed() {
    let tts = EspeakTts::new(EspeakConfig::default()).unwrap();
    let (samples, e) = collect(
        tts.synthesize(text(&["--help -w /tmp/out.wav"]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e, None);
    assert!(seconds(&samples) > 0.5 && rms(&samples) > 0.02);
}

#[tokio::test]
async fn a_missing_program_says_which_package_to_install() {
    let tts = EspeakTts::new(EspeakConfig {
        program: PathBuf::from("/nonexistent/espeak-ng"),
        ..EspeakConfig::default()
    })
    .unwrap();
    let (samples, e) = collect(tts.synthesize(text(&["Hello."])).await.unwrap()).await;
    assert!(samples.is_empty());
    assert_eq!(
        e,
        Some(ProviderError::Unavailable(
            "/nonexistent/espeak-ng not found; install the Debian package espeak-ng".into()
        ))
    );
}

#[tokio::test]
async fn an_unknown_voice_is_an_error_with_espeaks_reason() {
    let tts = EspeakTts::new(EspeakConfig {
        voice: "xx-nonexistent".into(),
        ..EspeakConfig::default()
    })
    .unwrap();
    let (samples, e) = collect(tts.synthesize(text(&["Hello."])).await.unwrap()).await;
    assert!(samples.is_empty());
    let Some(ProviderError::Unavailable(m)) = &e else {
        panic!("{e:?}")
    };
    assert!(m.starts_with("espeak-ng failed"), "{m}");
    assert!(m.contains("voice"), "espeak-ng's own words: {m}");
}

/// A stand-in program in a fresh directory: writes its PID to `pid`, the 44-byte WAV header
/// espeak-ng writes (placeholder lengths) and a few samples, then sleeps: a hung synthesiser.
fn hanging_program(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("hark-tts-espeak-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF\x24\xf0\xff\x7fWAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&22_050u32.to_le_bytes());
    wav.extend_from_slice(&44_100u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data\x00\xf0\xff\x7f");
    for s in [1000i16, -1000, 2000, -2000] {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(dir.join("start.wav"), wav).unwrap();
    let pid = dir.join("pid");
    let script = dir.join("fake-espeak");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {pid}\ncat > /dev/null\ncat {start}\nexec sleep 1000\n",
            pid = pid.display(),
            start = dir.join("start.wav").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, pid)
}

/// Whether the stand-in still runs (a program killed before it wrote its PID never ran on).
fn alive(pid: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(pid) else {
        return false;
    };
    // A killed child is reaped by tokio; its /proc entry goes with it.
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|stat| stat.split(' ').nth(2).is_none_or(|state| state != "Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn dropping_the_stream_kills_the_program() {
    let (program, pid) = hanging_program("drop");
    let tts = EspeakTts::new(EspeakConfig {
        program,
        timeout: Duration::from_secs(600),
        ..EspeakConfig::default()
    })
    .unwrap();
    let mut stream = tts.synthesize(text(&["Hello."])).await.unwrap();
    let first = stream.recv().await.unwrap().unwrap();
    assert_eq!(
        first,
        [
            1000.0 / 32768.0,
            -1000.0 / 32768.0,
            2000.0 / 32768.0,
            -2000.0 / 32768.0
        ]
    );
    assert!(alive(&pid), "the program runs while its audio is wanted");
    drop(stream);
    // The kill is asynchronous: wait for the process to go, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(&pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the program was not killed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_program_times_out_and_is_killed() {
    let (program, pid) = hanging_program("hang");
    let tts = EspeakTts::new(EspeakConfig {
        program,
        timeout: Duration::from_secs(5),
        ..EspeakConfig::default()
    })
    .unwrap();
    let start = tokio::time::Instant::now();
    let (_, e) = collect(tts.synthesize(text(&["Hello."])).await.unwrap()).await;
    assert_eq!(e, Some(ProviderError::Timeout));
    assert!(start.elapsed() >= Duration::from_secs(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(&pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the program was not killed"
        );
        std::thread::sleep(Duration::from_millis(10));
        tokio::task::yield_now().await;
    }
}
