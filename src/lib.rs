//! hark: a voice-agent appliance for Raspberry Pi-class boards.
//!
//! The library is what the `hark` binary runs, and can be used on its own to build agents in
//! Rust. Modules follow the audio's path: [`audio`] (formats, WAV, resampling) feeds [`listen`]
//! (on-device denoise, VAD, turn detection); [`config`] describes a device in one TOML file.

pub mod agent;
pub mod audio;
pub mod bench;
pub mod board;
pub mod config;
pub mod listen;
pub mod providers;
pub mod service;
pub mod session;
pub mod telephony;
pub mod transport;
