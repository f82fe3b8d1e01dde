//! Outbound calls (RFC 3261 §13.2): INVITE with an SDP offer, digest challenge answered once,
//! the far end's answer read, ACK sent; failures as typed errors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::call::{CallHandle, IncomingCall};
use super::digest::Challenge;
use super::message::{uri_host_port_or, uri_of, Message, StartLine};
use super::sdp::{self, Offer, SdpError};
use super::transport::{branch, token, SipSocket, TransactionError};
use super::ua::{resolve, CallState, Phase, Shared};

/// Why an outbound call did not connect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// The target is not a `sip:` URI with a host.
    #[error("not a sip: URI with a host: {0}")]
    BadTarget(String),
    /// The far end (or a proxy) refused: busy (486/600), declined (603), not found (404), ...
    #[error("call refused: {code} {reason}")]
    Refused {
        /// Final status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// A second challenge after answering one: wrong credentials (or none configured).
    #[error("call needs authentication that [sip] credentials do not satisfy ({0})")]
    AuthRejected(u16),
    /// No final response within the ring timeout.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The answer's SDP has nothing usable.
    #[error("unusable answer SDP: {0}")]
    Media(SdpError),
    /// Maximum sessions reached, or no RTP port free.
    #[error("no capacity for another call: {0}")]
    Busy(&'static str),
}

/// Places calls beside the endpoint's accept loop (a warm transfer's call to the supervisor,
/// an application's outbound calls); cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").finish_non_exhaustive()
    }
}

impl Dialer {
    /// As [`super::Endpoint::call`].
    pub async fn call(
        &self,
        target: &str,
        ring_timeout: Duration,
    ) -> Result<IncomingCall, DialError> {
        dial(&self.shared, target, ring_timeout, false).await
    }

    /// A consultation call made on behalf of a call in progress (a warm transfer's call to
    /// the supervisor): allowed beyond `max_sessions`, up to one per call, so that a
    /// one-call device can still consult.
    pub async fn consult(
        &self,
        target: &str,
        ring_timeout: Duration,
    ) -> Result<IncomingCall, DialError> {
        dial(&self.shared, target, ring_timeout, true).await
    }
}

/// The ACK for a non-2xx final response to `invite`, part of the INVITE's own transaction
/// (RFC 3261 §17.1.1.3): its Request-URI, top Via, From, Call-ID and CSeq number, and the
/// response's To (with the tag the far end chose).
fn ack_for(invite: &Message, resp: &Message) -> Message {
    let uri = match &invite.start {
        StartLine::Request { uri, .. } => uri.as_str(),
        StartLine::Response { .. } => "",
    };
    let seq = invite.cseq().map_or(1, |(n, _)| n);
    let mut ack = Message::request("ACK", uri);
    ack.push("Via", invite.header("Via").unwrap_or_default())
        .push("Max-Forwards", "70")
        .push("From", invite.header("From").unwrap_or_default())
        .push("To", resp.header("To").unwrap_or_default())
        .push("Call-ID", invite.call_id())
        .push("CSeq", format!("{seq} ACK"));
    ack
}

/// Cancels an INVITE that rang out: CANCEL with the INVITE's branch, Call-ID, From, To and
/// CSeq number (RFC 3261 §9.1). The far end then ends the INVITE with 487, which is ACKed, or
/// it would resend it for 32 s. A 200 that crossed the CANCEL is ACKed and the call ended with
/// BYE (§15).
async fn cancel(shared: &Arc<Shared>, invite: &Message, dest: SocketAddr) {
    let uri = match &invite.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => return,
    };
    let seq = invite.cseq().map_or(1, |(n, _)| n);
    let mut cancel = Message::request("CANCEL", &uri);
    for (name, value) in [
        ("Via", invite.header("Via")),
        ("From", invite.header("From")),
        ("To", invite.header("To")),
        ("Call-ID", invite.header("Call-ID")),
    ] {
        cancel.push(name, value.unwrap_or_default().to_owned());
    }
    cancel
        .push("Max-Forwards", "70")
        .push("CSeq", format!("{seq} CANCEL"));
    let mut invite_final = shared
        .socket
        .expect(&invite.branch().unwrap_or_default(), "INVITE");
    if let Err(e) = shared
        .socket
        .transact(&cancel, dest, Duration::from_secs(4))
        .await
    {
        tracing::debug!(error = %e, "sip: CANCEL unanswered");
        return;
    }
    match invite_final.final_within(Duration::from_secs(4)).await {
        Some(resp) if resp.code().is_some_and(|c| c >= 300) => {
            shared.socket.send(&ack_for(invite, &resp), dest).await;
        }
        Some(ok) => {
            // Answered as it was cancelled: ACK the 200 (the far end would resend it for
            // 32 s) and end the call at once with BYE (RFC 3261 §15).
            tracing::info!("sip: the call was answered as it was cancelled; hanging up");
            let contact = shared.contact_addr();
            let answered = Answered::confirm(&shared.socket, invite, &ok, dest).await;
            let ack = answered.in_dialog(invite, "ACK", seq, contact);
            shared.socket.send(&ack, answered.dest).await;
            let bye = answered.in_dialog(invite, "BYE", seq + 1, contact);
            if let Err(e) = shared
                .socket
                .transact(&bye, answered.dest, Duration::from_secs(4))
                .await
            {
                tracing::debug!(error = %e, "sip: BYE after CANCEL unanswered");
            }
        }
        None => tracing::debug!("sip: no final response to the cancelled INVITE"),
    }
}

/// The dialog a 2xx to our INVITE creates: the far end's tag, Contact and record-route
/// (reversed for a UAC, RFC 3261 §12.1.2). Its ACK is a request of the dialog (a transaction
/// of its own, along the route set), unlike a non-2xx's ([`ack_for`]).
struct Answered {
    remote_party: String,
    remote_target: String,
    route_set: Vec<String>,
    /// Where in-dialog requests go: the first route, or the far end's Contact.
    dest: SocketAddr,
}

impl Answered {
    async fn confirm(
        socket: &SipSocket,
        invite: &Message,
        ok: &Message,
        fallback: SocketAddr,
    ) -> Answered {
        let remote_party = ok.header("To").unwrap_or_default().to_owned();
        let remote_target = ok.header("Contact").map_or_else(
            || match &invite.start {
                StartLine::Request { uri, .. } => uri.clone(),
                StartLine::Response { .. } => String::new(),
            },
            |c| uri_of(c).to_owned(),
        );
        let mut route_set = ok.header_values("Record-Route");
        route_set.reverse();
        let dest = resolve(socket, uri_of(route_set.first().unwrap_or(&remote_target)))
            .await
            .unwrap_or(fallback);
        Answered {
            remote_party,
            remote_target,
            route_set,
            dest,
        }
    }

    /// A request in this dialog with the INVITE's From and Call-ID and a new branch.
    fn in_dialog(&self, invite: &Message, method: &str, seq: u32, contact: SocketAddr) -> Message {
        let mut req = Message::request(method, &self.remote_target);
        req.push(
            "Via",
            format!("SIP/2.0/UDP {contact};branch={};rport", branch()),
        )
        .push("Max-Forwards", "70");
        for r in &self.route_set {
            req.push("Route", r.clone());
        }
        req.push("From", invite.header("From").unwrap_or_default())
            .push("To", self.remote_party.clone())
            .push("Call-ID", invite.call_id())
            .push("CSeq", format!("{seq} {method}"));
        req
    }
}

pub(super) async fn dial(
    shared: &Arc<Shared>,
    target: &str,
    ring_timeout: Duration,
    consultation: bool,
) -> Result<IncomingCall, DialError> {
    let (host, port) = uri_host_port_or(target, shared.socket.default_port())
        .ok_or_else(|| DialError::BadTarget(target.into()))?;
    let dest_uri = match &shared.settings.outbound_proxy {
        Some((h, p)) => format!("sip:{h}:{p}"),
        None => format!("sip:{host}:{port}"),
    };
    let dest = resolve(&shared.socket, &dest_uri)
        .await
        .ok_or_else(|| DialError::BadTarget(format!("{target} (cannot resolve)")))?;
    let limit = shared.settings.max_sessions * if consultation { 2 } else { 1 };
    if shared.lock().calls.len() >= limit {
        return Err(DialError::Busy("max_sessions calls are up"));
    }
    let (rtp_socket, rtcp_socket) = shared
        .bind_media()
        .await
        .ok_or(DialError::Busy("no free RTP port"))?;
    let contact = shared.contact_addr();
    let rtp_local = SocketAddr::new(
        contact.ip(),
        rtp_socket.local_addr().map_or(0, |a| a.port()),
    );
    let session_id = u64::from_str_radix(&token()[..12], 16).unwrap_or(1);
    let offer_sdp = sdp::offer(&shared.settings.codecs, rtp_local, session_id);
    let call_id = token();
    let local_tag = token()[..16].to_owned();
    let domain = shared
        .settings
        .domain
        .clone()
        .unwrap_or_else(|| contact.ip().to_string());
    let from = format!("<sip:{}@{domain}>;tag={local_tag}", shared.settings.user);
    let to = format!("<{target}>");
    let mut cseq = 1u32;
    let mut auth: Option<(Challenge, bool)> = None;
    let mut answered_challenge = false;
    let mut nonce_uses = 0u32;
    let mut session_expires = shared.settings.session_expires;
    let mut raised_interval = false;
    let (invite, ok) = loop {
        let mut invite = Message::request("INVITE", target);
        invite
            .push(
                "Via",
                format!("SIP/2.0/UDP {contact};branch={};rport", branch()),
            )
            .push("Max-Forwards", "70")
            .push("From", from.clone())
            .push("To", to.clone())
            .push("Call-ID", call_id.clone())
            .push("CSeq", format!("{cseq} INVITE"))
            .push("Contact", shared.contact())
            .push("Allow", super::ua::ALLOW)
            .push("User-Agent", "hark");
        if session_expires > 0 {
            invite
                .push("Supported", "timer")
                .push("Session-Expires", session_expires.to_string());
            if raised_interval {
                invite.push("Min-SE", session_expires.to_string());
            }
        }
        if let (Some((ch, proxy)), Some((user, password))) = (&auth, &shared.settings.credentials) {
            // A second use of the nonce (the INVITE again after a 422) counts up (RFC 7616).
            nonce_uses += 1;
            let value = ch.answer(user, password, "INVITE", target, &token()[..16], nonce_uses);
            invite.push(
                if *proxy {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                },
                value,
            );
        }
        invite.set_body("application/sdp", offer_sdp.clone().into_bytes());
        let resp = match shared.socket.transact(&invite, dest, ring_timeout).await {
            Ok(r) => r,
            Err(e @ TransactionError::Timeout(..)) => {
                // Still ringing: stop the far end's phone (RFC 3261 §9.1).
                cancel(shared, &invite, dest).await;
                return Err(DialError::NoAnswer(e.to_string()));
            }
            Err(e @ TransactionError::Send(..)) => return Err(DialError::NoAnswer(e.to_string())),
        };
        let code = resp.code().unwrap_or_default();
        if code < 300 {
            break (invite, resp);
        }
        shared.socket.send(&ack_for(&invite, &resp), dest).await;
        match code {
            401 | 407 if !answered_challenge && shared.settings.credentials.is_some() => {
                let header = if code == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let ch = Challenge::parse(resp.header(header).unwrap_or_default())
                    .map_err(|_| DialError::AuthRejected(code))?;
                auth = Some((ch, code == 407));
                answered_challenge = true;
                cseq += 1;
            }
            401 | 407 => return Err(DialError::AuthRejected(code)),
            422 if session_expires > 0 && !raised_interval => {
                let Some(interval) = super::timer::after_422(session_expires, &resp) else {
                    return Err(DialError::Refused {
                        code,
                        reason: "Session Interval Too Small (no usable Min-SE)".into(),
                    });
                };
                tracing::info!(to = %target, interval, "sip: the far end wants a longer session interval; calling again");
                session_expires = interval;
                raised_interval = true;
                cseq += 1;
            }
            _ => {
                let reason = match &resp.start {
                    StartLine::Response { reason, .. } => reason.clone(),
                    StartLine::Request { .. } => String::new(),
                };
                return Err(DialError::Refused { code, reason });
            }
        }
    };
    let answered = Answered::confirm(&shared.socket, &invite, &ok, dest).await;
    let ack = answered.in_dialog(&invite, "ACK", cseq, contact);
    let Answered {
        remote_party,
        remote_target,
        route_set,
        dest: ack_dest,
    } = answered;
    let agreed = Offer::parse(&ok.body).and_then(|answer| {
        let media = answer.negotiate(&shared.settings.codecs)?;
        Ok((answer, media))
    });
    if let Ok((_, media)) = &agreed {
        // Before the ACK: the far end may send media as soon as it has it.
        super::call::open_media_path(&rtp_socket, &rtcp_socket, media.remote).await;
    }
    shared.socket.send(&ack, ack_dest).await;
    let (answer, media) = agreed.map_err(DialError::Media)?;
    let (ev_tx, ev_rx) = mpsc::channel(32);
    let state = CallState {
        invite: invite.clone(),
        invite_branch: invite.branch().unwrap_or_default(),
        source: ack_dest,
        local_tag,
        local_party: from.clone(),
        remote_party: remote_party.clone(),
        ack_bytes: Some((ack.to_bytes(), ack_dest)),
        remote_target,
        route_set,
        local_cseq: cseq,
        phase: Phase::Confirmed,
        offer: answer,
        media: media.clone(),
        rtp_local,
        session_id,
        sdp_version: 1,
        ack: Arc::new(Notify::new()),
        events: ev_tx,
    };
    let timer = super::timer::agreed(&ok);
    {
        let mut st = shared.lock();
        st.calls.insert(call_id.clone(), state);
        if timer.is_some() {
            super::timer::refreshed(&mut st, &call_id, timer);
        }
    }
    if timer.is_some() {
        super::timer::spawn(shared.clone(), call_id.clone());
    }
    tracing::info!(call = %call_id, to = %target, codec = media.codec, "sip: outbound call answered");
    Ok(IncomingCall {
        id: call_id.clone(),
        from,
        to: remote_party,
        media,
        rtp_socket,
        rtcp_socket,
        events: ev_rx,
        control: Arc::new(CallHandle {
            shared: shared.clone(),
            call_id,
        }),
    })
}
