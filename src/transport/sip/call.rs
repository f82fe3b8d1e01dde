//! One incoming call as the rest of hark sees it: who called, the negotiated media with its
//! bound RTP socket, the events the caller causes (hangup, hold, INFO), and the controls
//! (answer, hangup) that the conversation engine uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::refer::TRANSFER_TIMEOUT;
use super::sdp::NegotiatedMedia;
use super::ua::Shared;
use crate::transport::{CallControl, CallError};

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HangupReason {
    /// The caller sent BYE.
    Remote,
    /// The caller gave up before the call was answered (CANCEL; it got 487).
    Cancelled,
    /// hark hung up (BYE sent, or the ringing call declined).
    Local,
    /// The caller never acknowledged the answer (no ACK within 32 s); hark sent BYE.
    NoAck,
    /// The endpoint shut down.
    Shutdown,
    /// hark transferred the caller elsewhere (REFER succeeded) and left the call.
    Transferred,
    /// The far end no longer has the call: a request in the dialog got 481 or 408, or no
    /// answer at all (RFC 3261 §12.2.1.2); hark sent BYE and ended it.
    Lost,
    /// The session timer ran out (RFC 4028): the caller did not refresh the session in time,
    /// or hark's refresh failed; hark sent BYE.
    SessionExpired,
}

/// Something the far end did during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// The call is over; no more events follow.
    Hangup {
        /// Who ended it and how.
        reason: HangupReason,
    },
    /// The caller put the call on hold (re-INVITE with `sendonly`/`inactive`).
    Hold,
    /// The caller took the call off hold.
    Resume,
    /// An INFO request (e.g. `application/dtmf-relay`), answered 200; the media layer parses
    /// the body.
    Info {
        /// The body's `Content-Type`.
        content_type: String,
        /// The body.
        body: Vec<u8>,
    },
    /// A re-INVITE changed where or how media flows (new address, codec or direction).
    MediaChanged(NegotiatedMedia),
}

/// A call offered to hark: ringing (180 sent) until [`IncomingCall::answer`].
pub struct IncomingCall {
    /// The SIP Call-ID.
    pub id: String,
    /// The caller (`From` header value, display name and URI).
    pub from: String,
    /// Who was called (`To` header value, without hark's tag).
    pub to: String,
    /// The media the offer/answer settled.
    pub media: NegotiatedMedia,
    /// The local RTP socket named in hark's SDP (an even port in `rtp_ports`).
    pub rtp_socket: UdpSocket,
    /// Its RTCP socket, on the next port up (RFC 3550 §11).
    pub rtcp_socket: UdpSocket,
    pub(super) events: mpsc::Receiver<CallEvent>,
    pub(super) control: Arc<CallHandle>,
}

/// Opens a NAT in front of hark for the far end's media before the far end may send any: an
/// empty datagram (RFC 6263 §4.1) from the RTP port to theirs (and from RTCP's to theirs)
/// makes a masquerading router map that port, keeping its number where it can, the one the
/// SDP advertised. Were their packets first, the router would have no mapping for them and
/// pick another port for ours.
pub(super) async fn open_media_path(rtp: &UdpSocket, rtcp: &UdpSocket, remote: SocketAddr) {
    let rtcp_remote = SocketAddr::new(remote.ip(), remote.port().wrapping_add(1));
    for (socket, to) in [(rtp, remote), (rtcp, rtcp_remote)] {
        if let Err(e) = socket.send_to(&[], to).await {
            tracing::debug!(%to, "sip: opening the media path: {e}");
        }
    }
}

impl std::fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingCall")
            .field("id", &self.id)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("media", &self.media)
            .finish_non_exhaustive()
    }
}

impl IncomingCall {
    /// Answers: sends 200 OK with the SDP answer (resent until the caller's ACK) and returns
    /// once the ACK arrived. Fails if the caller cancelled first or never acknowledged.
    pub async fn answer(&self) -> Result<(), CallError> {
        open_media_path(&self.rtp_socket, &self.rtcp_socket, self.media.remote).await;
        self.control.shared.answer(&self.control.call_id).await
    }

    /// The next thing the caller did; `None` once the call is over and all events were read.
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }

    /// [`IncomingCall::next_event`] with a time limit (`None` on timeout too).
    pub async fn next_event_within(&mut self, limit: Duration) -> Option<CallEvent> {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// An event already reported, without waiting (`None` if there is none now).
    pub fn try_next_event(&mut self) -> Option<CallEvent> {
        self.events.try_recv().ok()
    }

    /// The call's controls, to hand to the session (hang up from a tool, the engine's end).
    pub fn control(&self) -> Arc<CallHandle> {
        self.control.clone()
    }

    /// Splits an answered call into its RTP and RTCP sockets (for the media session) and its
    /// events (for whoever runs the call); the controls stay reachable through
    /// [`Self::control`]'s handle, taken before.
    pub fn into_parts(self) -> (UdpSocket, UdpSocket, mpsc::Receiver<CallEvent>) {
        (self.rtp_socket, self.rtcp_socket, self.events)
    }
}

/// Controls of one call; cheap to share.
pub struct CallHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) call_id: String,
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHandle")
            .field("call_id", &self.call_id)
            .finish()
    }
}

impl CallHandle {
    /// The call's SIP Call-ID.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Transfers the caller to `target` (a `sip:` URI, `tel:` URI, number or user; bare ones
    /// go on `[sip].domain`, or the caller's host without one) by REFER, and follows the
    /// NOTIFYs for up to `limit`. `Ok` once the target answered: hark has then left the call
    /// (BYE). On failure the call stays up and the error says why in words a person can be
    /// told ("the line was busy", "nobody answered", "the transfer was refused").
    pub async fn transfer_within(&self, target: &str, limit: Duration) -> Result<(), CallError> {
        self.shared.transfer(&self.call_id, target, limit).await
    }

    /// Puts the caller on hold (RFC 3264 §8.4): a re-INVITE offering `a=sendonly` with the
    /// same codec and port, answered (usually `recvonly`) and acknowledged. The media session
    /// keeps sending: what hark plays meanwhile (hold music, silence) is what the caller
    /// hears, and RTP keeps NAT bindings open. Fails, with the call unchanged, when the far
    /// end refuses or answers unusable SDP; when it no longer has the call (408, 481, no
    /// answer) the call ends with [`HangupReason::Lost`]. A 491 (both sides re-INVITEd at
    /// once) is retried after RFC 3261 §14.1's random delay.
    pub async fn hold(&self) -> Result<(), CallError> {
        self.shared.reoffer(&self.call_id, true).await
    }

    /// Takes the caller off hold: the same re-INVITE with `a=sendrecv`.
    pub async fn resume(&self) -> Result<(), CallError> {
        self.shared.reoffer(&self.call_id, false).await
    }

    /// Whether hark holds the call (its last accepted re-INVITE was `sendonly`), so the
    /// engine can choose what the caller hears meanwhile.
    pub fn is_held(&self) -> bool {
        super::hold::held(&self.shared.lock(), &self.call_id)
    }
}

#[async_trait]
impl CallControl for CallHandle {
    /// Sends BYE (answered call) or 603 Decline (still ringing); waits for the BYE's response.
    async fn hangup(&self, reason: &str) -> Result<(), CallError> {
        self.shared.hangup(&self.call_id, reason).await
    }

    /// Blind transfer by REFER, waiting up to [`TRANSFER_TIMEOUT`] for the outcome; see
    /// [`CallHandle::transfer_within`].
    async fn transfer(&self, target: &str) -> Result<(), CallError> {
        self.transfer_within(target, TRANSFER_TIMEOUT).await
    }

    /// DTMF is sent in the media (RFC 4733) by the RTP layer, not by signalling.
    async fn send_dtmf(&self, _digits: &str) -> Result<(), CallError> {
        Err(CallError::Unsupported)
    }
}
