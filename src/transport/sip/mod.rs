//! The phone endpoint's signalling: SIP over UDP or TCP (RFC 3261) as a user agent that registers
//! with a registrar and answers calls, with SDP offer/answer (RFC 3264) for one G.711 stream.
//! The media (RTP, codecs, jitter buffer, DTMF) lives in `media`, written separately.
//!
//! # Why our own transaction layer
//!
//! Evaluated on crates.io (Nov 2026) before writing this:
//! - `rsipstack` 0.7.14 (MIT; transactions and dialogs on tokio): builds here in 26 s with
//!   `default-features = false, features = ["std"]`, but brings a second copy of `sha2`/`md-5`
//!   (0.11 next to our 0.10), `parking_lot`, `socket2`, `if-addrs` and `futures`, and its API
//!   (endpoint, dialog layer and transport layer objects) is larger than what one device with
//!   one or two calls needs. It was not tried against kamailio in the 25-minute time box.
//! - `rsip` 0.4 (parser only): its crate metadata names no licence, so it cannot be vetted
//!   by `cargo` tooling; the parser a UAS needs is ~300 lines.
//! - `ezk-sip-*` and `rvoip`: larger stacks (rvoip is a whole softswitch); not tried.
//!
//! What hark needs is narrow: UDP, a UAS with INVITE/ACK/BYE/CANCEL/OPTIONS/INFO, a REGISTER
//! client with digest, and retransmission timers. That is written here in small modules that
//! are tested against the real peers (kamailio as registrar and proxy, baresip as caller), with
//! no new dependency but `md-5` (RustCrypto, same traits as `sha2`).
//!
//! - [`message`]: parsing and writing SIP messages.
//! - [`digest`]: digest authentication answers (MD5, SHA-256).
//! - [`sdp`]: SDP offer parsing, codec choice, answer writing.
//! - [`transport`]: the signalling transport and client transactions with RFC 3261 timers.
//! - [`tcp`]: SIP over TCP: listener, connections, stream framing, keep-alives.
//! - [`register`]: keeping the device registered.
//! - [`call`]: the call handle the engine uses.
//! - [`outbound`]: calls hark places.
//! - [`hold`]: hark holding and resuming a call by re-INVITE.
//! - [`refer`]: blind transfer by REFER (target URI, sipfrag NOTIFYs, outcome).
//! - [`timer`]: session timers (RFC 4028) on answered calls.
//! - [`ua`]: the endpoint tying them together.
//! - [`media`]: RTP, G.711, the jitter buffer, DTMF, and the per-call media session.

pub mod call;
pub mod digest;
pub mod hold;
pub mod media;
pub mod message;
pub mod outbound;
pub mod refer;
pub mod register;
pub mod sdp;
pub mod tcp;
pub mod timer;
pub mod transport;
pub mod ua;

pub use call::{CallEvent, CallHandle, HangupReason, IncomingCall};
pub use outbound::{DialError, Dialer};
pub use register::{RegisterError, RegistrationState};
pub use sdp::{Direction, NegotiatedMedia};
pub use timer::MIN_SE;
pub use ua::{Endpoint, EndpointError, Stats};

/// Whether the `n`th occurrence of something a flood can repeat is logged: the first ten, then
/// one in `every`, so bad peers cannot fill the log (or spend the CPU writing it).
pub(crate) fn worth_logging(n: u64, every: u64) -> bool {
    n <= 10 || n.is_multiple_of(every)
}
