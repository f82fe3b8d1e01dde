//! The offline voice: the `espeak-ng` program, one run per sentence.
//!
//! It needs no network and no key, so the device can still speak (an apology, a "please try
//! again later") when every cloud service is unreachable; it is the natural last entry of a
//! fallback list. Each sentence is given on standard input (`--stdin`, so no text can be read
//! as an option) and the WAV that `--stdout` writes is decoded as it arrives: its header by
//! [`crate::audio::wav::read_piped_wav_header`], its samples as PCM16. espeak-ng always speaks
//! at 22050 Hz. Dropping the stream kills the running program.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{invalid, AudioSender, TtsSetupError, AUDIO_CHANNEL};
use crate::audio::pcm::Pcm16Decoder;
use crate::audio::wav::read_piped_wav_header;
use crate::providers::http::shorten;
use crate::providers::{AudioStream, ProviderError, Tts};

/// The rate espeak-ng speaks at.
pub const SAMPLE_RATE: u32 = 22_050;
/// The program looked up on `PATH` by default.
pub const DEFAULT_PROGRAM: &str = "espeak-ng";
/// The default voice.
pub const DEFAULT_VOICE: &str = "en";
/// espeak-ng's own default speed, in words per minute (what `speed = 1.0` means).
pub const DEFAULT_WPM: f64 = 175.0;
/// The speeds espeak-ng takes, in words per minute.
pub const WPM: std::ops::RangeInclusive<u32> = 80..=450;
/// Bytes read from the program at a time: about 90 ms of audio per chunk.
const READ: usize = 4096;
/// A WAV header longer than this is not what espeak-ng writes (44 bytes).
const MAX_HEADER: usize = 4096;

/// Which program to run, and how it should speak.
#[derive(Debug, Clone)]
pub struct EspeakConfig {
    /// The program (a name looked up on `PATH`, or a path).
    pub program: PathBuf,
    /// The voice (`en`, `en-us`, `de`, … as `espeak-ng --voices` lists them).
    pub voice: String,
    /// Speed relative to espeak-ng's default of 175 words per minute; none: 1.
    pub speed: Option<f64>,
    /// Longest wait for the program's next output (a hung program is killed).
    pub timeout: Duration,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        EspeakConfig {
            program: PathBuf::from(DEFAULT_PROGRAM),
            voice: DEFAULT_VOICE.to_owned(),
            speed: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// espeak-ng speech. Cheap to share.
#[derive(Debug, Clone)]
pub struct EspeakTts {
    program: PathBuf,
    voice: String,
    wpm: u32,
    timeout: Duration,
}

impl EspeakTts {
    /// Checks the config and builds the provider. The program is not looked for here: a device
    /// without it still starts, and says why when the voice is first needed.
    pub fn new(config: EspeakConfig) -> Result<EspeakTts, TtsSetupError> {
        let speed = config.speed.unwrap_or(1.0);
        let wpm = (DEFAULT_WPM * speed).round();
        if !wpm.is_finite() || !(*WPM.start() as f64..=*WPM.end() as f64).contains(&wpm) {
            return Err(invalid(
                "speed",
                format!(
                "speed must be between {:.2} and {:.2} ({} to {} words per minute), got {speed}",
                *WPM.start() as f64 / DEFAULT_WPM,
                *WPM.end() as f64 / DEFAULT_WPM,
                WPM.start(),
                WPM.end(),
            ),
            ));
        }
        let voice = config.voice.trim();
        if voice.is_empty() || voice.starts_with('-') || voice.contains(char::is_whitespace) {
            return Err(invalid(
                "voice",
                format!("invalid voice name {:?}", config.voice),
            ));
        }
        if config.program.as_os_str().is_empty() {
            return Err(invalid("program", "the program is empty"));
        }
        Ok(EspeakTts {
            program: config.program,
            voice: voice.to_owned(),
            wpm: wpm as u32,
            timeout: config.timeout,
        })
    }

    /// The arguments of one run: voice, speed, UTF-8 text on standard input, WAV on standard
    /// output.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--stdout".into(),
            "--stdin".into(),
            "-b".into(),
            "1".into(),
            "-v".into(),
            self.voice.clone(),
            "-s".into(),
            self.wpm.to_string(),
        ]
    }
}

/// Checks `config` as [`EspeakTts::new`] would.
pub fn check(config: &EspeakConfig) -> Result<(), TtsSetupError> {
    EspeakTts::new(config.clone()).map(drop)
}

#[async_trait]
impl Tts for EspeakTts {
    fn label(&self) -> &str {
        "espeak"
    }

    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    /// Runs `espeak-ng --version`: the program is there and starts.
    async fn ping(&self) -> Result<(), ProviderError> {
        let child = self.spawn(&["--version".to_owned()])?;
        let run = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(|e| ProviderError::Unavailable(format!("{}: {e}", self.program.display())))?;
        if run.status.success() {
            Ok(())
        } else {
            Err(ProviderError::Unavailable(format!(
                "{} --version failed ({})",
                self.program.display(),
                run.status
            )))
        }
    }

    async fn synthesize(&self, text: mpsc::Receiver<String>) -> Result<AudioStream, ProviderError> {
        let (tx, rx) = mpsc::channel(AUDIO_CHANNEL);
        tokio::spawn(reply(self.clone(), text, tx));
        Ok(rx)
    }
}

/// Speaks each sentence in turn until the text ends, a run fails, or the stream is dropped.
async fn reply(tts: EspeakTts, mut text: mpsc::Receiver<String>, out: AudioSender) {
    loop {
        let sentence = tokio::select! {
            _ = out.closed() => return,
            s = text.recv() => match s {
                Some(s) if s.trim().is_empty() => continue,
                Some(s) => s,
                None => return,
            },
        };
        let result = tokio::select! {
            // Dropping the run's future drops the child, which kills it.
            _ = out.closed() => {
                tracing::debug!(provider = "espeak", "TTS stream dropped by the caller; killing espeak-ng");
                return;
            }
            r = tts.speak(sentence.trim(), &out) => r,
        };
        if let Err(e) = result {
            tracing::warn!(provider = "espeak", error = %e, "TTS failed");
            let _ = out.send(Err(e)).await;
            return;
        }
    }
}

impl EspeakTts {
    /// The program with `args`, its three streams piped, killed when dropped.
    fn spawn(&self, args: &[String]) -> Result<tokio::process::Child, ProviderError> {
        Command::new(&self.program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ProviderError::Unavailable(format!(
                        "{} not found; install the Debian package espeak-ng",
                        self.program.display()
                    ))
                } else {
                    ProviderError::Unavailable(format!(
                        "cannot run {}: {e}",
                        self.program.display()
                    ))
                }
            })
    }

    /// One run of the program for `sentence`, its audio sent to `out` as it is written.
    async fn speak(&self, sentence: &str, out: &AudioSender) -> Result<(), ProviderError> {
        let mut child = self.spawn(&self.args())?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // The text is written and the complaints read beside the audio, so no pipe can fill
        // and block the program; both end with it (or are stopped when this run ends).
        let input = sentence.as_bytes().to_vec();
        let _writer = AbortOnDrop(tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            // Dropping stdin closes it: the end of the text.
        }));
        let mut errors = AbortOnDrop(tokio::spawn(async move {
            let mut text = String::new();
            let _ = (&mut stderr).take(4096).read_to_string(&mut text).await;
            text
        }));
        let read = async {
            let mut header = Vec::with_capacity(64);
            let mut buf = vec![0u8; READ];
            let mut pcm = Pcm16Decoder::default();
            let mut data_start: Option<usize> = None;
            loop {
                let n = tokio::time::timeout(self.timeout, stdout.read(&mut buf))
                    .await
                    .map_err(|_| ProviderError::Timeout)?
                    .map_err(|e| {
                        ProviderError::Unavailable(format!("reading espeak-ng's output: {e}"))
                    })?;
                if n == 0 {
                    return Ok(data_start.is_some());
                }
                let bytes = match data_start {
                    Some(_) => &buf[..n],
                    None => {
                        header.extend_from_slice(&buf[..n]);
                        match read_piped_wav_header(&header) {
                            Ok(None) if header.len() < MAX_HEADER => continue,
                            Ok(None) => {
                                return Err(ProviderError::Protocol(
                                    "espeak-ng's output has no WAV header".into(),
                                ))
                            }
                            Ok(Some(h)) if h.rate != SAMPLE_RATE => {
                                return Err(ProviderError::Protocol(format!(
                                    "espeak-ng wrote {} Hz audio, expected {SAMPLE_RATE} Hz",
                                    h.rate
                                )))
                            }
                            Ok(Some(h)) => {
                                data_start = Some(h.data_start);
                                &header[h.data_start..]
                            }
                            Err(e) => {
                                return Err(ProviderError::Protocol(format!(
                                    "espeak-ng's output: {e}"
                                )))
                            }
                        }
                    }
                };
                let mut samples = Vec::with_capacity(bytes.len() / 2 + 1);
                pcm.push(bytes, &mut samples);
                if !samples.is_empty() && out.send(Ok(samples)).await.is_err() {
                    return Ok(true); // cancelled; the caller notices
                }
            }
        };
        // On an error the child is dropped on return, which kills it.
        let spoke = read.await?;
        let status = tokio::time::timeout(self.timeout, child.wait())
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(|e| ProviderError::Unavailable(format!("waiting for espeak-ng: {e}")))?;
        if !status.success() || !spoke {
            let errors = tokio::time::timeout(self.timeout, &mut errors.0)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let why = shorten(errors.trim());
            let why = if why.is_empty() {
                "no audio".to_owned()
            } else {
                why
            };
            return Err(ProviderError::Unavailable(format!(
                "espeak-ng failed ({status}): {why}"
            )));
        }
        Ok(())
    }
}

/// A task stopped when its handle is dropped (a run that ends early leaves nothing behind).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_maps_to_words_per_minute_within_espeaks_range() {
        let tts = |speed| {
            EspeakTts::new(EspeakConfig {
                speed,
                ..EspeakConfig::default()
            })
        };
        assert_eq!(tts(None).unwrap().wpm, 175);
        assert_eq!(tts(Some(1.2)).unwrap().wpm, 210);
        assert!(tts(Some(0.3)).is_err());
        assert!(tts(Some(3.0)).is_err());
        assert!(tts(Some(f64::NAN)).is_err());
        assert_eq!(
            tts(None).unwrap().args(),
            ["--stdout", "--stdin", "-b", "1", "-v", "en", "-s", "175"]
        );
    }

    #[test]
    fn a_voice_cannot_smuggle_an_option() {
        for voice in ["-w/tmp/x", "en us", ""] {
            assert!(EspeakTts::new(EspeakConfig {
                voice: voice.into(),
                ..EspeakConfig::default()
            })
            .is_err());
        }
    }
}
