//! Transports: where a session's audio comes from and goes to (ALSA, SIP/RTP, rooms), and the
//! call controls some of them offer.

pub mod local;
pub mod sip;

use async_trait::async_trait;

use crate::session::{SessionHandle, UtteranceHandle};

/// Why a call control failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CallError {
    /// This transport has no such feature (e.g. transfer on a kiosk).
    #[error("not supported by this transport")]
    Unsupported,
    /// The far end or the network refused or failed.
    #[error("{0}")]
    Failed(String),
    /// Nobody answered in time (the call was cancelled).
    #[error("no answer: {0}")]
    NoAnswer(String),
}

/// Controls of a phone-like call, used by the built-in tools and the session's hangup.
#[async_trait]
pub trait CallControl: Send + Sync {
    /// Ends the call.
    async fn hangup(&self, reason: &str) -> Result<(), CallError>;
    /// Transfers the caller to `target` (a SIP URI or number) without consultation.
    async fn transfer(&self, target: &str) -> Result<(), CallError>;
    /// Sends DTMF digits (`0-9*#A-D`).
    async fn send_dtmf(&self, digits: &str) -> Result<(), CallError>;
    /// Accepts a warm transfer of the caller (hold, brief a supervisor, join them) for
    /// `session`, the call's agent. It starts once the returned sender gets the hold line's
    /// handle (queued by the caller of this, `None` to have it said), and then runs on its own,
    /// publishing its phases as session events. Refused where the transport has no such
    /// thing, where none is configured, or while one already runs.
    async fn warm_transfer(&self, _session: SessionHandle) -> Result<HoldLineSender, CallError> {
        Err(CallError::Unsupported)
    }
}

/// Where a warm transfer waits for its hold line (see [`CallControl::warm_transfer`]).
pub type HoldLineSender = tokio::sync::oneshot::Sender<Option<UtteranceHandle>>;
