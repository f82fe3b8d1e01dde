//! RTP packets (RFC 3550 §5.1): the fixed header, CSRCs, the header extension and padding,
//! parsed without copying and written into a caller's buffer, plus the wrap-around arithmetic
//! of sequence numbers and timestamps.

/// Why a datagram is not an RTP packet we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Fewer bytes than the fixed header, the CSRC list or the extension claim.
    #[error("RTP packet too short: {len} bytes, need {need}")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Bytes the header claims.
        need: usize,
    },
    /// Only version 2 exists; anything else is not RTP (STUN, garbage, an old tool).
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The padding count is zero or larger than what follows the header.
    #[error("RTP padding of {padding} bytes does not fit a {available}-byte body")]
    BadPadding {
        /// The last byte's padding count.
        padding: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// The caller's buffer cannot hold the packet being written.
    #[error("buffer of {have} bytes cannot hold a {need}-byte RTP packet")]
    BufferTooSmall {
        /// The buffer's size.
        have: usize,
        /// The packet's size.
        need: usize,
    },
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;

/// The fields of an RTP header that hark reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpHeader {
    /// M: the first packet of a talkspurt (audio) or of a DTMF event.
    pub marker: bool,
    /// PT (7 bits): which codec or event format the payload is in.
    pub payload_type: u8,
    /// Sequence number: +1 per packet, wraps at 2^16.
    pub sequence: u16,
    /// Sampling instant of the first payload sample, in the codec's clock (8 kHz for G.711).
    pub timestamp: u32,
    /// The sender's synchronisation source.
    pub ssrc: u32,
}

/// A parsed packet borrowing the datagram: the header, and the payload without CSRCs,
/// extension or padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The fixed header's fields.
    pub header: RtpHeader,
    /// Contributing sources (CC of them), as raw big-endian bytes.
    pub csrc: &'a [u8],
    /// The header extension's profile word and body, if X was set.
    pub extension: Option<(u16, &'a [u8])>,
    /// The media payload.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram; any structural fault is a typed error (nothing panics on any input).
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < HEADER_LEN {
            return Err(RtpError::TooShort {
                len: buf.len(),
                need: HEADER_LEN,
            });
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let padding = buf[0] & 0x20 != 0;
        let has_ext = buf[0] & 0x10 != 0;
        let cc = usize::from(buf[0] & 0x0f);
        let header = RtpHeader {
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7f,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        };
        let mut at = HEADER_LEN + 4 * cc;
        if buf.len() < at {
            return Err(RtpError::TooShort {
                len: buf.len(),
                need: at,
            });
        }
        let csrc = &buf[HEADER_LEN..at];
        let extension = if has_ext {
            if buf.len() < at + 4 {
                return Err(RtpError::TooShort {
                    len: buf.len(),
                    need: at + 4,
                });
            }
            let profile = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let words = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
            let end = at + 4 + 4 * words;
            if buf.len() < end {
                return Err(RtpError::TooShort {
                    len: buf.len(),
                    need: end,
                });
            }
            let body = &buf[at + 4..end];
            at = end;
            Some((profile, body))
        } else {
            None
        };
        let mut end = buf.len();
        if padding {
            let count = usize::from(buf[buf.len() - 1]);
            let available = buf.len() - at;
            if count == 0 || count > available {
                return Err(RtpError::BadPadding {
                    padding: count,
                    available,
                });
            }
            end -= count;
        }
        Ok(RtpPacket {
            header,
            csrc,
            extension,
            payload: &buf[at..end],
        })
    }
}

impl RtpHeader {
    /// Writes this header (no CSRCs, no extension, no padding) followed by `payload` into
    /// `out`; returns the packet's length.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
        let need = HEADER_LEN + payload.len();
        if out.len() < need {
            return Err(RtpError::BufferTooSmall {
                have: out.len(),
                need,
            });
        }
        out[0] = 2 << 6;
        out[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7f);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[HEADER_LEN..need].copy_from_slice(payload);
        Ok(need)
    }
}

/// `a - b` for 16-bit sequence numbers, as the shortest signed distance (RFC 1982 style):
/// positive when `a` is newer.
pub fn seq_diff(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

/// `a - b` for 32-bit RTP timestamps, as the shortest signed distance.
pub fn ts_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// Extends 16-bit sequence numbers to a 64-bit count that never wraps (RFC 3550 A.1's cycle
/// counting), so ordering and loss arithmetic are plain integer arithmetic.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// The extended number of `seq`: the one closest to the highest seen so far. Updates the
    /// highest when `seq` is newer.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            // Start one cycle up so a packet just before the first one stays representable.
            let ext = (1u64 << 16) + u64::from(seq);
            self.highest = Some(ext);
            return ext;
        };
        let d = i64::from(seq_diff(seq, highest as u16));
        let ext = (highest as i64 + d).max(0) as u64;
        if ext > highest {
            self.highest = Some(ext);
        }
        ext
    }

    /// The highest extended sequence number seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Forgets the stream (a new SSRC starts its own numbering).
    pub fn reset(&mut self) {
        self.highest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 8,
            sequence: 0xfffe,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
        }
    }

    #[test]
    fn a_written_header_parses_back_with_its_payload() {
        let mut buf = [0u8; 64];
        let n = header().write(&[1, 2, 3], &mut buf).unwrap();
        assert_eq!(n, 15);
        assert_eq!(buf[0], 0x80, "version 2, no P, X or CC");
        assert_eq!(buf[1], 0x88, "marker and PT 8");
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(p.header, header());
        assert_eq!(p.payload, &[1, 2, 3]);
        assert!(p.csrc.is_empty() && p.extension.is_none());
    }

    #[test]
    fn csrcs_extension_and_padding_are_stripped_from_the_payload() {
        // V=2 P=1 X=1 CC=2, PT 0, then 2 CSRCs, a one-word extension, 2 payload bytes, 3 padding.
        let mut b = vec![0xb2, 0x00, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        b.extend_from_slice(&[0x55, 0x66]);
        b.extend_from_slice(&[0, 0, 3]);
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(p.csrc, &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(p.extension, Some((0xbede, &[9u8, 9, 9, 9][..])));
        assert_eq!(p.payload, &[0x55, 0x66]);
        assert_eq!(p.header.sequence, 1);
        assert_eq!(p.header.timestamp, 160);
    }

    #[test]
    fn faults_are_typed_errors() {
        assert_eq!(
            RtpPacket::parse(&[0x80, 0, 0]),
            Err(RtpError::TooShort { len: 3, need: 12 })
        );
        let mut v1 = [0u8; 12];
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::BadVersion(1)));
        let mut cc = [0u8; 12];
        cc[0] = 0x81;
        assert_eq!(
            RtpPacket::parse(&cc),
            Err(RtpError::TooShort { len: 12, need: 16 })
        );
        let mut ext = [0u8; 16];
        ext[0] = 0x90;
        ext[15] = 2; // two words claimed, none present
        assert_eq!(
            RtpPacket::parse(&ext),
            Err(RtpError::TooShort { len: 16, need: 24 })
        );
        let mut pad = [0u8; 14];
        pad[0] = 0xa0;
        pad[13] = 5;
        assert_eq!(
            RtpPacket::parse(&pad),
            Err(RtpError::BadPadding {
                padding: 5,
                available: 2
            })
        );
        pad[13] = 0;
        assert!(matches!(
            RtpPacket::parse(&pad),
            Err(RtpError::BadPadding { padding: 0, .. })
        ));
        let mut small = [0u8; 13];
        assert_eq!(
            header().write(&[1, 2], &mut small),
            Err(RtpError::BufferTooSmall { have: 13, need: 14 })
        );
    }

    #[test]
    fn sequence_and_timestamp_distances_wrap() {
        assert_eq!(seq_diff(2, 65534), 4);
        assert_eq!(seq_diff(65534, 2), -4);
        assert_eq!(seq_diff(100, 100), 0);
        assert_eq!(ts_diff(80, u32::MAX - 79), 160);
        assert_eq!(ts_diff(u32::MAX - 79, 80), -160);
    }

    #[test]
    fn extended_sequence_numbers_count_cycles_and_place_reordered_packets() {
        let mut x = SeqExtender::default();
        let a = x.extend(65534);
        assert_eq!(x.extend(65535), a + 1);
        assert_eq!(x.extend(1), a + 3, "wrapped forward");
        assert_eq!(x.extend(0), a + 2, "late packet from before the wrap's end");
        assert_eq!(x.extend(65533), a - 1, "older than the first");
        assert_eq!(x.highest(), Some(a + 3));
        x.reset();
        assert_eq!(x.highest(), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = RtpPacket::parse(&bytes) {
                prop_assert!(p.payload.len() + HEADER_LEN <= bytes.len());
            }
        }

        #[test]
        fn headers_round_trip(m in any::<bool>(), pt in 0u8..128, seq in any::<u16>(),
                              ts in any::<u32>(), ssrc in any::<u32>(),
                              payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let h = RtpHeader { marker: m, payload_type: pt, sequence: seq, timestamp: ts, ssrc };
            let mut buf = [0u8; 400];
            let n = h.write(&payload, &mut buf).unwrap();
            let p = RtpPacket::parse(&buf[..n]).unwrap();
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(p.payload, &payload[..]);
        }
    }
}
