//! "What the model does" for CLAIRES: for a few test queries (distinct sentences, evenly spread
//! over the test set), the query text and its top-k images over the whole test gallery, ranked by
//! the model. A green frame marks a relevant image (same fields as the query, the label-match
//! criterion); a thick green frame with "own" marks the query's own record (the paired
//! criterion). Written to the run's `figures/retrieval_topk.png` at the end of training.

use crate::model::Claires;
use crate::records::Record;
use anyhow::{ensure, Context, Result};
use contrast_report::images::{caption, draw_box, grid, save_png};
use image::{imageops::FilterType, Rgb, RgbImage};
use std::path::Path;
use tch::Tensor;

/// Side of each shown image, px.
const TILE: u32 = 112;

/// Text wrapped into lines of at most `width` characters (on spaces where possible).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let cur = lines.last_mut().expect("one line");
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines
}

/// A white tile with the query text on it.
fn text_tile(text: &str) -> Result<RgbImage> {
    let lines = wrap(&format!("query: {text}"), 26);
    let mut img = RgbImage::from_pixel(TILE * 2, 4, Rgb([255, 255, 255]));
    for l in lines.iter().take(7).rev() {
        img = caption(&img, l)?;
    }
    Ok(img)
}

/// Indices of up to `n` test records with distinct sentences, evenly spread over the set.
pub fn pick_queries(records: &[Record], n: usize) -> Vec<usize> {
    let mut seen = std::collections::BTreeSet::new();
    let distinct: Vec<usize> = (0..records.len())
        .filter(|&i| seen.insert(records[i].text()))
        .collect();
    let n = n.min(distinct.len());
    (0..n)
        .map(|j| distinct[j * distinct.len() / n.max(1)])
        .collect()
}

/// Draws the figure; `images` are the records' model inputs `[N, 3, S, S]` (for ranking), the
/// pictures shown are the original files. Returns the query indices drawn.
pub fn topk_figure(
    model: &Claires,
    images: &Tensor,
    records: &[Record],
    k: usize,
    queries: usize,
    path: &Path,
) -> Result<Vec<usize>> {
    ensure!(
        images.size()[0] as usize == records.len(),
        "{} images for {} records",
        images.size()[0],
        records.len()
    );
    let k = k.min(records.len());
    let picked = pick_queries(records, queries);
    ensure!(!picked.is_empty(), "no test records to draw");
    let img_emb = model.search_images(images, 32)?; // [N, D], normalised
    let texts: Vec<String> = picked.iter().map(|&q| records[q].text()).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let txt_emb = model.search_text(&refs)?; // [Q, D]
    let scores = txt_emb.matmul(&img_emb.transpose(0, 1)); // [Q, N]
    let mut tiles = Vec::new();
    for (row, &q) in picked.iter().enumerate() {
        let (vals, idx) = scores.get(row as i64).topk(k as i64, 0, true, true);
        let vals = Vec::<f32>::try_from(&vals)?;
        let idx = Vec::<i64>::try_from(&idx)?;
        tiles.push(text_tile(&texts[row])?);
        for (r, (&c, &s)) in idx.iter().zip(&vals).enumerate() {
            let rec = &records[c as usize];
            let mut pic = image::open(&rec.image)
                .with_context(|| format!("reading {}", rec.image.display()))?
                .resize_exact(TILE, TILE, FilterType::Triangle)
                .to_rgb8();
            let own = c as usize == q;
            let relevant = rec.fields == records[q].fields;
            if relevant {
                draw_box(
                    &mut pic,
                    0,
                    0,
                    TILE,
                    TILE,
                    [0, 190, 0],
                    if own { 6 } else { 3 },
                );
            }
            let label = format!(
                "#{} {s:.2}{}",
                r + 1,
                if own {
                    " own"
                } else if relevant {
                    " match"
                } else {
                    ""
                }
            );
            tiles.push(caption(&pic, &label)?);
        }
    }
    save_png(&grid(&tiles, k + 1, 6)?, path)?;
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_on_spaces() {
        assert_eq!(
            wrap("the left lung shows an opacity", 12),
            vec!["the left", "lung shows", "an opacity"]
        );
        assert_eq!(wrap("", 5), vec![""]);
    }
}
