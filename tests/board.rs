//! Board profiles, the status light and the button, as a specification: what each built-in
//! board declares, which pin levels and APA102 frames each agent state produces over time, and
//! which presses a bouncing button reports. Pins and buses are `embedded-hal-mock`s that fail
//! on any transaction not listed; time is explicit `Instant`s, never a sleep.

use std::time::{Duration, Instant};

use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as Pin};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as Spi};
use hark::board::apa102::{self, frame_len};
use hark::board::{
    ActiveLevel, Apa102Indicator, BoardProfile, Button, ButtonAction, ButtonEvent, Indicator,
    MicState, MicSwitch, ProfileError, Rgb, StatusLed, StatusLight,
};

mod support;
use support::alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// `ms` milliseconds after `t0`.
fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

// ---------------------------------------------------------------------------------------------
// Board profiles
// ---------------------------------------------------------------------------------------------

fn board_files() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("boards/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .map(|path| {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_board_file_parses_and_is_built_into_the_binary() {
    let files = board_files();
    assert_eq!(
        files.len(),
        5,
        "rpi5, rpi4, rpi-zero2w, respeaker-2mic, usb-speakerphone"
    );
    let names: Vec<&str> = BoardProfile::names().collect();
    assert_eq!(
        names,
        files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "names() lists every boards/*.toml, sorted, and nothing else"
    );
    for (name, text) in &files {
        let from_file = BoardProfile::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
        let builtin = BoardProfile::builtin(name).unwrap();
        assert_eq!(builtin, from_file, "{name}: the embedded copy is the file");
        assert_eq!(builtin.name, *name);
        assert!(!builtin.description.is_empty(), "{name} describes itself");
    }
}

#[test]
fn inference_threads_follow_each_boards_cores() {
    let threads = |name| BoardProfile::builtin(name).unwrap().threads;
    assert_eq!(threads("rpi-zero2w"), 1);
    assert_eq!(threads("rpi4"), 2);
    assert_eq!(threads("rpi5"), 2);
}

#[test]
fn the_bare_pis_use_the_default_devices_and_gpiochip0_with_nothing_wired() {
    for name in ["rpi5", "rpi4", "rpi-zero2w"] {
        let board = BoardProfile::builtin(name).unwrap();
        assert_eq!(board.audio.capture, "default", "{name}");
        assert_eq!(board.audio.playback, "default", "{name}");
        let gpio = board.gpio.expect("a Pi has a GPIO header");
        assert_eq!(gpio.chip, "/dev/gpiochip0", "{name}");
        assert_eq!((gpio.led, gpio.apa102, gpio.button), (None, None, None));
    }
}

#[test]
fn the_respeaker_2mic_hat_wires_its_card_three_apa102s_and_the_gpio17_button() {
    let board = BoardProfile::builtin("respeaker-2mic").unwrap();
    assert_eq!(board.audio.capture, "plughw:CARD=seeed2micvoicec,DEV=0");
    assert_eq!(board.audio.playback, "plughw:CARD=seeed2micvoicec,DEV=0");
    assert_eq!(board.audio.capture_channels, 2, "two microphones");
    let gpio = board.gpio.unwrap();
    let leds = gpio.apa102.unwrap();
    assert_eq!((leds.spi.as_str(), leds.count), ("/dev/spidev0.0", 3));
    assert!(leds.brightness <= 31);
    let button = gpio.button.unwrap();
    assert_eq!(button.line, 17);
    assert!(button.active_low, "pressing pulls GPIO17 to ground");
    assert_eq!(gpio.button_action, ButtonAction::PushToTalk);
    assert_eq!(gpio.led, None);
}

#[test]
fn a_usb_speakerphone_has_no_gpio() {
    let board = BoardProfile::builtin("usb-speakerphone").unwrap();
    assert!(board.audio.capture.starts_with("plughw:CARD="));
    assert_eq!(board.audio.capture_channels, 1);
    assert_eq!(board.gpio, None);
}

#[test]
fn an_unknown_board_name_lists_the_known_ones() {
    let err = BoardProfile::builtin("rpi3").unwrap_err();
    let ProfileError::UnknownBoard { name, known } = &err else {
        panic!("expected UnknownBoard, got {err:?}");
    };
    assert_eq!(name, "rpi3");
    assert_eq!(known.0, BoardProfile::names().collect::<Vec<_>>());
    assert_eq!(
        err.to_string(),
        "unknown board \"rpi3\"; known boards: respeaker-2mic, rpi-zero2w, rpi4, rpi5, \
         usb-speakerphone"
    );
}

const MINIMAL: &str = r#"
description = "test"
threads = 1
[audio]
capture = "default"
playback = "default"
rate = 16000
capture_channels = 1
"#;

#[test]
fn a_misspelt_key_is_an_error_not_ignored() {
    let text = MINIMAL.replace("threads = 1", "threads = 1\nthread = 2");
    let err = BoardProfile::parse("mine", &text).unwrap_err();
    assert!(matches!(err, ProfileError::Parse { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("mine") && message.contains("thread"),
        "{message}"
    );

    let text = format!("{MINIMAL}[gpio]\nchip = \"/dev/gpiochip0\"\n[gpio.button]\npin = 17\n");
    let err = BoardProfile::parse("mine", &text).unwrap_err();
    assert!(err.to_string().contains("pin"), "{err}");
}

#[test]
fn optional_gpio_keys_take_their_documented_defaults() {
    let text = format!(
        "{MINIMAL}[gpio]\nchip = \"/dev/gpiochip0\"\n[gpio.apa102]\nspi = \"/dev/spidev0.0\"\n\
         count = 12\n[gpio.button]\nline = 5\n"
    );
    let gpio = BoardProfile::parse("mine", &text).unwrap().gpio.unwrap();
    assert_eq!(gpio.button_action, ButtonAction::PushToTalk);
    assert_eq!(gpio.apa102.unwrap().brightness, 8);
    let button = gpio.button.unwrap();
    assert_eq!((button.active_low, button.debounce_ms), (false, 30));
}

#[test]
fn values_no_device_can_use_are_rejected_naming_the_key() {
    let cases = [
        (MINIMAL.replace("threads = 1", "threads = 0"), "threads"),
        (MINIMAL.replace("rate = 16000", "rate = 0"), "audio.rate"),
        (
            MINIMAL.replace("capture_channels = 1", "capture_channels = 0"),
            "audio.capture_channels",
        ),
        (
            format!("{MINIMAL}[gpio]\nchip = \"c\"\n[gpio.apa102]\nspi = \"s\"\ncount = 0\n"),
            "gpio.apa102.count",
        ),
        (
            format!(
                "{MINIMAL}[gpio]\nchip = \"c\"\n[gpio.apa102]\nspi = \"s\"\ncount = 3\n\
                 brightness = 32\n"
            ),
            "gpio.apa102.brightness",
        ),
        (
            format!(
                "{MINIMAL}[gpio]\nchip = \"c\"\n[gpio.led]\nline = 4\n[gpio.apa102]\n\
                 spi = \"s\"\ncount = 3\n"
            ),
            "gpio.led",
        ),
        (
            format!(
                "{MINIMAL}[gpio]\nchip = \"c\"\n[gpio.led]\nline = 4\n[gpio.button]\nline = 4\n"
            ),
            "gpio.button.line",
        ),
    ];
    for (text, key) in cases {
        match BoardProfile::parse("mine", &text) {
            Err(ProfileError::Invalid { field, .. }) => assert_eq!(field, key),
            other => panic!("{key}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn button_actions_are_spelt_as_in_the_brief() {
    for (spelling, action) in [
        ("push_to_talk", ButtonAction::PushToTalk),
        ("mute", ButtonAction::Mute),
    ] {
        let text = format!("{MINIMAL}[gpio]\nchip = \"c\"\nbutton_action = \"{spelling}\"\n");
        let gpio = BoardProfile::parse("mine", &text).unwrap().gpio.unwrap();
        assert_eq!(gpio.button_action, action);
    }
}

// ---------------------------------------------------------------------------------------------
// A single status LED
// ---------------------------------------------------------------------------------------------

/// Drives `light` through `steps`: at each `(ms, write)`, exactly `write` (or nothing) must
/// reach the pin, or the mock fails the test.
fn led_script(
    t0: Instant,
    light: &mut StatusLed<PinMock>,
    pin: &mut PinMock,
    show: Indicator,
    steps: &[(u64, Option<State>)],
) {
    for (i, &(ms, write)) in steps.iter().enumerate() {
        let expected: Vec<Pin> = write.map(Pin::set).into_iter().collect();
        pin.update_expectations(&expected);
        if i == 0 {
            light.show(show, at(t0, ms)).unwrap();
        } else {
            light.tick(at(t0, ms)).unwrap();
        }
        pin.done();
    }
}

use State::{High, Low};

#[test]
fn a_new_led_is_dark_and_writes_nothing_until_ticked() {
    let t0 = Instant::now();
    let mut pin = PinMock::new(&[Pin::set(Low)]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::High);
    assert_eq!(led.indicator(), Indicator::Idle);
    led.tick(t0).unwrap();
    led.tick(at(t0, 1000)).unwrap();
    pin.done();
}

#[test]
fn listening_holds_the_led_on_and_writes_it_once() {
    let t0 = Instant::now();
    let mut pin = PinMock::new(&[]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::High);
    let steps = [(0, Some(High)), (50, None), (500, None), (5000, None)];
    led_script(t0, &mut led, &mut pin, Indicator::Listening, &steps);
    assert_eq!(led.indicator(), Indicator::Listening);
}

#[test]
fn thinking_blinks_half_a_second_on_half_a_second_off() {
    let t0 = Instant::now();
    let mut pin = PinMock::new(&[]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::High);
    let steps = [
        (0, Some(High)),
        (250, None),
        (499, None),
        (500, Some(Low)),
        (999, None),
        (1000, Some(High)),
        (1500, Some(Low)),
        (2000, Some(High)),
    ];
    led_script(t0, &mut led, &mut pin, Indicator::Thinking, &steps);
}

#[test]
fn speaking_is_on_with_a_short_dark_beat_each_second() {
    let t0 = Instant::now();
    let mut pin = PinMock::new(&[]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::High);
    let steps = [
        (0, Some(High)),
        (799, None),
        (800, Some(Low)),
        (999, None),
        (1000, Some(High)),
        (1800, Some(Low)),
    ];
    led_script(t0, &mut led, &mut pin, Indicator::Speaking, &steps);
}

#[test]
fn error_blinks_fast_ten_times_a_second_with_late_ticks_landing_on_the_right_phase() {
    let t0 = Instant::now();
    let mut pin = PinMock::new(&[]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::High);
    let steps = [
        (0, Some(High)),
        (100, Some(Low)),
        (200, Some(High)),
        (300, Some(Low)),
        // A tick that comes late (at 450 ms, in the 400..500 lit phase) shows that phase.
        (450, Some(High)),
        (520, Some(Low)),
    ];
    led_script(t0, &mut led, &mut pin, Indicator::Error, &steps);
}

#[test]
fn idle_turns_the_led_off_and_leaves_it_off() {
    let t0 = Instant::now();
    let mut pin = PinMock::new(&[Pin::set(High)]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::High);
    led.show(Indicator::Listening, t0).unwrap();
    pin.done();
    let steps = [(10, Some(Low)), (500, None), (1000, None)];
    led_script(t0, &mut led, &mut pin, Indicator::Idle, &steps);
}

#[test]
fn an_active_low_led_is_lit_by_a_low_line() {
    let t0 = Instant::now();
    let mut pin = PinMock::new(&[]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::Low);
    let steps = [(0, Some(Low)), (500, Some(High)), (1000, Some(Low))];
    led_script(t0, &mut led, &mut pin, Indicator::Thinking, &steps);
}

#[test]
fn showing_the_shown_state_again_keeps_its_blink_phase_and_a_new_state_restarts_it() {
    let t0 = Instant::now();
    let mut pin = PinMock::new(&[Pin::set(High)]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::High);
    led.show(Indicator::Thinking, t0).unwrap();
    pin.done();

    // Repeated at 400 ms: still the first flash, which ends at 500 ms as scheduled.
    pin.update_expectations(&[]);
    led.show(Indicator::Thinking, at(t0, 400)).unwrap();
    pin.done();
    pin.update_expectations(&[Pin::set(Low)]);
    led.tick(at(t0, 500)).unwrap();
    pin.done();

    // Error at 600 ms starts its own pattern there: lit at once, dark 100 ms later.
    pin.update_expectations(&[Pin::set(High)]);
    led.show(Indicator::Error, at(t0, 600)).unwrap();
    pin.done();
    pin.update_expectations(&[Pin::set(Low)]);
    led.tick(at(t0, 700)).unwrap();
    pin.done();
}

#[test]
fn a_failed_pin_write_is_reported_and_retried_on_the_next_tick() {
    use embedded_hal_mock::eh1::MockError;
    let t0 = Instant::now();
    let failing = Pin::set(High).with_error(MockError::Io(std::io::ErrorKind::Other));
    let mut pin = PinMock::new(&[failing, Pin::set(High)]);
    let mut led = StatusLed::new(pin.clone(), ActiveLevel::High);
    assert!(led.show(Indicator::Listening, t0).is_err());
    led.tick(at(t0, 50)).unwrap();
    led.tick(at(t0, 100)).unwrap();
    pin.done();
}

// ---------------------------------------------------------------------------------------------
// APA102 RGB LEDs
// ---------------------------------------------------------------------------------------------

/// The frame for three LEDs at brightness 8 all showing `(r, g, b)`: 32 zero bits, then per LED
/// `0b111_01000` (brightness 8), blue, green, red, then a 32-bit end frame of zeros.
fn three_leds(r: u8, g: u8, b: u8) -> Vec<u8> {
    let led = [0xE8, b, g, r];
    [&[0u8; 4][..], &led, &led, &led, &[0u8; 4]].concat()
}

#[test]
fn each_state_has_its_colour_and_exact_apa102_frame() {
    let expected = [
        (Indicator::Listening, three_leds(0, 0, 255)),
        (Indicator::Thinking, three_leds(255, 120, 0)),
        (Indicator::Speaking, three_leds(0, 255, 0)),
        (Indicator::Error, three_leds(255, 0, 0)),
        (Indicator::Idle, three_leds(0, 0, 0)),
    ];
    assert_eq!(
        expected[0].1,
        [
            0x00, 0x00, 0x00, 0x00, // start frame
            0xE8, 0xFF, 0x00, 0x00, // LED 1: brightness 8, blue 255, green 0, red 0
            0xE8, 0xFF, 0x00, 0x00, // LED 2
            0xE8, 0xFF, 0x00, 0x00, // LED 3
            0x00, 0x00, 0x00, 0x00, // end frame
        ]
    );
    let t0 = Instant::now();
    let writes: Vec<Spi<u8>> = expected
        .iter()
        .map(|(_, frame)| Spi::write_vec(frame.clone()))
        .collect();
    let mut bus = SpiMock::new(&writes);
    let mut leds = Apa102Indicator::new(bus.clone(), 3, 8);
    for (i, (indicator, _)) in expected.iter().enumerate() {
        leds.show(*indicator, at(t0, 1000 * i as u64)).unwrap();
    }
    bus.done();
}

#[test]
fn apa102s_blink_between_the_colour_and_dark_writing_only_on_changes() {
    let t0 = Instant::now();
    let red = three_leds(255, 0, 0);
    let dark = three_leds(0, 0, 0);
    let mut bus = SpiMock::new(&[]);
    let mut leds = Apa102Indicator::new(bus.clone(), 3, 8);
    let steps: [(u64, Option<&Vec<u8>>); 6] = [
        (0, Some(&red)),
        (50, None),
        (100, Some(&dark)),
        (150, None),
        (200, Some(&red)),
        (300, Some(&dark)),
    ];
    for (i, (ms, frame)) in steps.into_iter().enumerate() {
        let expected: Vec<Spi<u8>> = frame
            .map(|f| Spi::write_vec(f.clone()))
            .into_iter()
            .collect();
        bus.update_expectations(&expected);
        if i == 0 {
            leds.show(Indicator::Error, at(t0, ms)).unwrap();
        } else {
            leds.tick(at(t0, ms)).unwrap();
        }
        bus.done();
    }
}

#[test]
fn a_new_apa102_chain_goes_dark_on_its_first_tick() {
    let t0 = Instant::now();
    let mut bus = SpiMock::new(&[Spi::write_vec(three_leds(0, 0, 0))]);
    let mut leds = Apa102Indicator::new(bus.clone(), 3, 8);
    leds.tick(t0).unwrap();
    leds.tick(at(t0, 100)).unwrap();
    bus.done();
}

#[test]
fn brightness_is_five_bits_and_capped_at_31() {
    let t0 = Instant::now();
    let full = [0xFF, 0, 0, 255];
    let frame = [&[0u8; 4][..], &full, &[0u8; 4]].concat();
    let mut bus = SpiMock::new(&[Spi::write_vec(frame)]);
    let mut leds = Apa102Indicator::new(bus.clone(), 1, 200);
    leds.show(Indicator::Error, t0).unwrap();
    bus.done();
}

#[test]
fn the_end_frame_clocks_half_a_bit_per_led_and_is_never_under_32_bits() {
    assert_eq!(frame_len(0), 4 + 4);
    assert_eq!(frame_len(3), 4 + 12 + 4);
    assert_eq!(frame_len(64), 4 + 256 + 4, "64 LEDs need 32 more clocks");
    assert_eq!(frame_len(65), 4 + 260 + 5);
    assert_eq!(frame_len(100), 4 + 400 + 7);

    let mut frame = vec![0xAA; frame_len(65)];
    apa102::encode(&mut frame, 65, Rgb::new(1, 2, 3), 31);
    assert_eq!(frame[..4], [0; 4]);
    assert!(frame[4..264].chunks(4).all(|led| led == [0xFF, 3, 2, 1]));
    assert_eq!(frame[264..], [0; 5]);
}

// ---------------------------------------------------------------------------------------------
// Lights allocate nothing while ticking
// ---------------------------------------------------------------------------------------------

/// A pin and a bus that accept everything, so only the drivers' own allocations are counted.
#[derive(Default)]
struct Sink {
    writes: usize,
}

impl embedded_hal::digital::ErrorType for Sink {
    type Error = std::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for Sink {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.writes += 1;
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.writes += 1;
        Ok(())
    }
}

impl embedded_hal::spi::ErrorType for Sink {
    type Error = std::convert::Infallible;
}

impl embedded_hal::spi::SpiBus for Sink {
    fn read(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> Result<(), Self::Error> {
        self.writes += 1;
        Ok(())
    }
    fn transfer(&mut self, _: &mut [u8], _: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    fn transfer_in_place(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[test]
fn ticking_and_switching_states_allocates_nothing() {
    let t0 = Instant::now();
    let mut led = StatusLed::new(Sink::default(), ActiveLevel::High);
    let mut leds = Apa102Indicator::new(Sink::default(), 12, 8);
    let states = [
        Indicator::Listening,
        Indicator::Thinking,
        Indicator::Speaking,
        Indicator::Error,
        Indicator::Idle,
    ];
    alloc::start();
    for ms in (0..10_000).step_by(20) {
        let now = at(t0, ms);
        let state = states[(ms / 2000) as usize % states.len()];
        led.show(state, now).unwrap();
        leds.show(state, now).unwrap();
        led.tick(now).unwrap();
        leds.tick(now).unwrap();
    }
    let allocations = alloc::stop();
    assert_eq!(allocations, 0);
    assert!(led.release().writes > 20, "the LED blinked");
    assert!(leds.release().writes > 20, "the APA102s blinked");
}

// ---------------------------------------------------------------------------------------------
// The button
// ---------------------------------------------------------------------------------------------

/// Polls a button whose line reads `levels[i]` at `ms[i]`; returns the events with their times.
fn press_script(
    active: ActiveLevel,
    debounce_ms: u64,
    levels: &[(u64, State)],
) -> Vec<(u64, ButtonEvent)> {
    let t0 = Instant::now();
    let reads: Vec<Pin> = levels.iter().map(|&(_, level)| Pin::get(level)).collect();
    let mut pin = PinMock::new(&reads);
    let mut button = Button::new(pin.clone(), active, Duration::from_millis(debounce_ms));
    let mut events = Vec::new();
    for &(ms, _) in levels {
        if let Some(event) = button.poll(at(t0, ms)).unwrap() {
            events.push((ms, event));
        }
    }
    pin.done();
    events
}

/// `level` read every millisecond over `from..to`.
fn held(level: State, from: u64, to: u64) -> Vec<(u64, State)> {
    (from..to).map(|ms| (ms, level)).collect()
}

#[test]
fn bounces_shorter_than_the_debounce_time_make_no_event() {
    // Active low: a press reads Low. Contact chatter, each low run under 30 ms.
    let levels = [
        held(High, 0, 10),
        held(Low, 10, 13),
        held(High, 13, 15),
        held(Low, 15, 44), // 29 ms: one short of the debounce time
        held(High, 44, 100),
    ]
    .concat();
    assert_eq!(press_script(ActiveLevel::Low, 30, &levels), []);
}

#[test]
fn a_press_held_past_the_debounce_is_one_pressed_then_one_released() {
    let levels = [
        held(High, 0, 10),
        // Press with bounce: the level settles low at 16 ms.
        held(Low, 10, 12),
        held(High, 12, 13),
        held(Low, 13, 14),
        held(High, 14, 16),
        held(Low, 16, 300),
        // Release with bounce: settles high at 306 ms.
        held(High, 300, 302),
        held(Low, 302, 306),
        held(High, 306, 400),
    ]
    .concat();
    assert_eq!(
        press_script(ActiveLevel::Low, 30, &levels),
        [(46, ButtonEvent::Pressed), (336, ButtonEvent::Released)],
        "each reported once the level has held 30 ms"
    );
}

#[test]
fn an_active_high_button_is_pressed_by_a_high_line() {
    let levels = [held(Low, 0, 5), held(High, 5, 20), held(Low, 20, 40)].concat();
    assert_eq!(
        press_script(ActiveLevel::High, 10, &levels),
        [(15, ButtonEvent::Pressed), (30, ButtonEvent::Released)]
    );
}

#[test]
fn a_button_held_at_start_up_reports_pressed_after_the_debounce() {
    let levels = held(Low, 0, 50);
    assert_eq!(
        press_script(ActiveLevel::Low, 30, &levels),
        [(30, ButtonEvent::Pressed)]
    );
}

#[test]
fn push_to_talk_opens_the_mic_only_while_the_button_is_held() {
    let mut mic = MicSwitch::new(ButtonAction::PushToTalk);
    assert_eq!(mic.state(), MicState::Closed, "nobody holds the button");
    assert_eq!(mic.apply(ButtonEvent::Pressed), Some(MicState::Open));
    assert_eq!(mic.apply(ButtonEvent::Released), Some(MicState::Closed));
    assert_eq!(
        mic.apply(ButtonEvent::Released),
        None,
        "no change, nothing to do"
    );
    assert_eq!(mic.apply(ButtonEvent::Pressed), Some(MicState::Open));
    assert_eq!(mic.state(), MicState::Open);
}

#[test]
fn mute_toggles_the_mic_on_each_press_and_ignores_releases() {
    let mut mic = MicSwitch::new(ButtonAction::Mute);
    assert_eq!(mic.state(), MicState::Open, "an always-listening kiosk");
    assert_eq!(mic.apply(ButtonEvent::Pressed), Some(MicState::Closed));
    assert_eq!(mic.apply(ButtonEvent::Released), None);
    assert_eq!(
        mic.state(),
        MicState::Closed,
        "still muted after letting go"
    );
    assert_eq!(mic.apply(ButtonEvent::Pressed), Some(MicState::Open));
    assert_eq!(mic.apply(ButtonEvent::Released), None);
    assert_eq!(mic.state(), MicState::Open);
}

// ---------------------------------------------------------------------------------------------
// The real pins (Linux): only what can be shown without a GPIO chip
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod linux {
    use hark::board::gpio::{BoardIo, GpioError};
    use hark::board::BoardProfile;

    use super::MINIMAL;

    #[test]
    fn a_board_without_gpio_opens_nothing() {
        let board = BoardProfile::builtin("usb-speakerphone").unwrap();
        assert!(BoardIo::from_profile(&board).unwrap().is_none());
    }

    #[test]
    fn opening_a_missing_gpio_chip_is_an_error_naming_its_path() {
        let path = "/dev/gpiochip-hark-test-missing";
        let text = format!(
            "{MINIMAL}[gpio]\nchip = \"{path}\"\n[gpio.button]\nline = 17\nactive_low = true\n"
        );
        let board = BoardProfile::parse("mine", &text).unwrap();
        let Err(err) = BoardIo::from_profile(&board) else {
            panic!("opened a chip that does not exist");
        };
        assert!(
            matches!(&err, GpioError::OpenChip { path: p, .. } if p == path),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("cannot open GPIO chip {path}: ")),
            "{message}"
        );
    }

    #[test]
    fn opening_a_missing_spi_bus_is_an_error_naming_its_path() {
        let path = "/dev/spidev-hark-test-missing";
        let text = format!(
            "{MINIMAL}[gpio]\nchip = \"/dev/gpiochip0\"\n[gpio.apa102]\nspi = \"{path}\"\ncount = 3\n"
        );
        let board = BoardProfile::parse("mine", &text).unwrap();
        let Err(err) = BoardIo::from_profile(&board) else {
            panic!("opened an SPI bus that does not exist");
        };
        assert!(
            err.to_string()
                .starts_with(&format!("cannot open SPI bus {path}: ")),
            "{err}"
        );
    }
}
