//! A sound card made of ALSA's own plugins, for machines without one.
//!
//! Each PCM is ALSA's `file` plugin over a `null` slave: what hark plays is written to a FIFO
//! that a [`Speaker`] thread reads, and what hark records is read from a FIFO that a [`Mic`]
//! thread writes. Those threads keep real time (one 10 ms chunk per 10 ms, against a clock,
//! as a card's crystal would), because the `null` slave has no clock of its own. Wrapping a
//! PCM in `plug` with a fixed slave rate makes ALSA convert, as a real card's plug device does.
//!
//! The definitions live in one asoundrc per test process (`ALSA_CONFIG_PATH`); ALSA reads it
//! again whenever it changes, so a test can make a device disappear and come back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Conf {
    dir: PathBuf,
    pcms: Mutex<BTreeMap<String, String>>,
}

fn conf() -> &'static Conf {
    static CONF: OnceLock<Conf> = OnceLock::new();
    CONF.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hark-card-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = Conf {
            dir,
            pcms: Mutex::new(BTreeMap::new()),
        };
        // Only this file: no system card, no pulse/pipewire plugins answering instead.
        std::env::set_var("ALSA_CONFIG_PATH", conf.dir.join("asoundrc"));
        write_conf(&conf, &BTreeMap::new());
        conf
    })
}

fn write_conf(conf: &Conf, pcms: &BTreeMap<String, String>) {
    let mut text = String::new();
    for (name, body) in pcms {
        text.push_str(&format!("pcm.{name} {{\n{body}\n}}\n"));
    }
    // A new inode each time, so ALSA sees the change even within one second.
    let tmp = conf.dir.join("asoundrc.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, conf.dir.join("asoundrc")).unwrap();
}

/// Defines (or redefines) `pcm.NAME` with `body`.
pub fn define(name: &str, body: &str) {
    let c = conf();
    let mut pcms = c.pcms.lock().unwrap();
    pcms.insert(name.into(), body.into());
    write_conf(c, &pcms);
}

/// Removes `pcm.NAME`: opening it fails from now on, as an unplugged card's does.
pub fn remove(name: &str) {
    let c = conf();
    let mut pcms = c.pcms.lock().unwrap();
    pcms.remove(name);
    write_conf(c, &pcms);
}

/// A path in the card's directory.
pub fn path(name: &str) -> PathBuf {
    conf().dir.join(name)
}

/// A FIFO in the card's directory.
pub fn fifo(name: &str) -> PathBuf {
    let path = conf().dir.join(name);
    let _ = std::fs::remove_file(&path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
    path
}

/// The `file`-over-`null` body of a playback PCM writing raw frames to `out`.
pub fn playback_body(out: &Path) -> String {
    format!(
        "type file\nslave.pcm {{ type null }}\nfile \"{}\"\nformat \"raw\"\nhint {{ show on description \"test speaker\" }}",
        out.display()
    )
}

/// The body of a capture PCM reading raw frames from `input`; what it records is also written
/// to `tap` (a FIFO a test can close to make the device fail).
pub fn capture_body(input: &Path, tap: &Path) -> String {
    format!(
        "type file\nslave.pcm {{ type null }}\nfile \"{}\"\ninfile \"{}\"\nformat \"raw\"\nhint {{ show on description \"test microphone\" }}",
        tap.display(),
        input.display()
    )
}

/// `inner` behind ALSA's `plug`, whose slave side is fixed at `rate` Hz, `channels`, S16_LE:
/// the client may ask for anything and ALSA converts.
pub fn plug_body(inner: &str, rate: u32, channels: u32) -> String {
    format!(
        "type plug\nslave {{\npcm {{\n{inner}\n}}\nrate {rate}\nchannels {channels}\nformat S16_LE\n}}"
    )
}

fn small_pipe(f: &File) {
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
}

/// The test's reading end of a FIFO hark writes to, small (4 KiB: 128 ms of 16 kHz mono)
/// before hark's first write. Opened by hark's side first, the FIFO would start with the
/// default 64 KiB, a fast writer could fill it before the resize (which then fails), and two
/// seconds of hidden latency would sit between hark and the test's ears (CI: a reply heard
/// 2.6 s after hark played it). Open it before hark starts.
pub struct FifoReader {
    file: File,
    /// A read-write descriptor, so that reads wait for hark instead of seeing end-of-file
    /// while no writer has opened yet; let go at the first bytes, after which hark closing
    /// its end is an end-of-file again.
    hold: Option<File>,
}

impl FifoReader {
    pub fn open(path: &Path) -> std::io::Result<FifoReader> {
        let hold = File::options().read(true).write(true).open(path)?;
        small_pipe(&hold);
        // Does not wait: `hold` is a writer.
        let file = File::open(path)?;
        Ok(FifoReader {
            file,
            hold: Some(hold),
        })
    }
}

impl Read for FifoReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let got = self.file.read(buf)?;
        if got > 0 {
            self.hold = None;
        }
        Ok(got)
    }
}

/// The microphone's side of a FIFO: plays `frames` (interleaved S16 at `rate` × `channels`) in
/// real time, then silence until dropped.
pub struct Mic {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Mic {
    pub fn start(path: PathBuf, rate: u32, channels: u32, frames: Vec<i16>) -> Mic {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let (flag, opened) = (stop.clone(), connected.clone());
        let thread = std::thread::spawn(move || {
            let Some(mut f) = FifoWriter::open(&path, &flag) else {
                return;
            };
            opened.store(true, Ordering::Relaxed);
            small_pipe(&f.file);
            let chunk = (rate / 100 * channels) as usize;
            let silence = vec![0i16; chunk];
            let mut pieces = frames.chunks(chunk);
            let start = Instant::now();
            let mut n = 0u32;
            let mut bytes = Vec::with_capacity(chunk * 2);
            while !flag.load(Ordering::Relaxed) {
                let piece = pieces.next().unwrap_or(&silence);
                bytes.clear();
                piece
                    .iter()
                    .for_each(|s| bytes.extend_from_slice(&s.to_le_bytes()));
                if !f.write_all(&bytes, &flag) {
                    return;
                }
                n += 1;
                let due = start + Duration::from_millis(10 * u64::from(n));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        Mic {
            stop,
            connected,
            thread: Some(thread),
        }
    }

    /// Whether hark's device has opened the FIFO and the frames are flowing. Until then a
    /// device reading the FIFO gets end-of-file, which ALSA's file plugin turns into
    /// silence as fast as it is asked.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

impl Drop for Mic {
    /// Returns once the FIFO is closed: a writer left behind would feed the next reader.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The test's writing end of a FIFO hark reads, which never blocks for longer than
/// [`FifoWriter::POLL`] without looking at its stop flag, so a [`Mic`] can always be stopped
/// and closed: one left writing (waiting for a reader, or for a stalled one to read) would
/// later feed a reopened device next to its replacement.
struct FifoWriter {
    file: File,
}

impl FifoWriter {
    const POLL: Duration = Duration::from_millis(10);

    /// Waits for the reader (hark opening its device) until `stop`.
    fn open(path: &Path, stop: &AtomicBool) -> Option<FifoWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        loop {
            match File::options()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
            {
                Ok(file) => return Some(FifoWriter { file }),
                // No reader yet.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(_) => return None,
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Self::POLL);
        }
    }

    /// Writes all of `bytes`; false once the reader has gone or `stop`.
    fn write_all(&mut self, mut bytes: &[u8], stop: &AtomicBool) -> bool {
        while !bytes.is_empty() {
            match self.file.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    let mut fd = libc::pollfd {
                        fd: self.file.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    unsafe { libc::poll(&mut fd, 1, Self::POLL.as_millis() as i32) };
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// The speaker's side of a FIFO: reads in real time and keeps every sample (interleaved S16).
pub struct Speaker {
    heard: Arc<Mutex<Vec<i16>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Speaker {
    /// Opens `path` for reading (a [`FifoReader`]: call it before hark opens its end) and
    /// reads `rate × channels` samples per second until `stop_after` samples or drop.
    pub fn start(path: PathBuf, rate: u32, channels: u32, stop_after: Option<usize>) -> Speaker {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, flag) = (heard.clone(), stop.clone());
        let mut f = FifoReader::open(&path).expect("the speaker's FIFO");
        let thread = std::thread::spawn(move || {
            let chunk = (rate / 100 * channels) as usize * 2;
            let mut buf = vec![0u8; chunk];
            let start = Instant::now();
            let mut n = 0u32;
            while !flag.load(Ordering::Relaxed) {
                let got = match f.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(got) => got,
                };
                let mut heard = sink.lock().unwrap();
                heard.extend(
                    buf[..got & !1]
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]])),
                );
                if stop_after.is_some_and(|limit| heard.len() >= limit) {
                    return;
                }
                drop(heard);
                n += 1;
                let due = start + Duration::from_millis(10 * u64::from(n));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        Speaker {
            heard,
            stop,
            thread: Some(thread),
        }
    }

    /// Samples heard so far.
    pub fn heard(&self) -> Vec<i16> {
        self.heard.lock().unwrap().clone()
    }

    /// How many samples so far.
    pub fn len(&self) -> usize {
        self.heard.lock().unwrap().len()
    }

    /// Whether the reader has closed the FIFO.
    pub fn closed(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Interleaved S16 at `channels` from mono `f32`.
pub fn interleave(mono: &[f32], channels: u32) -> Vec<i16> {
    mono.iter()
        .flat_map(|s| std::iter::repeat_n((s.clamp(-1.0, 1.0) * 32767.0) as i16, channels as usize))
        .collect()
}

/// Mono `f32` from interleaved S16 (first channel).
pub fn first_channel(frames: &[i16], channels: u32) -> Vec<f32> {
    frames
        .chunks_exact(channels as usize)
        .map(|f| f[0] as f32 / 32768.0)
        .collect()
}

/// The best normalised cross-correlation of `b` against `a` over lags `0..max_lag` (b later
/// than a), with that lag.
pub fn best_match(a: &[f32], b: &[f32], max_lag: usize) -> (f64, usize) {
    let energy = |x: &[f32]| x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
    let mut best = (f64::MIN, 0);
    for lag in 0..max_lag.min(b.len()) {
        let n = a.len().min(b.len() - lag);
        if n == 0 {
            break;
        }
        let (x, y) = (&a[..n], &b[lag..lag + n]);
        let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
        let c = dot / (energy(x) * energy(y)).sqrt().max(1e-12);
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

/// When things happened in a [`Room`], for a test to compare with what hark reported.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoomLog {
    /// The speaker first played something audible.
    pub speaker_started: Option<Instant>,
    /// The person began the interruption.
    pub person_started: Option<Instant>,
}

/// A room around a kiosk: the speaker's sound reaches the microphone as an echo (a delay, a
/// gain and a decaying tail), and a person speaks into the microphone — first `question` at
/// once, then `interruption` when the speaker has been talking for `after`. One thread reads
/// the speaker's FIFO and writes the microphone's, 10 ms at a time in real time, so both share
/// one clock as they would in a real card. Mono S16 at `rate`.
pub struct Room {
    log: Arc<Mutex<RoomLog>>,
    stop: Arc<AtomicBool>,
}

/// How the room sounds.
#[derive(Debug, Clone, Copy)]
pub struct Acoustics {
    /// Speaker to microphone, direct path.
    pub delay: Duration,
    /// Gain of the direct path.
    pub gain: f32,
}

impl Room {
    pub fn start(
        speaker: PathBuf,
        mic: PathBuf,
        rate: u32,
        acoustics: Acoustics,
        question: Vec<f32>,
        interruption: Vec<f32>,
        after: Duration,
    ) -> Room {
        let log = Arc::new(Mutex::new(RoomLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, flag) = (log.clone(), stop.clone());
        let mut spk = FifoReader::open(&speaker).expect("the room's speaker FIFO");
        std::thread::spawn(move || {
            let Ok(mut mic) = File::options().write(true).open(&mic) else {
                return;
            };
            small_pipe(&mic);
            let chunk = (rate / 100) as usize;
            let delay = (acoustics.delay.as_secs_f64() * rate as f64) as usize;
            // The direct path and three reflections, each later and weaker: a small room.
            let taps = [
                (0usize, 1.0f32),
                (delay / 2 + 90, 0.45),
                (delay + 260, 0.25),
                (delay + 700, 0.12),
            ];
            let history = delay + 700 + chunk;
            let mut played = std::collections::VecDeque::from(vec![0.0f32; history]);
            let mut bytes = vec![0u8; chunk * 2];
            let mut out = Vec::with_capacity(chunk * 2);
            let (mut q, mut i) = (0usize, None::<usize>);
            let mut noise = 0x2545_f491_u32;
            let start = Instant::now();
            let mut n = 0u32;
            while !flag.load(Ordering::Relaxed) {
                if spk.read_exact(&mut bytes).is_err() {
                    return;
                }
                let mut loud = false;
                for b in bytes.chunks_exact(2) {
                    let s = i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0;
                    loud |= s.abs() > 0.02;
                    played.pop_front();
                    played.push_back(s);
                }
                let now = Instant::now();
                {
                    let mut log = shared.lock().unwrap();
                    if loud && log.speaker_started.is_none() {
                        log.speaker_started = Some(now);
                    }
                    if i.is_none() && log.speaker_started.is_some_and(|t| now >= t + after) {
                        log.person_started = Some(now);
                        i = Some(0);
                    }
                }
                out.clear();
                for k in 0..chunk {
                    let newest = history - chunk + k;
                    let echo: f32 = taps
                        .iter()
                        .map(|(extra, g)| played[newest - (delay + extra).min(newest)] * g)
                        .sum::<f32>()
                        * acoustics.gain;
                    let mut person = 0.0;
                    if q < question.len() {
                        person = question[q];
                        q += 1;
                    } else if let Some(p) = i.as_mut().filter(|p| **p < interruption.len()) {
                        person = interruption[*p];
                        *p += 1;
                    }
                    noise ^= noise << 13;
                    noise ^= noise >> 17;
                    noise ^= noise << 5;
                    let hiss = (noise as f32 / u32::MAX as f32 - 0.5) * 0.002;
                    let s = ((echo + person + hiss).clamp(-1.0, 1.0) * 32767.0) as i16;
                    out.extend_from_slice(&s.to_le_bytes());
                }
                if mic.write_all(&out).is_err() {
                    return;
                }
                n += 1;
                let due = start + Duration::from_millis(10 * u64::from(n));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        Room { log, stop }
    }

    /// What happened so far.
    pub fn log(&self) -> RoomLog {
        *self.log.lock().unwrap()
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// [`best_match`] per 250 ms window of `a` that holds speech: the plugin's infile reads can slip
/// a few milliseconds when the machine is loaded (a short read is padded with silence), which
/// shifts everything after it; window by window the audio itself must still be all there.
pub fn windowed_match(a: &[f32], b: &[f32], rate: u32, max_lag: usize) -> Vec<f64> {
    let window = rate as usize / 4;
    a.chunks_exact(window)
        .enumerate()
        .filter(|(_, w)| (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt() > 0.005)
        .filter(|(i, _)| i * window + window + max_lag <= b.len())
        .map(|(i, w)| best_match(w, &b[i * window..], max_lag).0)
        .collect()
}

/// The middle value of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::MIN)
}

/// `b` from shortly (100 ms) before its first audible sample: where a recording's speech starts.
pub fn from_onset(b: &[f32], rate: u32) -> &[f32] {
    let first = b.iter().position(|s| s.abs() > 0.003).unwrap_or(b.len());
    &b[first.saturating_sub(rate as usize / 10)..]
}
