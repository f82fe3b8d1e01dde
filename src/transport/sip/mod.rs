//! The phone endpoint: SIP signalling and the RTP media of its calls.

pub mod media;
