//! Shared test doubles.
#![allow(dead_code)]

pub mod alloc;
pub mod card;
pub mod scripted;
pub mod sip_peers;
pub mod sip_setup;
