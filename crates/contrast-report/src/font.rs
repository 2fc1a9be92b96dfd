//! The font chart and image text is drawn with (registered once per process), shared by
//! [`crate::plot`] and [`crate::images`].

use anyhow::{anyhow, Result};
use plotters::style::FontStyle;
use std::sync::OnceLock;

/// Font files tried in order after `$CONTRAST_FONT`.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Register the font plotters draws text with (once per process).
pub fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let r = FONT.get_or_init(|| {
        let env = std::env::var("CONTRAST_FONT").ok();
        let candidates = env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES.iter().copied());
        for c in candidates {
            if let Ok(bytes) = std::fs::read(c) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(c.to_string());
                }
            }
        }
        Err(format!(
            "no usable TrueType font for chart text (tried $CONTRAST_FONT and {}); install \
             Debian's fonts-dejavu-core or set CONTRAST_FONT to a .ttf file",
            FONT_CANDIDATES.join(", ")
        ))
    });
    r.as_ref().map(|_| ()).map_err(|e| anyhow!("{e}"))
}
