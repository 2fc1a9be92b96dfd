//! Case lists: `train.list` / `test.list` of the UA-MT / MC-Net / FBA-Net repositories, one case
//! id per line (blank lines and surrounding whitespace ignored; `#` starts a comment line).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Case ids of a list file, in file order.
pub fn read_case_list(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading case list {}", path.display()))?;
    let ids = parse_case_list(&text);
    if ids.is_empty() {
        bail!("case list {} holds no case id", path.display());
    }
    Ok(ids)
}

/// Case ids of a list's text.
pub fn parse_case_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}
