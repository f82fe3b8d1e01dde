//! Telephony features above the transport: voicemail detection, DTMF handling; transfers join
//! them with the SIP work.

pub mod dtmf;
pub mod voicemail;
pub mod warm_transfer;
