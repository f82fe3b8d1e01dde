//! Blind (cold) transfer by REFER (RFC 3515): the `Refer-To` URI built from what the agent
//! asked for, the `message/sipfrag` bodies of the NOTIFYs that report how the transferee's new
//! call goes, and the state that turns REFER's answer and those NOTIFYs into an outcome.
//!
//! The outcome is what a person can be told: on failure the agent stays on the call and says
//! why ("the line was busy"), so the reasons are short spoken phrases, not SIP codes.

use std::time::Duration;

/// How long a transfer may take, from REFER to the final NOTIFY, before hark gives up and
/// keeps the caller (a phone rings about 30 s before voicemail or a timeout).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for the final NOTIFY after the caller ended our leg mid-transfer (some
/// transferees send BYE before they report success).
pub const NOTIFY_GRACE: Duration = Duration::from_secs(2);

/// Longest sipfrag status line looked at; the rest of a body is ignored.
const MAX_STATUS_LINE: usize = 512;

/// The status line a NOTIFY's `message/sipfrag` body carries (`SIP/2.0 180 Ringing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipFrag {
    /// The status code (100–699).
    pub code: u16,
    /// The reason phrase, as sent (may be empty).
    pub reason: String,
}

/// Why a sipfrag body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipFragError {
    /// No status line at all.
    #[error("empty sipfrag body")]
    Empty,
    /// The first line is not `SIP/2.0 <code> <reason>`.
    #[error("sipfrag is not a SIP/2.0 status line: {0:?}")]
    NotAStatusLine(String),
    /// The code is not three digits from 100 to 699.
    #[error("sipfrag status code {0:?} is not 100-699")]
    BadCode(String),
}

/// Reads the status line of a `message/sipfrag` body (RFC 3420); headers after it are ignored.
pub fn parse_sipfrag(body: &[u8]) -> Result<SipFrag, SipFragError> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(SipFragError::Empty)?;
    let rest = &body[start..];
    let end = rest
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(rest.len())
        .min(MAX_STATUS_LINE);
    let line = String::from_utf8_lossy(&rest[..end]);
    let clipped = || line.chars().take(80).collect::<String>();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(SipFragError::NotAStatusLine(clipped()));
    }
    let code_text = parts
        .next()
        .ok_or_else(|| SipFragError::NotAStatusLine(clipped()))?;
    let code = (code_text.len() == 3 && code_text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code_text.parse::<u16>().ok())
        .flatten()
        .filter(|c| (100..700).contains(c))
        .ok_or_else(|| SipFragError::BadCode(code_text.chars().take(16).collect()))?;
    Ok(SipFrag {
        code,
        reason: parts.next().unwrap_or_default().trim().to_owned(),
    })
}

/// Why a transfer failed, as the agent can say it to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFailure {
    /// 486 Busy Here, 600 Busy Everywhere.
    Busy,
    /// No answer: 408, 480, 487, a timeout, or no final NOTIFY in time.
    NoAnswer,
    /// 404, 484, 604: no such number.
    NotFound,
    /// The caller's phone or the target declined (403, 603, 405, 501, a refused REFER, ...).
    Refused,
    /// The caller hung up before the transfer was under way.
    CallerLeft,
    /// Anything else (5xx, a subscription ended without a result).
    Failed,
}

impl TransferFailure {
    /// The failure a final SIP status code (of REFER or of the sipfrag) means.
    pub fn from_code(code: u16) -> TransferFailure {
        match code {
            486 | 600 => TransferFailure::Busy,
            408 | 480 | 487 => TransferFailure::NoAnswer,
            404 | 484 | 604 => TransferFailure::NotFound,
            400..=499 | 603 | 606 | 501 => TransferFailure::Refused,
            _ => TransferFailure::Failed,
        }
    }
}

impl std::fmt::Display for TransferFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransferFailure::Busy => "the line was busy",
            TransferFailure::NoAnswer => "nobody answered",
            TransferFailure::NotFound => "that number does not exist",
            TransferFailure::Refused => "the transfer was refused",
            TransferFailure::CallerLeft => "the caller hung up",
            TransferFailure::Failed => "the transfer did not go through",
        })
    }
}

/// Where a transfer is: fed REFER's final response, each NOTIFY and the end of our leg; the
/// first final result sticks (a later NOTIFY cannot turn a failure into a success).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferProgress {
    /// REFER was answered 2xx (the transferee is trying).
    pub accepted: bool,
    /// The last sipfrag status code reported.
    pub last_code: Option<u16>,
    /// Our leg of the call ended (BYE either way) before a result.
    pub call_ended: bool,
    outcome: Option<Result<(), TransferFailure>>,
}

impl ReferProgress {
    /// The result, once known.
    pub fn outcome(&self) -> Option<Result<(), TransferFailure>> {
        self.outcome
    }

    fn settle(&mut self, result: Result<(), TransferFailure>) {
        if self.outcome.is_none() {
            self.outcome = Some(result);
        }
    }

    /// REFER's final response: 2xx accepts; anything else refuses the transfer.
    pub fn refer_answered(&mut self, code: u16) {
        match code {
            200..=299 => self.accepted = true,
            401 | 407 => self.settle(Err(TransferFailure::Refused)),
            300.. => self.settle(Err(TransferFailure::from_code(code))),
            _ => {}
        }
    }

    /// A NOTIFY (`Event: refer`) with its `Subscription-State` and body: a 2xx sipfrag is
    /// success, a final non-2xx is failure, and a terminated subscription without either is
    /// failure too. A NOTIFY also implies REFER was accepted (it may overtake the 202). An
    /// unreadable body is returned as an error after the subscription state was applied.
    pub fn notify(
        &mut self,
        subscription_state: Option<&str>,
        body: &[u8],
    ) -> Result<(), SipFragError> {
        self.accepted = true;
        let frag = parse_sipfrag(body);
        if let Ok(f) = &frag {
            self.last_code = Some(f.code);
            match f.code {
                200..=299 => self.settle(Ok(())),
                300.. => self.settle(Err(TransferFailure::from_code(f.code))),
                _ => {}
            }
        }
        let state = subscription_state.unwrap_or_default();
        let value = state.split(';').next().unwrap_or_default().trim();
        if value.eq_ignore_ascii_case("terminated") {
            let reason = super::message::param(state, "reason").unwrap_or_default();
            let failure = match reason.to_ascii_lowercase().as_str() {
                "timeout" | "giveup" => TransferFailure::NoAnswer,
                "rejected" | "noresource" => TransferFailure::Refused,
                _ => TransferFailure::Failed,
            };
            self.settle(Err(failure));
        }
        frag.map(|_| ())
    }

    /// Our leg ended (the caller's BYE or ours) while the transfer was pending.
    pub fn leg_ended(&mut self) {
        self.call_ended = true;
    }

    /// The result when the time ran out without a final NOTIFY: if the caller left our leg
    /// after accepting REFER, the transferee took them on (success); otherwise no answer, or
    /// the caller left before the transfer started.
    pub fn on_deadline(&self) -> Result<(), TransferFailure> {
        if let Some(o) = self.outcome {
            return o;
        }
        match (self.call_ended, self.accepted) {
            (true, true) => Ok(()),
            (true, false) => Err(TransferFailure::CallerLeft),
            (false, _) => Err(TransferFailure::NoAnswer),
        }
    }
}

/// Why a transfer target cannot become a `Refer-To` URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Nothing given.
    #[error("the transfer target is empty")]
    Empty,
    /// Spaces, angle brackets, quotes or control characters, which would break the header.
    #[error("the transfer target {0:?} has characters a SIP URI cannot hold")]
    BadCharacters(String),
    /// A bare user or number, and neither a registrar domain nor the caller's host to put
    /// it on.
    #[error("the transfer target {0:?} needs a domain (set sip.domain or give a full sip: URI)")]
    NoDomain(String),
}

/// The `Refer-To` URI for `target`: a `sip:`/`sips:` URI as given; `tel:+123` and a bare user
/// or number (`201`, `+14155550123`, `sales`) on `domain` (the registrar's), or else on the host
/// of `caller_uri` (the caller's PBX when calls come straight from it); `user@host` gets
/// `sip:` in front.
pub fn target_uri(
    target: &str,
    domain: Option<&str>,
    caller_uri: &str,
) -> Result<String, TargetError> {
    let t = target.trim();
    if t.is_empty() {
        return Err(TargetError::Empty);
    }
    if t.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
    {
        return Err(TargetError::BadCharacters(t.chars().take(80).collect()));
    }
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let rest = t.split_once(':').map_or("", |(_, r)| r);
        if rest.is_empty() || rest.starts_with('@') || rest.ends_with('@') {
            return Err(TargetError::BadCharacters(t.chars().take(80).collect()));
        }
        return Ok(t.to_owned());
    }
    let (user, phone) = match lower.strip_prefix("tel:") {
        Some(_) => (t[4..].split(';').next().unwrap_or_default(), true),
        None => (t, false),
    };
    if user.is_empty() {
        return Err(TargetError::Empty);
    }
    if user.contains('@') {
        return Ok(format!("sip:{user}"));
    }
    let user = user.replace('#', "%23");
    let host = match domain.filter(|d| !d.is_empty()) {
        Some(d) => d.to_owned(),
        None => host_of(caller_uri).ok_or_else(|| TargetError::NoDomain(t.to_owned()))?,
    };
    Ok(if phone {
        format!("sip:{user}@{host};user=phone")
    } else {
        format!("sip:{user}@{host}")
    })
}

/// The `host[:port]` of a `sip:`/`sips:` URI.
fn host_of(uri: &str) -> Option<String> {
    let rest = uri.split_once(':')?.1;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?', '>']).next()?.trim();
    (!hostport.is_empty()).then(|| hostport.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sipfrag_status_line_is_read_with_its_reason() {
        assert_eq!(
            parse_sipfrag(b"SIP/2.0 200 OK\r\n").unwrap(),
            SipFrag {
                code: 200,
                reason: "OK".into()
            }
        );
        assert_eq!(parse_sipfrag(b"SIP/2.0 100 Trying").unwrap().code, 100);
        // Leading blank lines and headers after the status line are tolerated.
        let frag = parse_sipfrag(b"\r\nsip/2.0 486 Busy Here\r\nContent-Length: 0\r\n").unwrap();
        assert_eq!((frag.code, frag.reason.as_str()), (486, "Busy Here"));
        assert_eq!(parse_sipfrag(b"SIP/2.0 603").unwrap().reason, "");
    }

    #[test]
    fn bodies_that_are_not_a_status_line_are_errors() {
        assert_eq!(parse_sipfrag(b""), Err(SipFragError::Empty));
        assert_eq!(parse_sipfrag(b" \r\n "), Err(SipFragError::Empty));
        assert!(matches!(
            parse_sipfrag(b"INVITE sip:a@b SIP/2.0"),
            Err(SipFragError::NotAStatusLine(_))
        ));
        assert!(matches!(
            parse_sipfrag(b"SIP/2.0"),
            Err(SipFragError::NotAStatusLine(_))
        ));
        for bad in [
            "SIP/2.0 2000 OK",
            "SIP/2.0 99 x",
            "SIP/2.0 700 x",
            "SIP/2.0 +20 x",
        ] {
            assert!(
                matches!(parse_sipfrag(bad.as_bytes()), Err(SipFragError::BadCode(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn failure_codes_become_phrases_a_person_can_say() {
        assert_eq!(
            TransferFailure::from_code(486).to_string(),
            "the line was busy"
        );
        assert_eq!(TransferFailure::from_code(600), TransferFailure::Busy);
        for c in [408, 480, 487] {
            assert_eq!(TransferFailure::from_code(c).to_string(), "nobody answered");
        }
        for c in [403, 603, 405, 488] {
            assert_eq!(
                TransferFailure::from_code(c).to_string(),
                "the transfer was refused"
            );
        }
        assert_eq!(TransferFailure::from_code(404), TransferFailure::NotFound);
        assert_eq!(TransferFailure::from_code(503), TransferFailure::Failed);
    }

    #[test]
    fn trying_then_ok_is_success() {
        let mut p = ReferProgress::default();
        p.refer_answered(202);
        assert!(p.accepted && p.outcome().is_none());
        p.notify(Some("active;expires=60"), b"SIP/2.0 100 Trying\r\n")
            .unwrap();
        p.notify(Some("active;expires=60"), b"SIP/2.0 180 Ringing\r\n")
            .unwrap();
        assert_eq!((p.outcome(), p.last_code), (None, Some(180)));
        p.notify(Some("terminated;reason=noresource"), b"SIP/2.0 200 OK\r\n")
            .unwrap();
        assert_eq!(p.outcome(), Some(Ok(())));
    }

    #[test]
    fn a_final_failure_sticks_and_names_the_cause() {
        let mut p = ReferProgress::default();
        p.notify(Some("active"), b"SIP/2.0 100 Trying").unwrap();
        p.notify(Some("terminated"), b"SIP/2.0 486 Busy Here")
            .unwrap();
        assert_eq!(p.outcome(), Some(Err(TransferFailure::Busy)));
        // A confused peer's later 200 does not turn it into a success.
        p.notify(Some("terminated"), b"SIP/2.0 200 OK").unwrap();
        assert_eq!(p.outcome(), Some(Err(TransferFailure::Busy)));
    }

    #[test]
    fn a_refused_refer_fails_at_once() {
        let mut p = ReferProgress::default();
        p.refer_answered(603);
        assert_eq!(p.outcome(), Some(Err(TransferFailure::Refused)));
        let mut p = ReferProgress::default();
        p.refer_answered(407);
        assert_eq!(p.outcome(), Some(Err(TransferFailure::Refused)));
        let mut p = ReferProgress::default();
        p.refer_answered(100);
        assert_eq!(p, ReferProgress::default());
    }

    #[test]
    fn a_terminated_subscription_without_a_result_is_a_failure() {
        let mut p = ReferProgress::default();
        p.refer_answered(202);
        p.notify(Some("terminated;reason=timeout"), b"SIP/2.0 180 Ringing")
            .unwrap();
        assert_eq!(p.outcome(), Some(Err(TransferFailure::NoAnswer)));
        let mut p = ReferProgress::default();
        let err = p.notify(Some("Terminated"), b"garbage").unwrap_err();
        assert!(matches!(err, SipFragError::NotAStatusLine(_)));
        assert_eq!(p.outcome(), Some(Err(TransferFailure::Failed)));
    }

    #[test]
    fn the_deadline_decides_by_what_happened_before_it() {
        let mut p = ReferProgress::default();
        assert_eq!(p.on_deadline(), Err(TransferFailure::NoAnswer));
        p.leg_ended();
        assert_eq!(p.on_deadline(), Err(TransferFailure::CallerLeft));
        // The caller left after REFER was accepted: the transferee took them.
        p.refer_answered(202);
        assert_eq!(p.on_deadline(), Ok(()));
        let mut p = ReferProgress::default();
        p.refer_answered(202);
        assert_eq!(p.on_deadline(), Err(TransferFailure::NoAnswer));
    }

    #[test]
    fn targets_become_refer_to_uris() {
        let caller = "sip:alice@10.0.0.5:5070";
        assert_eq!(
            target_uri("sip:sales@pbx.example.com", None, caller).unwrap(),
            "sip:sales@pbx.example.com"
        );
        assert_eq!(
            target_uri(" SIPS:bob@h ", None, caller).unwrap(),
            "SIPS:bob@h"
        );
        assert_eq!(
            target_uri("201", Some("hark.test"), caller).unwrap(),
            "sip:201@hark.test"
        );
        assert_eq!(
            target_uri("+14155550123", None, caller).unwrap(),
            "sip:+14155550123@10.0.0.5:5070"
        );
        assert_eq!(
            target_uri("tel:+14155550123", Some("pbx"), caller).unwrap(),
            "sip:+14155550123@pbx;user=phone"
        );
        assert_eq!(
            target_uri("bob@example.org", None, caller).unwrap(),
            "sip:bob@example.org"
        );
        assert_eq!(
            target_uri("12#", Some("pbx"), caller).unwrap(),
            "sip:12%23@pbx"
        );
        assert_eq!(target_uri("", None, caller), Err(TargetError::Empty));
        assert_eq!(target_uri("tel:", None, caller), Err(TargetError::Empty));
        for bad in ["bob smith", "a\r\nVia: x", "<sip:x@y>", "sip:", "sip:@h"] {
            assert!(
                matches!(
                    target_uri(bad, Some("d"), caller),
                    Err(TargetError::BadCharacters(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            target_uri("201", None, "garbage"),
            Err(TargetError::NoDomain(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_notify_bodies_never_panic(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..700),
            state in "\\PC{0,40}",
        ) {
            let _ = parse_sipfrag(&body);
            let mut p = ReferProgress::default();
            let _ = p.notify(Some(&state), &body);
            let _ = p.on_deadline();
        }

        #[test]
        fn arbitrary_targets_never_panic_or_break_the_header(target in "\\PC{0,60}", domain in "[a-z.]{0,12}") {
            if let Ok(uri) = target_uri(&target, Some(&domain), "sip:a@b") {
                proptest::prop_assert!(!uri.contains(['\r', '\n', '<', '>', '"', ' ']));
            }
        }
    }
}
