//! `hark bench`: what each stage of the front end costs on this machine.
//!
//! Everything runs single-threaded on real speech. Figures are wall-clock per call (median of
//! many), CPU time from `getrusage`, and peak RSS of a child `hark listen`. Nothing here asserts
//! a target: the numbers are reported, and compared with the bars in the closing notes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audio::Audio;
use crate::config::ListenConfig;
use crate::listen::denoise::{self, Denoiser};
use crate::listen::echo::{EchoCanceller, EchoOptions};
use crate::listen::engine::{EngineChoice, EngineKind, LoadOptions};
use crate::listen::models::{ModelId, ModelStore};
use crate::listen::turn::SmartTurn;
use crate::listen::vad::{self, SileroVad};
use crate::listen::{self, ListenError, Models};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
}

/// Everything `hark bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds of speech the figures were measured on.
    pub audio_seconds: f64,
    /// The figures, in table order.
    pub figures: Vec<Figure>,
}

impl Report {
    fn add(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
        });
    }

    /// The table `hark bench` prints.
    pub fn render(&self) -> String {
        let mut s = format!(
            "hark bench on {:.1} s of speech (single thread)\n",
            self.audio_seconds
        );
        for f in &self.figures {
            s.push_str(&format!("  {:<52} {:>10.3} {}\n", f.name, f.value, f.unit));
        }
        s
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// This process's peak resident set (VmHWM), from /proc.
pub fn peak_rss_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
}

/// Process CPU time (user + system).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs every measurement on `audio` (16 kHz or any rate; resampled where a stage needs it).
pub fn run(
    store: &ModelStore,
    audio: &Audio,
    turn_iterations: usize,
) -> Result<Report, ListenError> {
    let mut report = Report {
        audio_seconds: audio.duration(),
        figures: Vec::new(),
    };
    let speech16 = audio.resampled(vad::SAMPLE_RATE);
    let ort = store.onnxruntime_library();
    let engines: Vec<EngineChoice> = [EngineChoice::Tract, EngineChoice::Onnxruntime]
        .into_iter()
        .filter(|e| *e == EngineChoice::Tract || (cfg!(feature = "onnxruntime") && ort.is_some()))
        .collect();
    let options = |choice| LoadOptions {
        choice,
        threads: 1,
        onnxruntime: ort.as_deref(),
    };

    // Silero: every window of the recording, state carried, as in a stream.
    let (vad_bytes, _) = store.load(ModelId::SileroVad)?;
    for &choice in &engines {
        let t = Instant::now();
        let mut vad = SileroVad::new(&vad_bytes, options(choice))?;
        let load = t.elapsed();
        let windows: Vec<&[f32]> = speech16.samples.chunks_exact(vad::WINDOW).collect();
        let mut times = Vec::with_capacity(windows.len() * 3);
        for _ in 0..3 {
            vad.reset();
            for w in &windows {
                let t = Instant::now();
                vad.probability(w)?;
                times.push(t.elapsed());
            }
        }
        let kind = vad.engine();
        report.add(
            format!("silero-vad ({kind}) per 32 ms window"),
            median(times).as_secs_f64() * 1e6,
            "us",
        );
        report.add(
            format!("silero-vad ({kind}) load + optimise"),
            load.as_secs_f64() * 1e3,
            "ms",
        );
    }

    // Smart Turn: features and model on 8 s cuts at several points of the recording.
    let (turn_bytes, _) = store.load(ModelId::SmartTurn)?;
    for &choice in &engines {
        let t = Instant::now();
        let mut turn = SmartTurn::new(&turn_bytes, options(choice), 0.5)?;
        let load = t.elapsed();
        let kind = turn.engine();
        let n = if kind == EngineKind::Tract {
            turn_iterations.div_ceil(4).max(3)
        } else {
            turn_iterations
        };
        let (mut feats, mut infer, mut total) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let end = speech16.samples.len() * (i % 8 + 1) / 8;
            let t = Instant::now();
            turn.predict(&speech16.samples[..end])?;
            total.push(t.elapsed());
            feats.push(turn.last_timing().features);
            infer.push(turn.last_timing().inference);
        }
        report.add(
            format!("smart-turn ({kind}) per inference, features + model"),
            median(total).as_secs_f64() * 1e3,
            "ms",
        );
        report.add(
            format!("smart-turn ({kind}) model only"),
            median(infer).as_secs_f64() * 1e3,
            "ms",
        );
        if choice == EngineChoice::Tract {
            report.add(
                "smart-turn log-mel features",
                median(feats).as_secs_f64() * 1e3,
                "ms",
            );
        }
        report.add(
            format!("smart-turn ({kind}) load + optimise"),
            load.as_secs_f64() * 1e3,
            "ms",
        );
    }

    // RNNoise per 10 ms frame at 48 kHz.
    let speech48 = audio.resampled(denoise::SAMPLE_RATE);
    let mut dn = Denoiser::new();
    let mut out = Vec::with_capacity(denoise::FRAME);
    let mut times = Vec::new();
    for frame in speech48.samples.chunks_exact(denoise::FRAME) {
        out.clear();
        let t = Instant::now();
        dn.process(frame, &mut out);
        times.push(t.elapsed());
    }
    report.add(
        "rnnoise per 10 ms frame",
        median(times).as_secs_f64() * 1e6,
        "us",
    );

    // Echo cancellation (AEC3) per 10 ms frame at the front end's 16 kHz and at a sound card's
    // 48 kHz: the speech is the far end, and the microphone hears it 40 ms later at half level,
    // so the filter adapts as it would in a room.
    for rate in [vad::SAMPLE_RATE, 48_000] {
        let options = EchoOptions {
            rate,
            ..EchoOptions::default()
        };
        let mut aec = EchoCanceller::new(&options).expect("16 and 48 kHz are AEC3 rates");
        let n = aec.frame_len();
        let delay = 4 * n;
        let speech = audio.resampled(rate);
        let far = &speech.samples;
        let mut near = vec![0.0f32; n];
        let mut times = Vec::with_capacity(far.len() / n);
        for (i, frame) in far.chunks_exact(n).enumerate() {
            for (j, s) in near.iter_mut().enumerate() {
                let k = (i * n + j).checked_sub(delay);
                *s = k.map_or(0.0, |k| 0.5 * far[k]);
            }
            let t = Instant::now();
            aec.render(frame);
            aec.capture(&mut near);
            times.push(t.elapsed());
        }
        let per_frame = median(times);
        let khz = rate / 1000;
        report.add(
            format!("aec per 10 ms frame ({khz} kHz), render + capture"),
            per_frame.as_secs_f64() * 1e6,
            "us",
        );
        report.add(
            format!("aec share of one core ({khz} kHz)"),
            per_frame.as_secs_f64() / 0.010 * 100.0,
            "%",
        );
    }

    // The whole front end, as configured by default (auto engines), in CPU time; then without
    // turn detection, to show what Smart Turn's share is.
    let config = ListenConfig::default();
    let mut no_turn = config.clone();
    no_turn.turn.enabled = false;
    for (label, config) in [("", &config), (" without turn detection", &no_turn)] {
        let mut models = Models::load(config, store)?;
        let before = cpu_time();
        let (events, _) = listen::listen_to(config, &mut models, audio, false)?;
        let cpu = cpu_time() - before;
        let engines = models
            .report()
            .iter()
            .map(|m| format!("{} {}", m.id.name(), m.engine))
            .collect::<Vec<_>>()
            .join(", ");
        let turns = events
            .iter()
            .filter(|e| matches!(e, listen::ListenEvent::Turn(_)))
            .count();
        report.add(
            format!("front end CPU per audio second{label} ({engines}; {turns} turn inferences)"),
            cpu.as_secs_f64() / audio.duration(),
            "s/s",
        );
    }
    Ok(report)
}

/// Launch-to-ready and peak RSS, measured on child processes of this binary: `hark check
/// --quiet` (start, load and verify every model, exit) and `hark listen FILE --json`, which
/// reports its own VmHWM (a parent's getrusage would count pages the child shared before exec).
pub fn run_processes(
    report: &mut Report,
    exe: &Path,
    common: &[String],
    file: Option<&PathBuf>,
) -> std::io::Result<()> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let status = Command::new(exe)
            .args(common)
            .args(["check", "--quiet"])
            .status()?;
        times.push(t.elapsed());
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "hark check failed: {status}"
            )));
        }
    }
    report.add(
        "launch to ready, every model loaded (hark check)",
        median(times).as_secs_f64() * 1e3,
        "ms",
    );
    let mut cmd = Command::new(exe);
    cmd.args(common).args(["--report-rss", "listen"]);
    if let Some(f) = file {
        cmd.arg(f);
    }
    let out = cmd
        .arg("--json")
        .stdout(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "hark listen failed: {}",
            out.status
        )));
    }
    let kb = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb=")?.parse::<f64>().ok())
        .ok_or_else(|| std::io::Error::other("hark listen did not report its peak RSS"))?;
    report.add("peak RSS of hark listen", kb / 1024.0, "MB");
    Ok(())
}
