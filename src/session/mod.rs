//! Sessions: one conversation between a user and the active agent, from start to close.

pub mod segment;

/// A cheap, cloneable handle on a running session, given to agents and tools.
#[derive(Clone, Debug, Default)]
pub struct SessionHandle {}
