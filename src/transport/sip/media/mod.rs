//! The media of a SIP call: RTP packets, G.711, the jitter buffer with loss concealment and
//! comfort noise, DTMF (RFC 4733, SIP INFO bodies, in-band tones), and the per-call session
//! that moves audio between a UDP socket and the conversation engine.
//!
//! Everything below [`session`] is synchronous and allocation-free once built, so it is tested
//! with simulated networks and measured on its own; [`session`] only adds the socket, the
//! clock and the hand-over to the engine.

pub mod cn;
pub mod dtmf;
pub mod g711;
pub mod inband;
pub mod jitter;
pub mod rtcp;
pub mod rtp;
pub mod session;

pub use dtmf::{parse_info, DtmfDigit, InfoDtmf, ReceivedDtmf};
pub use g711::G711;
pub use jitter::{JitterBuffer, JitterConfig, JitterStats};
pub use rtp::{RtpError, RtpHeader, RtpPacket};
pub use session::{
    Latch, MediaConfig, MediaError, MediaEvent, MediaStats, MediaStreams, RtpSession, RtpSink,
};
