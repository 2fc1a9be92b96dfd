//! Local representations (MNCLGLF `utils/network_builder.py::_local_split` and the combinatorial
//! patches of Fast-MoCo, <https://arxiv.org/abs/2207.08220>): a view is cut into an `s × s` grid,
//! every cell is encoded on its own by the online backbone, and the cell features are averaged
//! over every `r`-subset of cells (`itertools.combinations`, C(4, 2) = 6 for `s = 2, r = 2`).
//!
//! Layout, as the official code: [`local_split`] splits the width first (`x.split(W/s, dim=3)`),
//! then each column along the height, and concatenates along the batch, so the output is
//! cell-major `[s²·N, C, H/s, W/s]` with cell order (col 0,row 0), (col 0,row 1), (col 1,row 0),
//! … . [`combine`] takes `[s²·N, D]` in that layout and returns `[C(s², r)·N, D]`, combination
//! major, combinations in lexicographic order ((0,1), (0,2), (0,3), (1,2), (1,3), (2,3)), each
//! the mean of its cells (`sum(x) / combs`).

use anyhow::{ensure, Result};
use tch::Tensor;

/// `[N, C, H, W]` → `[s²·N, C, H/s, W/s]` (cell-major, see the module docs). `H` and `W` must be
/// multiples of `s`.
pub fn local_split(x: &Tensor, s: i64) -> Result<Tensor> {
    let &[_, _, h, w] = x.size().as_slice() else {
        anyhow::bail!(
            "local split expects [N, C, H, W] images, got {:?}",
            x.size()
        );
    };
    ensure!(s >= 1, "Illegal split_num {s}: it must be ≥ 1");
    ensure!(
        h % s == 0 && w % s == 0,
        "image {h}×{w} cannot be split into a {s}×{s} grid (sides must be multiples of {s})"
    );
    let mut cells = Vec::with_capacity((s * s) as usize);
    for col in x.split(w / s, 3) {
        cells.extend(col.split(h / s, 2));
    }
    Ok(Tensor::cat(&cells, 0))
}

/// All `r`-subsets of `0..n` in lexicographic order (`itertools.combinations(range(n), r)`).
pub fn combinations(n: usize, r: usize) -> Vec<Vec<usize>> {
    fn go(start: usize, n: usize, r: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == r {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            go(i + 1, n, r, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    if r <= n {
        go(0, n, r, &mut Vec::new(), &mut out);
    }
    out
}

/// Cell features `[cells·N, D]` (cell-major) → the mean over every `r`-subset of cells,
/// `[C(cells, r)·N, D]` (combination-major).
pub fn combine(features: &Tensor, cells: i64, r: usize) -> Result<Tensor> {
    let s = features.size();
    ensure!(
        s.len() == 2 && cells >= 1 && s[0] % cells == 0,
        "combine expects [cells·N, D] features with {cells} cells, got {s:?}"
    );
    ensure!(
        r >= 1 && r as i64 <= cells,
        "Illegal combination size {r} for {cells} cells"
    );
    let n = s[0] / cells;
    let parts = features.split(n, 0); // cells × [N, D]
    let combos: Vec<Tensor> = combinations(cells as usize, r)
        .iter()
        .map(|c| {
            // out-of-place sums: the parts share storage with `features`
            let sum = c[1..]
                .iter()
                .fold(parts[c[0]].shallow_clone(), |acc, &i| &acc + &parts[i]);
            sum / r as f64
        })
        .collect();
    Ok(Tensor::cat(&combos, 0))
}
