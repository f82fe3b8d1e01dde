//! hark's log lines, captured so tests can read them back (a key must never appear in one).
//!
//! One global subscriber is installed before any capture: a thread-scoped subscriber alone can
//! miss events when another thread registered a log call site first and tracing cached that
//! nobody was interested.

use std::sync::{Arc, Mutex, OnceLock};

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Captures what this thread logs (every level) until the guard drops, and nothing from
    /// other tests running beside it.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        logs();
        tracing::subscriber::set_default(subscriber(self.clone()))
    }

    /// The log so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every log line of this test binary that no thread-scoped capture took: the lines of all
/// tests so far, which is what a "the key appears nowhere" check wants.
pub fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        tracing::subscriber::set_global_default(subscriber(logs.clone()))
            .expect("the only global subscriber");
        logs
    })
}

fn subscriber(writer: Captured) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(writer)
        .with_ansi(false)
        .finish()
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}
