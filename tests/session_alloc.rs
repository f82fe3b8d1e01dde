//! Once a session runs, its per-frame path (audio in for STT, the output clock writing frames to
//! the transport) allocates nothing. A counting allocator watches one second of steady playback
//! on a single-threaded runtime, where the session task runs on the counting thread.

mod support;
use support::alloc;
use support::scripted::*;

use std::time::Duration;

use hark::session::SessionOptions;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[test]
fn a_speaking_session_allocates_nothing_per_frame() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let h = speaking(SessionOptions::default()).await;
        let input = h.session.input();
        let mic = vec![0.01f32; 320];
        let before = h.sink.voiced_seconds();

        alloc::start();
        for _ in 0..50 {
            input.push_audio(&mic);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let allocations = alloc::stop();

        let played = h.sink.voiced_seconds() - before;
        assert!(
            (played - 1.0).abs() < 0.021,
            "one second was played: {played}"
        );
        assert_eq!(allocations, 0);
    });
}
