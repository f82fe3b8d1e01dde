//! Utterance handles: one per thing the agent says, so callers can wait for it to be played out
//! and interruptions can respect `interruptible = false`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Refused interruption of an utterance that does not allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("This utterance does not allow interruptions.")]
pub struct NotInterruptible;

#[derive(Debug)]
struct Inner {
    id: String,
    interruptible: bool,
    interrupted: AtomicBool,
    done: watch::Sender<bool>,
}

/// Something the agent says (a `say`, a `reply`, or the answer to a user turn): awaitable until
/// it has been played out or interrupted. Clones share the same state.
#[derive(Debug, Clone)]
pub struct UtteranceHandle(Arc<Inner>);

impl UtteranceHandle {
    /// A new handle with the spec's id format, `utt_` and eight hex digits.
    pub fn new(interruptible: bool) -> Self {
        Self::with_id(next_id(), interruptible)
    }

    /// A handle with a given id (the spec also uses `"placeholder"`).
    pub fn with_id(id: impl Into<String>, interruptible: bool) -> Self {
        let (done, _) = watch::channel(false);
        Self(Arc::new(Inner {
            id: id.into(),
            interruptible,
            interrupted: AtomicBool::new(false),
            done,
        }))
    }

    /// The utterance id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// Whether the user (or `interrupt()` without force) may cut it short.
    pub fn is_interruptible(&self) -> bool {
        self.0.interruptible
    }

    /// Whether it was interrupted.
    pub fn interrupted(&self) -> bool {
        self.0.interrupted.load(Ordering::Acquire)
    }

    /// Whether it is finished (played out or interrupted).
    pub fn is_done(&self) -> bool {
        *self.0.done.borrow()
    }

    /// Interrupts it (and marks it done). Refused without `force` when it is not
    /// interruptible. Idempotent.
    pub fn interrupt(&self, force: bool) -> Result<(), NotInterruptible> {
        if !force && !self.0.interruptible {
            return Err(NotInterruptible);
        }
        self.0.interrupted.store(true, Ordering::Release);
        self.mark_done();
        Ok(())
    }

    /// Marks it finished. Idempotent.
    pub fn mark_done(&self) {
        self.0
            .done
            .send_if_modified(|d| !std::mem::replace(d, true));
    }

    /// Waits until it is finished.
    pub async fn wait(&self) {
        let mut rx = self.0.done.subscribe();
        // The sender lives in `self`, so this only ends when the value turns true.
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Whether two handles are the same utterance.
    pub fn same(&self, other: &UtteranceHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// `utt_` + 8 hex digits, unique within the process (a counter mixed with the start time, so
/// ids from two runs differ too).
fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // A multiplicative hash spreads consecutive ids over the 32-bit space.
    let x = (seed ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    format!("utt_{:08x}", x as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_spec_format_and_differ() {
        let a = UtteranceHandle::new(true);
        let b = UtteranceHandle::new(true);
        assert!(
            a.id().starts_with("utt_") && a.id().len() == 12,
            "{}",
            a.id()
        );
        assert!(a.id()[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn a_non_interruptible_utterance_refuses_unforced_interrupts() {
        let h = UtteranceHandle::new(false);
        assert_eq!(h.interrupt(false), Err(NotInterruptible));
        assert!(!h.interrupted() && !h.is_done());
        assert_eq!(h.interrupt(true), Ok(()));
        assert!(h.interrupted() && h.is_done());
    }

    #[tokio::test]
    async fn waiting_ends_when_marked_done_and_marking_is_idempotent() {
        let h = UtteranceHandle::new(true);
        let w = tokio::spawn({
            let h = h.clone();
            async move { h.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!w.is_finished());
        h.mark_done();
        h.mark_done();
        w.await.unwrap();
        assert!(h.is_done() && !h.interrupted());
        h.wait().await; // already done: returns at once
    }
}
