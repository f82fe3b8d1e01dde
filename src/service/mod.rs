//! Running hark as a device: what keeps sessions going on a transport for the life of the
//! process.

pub mod kiosk;
pub mod phone;
