//! Telephony features above the transport: voicemail detection now; DTMF handling and
//! transfers join it with the SIP work.

pub mod voicemail;
