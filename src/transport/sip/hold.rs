//! hark putting a call on hold and taking it off again by re-INVITE (RFC 3264 §8.4, RFC 6337
//! §5): an offer in the dialog with the same codec, port and `o=` session id, version + 1, and
//! `a=sendonly` (hold) or `a=sendrecv` (resume); 200 is acknowledged, the answer's media
//! applied.
//!
//! The edge cases of a re-INVITE (RFC 3261 §14):
//! - 491 Request Pending (both sides re-INVITEd at once, "glare"): acknowledged, retried after
//!   §14.1's random delay (2.1–4 s when hark owns the Call-ID, else 0–2 s), at most
//!   [`ATTEMPTS`] times;
//! - 408, 481 or no answer at all: the far end no longer has the call (§12.2.1.2); hark ends
//!   it ([`HangupReason::Lost`]);
//! - a re-INVITE from the peer while hark's is in flight: answered 491 (in `ua.rs`);
//! - an answer with no usable SDP: acknowledged, the media stays as it was, the caller of
//!   [`CallHandle::hold`] gets an error.
//!
//! While hark holds, the media session keeps sending (hold music, the spoken hold line, or
//! silence; stopping RTP would let NAT bindings lapse): only signalling changes, and
//! [`CallHandle::is_held`] tells the engine what to play.
//!
//! [`HangupReason::Lost`]: super::call::HangupReason::Lost
//! [`CallHandle::hold`]: super::call::CallHandle::hold
//! [`CallHandle::is_held`]: super::call::CallHandle::is_held

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::call::{CallEvent, HangupReason};
use super::message::{uri_of, Message, StartLine};
use super::sdp::{self, Direction, NegotiatedMedia, Offer};
use super::transport::{token, T1};
use super::ua::{dest_uri, resolve, Shared, State, ALLOW};
use crate::transport::CallError;

/// How many times a re-INVITE is sent when the peer keeps answering 491.
pub const ATTEMPTS: usize = 3;

/// What hark keeps about a dialog beyond [`super::ua::CallState`]: its own re-INVITEs.
#[derive(Debug, Default)]
pub(super) struct DialogExtra {
    /// hark holds the call (its last accepted offer was `sendonly`).
    pub(super) held: bool,
    /// CSeq of hark's re-INVITE waiting for its final response.
    pub(super) in_flight: Option<u32>,
    /// hark's ACK to the 2xx of its last re-INVITE (CSeq, bytes, destination), resent when
    /// that 2xx is (the ACK was lost, RFC 3261 §13.2.2.4).
    pub(super) ack: Option<(u32, Vec<u8>, SocketAddr)>,
    /// The session timer (RFC 4028), when the call has one.
    pub(super) timer: super::timer::Timer,
}

/// Whether hark's own re-INVITE of call `id` waits for its final response (a re-INVITE from
/// the peer meanwhile gets 491, RFC 3261 §14.2).
pub(super) fn reinvite_in_flight(st: &State, id: &str) -> bool {
    st.dialogs.get(id).is_some_and(|d| d.in_flight.is_some())
}

/// Whether hark holds call `id`.
pub(super) fn held(st: &State, id: &str) -> bool {
    st.dialogs.get(id).is_some_and(|d| d.held)
}

/// What to do with a 2xx to an INVITE of call `id` that arrives on the socket: `Some(ack)` when
/// it is a retransmission that hark already acknowledged (the ACK to send again, to where),
/// `None` when it goes to the transaction waiting for it (or is stray).
pub(super) fn ack_to_resend(st: &State, msg: &Message) -> Option<(Vec<u8>, SocketAddr)> {
    let cseq = msg.cseq().map(|(n, _)| n)?;
    let extra = st.dialogs.get(msg.call_id());
    if extra.is_some_and(|d| d.in_flight == Some(cseq)) {
        return None;
    }
    if let Some((n, bytes, to)) = extra.and_then(|d| d.ack.as_ref()) {
        if *n == cseq {
            return Some((bytes.clone(), *to));
        }
    }
    let call = st.calls.get(msg.call_id())?;
    let initial = call.invite.cseq().map(|(n, _)| n);
    call.ack_bytes.clone().filter(|_| initial == Some(cseq))
}

/// Drops the extras of dialogs that ended (called when calls start and when hark re-INVITEs;
/// the map stays as small as the call table).
pub(super) fn prune(st: &mut State) {
    let State { calls, dialogs, .. } = st;
    dialogs.retain(|id, _| calls.contains_key(id));
}

/// How one attempt of a re-INVITE ended.
enum Attempt {
    /// 2xx with a usable answer: applied.
    Done,
    /// 491: try again after the delay (true when hark owns the Call-ID).
    Glare(bool),
}

/// Clears the in-flight mark when an attempt ends, however it ends (also on cancellation).
struct InFlight<'a> {
    shared: &'a Shared,
    id: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.shared.lock().dialogs.get_mut(self.id) {
            d.in_flight = None;
        }
    }
}

/// RFC 3261 §14.1's wait before retrying after 491, in units of 10 ms: 2.1–4 s for the owner
/// of the Call-ID, 0–2 s for the other side (so the two sides do not collide again).
pub fn glare_delay(owner: bool, random: u64) -> Duration {
    let tens = if owner {
        210 + random % 191
    } else {
        random % 201
    };
    Duration::from_millis(tens * 10)
}

impl Shared {
    /// Sends hark's re-INVITE of call `id` putting it on hold (`hold`) or taking it off, until
    /// it is answered or fails; see the module doc for each outcome.
    pub(super) async fn reoffer(self: &Arc<Self>, id: &str, hold: bool) -> Result<(), CallError> {
        for attempt in 1..=ATTEMPTS {
            match self.reoffer_once(id, hold).await? {
                Attempt::Done => return Ok(()),
                Attempt::Glare(_) if attempt == ATTEMPTS => break,
                Attempt::Glare(owner) => {
                    let random = u64::from_str_radix(&token()[..12], 16).unwrap_or(0);
                    let wait = glare_delay(owner, random);
                    tracing::info!(call = %id, ?wait, "sip: re-INVITE met the peer's (491); retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(CallError::Failed(format!(
            "the far end kept answering 491 Request Pending ({ATTEMPTS} tries)"
        )))
    }

    async fn reoffer_once(self: &Arc<Self>, id: &str, hold: bool) -> Result<Attempt, CallError> {
        let direction = if hold {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        let (invite, literal, hop, source, owner, cseq) = {
            let mut st = self.lock();
            prune(&mut st);
            if reinvite_in_flight(&st, id) {
                return Err(CallError::Failed(
                    "a re-INVITE of this call is already under way".into(),
                ));
            }
            let call = st.confirmed_call(id)?;
            call.local_cseq += 1;
            call.sdp_version += 1;
            let body = sdp::reoffer(
                &call.media,
                call.rtp_local,
                call.session_id,
                call.sdp_version,
                direction,
            );
            let (mut req, literal) = self.in_dialog_request(call, "INVITE");
            req.push("Allow", ALLOW);
            if let Some(t) = super::timer::terms(&st, id) {
                // In this transaction hark is the UAC (RFC 4028 §7.4).
                let who = if t.hark_refreshes { "uac" } else { "uas" };
                req.push("Supported", "timer")
                    .push("Session-Expires", format!("{};refresher={who}", t.interval));
            }
            req.set_body("application/sdp", body.into_bytes());
            let Some(call) = st.calls.get_mut(id) else {
                return Err(CallError::Failed("the call is over".into()));
            };
            // hark owns the Call-ID when it placed the call (its tag is the INVITE's From tag).
            let owner = call.invite.from_tag().as_deref() == Some(call.local_tag.as_str());
            let out = (
                req,
                literal,
                dest_uri(call),
                call.source,
                owner,
                call.local_cseq,
            );
            st.dialogs.entry(id.to_owned()).or_default().in_flight = Some(out.5);
            out
        };
        let _in_flight = InFlight { shared: self, id };
        let dest = match literal {
            Some(d) => d,
            None => resolve(&self.socket, &hop).await.unwrap_or(source),
        };
        tracing::info!(call = %id, hold, "sip: sending re-INVITE ({})", if hold { "hold" } else { "resume" });
        let resp = match self.socket.transact(&invite, dest, T1 * 64).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(call = %id, error = %e, "sip: re-INVITE got no answer; ending the call");
                self.lose_call(id);
                return Err(CallError::Failed(format!(
                    "the far end did not answer the re-INVITE ({e}); the call is over"
                )));
            }
        };
        let code = resp.code().unwrap_or_default();
        if code >= 300 {
            self.ack_failure(&invite, &resp, dest).await;
        }
        match code {
            200..=299 => {}
            491 => return Ok(Attempt::Glare(owner)),
            408 | 481 => {
                tracing::warn!(call = %id, code, "sip: the far end no longer has the call; ending it");
                self.lose_call(id);
                return Err(CallError::Failed(format!(
                    "the call is gone (re-INVITE answered {code})"
                )));
            }
            _ => {
                return Err(CallError::Failed(format!(
                    "the far end refused the re-INVITE ({code} {})",
                    reason_of(&resp)
                )))
            }
        }
        // 2xx: acknowledge it (a new transaction in the dialog, same CSeq number, §13.2.2.4),
        // then apply its answer.
        let answer = Offer::parse(&resp.body).and_then(|o| {
            let media = o.negotiate(&self.settings.codecs)?;
            Ok((o, media))
        });
        let (ack, ack_dest, events, applied) = {
            let mut st = self.lock();
            let Some(call) = st.calls.get_mut(id) else {
                return Err(CallError::Failed("the call is over".into()));
            };
            if let Some(c) = resp.header("Contact") {
                call.remote_target = uri_of(c).to_owned(); // target refresh, §12.2.1.2
            }
            let (mut ack, literal) = self.in_dialog_request(call, "ACK");
            for (name, value) in &mut ack.headers {
                if name.eq_ignore_ascii_case("CSeq") {
                    *value = format!("{cseq} ACK");
                }
            }
            let hop = dest_uri(call);
            let applied = match &answer {
                Ok((_, media)) => {
                    let before = std::mem::replace(&mut call.media, media.clone());
                    (before != *media).then(|| media.clone())
                }
                Err(e) => {
                    tracing::warn!(call = %id, error = %e, "sip: unusable SDP answer to our re-INVITE; media unchanged");
                    None
                }
            };
            (
                ack,
                literal.map(Ok).unwrap_or(Err(hop)),
                call.events.clone(),
                applied,
            )
        };
        let ack_dest = match ack_dest {
            Ok(d) => d,
            Err(hop) => resolve(&self.socket, &hop).await.unwrap_or(dest),
        };
        let bytes = ack.to_bytes();
        {
            let mut st = self.lock();
            let extra = st.dialogs.entry(id.to_owned()).or_default();
            extra.ack = Some((cseq, bytes.clone(), ack_dest));
            if answer.is_ok() {
                extra.held = hold;
            }
            // Any 2xx'd re-INVITE refreshes the session (RFC 4028 §10).
            super::timer::refreshed(&mut st, id, None);
        }
        self.socket.send_bytes(&bytes, ack_dest).await;
        if let Err(e) = answer {
            return Err(CallError::Failed(format!(
                "the far end's answer to the re-INVITE is unusable ({e}); the media stays as it was"
            )));
        }
        if let Some(media) = applied {
            let _ = events.try_send(CallEvent::MediaChanged(media));
        }
        tracing::info!(call = %id, hold, "sip: re-INVITE accepted");
        Ok(Attempt::Done)
    }

    /// Acknowledges a non-2xx final response to hark's INVITE, in its transaction (RFC 3261
    /// §17.1.1.3: same Request-URI, top Via, Route, From and Call-ID; To from the response).
    async fn ack_failure(&self, invite: &Message, resp: &Message, dest: SocketAddr) {
        let uri = match &invite.start {
            StartLine::Request { uri, .. } => uri.clone(),
            StartLine::Response { .. } => return,
        };
        let mut ack = Message::request("ACK", &uri);
        ack.push("Via", invite.header("Via").unwrap_or_default())
            .push("Max-Forwards", "70");
        for r in invite.header_values("Route") {
            ack.push("Route", r);
        }
        let n = invite.cseq().map_or(0, |(n, _)| n);
        ack.push("From", invite.header("From").unwrap_or_default())
            .push("To", resp.header("To").unwrap_or_default())
            .push("Call-ID", invite.call_id())
            .push("CSeq", format!("{n} ACK"));
        self.socket.send(&ack, dest).await;
    }

    /// Ends call `id` because the far end no longer has it: the Hangup event now, a BYE (which
    /// may well go unanswered) in the background.
    fn lose_call(self: &Arc<Self>, id: &str) {
        let me = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let _ = me.end_call(&id, HangupReason::Lost).await;
        });
    }
}

fn reason_of(resp: &Message) -> &str {
    match &resp.start {
        StartLine::Response { reason, .. } => reason,
        StartLine::Request { .. } => "",
    }
}

/// The media of call `id` as hark's answers present it while hark holds: the negotiated
/// direction without receiving.
pub(super) fn while_held(media: &mut NegotiatedMedia) {
    media.direction = media.direction.held_by_us();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glare_delay_follows_rfc_3261_14_1_in_10_ms_steps() {
        for r in [0u64, 1, 190, 191, 200, 12_345, u64::MAX] {
            let owner = glare_delay(true, r);
            assert!(
                (Duration::from_millis(2100)..=Duration::from_secs(4)).contains(&owner),
                "{owner:?}"
            );
            let other = glare_delay(false, r);
            assert!(other <= Duration::from_secs(2), "{other:?}");
            assert_eq!(owner.as_millis() % 10, 0);
            assert_eq!(other.as_millis() % 10, 0);
        }
        assert_eq!(glare_delay(true, 0), Duration::from_millis(2100));
        assert_eq!(glare_delay(true, 190), Duration::from_secs(4));
        assert_eq!(glare_delay(false, 200), Duration::from_secs(2));
    }
}
