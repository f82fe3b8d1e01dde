//! The output mixer runs once per 20 ms frame on the hot path: it must not allocate, even while
//! sounds start, stop, loop and end. A counting global allocator proves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use hark::audio::mixer::{BackgroundOptions, Clip, Mixer};

/// Counts allocations made by threads that opted in, so the test harness does not interfere.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn thousand_mix_calls_with_state_changes_allocate_nothing() {
    const RATE: u32 = 24_000;
    const FRAME: usize = 480;
    let tone =
        |len: usize, f: f32| -> Vec<f32> { (0..len).map(|i| (i as f32 * f).sin() * 0.4).collect() };
    let thinking = Clip::new(RATE, tone(1_000, 0.03)).unwrap();
    let music = Clip::new(RATE, tone(7_919, 0.01)).unwrap();
    let jingle = Clip::new(RATE, tone(2_000, 0.05)).unwrap();
    let speech = tone(FRAME, 0.02);
    let mut mixer = Mixer::new(RATE, FRAME).unwrap();
    mixer.set_thinking(Some(thinking), 0.3).unwrap();
    let mut out = vec![0.0f32; FRAME];
    let mut heard = 0usize;

    // The counter itself works: one box, one allocation.
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(Box::new(1u64)));
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.swap(0, Ordering::Relaxed), 1);

    COUNTING.with(|c| c.set(true));
    for i in 0..1000 {
        match i % 200 {
            0 => mixer.start_thinking(),
            20 => mixer
                .play_background(
                    music.clone(),
                    BackgroundOptions {
                        volume: 0.5,
                        looping: true,
                        override_thinking: false,
                    },
                )
                .unwrap(),
            60 => mixer.stop_background(),
            120 => mixer
                .play_background(jingle.clone(), BackgroundOptions::default())
                .unwrap(),
            _ => {}
        }
        let speaking = (100..180).contains(&(i % 200));
        let report = mixer
            .mix(speaking.then_some(&speech[..]), &mut out)
            .unwrap();
        heard += usize::from(report.thinking) + usize::from(report.background);
    }
    COUNTING.with(|c| c.set(false));

    assert!(heard > 0, "the clips were played");
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0);
}
