//! `hark listen --plot`: waveform, VAD probability and end-of-turn probability over time, as PNG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::timeline::Timeline;
use super::WindowTrace;
use crate::audio::Audio;

/// Fonts tried for labels (Debian's fonts-dejavu-core provides the first).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// The plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// No font for the labels.
    #[error("no TrueType font for plot labels (looked for {}); install fonts-dejavu-core", FONTS.join(", "))]
    NoFont,
    /// Drawing or writing failed.
    #[error("{path}: cannot draw plot: {reason}")]
    Draw {
        /// The PNG.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn register_font() -> Result<(), PlotError> {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        FONTS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
    });
    ok.then_some(()).ok_or(PlotError::NoFont)
}

/// Draws the plot to `path` (PNG, 1600×900).
pub fn draw(
    path: &Path,
    audio: &Audio,
    timeline: &Timeline,
    trace: &[WindowTrace],
) -> Result<(), PlotError> {
    register_font()?;
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let root = BitMapBackend::new(path, (1600, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(400);
    let dur = audio.duration().max(0.1);

    // Waveform as a min/max envelope per pixel column, with speech segments shaded.
    let mut wave = ChartBuilder::on(&top)
        .caption(
            format!("{}: waveform and speech segments", timeline.source),
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..dur, -1.0f64..1.0)
        .map_err(|e| err(&e))?;
    wave.configure_mesh()
        .x_desc("s")
        .draw()
        .map_err(|e| err(&e))?;
    for seg in &timeline.segments {
        wave.draw_series(std::iter::once(Rectangle::new(
            [(seg.start, -1.0), (seg.end, 1.0)],
            RGBColor(200, 230, 255).filled(),
        )))
        .map_err(|e| err(&e))?;
    }
    let columns = 1500usize;
    let per = (audio.samples.len() / columns).max(1);
    let envelope = audio.samples.chunks(per).enumerate().map(|(i, c)| {
        let lo = c.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
        let hi = c.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let t = (i * per) as f64 / audio.rate as f64;
        PathElement::new(vec![(t, lo), (t, hi)], BLUE)
    });
    wave.draw_series(envelope).map_err(|e| err(&e))?;

    // Probabilities: VAD raw and smoothed, and Smart Turn at each pause.
    let mut probs = ChartBuilder::on(&bottom)
        .caption(
            "VAD probability and end-of-turn probability",
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..dur, 0.0f64..1.05)
        .map_err(|e| err(&e))?;
    probs
        .configure_mesh()
        .x_desc("s")
        .draw()
        .map_err(|e| err(&e))?;
    probs
        .draw_series(LineSeries::new(
            trace.iter().map(|w| (w.t, w.raw as f64)),
            RGBColor(180, 180, 180),
        ))
        .map_err(|e| err(&e))?
        .label("VAD raw")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(180, 180, 180)));
    probs
        .draw_series(LineSeries::new(
            trace.iter().map(|w| (w.t, w.smoothed as f64)),
            GREEN.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label("VAD smoothed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    probs
        .draw_series(timeline.turns.iter().map(|t| {
            let color = if t.complete { RED } else { MAGENTA };
            Circle::new((t.timestamp, t.probability as f64), 6, color.filled())
        }))
        .map_err(|e| err(&e))?
        .label("end of turn")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
    probs
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
