//! Minimal RTCP (RFC 3550 §6): the compound report a call sends every few seconds (a sender
//! report, or a receiver report before anything was sent, with one report block about the
//! stream received, and the SDES CNAME every compound packet must carry), and a structural
//! parser for what the peer sends, so a PBX that watches RTCP sees a live call.

/// Why an RTCP datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// A packet's header or its declared length runs past the datagram.
    #[error("RTCP packet truncated at byte {0}")]
    Truncated(usize),
    /// A packet is not version 2.
    #[error("RTCP version {0}, expected 2")]
    BadVersion(u8),
    /// A compound packet must begin with a sender or receiver report.
    #[error("RTCP compound packet begins with type {0}, not SR or RR")]
    NotAReport(u8),
    /// The caller's buffer is too small for the report.
    #[error("buffer too small for the RTCP report")]
    BufferTooSmall,
}

/// Packet type of a sender report.
pub const SR: u8 = 200;
/// Packet type of a receiver report.
pub const RR: u8 = 201;
/// Packet type of source descriptions.
pub const SDES: u8 = 202;
/// Packet type of a goodbye.
pub const BYE: u8 = 203;

/// What this side sent (the sender-info section of an SR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wall-clock time as a 64-bit NTP timestamp.
    pub ntp: u64,
    /// The same instant in the RTP clock.
    pub rtp_timestamp: u32,
    /// Packets sent so far.
    pub packets: u32,
    /// Payload bytes sent so far.
    pub octets: u32,
}

/// One report block: how the stream from `ssrc` is being received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost in total (24 bits, clamped).
    pub cumulative_lost: u32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the NTP time of the last SR received from `ssrc` (0 if none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// One packet of a compound datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpPacket<'a> {
    /// The packet type (200 SR, 201 RR, 202 SDES, 203 BYE, ...).
    pub packet_type: u8,
    /// The 5-bit count field (report blocks, sources).
    pub count: u8,
    /// The packet after its 4-byte header, padding removed.
    pub body: &'a [u8],
}

impl RtcpPacket<'_> {
    /// The sender SSRC of an SR or RR, or the first source of an SDES or BYE.
    pub fn ssrc(&self) -> Option<u32> {
        self.body
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The sender info of an SR.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type != SR || self.body.len() < 24 {
            return None;
        }
        let w = |i: usize| {
            u32::from_be_bytes([
                self.body[i],
                self.body[i + 1],
                self.body[i + 2],
                self.body[i + 3],
            ])
        };
        Some(SenderInfo {
            ntp: (u64::from(w(4)) << 32) | u64::from(w(8)),
            rtp_timestamp: w(12),
            packets: w(16),
            octets: w(20),
        })
    }
}

/// Splits a compound RTCP datagram into its packets, checking every header and length; the
/// first must be an SR or RR (RFC 3550 §6.1).
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket<'_>>, RtcpError> {
    let mut out = Vec::with_capacity(4);
    let mut at = 0;
    while at < buf.len() {
        if buf.len() < at + 4 {
            return Err(RtcpError::Truncated(at));
        }
        let version = buf[at] >> 6;
        if version != 2 {
            return Err(RtcpError::BadVersion(version));
        }
        let padding = buf[at] & 0x20 != 0;
        let count = buf[at] & 0x1f;
        let packet_type = buf[at + 1];
        let len = (usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])) + 1) * 4;
        if buf.len() < at + len {
            return Err(RtcpError::Truncated(at));
        }
        let mut body = &buf[at + 4..at + len];
        if padding {
            let p = usize::from(*body.last().ok_or(RtcpError::Truncated(at))?);
            if p == 0 || p > body.len() {
                return Err(RtcpError::Truncated(at));
            }
            body = &body[..body.len() - p];
        }
        if out.is_empty() && packet_type != SR && packet_type != RR {
            return Err(RtcpError::NotAReport(packet_type));
        }
        out.push(RtcpPacket {
            packet_type,
            count,
            body,
        });
        at += len;
    }
    if out.is_empty() {
        return Err(RtcpError::Truncated(0));
    }
    Ok(out)
}

/// Writes a compound report into `out`: an SR when `sender` is given (else an RR), with
/// `block` if this side receives a stream, then an SDES with `cname`. Returns its length.
pub fn write_report(
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &str,
    out: &mut [u8],
) -> Result<usize, RtcpError> {
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let report_len =
        8 + if sender.is_some() { 20 } else { 0 } + if block.is_some() { 24 } else { 0 };
    // SDES: header, SSRC, CNAME item (type, length, text), END, padded to a word.
    let sdes_len = (4 + 4 + 2 + cname.len() + 1).div_ceil(4) * 4;
    if out.len() < report_len + sdes_len {
        return Err(RtcpError::BufferTooSmall);
    }
    let mut w = Writer { out, at: 0 };
    w.u8(0x80 | u8::from(block.is_some()));
    w.u8(if sender.is_some() { SR } else { RR });
    w.u16((report_len / 4 - 1) as u16);
    w.u32(ssrc);
    if let Some(s) = sender {
        w.u32((s.ntp >> 32) as u32);
        w.u32(s.ntp as u32);
        w.u32(s.rtp_timestamp);
        w.u32(s.packets);
        w.u32(s.octets);
    }
    if let Some(b) = block {
        w.u32(b.ssrc);
        w.u32((u32::from(b.fraction_lost) << 24) | b.cumulative_lost.min(0x7f_ffff));
        w.u32(b.highest_seq);
        w.u32(b.jitter);
        w.u32(b.last_sr);
        w.u32(b.delay_since_last_sr);
    }
    let start = w.at;
    w.u8(0x81);
    w.u8(SDES);
    w.u16((sdes_len / 4 - 1) as u16);
    w.u32(ssrc);
    w.u8(1);
    w.u8(cname.len() as u8);
    for &c in cname {
        w.u8(c);
    }
    while w.at < start + sdes_len {
        w.u8(0);
    }
    Ok(w.at)
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out[self.at] = v;
        self.at += 1;
    }
    fn u16(&mut self, v: u16) {
        self.out[self.at..self.at + 2].copy_from_slice(&v.to_be_bytes());
        self.at += 2;
    }
    fn u32(&mut self, v: u32) {
        self.out[self.at..self.at + 4].copy_from_slice(&v.to_be_bytes());
        self.at += 4;
    }
}

/// The current wall-clock time as a 64-bit NTP timestamp (seconds since 1900, 32.32).
pub fn ntp_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sender_report_with_a_block_and_cname_parses_back() {
        let info = SenderInfo {
            ntp: 0x0123_4567_89ab_cdef,
            rtp_timestamp: 160,
            packets: 50,
            octets: 8000,
        };
        let block = ReportBlock {
            ssrc: 9,
            fraction_lost: 12,
            cumulative_lost: 3,
            highest_seq: 70_000,
            jitter: 40,
            last_sr: 0x4567_89ab,
            delay_since_last_sr: 65_536,
        };
        let mut buf = [0u8; 200];
        let n = write_report(7, Some(info), Some(block), "hark@host", &mut buf).unwrap();
        assert_eq!(n % 4, 0);
        let packets = parse_compound(&buf[..n]).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!((packets[0].packet_type, packets[0].count), (SR, 1));
        assert_eq!(packets[0].ssrc(), Some(7));
        assert_eq!(packets[0].sender_info(), Some(info));
        assert_eq!(&packets[0].body[24..28], &9u32.to_be_bytes());
        assert_eq!(packets[0].body[28], 12);
        assert_eq!(packets[1].packet_type, SDES);
        assert_eq!(&packets[1].body[4..6], &[1, 9]);
        assert_eq!(&packets[1].body[6..15], b"hark@host");
        // Before anything is sent: an RR with no block.
        let n = write_report(7, None, None, "x", &mut buf).unwrap();
        let packets = parse_compound(&buf[..n]).unwrap();
        assert_eq!((packets[0].packet_type, packets[0].count), (RR, 0));
        assert_eq!(packets[0].sender_info(), None);
    }

    #[test]
    fn broken_compounds_are_typed_errors() {
        assert_eq!(parse_compound(&[]), Err(RtcpError::Truncated(0)));
        assert_eq!(
            parse_compound(&[0x80, 201, 0]),
            Err(RtcpError::Truncated(0))
        );
        assert_eq!(
            parse_compound(&[0x40, 201, 0, 0]),
            Err(RtcpError::BadVersion(1))
        );
        assert_eq!(
            parse_compound(&[0x80, 201, 0, 5, 0, 0, 0, 0]),
            Err(RtcpError::Truncated(0))
        );
        assert_eq!(
            parse_compound(&[0x81, 202, 0, 0]),
            Err(RtcpError::NotAReport(202))
        );
        assert!(write_report(1, None, None, "cname", &mut [0u8; 10]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(ps) = parse_compound(&bytes) {
                for p in ps {
                    let _ = (p.ssrc(), p.sender_info());
                }
            }
        }
    }
}
