//! Shared test doubles.
#![allow(dead_code)]

pub mod alloc;
pub mod scripted;
