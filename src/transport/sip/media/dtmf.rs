//! DTMF out of band: RFC 4733 telephone-events (received and sent) and the bodies of SIP INFO
//! requests (`application/dtmf-relay`, `application/dtmf`). In-band tones are in
//! [`super::inband`].

use super::rtp::ts_diff;

/// Why a DTMF payload or INFO body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A telephone-event payload is 4 bytes; this one was shorter.
    #[error("telephone-event payload of {0} bytes, need 4")]
    TooShort(usize),
    /// Not a DTMF digit (`0-9`, `*`, `#`, `A-D`, or event codes 0–15).
    #[error("not a DTMF digit: {0:?}")]
    NotADigit(String),
    /// The INFO body had no `Signal=` line.
    #[error("dtmf-relay body has no Signal line")]
    NoSignal,
    /// `Duration=` was not a number of milliseconds.
    #[error("bad Duration in dtmf-relay body: {0:?}")]
    BadDuration(String),
    /// The INFO's content type carries no DTMF.
    #[error("content type {0:?} carries no DTMF")]
    UnsupportedContentType(String),
}

/// One of the 16 DTMF digits, by its RFC 4733 event code (0–9, `*` = 10, `#` = 11, A–D =
/// 12–15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfDigit(u8);

impl DtmfDigit {
    /// The digit of an event code, if it is one of the 16.
    pub fn from_code(code: u8) -> Option<Self> {
        (code < 16).then_some(Self(code))
    }

    /// The digit written as a character (`a`–`d` are accepted for `A`–`D`).
    pub fn from_char(c: char) -> Option<Self> {
        let code = match c.to_ascii_uppercase() {
            d @ '0'..='9' => d as u8 - b'0',
            '*' => 10,
            '#' => 11,
            l @ 'A'..='D' => l as u8 - b'A' + 12,
            _ => return None,
        };
        Some(Self(code))
    }

    /// The RFC 4733 event code.
    pub fn code(self) -> u8 {
        self.0
    }

    /// The character: `0-9`, `*`, `#`, `A-D`.
    pub fn to_char(self) -> char {
        b"0123456789*#ABCD"[usize::from(self.0)] as char
    }
}

impl std::fmt::Display for DtmfDigit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_char())
    }
}

/// An RFC 4733 §2.3 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–15 are the DTMF digits).
    pub event: u8,
    /// E: the event has ended (sent three times).
    pub end: bool,
    /// Power level in -dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in timestamp units from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes (later bytes would be further events of a packet that carries
    /// several; only the first is used).
    pub fn parse(b: &[u8]) -> Result<Self, DtmfError> {
        if b.len() < 4 {
            return Err(DtmfError::TooShort(b.len()));
        }
        Ok(Self {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// A digit received as telephone-events, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedDtmf {
    /// The digit.
    pub digit: DtmfDigit,
    /// How long it was pressed, in milliseconds.
    pub duration_ms: u32,
    /// Its level in -dBm0.
    pub volume: u8,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    ts: u32,
    event: TelephoneEvent,
    reported: bool,
}

/// Turns the stream of telephone-event packets into one report per key press: the repeated
/// start and update packets and the three end packets of an event share its RTP timestamp,
/// so a digit is reported once, when its first end packet arrives (with the final duration),
/// or, if every end packet was lost, when the next event begins or the caller calls
/// [`Self::finish`].
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    current: Option<Current>,
}

impl DtmfReceiver {
    /// A receiver for events timed in `clock_rate` units (8000 for telephone-event/8000).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            current: None,
        }
    }

    fn report(&self, c: &Current) -> Option<ReceivedDtmf> {
        let digit = DtmfDigit::from_code(c.event.event)?;
        Some(ReceivedDtmf {
            digit,
            duration_ms: u32::from(c.event.duration) * 1000 / self.clock_rate,
            volume: c.event.volume,
        })
    }

    /// Takes one telephone-event packet (RTP timestamp and payload); returns the digits it
    /// completes: at most the previous unfinished one and this one.
    pub fn on_packet(
        &mut self,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<[Option<ReceivedDtmf>; 2], DtmfError> {
        let ev = TelephoneEvent::parse(payload)?;
        let mut done = [None, None];
        match &mut self.current {
            Some(c) if c.ts == timestamp => {
                c.event.duration = c.event.duration.max(ev.duration);
                if ev.end && !c.reported {
                    c.reported = true;
                    c.event.end = true;
                    let c = *c;
                    done[1] = self.report(&c);
                }
                return Ok(done);
            }
            // A straggler of an older event (its end retransmitted after the next began).
            Some(c) if ts_diff(timestamp, c.ts) < 0 => return Ok(done),
            Some(c) if !c.reported => {
                let c = *c;
                done[0] = self.report(&c);
            }
            _ => {}
        }
        let c = Current {
            ts: timestamp,
            event: ev,
            reported: ev.end,
        };
        if ev.end {
            done[1] = self.report(&c);
        }
        self.current = Some(c);
        Ok(done)
    }

    /// Reports the unfinished digit, if any: the caller decides that the event is over
    /// because no telephone-event packet came for a while (every end packet was lost).
    pub fn finish(&mut self) -> Option<ReceivedDtmf> {
        let c = self.current.as_mut()?;
        if c.reported {
            return None;
        }
        c.reported = true;
        let c = *c;
        self.report(&c)
    }
}

/// Interval between the update packets of an event being sent (RFC 4733 §2.5.1.2 suggests 50
/// ms).
pub const UPDATE_MS: u32 = 50;
/// Interval between the three end packets.
pub const END_SPACING_MS: u32 = 20;

/// One telephone-event packet to send, `at_ms` after the event's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledEvent {
    /// When to send it, relative to the first packet.
    pub at_ms: u32,
    /// The RTP marker bit (set on the first packet only).
    pub marker: bool,
    /// The payload.
    pub event: TelephoneEvent,
}

/// The packets of one key press, as RFC 4733 §2.5.1 sends them: a first packet with the marker
/// bit, an update every [`UPDATE_MS`] with the growing duration, and the end packet three
/// times. All carry the same RTP timestamp (the event's start); each gets its own sequence
/// number from the sender. No allocation: it is an iterator.
#[derive(Debug, Clone)]
pub struct DtmfSchedule {
    digit: DtmfDigit,
    volume: u8,
    total_ms: u32,
    units_per_ms: u32,
    next: u32,
}

impl DtmfSchedule {
    /// The packets of `digit` held for `duration_ms` (40 ms at least) at `volume` -dBm0, in a
    /// `clock_rate` stream.
    pub fn new(digit: DtmfDigit, duration_ms: u32, volume: u8, clock_rate: u32) -> Self {
        Self {
            digit,
            volume: volume.min(63),
            // The duration field is 16 bits: at 8 kHz an event of up to 8 s fits.
            total_ms: duration_ms.clamp(40, 65_535_000 / clock_rate),
            units_per_ms: clock_rate / 1000,
            next: 0,
        }
    }

    /// How long the whole event lasts on the wire, including its end packets.
    pub fn span_ms(&self) -> u32 {
        self.total_ms + 2 * END_SPACING_MS
    }
}

impl Iterator for DtmfSchedule {
    type Item = ScheduledEvent;

    fn next(&mut self) -> Option<ScheduledEvent> {
        let updates = self.total_ms.div_ceil(UPDATE_MS);
        let k = self.next;
        if k >= updates + 3 {
            return None;
        }
        self.next += 1;
        let (at_ms, end, dur_ms) = if k < updates {
            // Each update says how long the tone will have lasted by the next one.
            (
                k * UPDATE_MS,
                false,
                ((k + 1) * UPDATE_MS).min(self.total_ms),
            )
        } else {
            let j = k - updates;
            (self.total_ms + j * END_SPACING_MS, true, self.total_ms)
        };
        Some(ScheduledEvent {
            at_ms,
            marker: k == 0,
            event: TelephoneEvent {
                event: self.digit.code(),
                end,
                volume: self.volume,
                duration: (dur_ms * self.units_per_ms) as u16,
            },
        })
    }
}

/// A digit carried by a SIP INFO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDtmf {
    /// The digit.
    pub digit: DtmfDigit,
    /// `Duration=` in milliseconds, when the body gave one.
    pub duration_ms: Option<u32>,
}

/// Reads the digit out of a SIP INFO body: `application/dtmf-relay` (`Signal=5\r\nDuration=160`,
/// Signal as a character or an event code) or `application/dtmf` (the digit alone). The
/// content type is matched without case and without parameters.
pub fn parse_info(content_type: &str, body: &str) -> Result<InfoDtmf, DtmfError> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/dtmf-relay") {
        let (mut digit, mut duration_ms) = (None, None);
        for line in body.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("signal") {
                digit = Some(signal(v)?);
            } else if k.eq_ignore_ascii_case("duration") {
                duration_ms = Some(
                    v.parse::<u32>()
                        .map_err(|_| DtmfError::BadDuration(v.chars().take(32).collect()))?,
                );
            }
        }
        let digit = digit.ok_or(DtmfError::NoSignal)?;
        return Ok(InfoDtmf { digit, duration_ms });
    }
    if mime.eq_ignore_ascii_case("application/dtmf") {
        return Ok(InfoDtmf {
            digit: signal(body.trim())?,
            duration_ms: None,
        });
    }
    Err(DtmfError::UnsupportedContentType(
        mime.chars().take(64).collect(),
    ))
}

fn signal(v: &str) -> Result<DtmfDigit, DtmfError> {
    let mut chars = v.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if let Some(d) = DtmfDigit::from_char(c) {
            return Ok(d);
        }
    }
    v.parse::<u8>()
        .ok()
        .and_then(DtmfDigit::from_code)
        .ok_or_else(|| DtmfError::NotADigit(v.chars().take(16).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digit(c: char) -> DtmfDigit {
        DtmfDigit::from_char(c).unwrap()
    }

    #[test]
    fn digits_map_to_rfc4733_event_codes() {
        for (c, code) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('d', 15),
        ] {
            assert_eq!(digit(c).code(), code);
            assert_eq!(
                DtmfDigit::from_code(code).unwrap().to_char(),
                c.to_ascii_uppercase()
            );
        }
        assert_eq!(DtmfDigit::from_char('E'), None);
        assert_eq!(DtmfDigit::from_code(16), None, "flash is not a digit");
    }

    #[test]
    fn a_payload_round_trips_with_its_bit_layout() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(e.to_bytes(), [11, 0x8a, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Ok(e));
        assert_eq!(TelephoneEvent::parse(&[1, 2]), Err(DtmfError::TooShort(2)));
    }

    #[test]
    fn a_sent_event_has_marker_first_updates_every_50_ms_and_three_ends() {
        let p: Vec<ScheduledEvent> = DtmfSchedule::new(digit('5'), 120, 10, 8000).collect();
        let at: Vec<u32> = p.iter().map(|e| e.at_ms).collect();
        assert_eq!(at, [0, 50, 100, 120, 140, 160]);
        let durations: Vec<u16> = p.iter().map(|e| e.event.duration).collect();
        assert_eq!(durations, [400, 800, 960, 960, 960, 960]);
        assert_eq!(p.iter().filter(|e| e.marker).count(), 1);
        assert!(p[0].marker);
        assert_eq!(p.iter().filter(|e| e.event.end).count(), 3);
        assert!(p.iter().all(|e| e.event.event == 5 && e.event.volume == 10));
    }

    #[test]
    fn one_report_per_key_press_despite_repeats_and_retransmitted_ends() {
        let mut rx = DtmfReceiver::new(8000);
        let mut got = Vec::new();
        let mut feed = |rx: &mut DtmfReceiver, ts: u32, e: TelephoneEvent| {
            got.extend(
                rx.on_packet(ts, &e.to_bytes())
                    .unwrap()
                    .into_iter()
                    .flatten(),
            );
        };
        for (ts, d) in [(1000u32, '1'), (5000, '#')] {
            let mut sched: Vec<ScheduledEvent> =
                DtmfSchedule::new(digit(d), 100, 7, 8000).collect();
            // The start packet repeated (some phones send it three times).
            sched.insert(1, sched[0]);
            sched.insert(1, sched[0]);
            for e in sched {
                feed(&mut rx, ts, e.event);
            }
        }
        assert_eq!(
            got,
            [
                ReceivedDtmf {
                    digit: digit('1'),
                    duration_ms: 100,
                    volume: 7
                },
                ReceivedDtmf {
                    digit: digit('#'),
                    duration_ms: 100,
                    volume: 7
                },
            ]
        );
    }

    #[test]
    fn an_event_whose_ends_were_lost_is_reported_by_the_next_or_when_finished() {
        let mut rx = DtmfReceiver::new(8000);
        let start = |code, duration| TelephoneEvent {
            event: code,
            end: false,
            volume: 5,
            duration,
        };
        assert_eq!(
            rx.on_packet(0, &start(3, 400).to_bytes()).unwrap(),
            [None, None]
        );
        let [prev, now] = rx.on_packet(4000, &start(4, 400).to_bytes()).unwrap();
        assert_eq!(
            prev.map(|r| (r.digit.to_char(), r.duration_ms)),
            Some(('3', 50))
        );
        assert_eq!(now, None);
        assert_eq!(rx.finish().map(|r| r.digit.to_char()), Some('4'));
        assert_eq!(rx.finish(), None, "reported once");
        // A late end packet of the old event is ignored.
        let old_end = TelephoneEvent {
            end: true,
            ..start(3, 800)
        };
        assert_eq!(rx.on_packet(0, &old_end.to_bytes()).unwrap(), [None, None]);
    }

    #[test]
    fn info_bodies_of_both_content_types_give_their_digit() {
        let r = parse_info("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!((r.digit.to_char(), r.duration_ms), ('5', Some(160)));
        let r = parse_info(
            "Application/DTMF-Relay; charset=x",
            "signal = #\nduration=250",
        )
        .unwrap();
        assert_eq!((r.digit.to_char(), r.duration_ms), ('#', Some(250)));
        assert_eq!(
            parse_info("application/dtmf-relay", "Signal=10")
                .unwrap()
                .digit
                .to_char(),
            '*'
        );
        assert_eq!(
            parse_info("application/dtmf", "7\r\n")
                .unwrap()
                .digit
                .to_char(),
            '7'
        );
        assert_eq!(
            parse_info("application/dtmf", "11")
                .unwrap()
                .digit
                .to_char(),
            '#'
        );
        assert_eq!(
            parse_info("application/dtmf-relay", "Duration=160"),
            Err(DtmfError::NoSignal)
        );
        assert_eq!(
            parse_info("application/dtmf-relay", "Signal=X"),
            Err(DtmfError::NotADigit("X".into()))
        );
        assert_eq!(
            parse_info("application/dtmf-relay", "Signal=1\nDuration=long"),
            Err(DtmfError::BadDuration("long".into()))
        );
        assert_eq!(
            parse_info("text/plain", "5"),
            Err(DtmfError::UnsupportedContentType("text/plain".into()))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_info_bodies_and_payloads_never_panic(ct in ".{0,40}", body in ".{0,200}",
                                                          bytes in proptest::collection::vec(any::<u8>(), 0..8),
                                                          ts in any::<u32>()) {
            let _ = parse_info(&ct, &body);
            let _ = parse_info("application/dtmf-relay", &body);
            let _ = parse_info("application/dtmf", &body);
            let mut rx = DtmfReceiver::new(8000);
            let _ = rx.on_packet(ts, &bytes);
            let _ = rx.on_packet(ts.wrapping_add(1), &bytes);
            let _ = rx.finish();
        }
    }
}
