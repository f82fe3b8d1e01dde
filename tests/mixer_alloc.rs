//! The output mixer runs once per 20 ms frame on the hot path: it must not allocate, even while
//! sounds start, stop, loop and end. A counting global allocator proves it.

use hark::audio::mixer::{BackgroundOptions, Clip, Mixer};

mod support;
use support::alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

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
    alloc::start();
    drop(std::hint::black_box(Box::new(1u64)));
    assert_eq!(alloc::stop(), 1);

    alloc::start();
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
    let allocations = alloc::stop();

    assert!(heard > 0, "the clips were played");
    assert_eq!(allocations, 0);
}
