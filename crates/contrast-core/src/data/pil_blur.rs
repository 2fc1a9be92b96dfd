//! Pillow's `ImageFilter.GaussianBlur(radius=σ)`, bit for bit: the blur the official PyTorch
//! augmentations of MoCo v2, BYOL-style and PatchMix recipes apply (`x.filter(GaussianBlur(σ))`,
//! σ ∈ [0.1, 2]), which has no fixed kernel size.
//!
//! Pillow (`libImaging/BoxBlur.c`) approximates a Gaussian of standard deviation σ by three
//! passes of an *extended* box blur (Gwosdek et al., "Theoretical foundations of Gaussian
//! convolution by extended box filtering", SSVM 2011): a box of integer radius `r` plus a
//! fractional weight on the two pixels just outside it, whose radius `r + a` is chosen so that
//! three passes have variance σ². Each pass runs along rows, with the image's edge pixels
//! repeated beyond the border and the result rounded to 8 bits; then the same three passes run
//! along columns. The cost per pixel does not depend on σ.
//!
//! Tested against Pillow on the same 8-bit images (`tests/pil_blur.rs`).

use super::simd::avx2_dispatch;

/// Pillow's `_gaussian_blur_radius(radius, passes)`: the extended-box radius `r + a` of one
/// pass (C `float` arithmetic, with `sqrt` / `floor` in `double` as in the C source).
pub fn box_radius(sigma: f32, passes: u32) -> f32 {
    let sigma2: f32 = sigma * sigma / passes as f32;
    let big_l: f32 = (12.0f64 * sigma2 as f64 + 1.0).sqrt() as f32;
    let l: f32 = ((big_l as f64 - 1.0) / 2.0).floor() as f32;
    let mut a: f32 = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

avx2_dispatch! {
/// One extended-box pass along the `n` rows of a `[n, cols]` 8-bit plane, every column at once
/// (`ImagingLineBoxBlur32` on each column, one channel):
/// `out[x] = round((Σ_{|i−x|≤r} in[i] · ww + (in[x−r−1] + in[x+r+1]) · fw) / 2²⁴)`, indices
/// clamped to the column. `u32` arithmetic wraps exactly as Pillow's `UINT32`. The columns run
/// in lock step so that each row update is one vectorisable loop over `cols` lanes.
#[allow(clippy::too_many_arguments)]
fn pass_along_rows(
    out: &mut [u8],
    inp: &[u8],
    n: usize,
    cols: usize,
    radius: usize,
    ww: u32,
    fw: u32,
    acc: &mut Vec<u32>,
) {
    let lastx = n - 1;
    let edge_a = (radius + 1).min(n);
    let row = |i: usize| &inp[i * cols..(i + 1) * cols];
    // the accumulator for pixel −1: its window [−r−1, r−1], edges repeated
    acc.clear();
    acc.extend(
        row(0)
            .iter()
            .map(|&v| (v as u32).wrapping_mul(radius as u32 + 1)),
    );
    for x in 0..edge_a.saturating_sub(1) {
        for (a, &v) in acc.iter_mut().zip(row(x)) {
            *a = a.wrapping_add(v as u32);
        }
    }
    let k = (radius + 1 - edge_a) as u32;
    for (a, &v) in acc.iter_mut().zip(row(lastx)) {
        *a = a.wrapping_add((v as u32).wrapping_mul(k));
    }
    for x in 0..n {
        // leaving and entering pixels, and the two fractional ones, clamped to the column
        let sub = x.saturating_sub(radius + 1);
        let add = (x + radius).min(lastx);
        let right = (x + radius + 1).min(lastx);
        let (rs, ra, rr) = (row(sub), row(add), row(right));
        let o = &mut out[x * cols..(x + 1) * cols];
        for c in 0..cols {
            let a = acc[c].wrapping_add(ra[c] as u32).wrapping_sub(rs[c] as u32);
            acc[c] = a;
            let bulk = a
                .wrapping_mul(ww)
                .wrapping_add((rs[c] as u32 + rr[c] as u32).wrapping_mul(fw));
            o[c] = (bulk.wrapping_add(1 << 23) >> 24) as u8;
        }
    }
}
}

/// `passes` extended-box passes of float radius `r` along the rows of a `[n, cols]` plane
/// (`ImagingHorizontalBoxBlur` on its transpose, repeated); `tmp` is scratch.
fn blur_along_rows(
    plane: &mut [u8],
    n: usize,
    cols: usize,
    r: f32,
    passes: u32,
    tmp: &mut Vec<u8>,
    acc: &mut Vec<u32>,
) {
    let radius = r as usize; // C `(int)floatRadius`, r ≥ 0
    let ww = (16_777_216.0f32 / (r * 2.0 + 1.0)) as u32;
    let fw = (16_777_216u32.wrapping_sub((radius as u32 * 2 + 1).wrapping_mul(ww))) / 2;
    tmp.resize(n * cols, 0);
    for _ in 0..passes {
        pass_along_rows(tmp, plane, n, cols, radius, ww, fw, acc);
        plane.copy_from_slice(tmp);
    }
}

avx2_dispatch! {
/// `dst [w, h]` = the transpose of `src [h, w]`.
fn transpose(src: &[u8], dst: &mut [u8], h: usize, w: usize) {
    for y in 0..h {
        for x in 0..w {
            dst[x * h + y] = src[y * w + x];
        }
    }
}
}

/// `img.filter(ImageFilter.GaussianBlur(sigma))` on an 8-bit planar image `[c, h, w]`, in place:
/// three passes along rows, then three along columns (Pillow's order).
pub fn gaussian_blur_u8(img: &mut [u8], c: usize, h: usize, w: usize, sigma: f32) {
    assert_eq!(img.len(), c * h * w, "image buffer is not {c}×{h}×{w}");
    if h == 0 || w == 0 {
        return;
    }
    let r = box_radius(sigma, 3);
    if r == 0.0 {
        return; // Pillow copies the image when both radii are 0
    }
    let (mut tmp, mut acc) = (Vec::new(), Vec::new());
    let mut t = vec![0u8; h * w];
    for plane in img.chunks_exact_mut(h * w) {
        // along each row: on the transpose [w, h], whose columns are the rows
        transpose(plane, &mut t, h, w);
        blur_along_rows(&mut t, w, h, r, 3, &mut tmp, &mut acc);
        transpose(&t, plane, w, h);
        // along each column
        blur_along_rows(plane, h, w, r, 3, &mut tmp, &mut acc);
    }
}

/// The same on a planar float image in [0, 1] (`[3, h, w]`, the augmentation pipeline's
/// buffer): quantised to 8 bits as the PIL image is at that point of the official pipeline
/// (`round(255·v)`), blurred, and scaled back to [0, 1].
pub fn gaussian_blur_unit(buf: &mut [f32], h: usize, w: usize, sigma: f32) {
    let c = buf.len() / (h * w).max(1);
    let mut q = vec![0u8; buf.len()];
    to_u8(buf, &mut q);
    gaussian_blur_u8(&mut q, c, h, w, sigma);
    from_u8(&q, buf);
}

avx2_dispatch! {
/// `round(v · 255)` clamped to 8 bits, as `ToPILImage` after `ToTensor`.
fn to_u8(buf: &[f32], q: &mut [u8]) {
    for (o, v) in q.iter_mut().zip(buf) {
        // `clamp(round_half_away(x), 0, 255)`, clamped first (the same value: rounding maps
        // [0, 255] into itself and is monotone; NaN gives 0 both ways), so that the conversion
        // needs no saturation and the loop vectorises
        let x = v * 255.0;
        let x = if x > 0.0 { x.min(255.0) } else { 0.0 };
        // SAFETY: 0 ≤ x ≤ 255
        let t = unsafe { x.to_int_unchecked::<i32>() };
        *o = (t + i32::from(x - t as f32 >= 0.5)) as u8;
    }
}
}

avx2_dispatch! {
/// `v / 255`, as `ToTensor`.
fn from_u8(q: &[u8], buf: &mut [f32]) {
    for (o, &v) in buf.iter_mut().zip(q) {
        *o = v as f32 / 255.0;
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_rounds_half_away_and_saturates() {
        // every multiple of 1/128 of a grey level in [-2, 257], the values next to the halves,
        // and the non-finite ones, with the processor's fastest build of `to_u8`
        let mut xs: Vec<f32> = (-256..=32_896)
            .map(|k| k as f32 / (128.0 * 255.0))
            .collect();
        for k in -4..=514 {
            let half = k as f32 * 0.5 / 255.0;
            xs.extend([half, half.next_up(), half.next_down()]);
        }
        xs.extend([
            0.49999997 / 255.0,
            1e7,
            -1e7,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let mut q = vec![0u8; xs.len()];
        to_u8(&xs, &mut q);
        for (&x, &v) in xs.iter().zip(&q) {
            let want = (x * 255.0).round().clamp(0.0, 255.0) as u8;
            assert_eq!(v, want, "{x} (·255 = {})", x * 255.0);
        }
    }

    #[test]
    fn constant_images_stay_constant_and_radius_grows_with_sigma() {
        for sigma in [0.1f32, 0.7, 2.0, 9.0] {
            let mut img = vec![77u8; 3 * 5 * 7];
            gaussian_blur_u8(&mut img, 3, 5, 7, sigma);
            assert!(img.iter().all(|&v| v == 77), "σ {sigma}: {img:?}");
        }
        assert!(box_radius(0.1, 3) < box_radius(1.0, 3));
        assert!(box_radius(1.0, 3) < box_radius(2.0, 3));
        // three passes of variance σ²/3 each: a box of radius r has variance ((2r+1)² − 1)/12
        let r = box_radius(3.0, 3) as f64;
        assert!((r - 2.0).abs() < 0.6, "{r}");
    }

    #[test]
    fn a_dot_spreads_symmetrically_and_keeps_its_mass() {
        let (h, w) = (9, 9);
        let mut img = vec![0u8; h * w];
        img[4 * w + 4] = 255;
        gaussian_blur_u8(&mut img, 1, h, w, 1.0);
        for y in 0..h {
            for x in 0..w {
                // rows are blurred (and rounded to 8 bits) before columns: symmetric to ±1
                let d = img[y * w + x] as i32 - img[x * w + y] as i32;
                assert!(d.abs() <= 1, "transpose symmetry at ({y}, {x}): {d}");
                assert_eq!(img[y * w + x], img[y * w + (w - 1 - x)], "mirror symmetry");
            }
        }
        let mass: u32 = img.iter().map(|&v| v as u32).sum();
        assert!((mass as i64 - 255).abs() <= 20, "mass {mass}");
        assert!(img[4 * w + 4] < 255 && img[4 * w + 4] > img[4 * w + 5]);
    }
}
