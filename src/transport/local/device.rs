//! Opening an ALSA PCM with the parameters hark wants, and converting its samples.
//!
//! Sound cards disagree on formats, rates and channel counts: a USB speakerphone may only do
//! 48 kHz stereo S16, a HAT 2 × S32. We ask for what the pipeline would like, take what the
//! device grants ([`Negotiated`]), and convert at this edge so the rest of hark sees mono `f32`.

use std::ffi::CString;

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

/// What hark asks of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    /// ALSA device string: `default`, `plughw:1,0`, `hw:CARD=seeed2micvoicec,DEV=0`, ...
    pub device: String,
    /// Rate asked for; the device may grant another.
    pub rate: u32,
    /// Channels asked for; the device may grant another count.
    pub channels: u32,
    /// Period length asked for, in milliseconds (the unit of wake-ups and latency).
    pub period_ms: u32,
    /// Periods in the device buffer (more survives scheduling hiccups, less has lower latency).
    pub periods: u32,
}

/// The sample formats hark reads and writes, in the order it prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Signed 16-bit little endian: what nearly every card and plugin does.
    S16,
    /// Signed 32-bit little endian (I²S HATs, some USB cards).
    S32,
    /// 32-bit float little endian.
    F32,
}

impl SampleFormat {
    const ALL: [SampleFormat; 3] = [SampleFormat::S16, SampleFormat::S32, SampleFormat::F32];

    fn alsa(self) -> Format {
        match self {
            SampleFormat::S16 => Format::s16(),
            SampleFormat::S32 => Format::s32(),
            SampleFormat::F32 => Format::float(),
        }
    }

    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::S16 => 2,
            SampleFormat::S32 | SampleFormat::F32 => 4,
        }
    }
}

/// What the device granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Frames per second.
    pub rate: u32,
    /// Interleaved channels per frame.
    pub channels: u32,
    /// Sample format.
    pub format: SampleFormat,
    /// Frames per period.
    pub period: usize,
    /// Frames in the device buffer.
    pub buffer: usize,
}

/// Why a device could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    /// `snd_pcm_open` failed: no such device, busy, or unplugged.
    #[error("cannot open ALSA {dir} device {device:?}: {source}")]
    Open {
        /// Device string.
        device: String,
        /// `capture` or `playback`.
        dir: &'static str,
        /// ALSA's error.
        source: alsa::Error,
    },
    /// The device refused every parameter set hark can use.
    #[error("ALSA {dir} device {device:?} refused {what}: {source}")]
    Params {
        /// Device string.
        device: String,
        /// `capture` or `playback`.
        dir: &'static str,
        /// Which parameter.
        what: &'static str,
        /// ALSA's error.
        source: alsa::Error,
    },
    /// The device does none of S16, S32 or float.
    #[error("ALSA {dir} device {device:?} offers none of S16_LE, S32_LE, FLOAT_LE")]
    Format {
        /// Device string.
        device: String,
        /// `capture` or `playback`.
        dir: &'static str,
    },
}

fn dir_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Capture => "capture",
        Direction::Playback => "playback",
    }
}

/// Opens `req.device` for `dir` and sets it up as close to `req` as the device allows.
pub fn open(req: &StreamRequest, dir: Direction) -> Result<(PCM, Negotiated), DeviceError> {
    let name = dir_name(dir);
    let c_name = CString::new(req.device.as_str()).map_err(|_| DeviceError::Open {
        device: req.device.clone(),
        dir: name,
        source: alsa::Error::unsupported("a device name with a NUL byte"),
    })?;
    let pcm = PCM::open(&c_name, dir, false).map_err(|source| DeviceError::Open {
        device: req.device.clone(),
        dir: name,
        source,
    })?;
    let params = |what: &'static str| {
        let device = req.device.clone();
        move |source| DeviceError::Params {
            device,
            dir: name,
            what,
            source,
        }
    };
    let negotiated = {
        let hw = HwParams::any(&pcm).map_err(params("any parameters"))?;
        hw.set_access(Access::RWInterleaved)
            .map_err(params("interleaved access"))?;
        let format = SampleFormat::ALL
            .into_iter()
            .find(|f| hw.test_format(f.alsa()).is_ok())
            .ok_or_else(|| DeviceError::Format {
                device: req.device.clone(),
                dir: name,
            })?;
        hw.set_format(format.alsa()).map_err(params("the format"))?;
        let channels = hw
            .set_channels_near(req.channels.max(1))
            .map_err(params("the channel count"))?;
        let rate = hw
            .set_rate_near(req.rate, ValueOr::Nearest)
            .map_err(params("the rate"))?;
        let want_period = (rate as usize * req.period_ms as usize / 1000).max(16);
        let period = hw
            .set_period_size_near(want_period as _, ValueOr::Nearest)
            .map_err(params("the period size"))? as usize;
        let buffer = hw
            .set_buffer_size_near((period * req.periods.max(2) as usize) as _)
            .map_err(params("the buffer size"))? as usize;
        pcm.hw_params(&hw).map_err(params("the parameter set"))?;
        Negotiated {
            rate,
            channels,
            format,
            period,
            buffer,
        }
    };
    {
        let sw = pcm
            .sw_params_current()
            .map_err(params("software parameters"))?;
        sw.set_avail_min(negotiated.period as _)
            .map_err(params("avail_min"))?;
        if dir == Direction::Playback {
            // Start once half the buffer is queued: enough not to underrun at once.
            sw.set_start_threshold((negotiated.buffer / 2).max(negotiated.period) as _)
                .map_err(params("the start threshold"))?;
        }
        pcm.sw_params(&sw).map_err(params("software parameters"))?;
    }
    Ok((pcm, negotiated))
}

/// Interleaved device samples of any [`SampleFormat`] to mono `f32` (channels averaged).
pub fn to_mono(bytes: &[u8], format: SampleFormat, channels: usize, out: &mut [f32]) -> usize {
    let frame_bytes = format.bytes() * channels;
    let frames = (bytes.len() / frame_bytes).min(out.len());
    let scale = 1.0 / channels as f32;
    for (frame, o) in bytes
        .chunks_exact(frame_bytes)
        .take(frames)
        .zip(out.iter_mut())
    {
        let sum: f32 = frame
            .chunks_exact(format.bytes())
            .map(|s| decode(s, format))
            .sum();
        *o = sum * scale;
    }
    frames
}

/// Mono `f32` to interleaved device samples, the same sample on every channel.
pub fn from_mono(samples: &[f32], format: SampleFormat, channels: usize, out: &mut [u8]) -> usize {
    let frame_bytes = format.bytes() * channels;
    let frames = samples.len().min(out.len() / frame_bytes);
    for (s, frame) in samples
        .iter()
        .take(frames)
        .zip(out.chunks_exact_mut(frame_bytes))
    {
        for slot in frame.chunks_exact_mut(format.bytes()) {
            encode(*s, format, slot);
        }
    }
    frames
}

fn decode(s: &[u8], format: SampleFormat) -> f32 {
    match format {
        SampleFormat::S16 => i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0,
        SampleFormat::S32 => i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32 / 2_147_483_648.0,
        SampleFormat::F32 => f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
    }
}

fn encode(v: f32, format: SampleFormat, out: &mut [u8]) {
    let v = v.clamp(-1.0, 1.0);
    match format {
        SampleFormat::S16 => out.copy_from_slice(&((v * 32767.0).round() as i16).to_le_bytes()),
        SampleFormat::S32 => {
            out.copy_from_slice(&((v as f64 * 2_147_483_647.0).round() as i32).to_le_bytes())
        }
        SampleFormat::F32 => out.copy_from_slice(&v.to_le_bytes()),
    }
}

/// One PCM as `hark devices` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceInfo {
    /// The string to put in `[audio] capture` / `playback`.
    pub name: String,
    /// ALSA's description, one line.
    pub description: String,
    /// Whether it records.
    pub capture: Option<Capabilities>,
    /// Whether it plays.
    pub playback: Option<Capabilities>,
}

/// What one direction of a device accepts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Capabilities {
    /// Lowest and highest rate.
    pub rates: (u32, u32),
    /// Of the usual rates, those the device takes as they are.
    pub common_rates: Vec<u32>,
    /// Fewest and most channels.
    pub channels: (u32, u32),
}

const COMMON_RATES: [u32; 7] = [8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

fn capabilities(device: &str, dir: Direction) -> Option<Capabilities> {
    let pcm = PCM::new(device, dir, true).ok()?;
    let hw = HwParams::any(&pcm).ok()?;
    let rates = (hw.get_rate_min().ok()?, hw.get_rate_max().ok()?);
    let channels = (hw.get_channels_min().ok()?, hw.get_channels_max().ok()?);
    let common_rates = COMMON_RATES
        .into_iter()
        .filter(|r| hw.test_rate(*r).is_ok())
        .collect();
    Some(Capabilities {
        rates,
        common_rates,
        channels: (channels.0, channels.1.min(64)),
    })
}

/// Every PCM ALSA's configuration names (cards and plugins), with what each accepts. A device
/// that is busy or gone shows no capabilities rather than failing the list.
pub fn list() -> Vec<DeviceInfo> {
    let Ok(hints) = alsa::device_name::HintIter::new_str(None, "pcm") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for hint in hints {
        let Some(name) = hint.name else { continue };
        if name == "null" {
            continue;
        }
        let description = hint
            .desc
            .unwrap_or_default()
            .lines()
            .collect::<Vec<_>>()
            .join(", ");
        let wants = |d| hint.direction.is_none() || hint.direction == Some(d);
        out.push(DeviceInfo {
            capture: wants(Direction::Capture)
                .then(|| capabilities(&name, Direction::Capture))
                .flatten(),
            playback: wants(Direction::Playback)
                .then(|| capabilities(&name, Direction::Playback))
                .flatten(),
            name,
            description,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_round_trips_through_mono_and_back() {
        let samples = [0.0f32, 0.5, -0.5, 0.999, -1.0];
        for format in SampleFormat::ALL {
            for channels in [1usize, 2] {
                let mut bytes = vec![0u8; samples.len() * channels * format.bytes()];
                assert_eq!(
                    from_mono(&samples, format, channels, &mut bytes),
                    samples.len()
                );
                let mut back = [0.0f32; 5];
                assert_eq!(to_mono(&bytes, format, channels, &mut back), samples.len());
                for (a, b) in samples.iter().zip(back) {
                    assert!((a - b).abs() < 1e-4, "{format:?} x{channels}: {a} -> {b}");
                }
            }
        }
    }

    #[test]
    fn stereo_capture_is_averaged_to_mono() {
        let mut bytes = Vec::new();
        for (l, r) in [(1000i16, 3000i16), (-2000, 0)] {
            bytes.extend_from_slice(&l.to_le_bytes());
            bytes.extend_from_slice(&r.to_le_bytes());
        }
        let mut out = [0.0f32; 2];
        to_mono(&bytes, SampleFormat::S16, 2, &mut out);
        assert!((out[0] - 2000.0 / 32768.0).abs() < 1e-6);
        assert!((out[1] + 1000.0 / 32768.0).abs() < 1e-6);
    }
}
