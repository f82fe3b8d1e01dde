//! WAV read and write (hound). Any 8–48 kHz, mono or stereo, 16-bit integer or 32-bit float file
//! is accepted and comes out mono `f32`; anything else is a clear error rather than noise. Files
//! are written as mono 16-bit PCM, to disk ([`write_wav`]) or to memory ([`write_wav_to`], for an
//! upload), by the one writer.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::Audio;

/// Lowest and highest rates hark accepts: telephone to studio.
pub const RATES: std::ops::RangeInclusive<u32> = 8_000..=48_000;

/// Why a WAV file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// Not a readable WAV file at all.
    #[error("{path}: not a readable WAV file: {source}")]
    Unreadable {
        /// The file ("<memory>" for embedded audio).
        path: PathBuf,
        /// hound's reason.
        source: hound::Error,
    },
    /// A WAV file in a format hark does not take.
    #[error("{path}: {found}; expected {expected}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What the file has.
        found: String,
        /// What hark accepts.
        expected: &'static str,
    },
    /// The file could not be written.
    #[error("{path}: cannot write WAV: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// hound's reason.
        source: hound::Error,
    },
}

/// Reads a WAV file into mono `f32`.
pub fn read_wav(path: &Path) -> Result<Audio, WavError> {
    let reader = hound::WavReader::open(path).map_err(|source| WavError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    decode(reader, path)
}

/// Reads WAV bytes (embedded audio) into mono `f32`.
pub fn read_wav_bytes(bytes: &[u8]) -> Result<Audio, WavError> {
    let path = Path::new("<memory>");
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|source| {
        WavError::Unreadable {
            path: path.to_path_buf(),
            source,
        }
    })?;
    decode(reader, path)
}

fn decode<R: Read + Seek>(reader: hound::WavReader<R>, path: &Path) -> Result<Audio, WavError> {
    let spec = reader.spec();
    let unsupported = |found: String, expected| WavError::Unsupported {
        path: path.to_path_buf(),
        found,
        expected,
    };
    if !RATES.contains(&spec.sample_rate) {
        return Err(unsupported(
            format!("sample rate {} Hz", spec.sample_rate),
            "8000 to 48000 Hz",
        ));
    }
    let channels = spec.channels as usize;
    if !(1..=2).contains(&channels) {
        return Err(unsupported(
            format!("{channels} channels"),
            "mono or stereo",
        ));
    }
    let unreadable = |source| WavError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .into_samples::<i16>()
            .map(|s| s.map(|v| v as f32 / 32768.0))
            .collect::<Result<_, _>>()
            .map_err(unreadable)?,
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(unreadable)?,
        (format, bits) => {
            let kind = match format {
                hound::SampleFormat::Int => "integer",
                hound::SampleFormat::Float => "float",
            };
            return Err(unsupported(
                format!("{bits}-bit {kind} samples"),
                "16-bit integer or 32-bit float samples",
            ));
        }
    };
    let samples = if channels == 1 {
        interleaved
    } else {
        interleaved
            .chunks_exact(2)
            .map(|lr| 0.5 * (lr[0] + lr[1]))
            .collect()
    };
    Ok(Audio {
        rate: spec.sample_rate,
        samples,
    })
}

/// Where the samples of a WAV arriving through a pipe begin, and their rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipedWav {
    /// Sample rate in Hz.
    pub rate: u32,
    /// Offset of the first sample byte (16-bit little-endian, mono) after the header.
    pub data_start: usize,
}

/// Reads the header of a WAV that arrives through a pipe (`espeak-ng --stdout`), so its samples
/// can be decoded as they come rather than after the program ends. A writer on a pipe cannot go
/// back to fill in the lengths, so the lengths in the header are not trusted: the data runs to
/// the end of the stream. `Ok(None)` while `bytes` ends before the header does. Only mono 16-bit
/// integer audio at a rate in [`RATES`] is accepted (what speech programs write); the caller
/// decodes the samples with [`super::pcm::Pcm16Decoder`].
pub fn read_piped_wav_header(bytes: &[u8]) -> Result<Option<PipedWav>, WavError> {
    let path = Path::new("<pipe>");
    let mut cursor = std::io::Cursor::new(bytes);
    let spec = match hound::WavReader::new(&mut cursor) {
        Ok(reader) => reader.spec(),
        // Reading from memory fails only by running out of bytes: the header goes on.
        Err(hound::Error::IoError(_)) => return Ok(None),
        Err(source) => {
            return Err(WavError::Unreadable {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let expected = "mono 16-bit integer samples at 8000 to 48000 Hz";
    if spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
        || !RATES.contains(&spec.sample_rate)
    {
        return Err(WavError::Unsupported {
            path: path.to_path_buf(),
            found: format!(
                "{} channel(s) of {}-bit samples at {} Hz",
                spec.channels, spec.bits_per_sample, spec.sample_rate
            ),
            expected,
        });
    }
    Ok(Some(PipedWav {
        rate: spec.sample_rate,
        data_start: cursor.position() as usize,
    }))
}

/// Writes mono 16-bit PCM, clipping to [-1, 1].
pub fn write_wav(path: &Path, audio: &Audio) -> Result<(), WavError> {
    let err = |source| WavError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(|e| err(hound::Error::IoError(e)))?;
    let samples = audio
        .samples
        .iter()
        .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16);
    write_wav_to(std::io::BufWriter::new(file), audio.rate, samples).map_err(err)
}

/// Writes mono 16-bit PCM `samples` at `rate` as a WAV file to `out`, which must start empty
/// (the header's sizes are patched by absolute seeks): a `Cursor<Vec<u8>>` gives the file's
/// bytes, e.g. for an upload.
pub fn write_wav_to<W: Write + Seek>(
    out: W,
    rate: u32,
    samples: impl IntoIterator<Item = i16>,
) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(out, spec)?;
    for s in samples {
        w.write_sample(s)?;
    }
    w.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piped_header_with_placeholder_lengths_gives_the_data_start() {
        // What espeak-ng --stdout writes: RIFF and data lengths it could not fill in.
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF\x24\xf0\xff\x7fWAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
        wav.extend_from_slice(&1u16.to_le_bytes()); // mono
        wav.extend_from_slice(&22_050u32.to_le_bytes());
        wav.extend_from_slice(&44_100u32.to_le_bytes());
        wav.extend_from_slice(&2u16.to_le_bytes());
        wav.extend_from_slice(&16u16.to_le_bytes());
        wav.extend_from_slice(b"data\x00\xf0\xff\x7f");
        for cut in [0, 3, 20, 43] {
            assert_eq!(
                read_piped_wav_header(&wav[..cut]).unwrap(),
                None,
                "{cut} bytes"
            );
        }
        let header = PipedWav {
            rate: 22_050,
            data_start: 44,
        };
        assert_eq!(read_piped_wav_header(&wav).unwrap(), Some(header));
        wav.extend_from_slice(&[1, 0, 2, 0]);
        assert_eq!(read_piped_wav_header(&wav).unwrap(), Some(header));
        assert!(matches!(
            read_piped_wav_header(b"RIFX\0\0\0\0WAVE"),
            Err(WavError::Unreadable { .. })
        ));
        wav[24..28].copy_from_slice(&96_000u32.to_le_bytes());
        wav[28..32].copy_from_slice(&192_000u32.to_le_bytes()); // byte rate to match
        assert!(matches!(
            read_piped_wav_header(&wav),
            Err(WavError::Unsupported { .. })
        ));
    }

    fn write(path: &Path, spec: hound::WavSpec, n: usize) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..n * spec.channels as usize {
            match spec.sample_format {
                hound::SampleFormat::Float => w.write_sample((i % 7) as f32 * 0.1).unwrap(),
                hound::SampleFormat::Int if spec.bits_per_sample == 16 => {
                    w.write_sample((i % 7) as i16 * 1000).unwrap()
                }
                hound::SampleFormat::Int => w.write_sample((i % 7) as i32 * 1000).unwrap(),
            }
        }
        w.finalize().unwrap();
    }

    fn spec(rate: u32, channels: u16, bits: u16, fmt: hound::SampleFormat) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: fmt,
        }
    }

    #[test]
    fn stereo_float_is_downmixed_to_mono() {
        let dir = tempdir();
        let p = dir.join("s.wav");
        write(&p, spec(44_100, 2, 32, hound::SampleFormat::Float), 100);
        let a = read_wav(&p).unwrap();
        assert_eq!((a.rate, a.samples.len()), (44_100, 100));
        assert!((a.samples[0] - 0.05).abs() < 1e-6); // (0.0 + 0.1) / 2
    }

    #[test]
    fn round_trips_16_bit_pcm() {
        let dir = tempdir();
        let p = dir.join("r.wav");
        let audio = Audio {
            rate: 8_000,
            samples: vec![0.0, 0.5, -0.5, 0.25],
        };
        write_wav(&p, &audio).unwrap();
        let back = read_wav(&p).unwrap();
        assert_eq!(back.rate, 8_000);
        for (a, b) in audio.samples.iter().zip(&back.samples) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn writes_to_memory_what_the_reader_reads_back() {
        let mut bytes = std::io::Cursor::new(Vec::new());
        write_wav_to(&mut bytes, 16_000, [0i16, 16384, -16384, 32767]).unwrap();
        let bytes = bytes.into_inner();
        assert_eq!(bytes.len(), 44 + 8, "a 44-byte header and the samples");
        let back = read_wav_bytes(&bytes).unwrap();
        assert_eq!(back.rate, 16_000);
        assert_eq!(back.samples, [0.0, 0.5, -0.5, 32767.0 / 32768.0]);
    }

    #[test]
    fn unsupported_formats_say_what_is_accepted() {
        let dir = tempdir();
        let cases = [
            (
                spec(16_000, 1, 24, hound::SampleFormat::Int),
                "24-bit integer samples; expected 16-bit integer or 32-bit float samples",
            ),
            (
                spec(96_000, 1, 16, hound::SampleFormat::Int),
                "sample rate 96000 Hz; expected 8000 to 48000 Hz",
            ),
            (
                spec(16_000, 4, 16, hound::SampleFormat::Int),
                "4 channels; expected mono or stereo",
            ),
        ];
        for (i, (s, want)) in cases.into_iter().enumerate() {
            let p = dir.join(format!("bad{i}.wav"));
            write(&p, s, 10);
            let msg = read_wav(&p).unwrap_err().to_string();
            assert!(msg.ends_with(want), "{msg}");
            assert!(msg.starts_with(&p.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn text_file_is_not_a_wav() {
        let dir = tempdir();
        let p = dir.join("notes.wav");
        std::fs::write(&p, "hello").unwrap();
        let msg = read_wav(&p).unwrap_err().to_string();
        assert!(msg.contains("not a readable WAV file"), "{msg}");
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hark-wav-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
