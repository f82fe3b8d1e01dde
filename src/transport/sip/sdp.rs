//! SDP offer/answer for one audio stream (RFC 4566, RFC 3264): reading a caller's offer,
//! choosing a G.711 codec and telephone-event, and writing the answer.

use std::net::{IpAddr, SocketAddr};

/// Why an offer cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not SDP text, or a line that is not `x=value`.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No `m=audio` line with a port.
    #[error("no audio stream offered")]
    NoAudio,
    /// The audio stream offers no codec from our preference list.
    #[error("no common codec (offered payload types {0})")]
    NoCodec(String),
    /// No usable `c=` address for the audio stream.
    #[error("no connection address")]
    NoAddress,
}

/// Which way media flows, from hark's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways (a normal call).
    SendRecv,
    /// hark sends only (the caller put the call on hold with `sendonly`).
    SendOnly,
    /// hark receives only.
    RecvOnly,
    /// Neither way (hold with `inactive`, or a zero address).
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The answer to an offered direction (RFC 3264 §6.1).
    fn answering(offered: Direction) -> Direction {
        match offered {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the far end is holding the call (it no longer sends to us... or at all).
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::RecvOnly | Direction::Inactive)
    }

    /// This direction with hark's receiving taken out: what hark answers while it holds the
    /// call itself (RFC 3264 §8.4: the holder keeps at most `sendonly`).
    pub fn held_by_us(self) -> Direction {
        match self {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        }
    }
}

/// The media both sides agreed on: what the RTP layer needs to run the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// Where to send RTP.
    pub remote: SocketAddr,
    /// Payload type of the voice codec.
    pub payload_type: u8,
    /// `PCMU` or `PCMA`.
    pub codec: &'static str,
    /// Codec clock rate (8000 for G.711).
    pub clock_rate: u32,
    /// Payload type of RFC 4733 telephone-event, when the caller offered it.
    pub telephone_event: Option<u8>,
    /// Which way media flows, from hark's side.
    pub direction: Direction,
    /// Packetisation the caller asked for (`a=ptime`), 20 ms when it did not say.
    pub ptime_ms: u32,
}

/// One `m=` section of an offer.
#[derive(Debug, Clone, Default)]
struct MediaSection {
    kind: String,
    port: u16,
    proto: String,
    formats: Vec<String>,
    rtpmap: Vec<(u8, String, u32)>,
    connection: Option<IpAddr>,
    direction: Option<Direction>,
    ptime: Option<u32>,
}

/// A parsed offer.
#[derive(Debug, Clone)]
pub struct Offer {
    connection: Option<IpAddr>,
    direction: Option<Direction>,
    media: Vec<MediaSection>,
}

/// The codecs hark can speak, with their static payload types and rates.
const KNOWN: [(&str, u8, u32); 2] = [("PCMU", 0, 8000), ("PCMA", 8, 8000)];

impl Offer {
    /// Parses SDP text (RFC 4566 §5; unknown lines are ignored as §5 asks).
    pub fn parse(body: &[u8]) -> Result<Offer, SdpError> {
        let text =
            std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8".into()))?;
        let mut offer = Offer {
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        let mut saw_version = false;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (kind, value) = line
                .split_once('=')
                .filter(|(k, _)| k.len() == 1)
                .ok_or_else(|| SdpError::Malformed(line.chars().take(60).collect()))?;
            match kind {
                "v" => saw_version = value == "0",
                "c" => {
                    let addr = parse_connection(value)?;
                    match offer.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => offer.connection = Some(addr),
                    }
                }
                "m" => {
                    let mut parts = value.split_whitespace();
                    let kind = parts.next().unwrap_or_default().to_owned();
                    let port = parts
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| SdpError::Malformed(format!("m={value}")))?;
                    let proto = parts.next().unwrap_or_default().to_owned();
                    offer.media.push(MediaSection {
                        kind,
                        port,
                        proto,
                        formats: parts.map(str::to_owned).collect(),
                        ..MediaSection::default()
                    });
                }
                "a" => {
                    let dir = match value {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    let m = offer.media.last_mut();
                    if let Some(d) = dir {
                        match m {
                            Some(m) => m.direction = Some(d),
                            None => offer.direction = Some(d),
                        }
                    } else if let (Some(rest), Some(m)) = (value.strip_prefix("rtpmap:"), m) {
                        if let Some(entry) = parse_rtpmap(rest) {
                            m.rtpmap.push(entry);
                        }
                    } else if let Some(rest) = value.strip_prefix("ptime:") {
                        if let (Ok(p), Some(m)) = (rest.trim().parse(), offer.media.last_mut()) {
                            m.ptime = Some(p);
                        }
                    }
                }
                _ => {}
            }
        }
        if !saw_version {
            return Err(SdpError::Malformed("no v=0 line".into()));
        }
        Ok(offer)
    }

    /// Chooses the media for the first usable audio stream: the first offered codec in
    /// `preference` (RFC 3264 §6.1 lets the answerer pick from the offer), telephone-event at
    /// 8 kHz if offered.
    pub fn negotiate(&self, preference: &[String]) -> Result<NegotiatedMedia, SdpError> {
        let m = self
            .media
            .iter()
            .find(|m| m.kind == "audio" && m.port != 0 && m.proto.starts_with("RTP/AVP"))
            .ok_or(SdpError::NoAudio)?;
        let conn = m
            .connection
            .or(self.connection)
            .ok_or(SdpError::NoAddress)?;
        let offered: Vec<(u8, String, u32)> = m
            .formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter_map(|pt| {
                m.rtpmap
                    .iter()
                    .find(|(p, _, _)| *p == pt)
                    .cloned()
                    .or_else(|| {
                        KNOWN
                            .iter()
                            .find(|(_, p, _)| *p == pt)
                            .map(|(n, p, r)| (*p, (*n).to_owned(), *r))
                    })
            })
            .collect();
        let chosen = preference.iter().find_map(|want| {
            let (name, _, rate) = KNOWN
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(want))?;
            offered
                .iter()
                .find(|(_, n, r)| n.eq_ignore_ascii_case(name) && r == rate)
                .map(|(pt, _, _)| (*pt, *name, *rate))
        });
        let Some((payload_type, codec, clock_rate)) = chosen else {
            return Err(SdpError::NoCodec(m.formats.join(" ")));
        };
        let telephone_event = offered
            .iter()
            .find(|(_, n, r)| n.eq_ignore_ascii_case("telephone-event") && *r == 8000)
            .map(|(pt, _, _)| *pt);
        let mut offered_dir = m
            .direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv);
        if conn.is_unspecified() {
            // RFC 3264 §8.4's old hold: c=0.0.0.0.
            offered_dir = Direction::Inactive;
        }
        Ok(NegotiatedMedia {
            remote: SocketAddr::new(conn, m.port),
            payload_type,
            codec,
            clock_rate,
            telephone_event,
            direction: Direction::answering(offered_dir),
            ptime_ms: m.ptime.filter(|p| (10..=60).contains(p)).unwrap_or(20),
        })
    }

    /// How many `m=` lines the offer has (the answer must have as many, RFC 3264 §6).
    fn sections(&self) -> impl Iterator<Item = &MediaSection> {
        self.media.iter()
    }
}

/// Writes the answer: our address and RTP port for the chosen stream, port 0 for every other
/// `m=` line (rejected), `version` bumped on every new answer in a dialog.
pub fn answer(
    offer: &Offer,
    media: &NegotiatedMedia,
    local: SocketAddr,
    session_id: u64,
    version: u64,
) -> String {
    let ip = local.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = format!(
        "v=0\r\no=hark {session_id} {version} IN {family} {ip}\r\ns=hark\r\n\
         c=IN {family} {ip}\r\nt=0 0\r\n"
    );
    let mut used = false;
    for m in offer.sections() {
        let usable = !used && m.kind == "audio" && m.port != 0 && m.proto.starts_with("RTP/AVP");
        if !usable {
            let fmt = m.formats.first().map_or("0", String::as_str);
            out.push_str(&format!("m={} 0 {} {fmt}\r\n", m.kind, m.proto));
            continue;
        }
        used = true;
        let mut fmts = media.payload_type.to_string();
        if let Some(te) = media.telephone_event {
            fmts.push_str(&format!(" {te}"));
        }
        out.push_str(&format!("m=audio {} RTP/AVP {fmts}\r\n", local.port()));
        out.push_str(&format!(
            "a=rtpmap:{} {}/{}\r\n",
            media.payload_type, media.codec, media.clock_rate
        ));
        if let Some(te) = media.telephone_event {
            out.push_str(&format!(
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            ));
        }
        out.push_str(&format!("a=ptime:{}\r\n", media.ptime_ms));
        out.push_str(&format!("a={}\r\n", media.direction.attribute()));
    }
    out
}

/// Writes an offer for an outbound call: every codec of `preference` hark knows (static payload
/// types) plus telephone-event on 101, sendrecv.
pub fn offer(preference: &[String], local: SocketAddr, session_id: u64) -> String {
    let ip = local.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let codecs: Vec<(&str, u8, u32)> = preference
        .iter()
        .filter_map(|p| {
            KNOWN
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(p))
                .copied()
        })
        .collect();
    let mut fmts: Vec<String> = codecs.iter().map(|(_, pt, _)| pt.to_string()).collect();
    fmts.push(OFFER_TELEPHONE_EVENT.to_string());
    let mut out = format!(
        "v=0\r\no=hark {session_id} 1 IN {family} {ip}\r\ns=hark\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP {}\r\n",
        local.port(),
        fmts.join(" ")
    );
    for (name, pt, rate) in codecs {
        out.push_str(&format!("a=rtpmap:{pt} {name}/{rate}\r\n"));
    }
    out.push_str(&format!(
        "a=rtpmap:{OFFER_TELEPHONE_EVENT} telephone-event/8000\r\na=fmtp:{OFFER_TELEPHONE_EVENT} 0-16\r\n\
         a=ptime:20\r\na=sendrecv\r\n"
    ));
    out
}

/// Writes hark's offer in a re-INVITE of an established call (RFC 3264 §8): the codec and
/// telephone-event already negotiated, on the same RTP address, with `direction` (`sendonly`
/// to hold, `sendrecv` to resume, §8.4). `version` must be one more than hark's last SDP in
/// the dialog (§8: same `o=` session id, version + 1).
pub fn reoffer(
    media: &NegotiatedMedia,
    local: SocketAddr,
    session_id: u64,
    version: u64,
    direction: Direction,
) -> String {
    let ip = local.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut fmts = media.payload_type.to_string();
    if let Some(te) = media.telephone_event {
        fmts.push_str(&format!(" {te}"));
    }
    let mut out = format!(
        "v=0\r\no=hark {session_id} {version} IN {family} {ip}\r\ns=hark\r\n\
         c=IN {family} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {fmts}\r\n\
         a=rtpmap:{} {}/{}\r\n",
        local.port(),
        media.payload_type,
        media.codec,
        media.clock_rate
    );
    if let Some(te) = media.telephone_event {
        out.push_str(&format!(
            "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
        ));
    }
    out.push_str(&format!(
        "a=ptime:{}\r\na={}\r\n",
        media.ptime_ms,
        direction.attribute()
    ));
    out
}

/// The payload type hark offers telephone-event on.
const OFFER_TELEPHONE_EVENT: u8 = 101;

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let mut parts = value.split_whitespace();
    let (Some("IN"), Some(_), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SdpError::Malformed(format!("c={value}")));
    };
    // Multicast TTL suffix (`/127`) is not for us; take the address.
    addr.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| SdpError::Malformed(format!("c={value}")))
}

fn parse_rtpmap(rest: &str) -> Option<(u8, String, u32)> {
    let (pt, enc) = rest.split_once(' ')?;
    let mut enc = enc.trim().split('/');
    let name = enc.next()?.to_owned();
    let rate = enc.next()?.parse().ok()?;
    Some((pt.parse().ok()?, name, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs() -> Vec<String> {
        vec!["PCMU".into(), "PCMA".into()]
    }

    const BARESIP: &str =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 10000 RTP/AVP 96 8 0 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
        a=ptime:20\r\na=sendrecv\r\n";

    #[test]
    fn the_first_codec_of_our_preference_that_was_offered_wins_and_telephone_event_is_kept() {
        let offer = Offer::parse(BARESIP.as_bytes()).unwrap();
        let m = offer.negotiate(&prefs()).unwrap();
        assert_eq!(m.codec, "PCMU");
        assert_eq!(m.payload_type, 0);
        assert_eq!(m.telephone_event, Some(101));
        assert_eq!(m.remote, "127.0.0.1:10000".parse().unwrap());
        assert_eq!(m.direction, Direction::SendRecv);
        let m = offer.negotiate(&["PCMA".into()]).unwrap();
        assert_eq!((m.codec, m.payload_type), ("PCMA", 8));
    }

    #[test]
    fn the_answer_names_our_port_and_only_the_chosen_formats() {
        let offer = Offer::parse(BARESIP.as_bytes()).unwrap();
        let m = offer.negotiate(&prefs()).unwrap();
        let a = answer(&offer, &m, "127.0.0.1:20000".parse().unwrap(), 7, 1);
        assert!(a.contains("c=IN IP4 127.0.0.1\r\n"), "{a}");
        assert!(a.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:101 telephone-event/8000"), "{a}");
        assert!(a.contains("a=sendrecv"), "{a}");
        assert!(!a.contains("opus"), "{a}");
        // Our own answer parses as SDP and negotiates back to the same codec.
        let back = Offer::parse(a.as_bytes())
            .unwrap()
            .negotiate(&prefs())
            .unwrap();
        assert_eq!(back.payload_type, 0);
    }

    #[test]
    fn our_offer_lists_our_codecs_in_preference_order_and_telephone_event() {
        let o = offer(
            &["PCMA".into(), "PCMU".into()],
            "127.0.0.1:20002".parse().unwrap(),
            9,
        );
        assert!(o.contains("m=audio 20002 RTP/AVP 8 0 101\r\n"), "{o}");
        let m = Offer::parse(o.as_bytes())
            .unwrap()
            .negotiate(&prefs())
            .unwrap();
        assert_eq!((m.codec, m.telephone_event), ("PCMU", Some(101)));
    }

    #[test]
    fn hold_offers_get_the_mirrored_direction() {
        for (attr, ours) in [
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
        ] {
            let sdp = BARESIP.replace("a=sendrecv", &format!("a={attr}"));
            let m = Offer::parse(sdp.as_bytes())
                .unwrap()
                .negotiate(&prefs())
                .unwrap();
            assert_eq!(m.direction, ours, "{attr}");
        }
        let old_hold = BARESIP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let m = Offer::parse(old_hold.as_bytes())
            .unwrap()
            .negotiate(&prefs())
            .unwrap();
        assert_eq!(m.direction, Direction::Inactive);
    }

    #[test]
    fn a_video_line_is_rejected_with_port_zero_and_audio_still_answered() {
        let sdp = BARESIP.replace("m=audio", "m=video 10002 RTP/AVP 97\r\nm=audio");
        let offer = Offer::parse(sdp.as_bytes()).unwrap();
        let m = offer.negotiate(&prefs()).unwrap();
        let a = answer(&offer, &m, "127.0.0.1:20000".parse().unwrap(), 1, 1);
        let video = a.find("m=video 0 RTP/AVP 97").expect("video rejected");
        let audio = a.find("m=audio 20000").expect("audio answered");
        assert!(video < audio, "m= lines keep the offer's order: {a}");
    }

    #[test]
    fn unusable_offers_say_why() {
        let opus_only = BARESIP
            .replace("96 8 0 101", "96")
            .replace("a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n", "");
        assert!(matches!(
            Offer::parse(opus_only.as_bytes())
                .unwrap()
                .negotiate(&prefs()),
            Err(SdpError::NoCodec(_))
        ));
        assert!(matches!(
            Offer::parse(b"v=0\r\nc=IN IP4 1.2.3.4\r\n")
                .unwrap()
                .negotiate(&prefs()),
            Err(SdpError::NoAudio)
        ));
        assert!(matches!(
            Offer::parse(b"hello"),
            Err(SdpError::Malformed(_))
        ));
        assert!(matches!(
            Offer::parse(b"v=0\r\nc=IN IP4 not-an-ip\r\n"),
            Err(SdpError::Malformed(_))
        ));
    }

    #[test]
    fn a_hold_reoffer_keeps_session_id_codec_and_port_and_bumps_the_version() {
        let offer = Offer::parse(BARESIP.as_bytes()).unwrap();
        let m = offer.negotiate(&prefs()).unwrap();
        let local: SocketAddr = "127.0.0.1:20000".parse().unwrap();
        let first = answer(&offer, &m, local, 42, 1);
        let hold = reoffer(&m, local, 42, 2, Direction::SendOnly);
        assert!(
            first.contains("o=hark 42 1 IN IP4 127.0.0.1\r\n"),
            "{first}"
        );
        assert!(hold.contains("o=hark 42 2 IN IP4 127.0.0.1\r\n"), "{hold}");
        assert!(hold.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{hold}");
        assert!(
            hold.contains("a=sendonly\r\n") && !hold.contains("sendrecv"),
            "{hold}"
        );
        // The peer's view of it: hark only sends, so the peer would answer recvonly.
        let seen = Offer::parse(hold.as_bytes())
            .unwrap()
            .negotiate(&prefs())
            .unwrap();
        assert_eq!(seen.direction, Direction::RecvOnly);
        assert_eq!((seen.payload_type, seen.telephone_event), (0, Some(101)));
        let resume = reoffer(&m, local, 42, 3, Direction::SendRecv);
        assert!(resume.contains("o=hark 42 3 ") && resume.contains("a=sendrecv\r\n"));
    }

    #[test]
    fn while_hark_holds_its_answers_never_include_receiving() {
        use Direction::*;
        for (d, held) in [
            (SendRecv, SendOnly),
            (SendOnly, SendOnly),
            (RecvOnly, Inactive),
            (Inactive, Inactive),
        ] {
            assert_eq!(d.held_by_us(), held, "{d:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_sdp_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            if let Ok(o) = Offer::parse(&data) {
                let _ = o.negotiate(&prefs());
            }
        }
    }
}
