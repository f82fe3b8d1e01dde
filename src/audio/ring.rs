//! Lock-free hand-over between audio threads and their consumers.
//!
//! Samples travel in [`rtrb`] single-producer rings; a consumer that ran out waits parked and is
//! unparked by [`Wake`], so the producing audio thread never takes a lock or makes a system call
//! beyond `futex` wake-ups.

use std::sync::OnceLock;
use std::thread::{self, Thread};

/// Wakes the thread that consumes a ring.
#[derive(Debug, Default)]
pub struct Wake {
    thread: OnceLock<Thread>,
}

impl Wake {
    /// Makes the calling thread the one [`Wake::wake`] unparks; it then waits with
    /// [`std::thread::park_timeout`]. Only the first caller is registered.
    pub fn register(&self) {
        let _ = self.thread.set(thread::current());
    }

    /// Unparks the registered thread, if any.
    pub fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// Copies as much of `samples` as fits into `ring`; returns how many did not fit.
pub fn push_slice(ring: &mut rtrb::Producer<f32>, samples: &[f32]) -> usize {
    let n = samples.len().min(ring.slots());
    if let Ok(chunk) = ring.write_chunk_uninit(n) {
        chunk.fill_from_iter(samples[..n].iter().copied());
    }
    samples.len() - n
}

/// Fills `out` from `ring` if it holds that many samples; otherwise takes nothing.
pub fn pop_exact(ring: &mut rtrb::Consumer<f32>, out: &mut [f32]) -> bool {
    let Ok(chunk) = ring.read_chunk(out.len()) else {
        return false;
    };
    let (a, b) = chunk.as_slices();
    out[..a.len()].copy_from_slice(a);
    out[a.len()..].copy_from_slice(b);
    chunk.commit_all();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_does_not_fit_is_reported_and_partial_reads_take_nothing() {
        let (mut tx, mut rx) = rtrb::RingBuffer::new(4);
        assert_eq!(push_slice(&mut tx, &[1.0, 2.0, 3.0]), 0);
        assert_eq!(push_slice(&mut tx, &[4.0, 5.0]), 1);
        let mut two = [0.0; 2];
        assert!(pop_exact(&mut rx, &mut two));
        assert_eq!(two, [1.0, 2.0]);
        let mut three = [0.0; 3];
        assert!(!pop_exact(&mut rx, &mut three), "only two are left");
        assert!(pop_exact(&mut rx, &mut two));
        assert_eq!(two, [3.0, 4.0]);
    }
}
