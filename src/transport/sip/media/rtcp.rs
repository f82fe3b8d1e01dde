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
    /// A packet type outside RTCP's 192–223 (RFC 5761 §4): not RTCP at all.
    #[error("packet type {0} is not RTCP")]
    NotRtcp(u8),
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

    /// The report blocks of an SR or RR: how the sender receives each stream it reports on
    /// (ours among them), as many as its count says and its length holds.
    pub fn report_blocks(&self) -> impl Iterator<Item = ReportBlock> + '_ {
        let start = match self.packet_type {
            SR => 24,
            RR => 4,
            _ => usize::MAX,
        };
        let blocks = self.body.get(start..).unwrap_or_default();
        blocks
            .chunks_exact(24)
            .take(usize::from(self.count))
            .map(|b| {
                let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                ReportBlock {
                    ssrc: w(0),
                    fraction_lost: b[4],
                    cumulative_lost: w(4) & 0xff_ffff,
                    highest_seq: w(8),
                    jitter: w(12),
                    last_sr: w(16),
                    delay_since_last_sr: w(20),
                }
            })
    }
}

impl ReportBlock {
    /// The round trip to the reporter and back (RFC 3550 §6.4.1): now, less the time of our
    /// SR it echoes, less how long it held that SR; `None` if it has had no SR of ours.
    pub fn round_trip(&self, ntp_now: u64) -> Option<std::time::Duration> {
        if self.last_sr == 0 {
            return None;
        }
        let now = (ntp_now >> 16) as u32;
        let units = now
            .wrapping_sub(self.last_sr)
            .wrapping_sub(self.delay_since_last_sr);
        // A clock step or a bogus block gives a "negative" round trip: no figure.
        (units < 0x8000_0000)
            .then(|| std::time::Duration::from_micros(u64::from(units) * 1_000_000 / 65_536))
    }
}

/// Splits a compound RTCP datagram into its packets, checking every header and length; the
/// types must be RTCP's. A compound begins with an SR or RR (RFC 3550 §6.1), but packets that
/// do not (reduced-size RTCP, RFC 5506, which baresip sends: a lone APP or BYE) are taken too:
/// they are well-formed, only not reports.
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
        if !(192..=223).contains(&packet_type) {
            return Err(RtcpError::NotRtcp(packet_type));
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
        assert_eq!(packets[0].report_blocks().collect::<Vec<_>>(), [block]);
        assert_eq!(packets[1].packet_type, SDES);
        assert_eq!(&packets[1].body[4..6], &[1, 9]);
        assert_eq!(&packets[1].body[6..15], b"hark@host");
        // Before anything is sent: an RR with no block.
        let n = write_report(7, None, None, "x", &mut buf).unwrap();
        let packets = parse_compound(&buf[..n]).unwrap();
        assert_eq!((packets[0].packet_type, packets[0].count), (RR, 0));
        assert_eq!(packets[0].sender_info(), None);
        assert_eq!(packets[0].report_blocks().count(), 0);
        // A receiver report's block follows its SSRC directly.
        let n = write_report(7, None, Some(block), "x", &mut buf).unwrap();
        let packets = parse_compound(&buf[..n]).unwrap();
        assert_eq!(packets[0].report_blocks().collect::<Vec<_>>(), [block]);
        assert_eq!(packets[1].report_blocks().count(), 0, "SDES has none");
    }

    #[test]
    fn the_round_trip_is_now_less_the_echoed_sr_time_less_the_reporters_hold() {
        let sent_at: u64 = 0xE8AB_CDEF_1234_5678; // an SR's NTP time
        let block = |delay_s: f64| ReportBlock {
            last_sr: (sent_at >> 16) as u32,
            delay_since_last_sr: (delay_s * 65_536.0) as u32,
            ..ReportBlock::default()
        };
        let at = |s: f64| sent_at + (s * 4_294_967_296.0) as u64;
        // Back 1.25 s after our SR, which the peer held for 1 s: 250 ms on the wire.
        let rtt = block(1.0).round_trip(at(1.25)).unwrap();
        assert!((rtt.as_secs_f64() - 0.25).abs() < 1e-4, "{rtt:?}");
        // No SR of ours seen yet, or a figure that would be negative: none.
        assert_eq!(ReportBlock::default().round_trip(at(1.0)), None);
        assert_eq!(block(2.0).round_trip(at(1.0)), None);
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
        // RTP sent to the RTCP port (PCMU, payload type 0).
        assert_eq!(
            parse_compound(&[0x80, 0, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::NotRtcp(0))
        );
        assert!(write_report(1, None, None, "cname", &mut [0u8; 10]).is_err());
    }

    #[test]
    fn a_lone_bye_or_app_as_baresip_sends_them_is_taken_though_it_is_not_a_report() {
        let bye = [0x81, BYE, 0, 1, 0, 0, 0, 42];
        let packets = parse_compound(&bye).unwrap();
        assert_eq!((packets[0].packet_type, packets[0].ssrc()), (BYE, Some(42)));
        assert_eq!(packets[0].report_blocks().count(), 0);
        let app = [0x80, 204, 0, 2, 0, 0, 0, 42, b'P', b'I', b'N', b'G'];
        assert_eq!(parse_compound(&app).unwrap()[0].packet_type, 204);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(ps) = parse_compound(&bytes) {
                for p in ps {
                    let _ = (p.ssrc(), p.sender_info(), p.report_blocks().count());
                }
            }
        }
    }
}
