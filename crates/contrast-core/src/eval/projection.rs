//! 2-D views of embeddings for reports: PCA (the top two principal components) and a scatter
//! plot of a projection coloured by class (written with `contrast-report`).

use anyhow::{ensure, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// PCA to two dimensions: the rows of `x [N, D]` centred and projected on the two leading
/// eigenvectors of their covariance, `[N, 2]` (f64, on the CPU). Signs are fixed so that each
/// component's largest-magnitude loading is positive (the result does not depend on the
/// eigen-solver's sign choice). Needs `N ≥ 2`, `D ≥ 2`.
pub fn pca_2d(x: &Tensor) -> Result<Tensor> {
    let s = x.size();
    ensure!(
        s.len() == 2 && s[0] >= 2 && s[1] >= 2,
        "PCA needs [N ≥ 2, D ≥ 2] features, got {s:?}"
    );
    let x = x.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double);
    let xc = &x - x.mean_dim(0, true, Kind::Double); // [N, D]
    let cov = xc.transpose(0, 1).matmul(&xc) / (s[0] - 1) as f64; // [D, D]
    let (_vals, vecs) = cov.linalg_eigh("L"); // ascending eigenvalues
    let top = vecs.narrow(1, s[1] - 2, 2).flip([1]); // [D, 2], largest first
                                                     // sign: the largest-|loading| entry of each component is positive
    let idx = top.abs().argmax(0, true); // [1, 2]
    let sign = top.gather(0, &idx, false).sign(); // [1, 2]
    Ok(xc.matmul(&(top * sign))) // [N, 2]
}

/// A PCA scatter of `features [N, D]` coloured by `labels [N]` written to `<stem>.svg` and
/// `<stem>.png` (at most `max_points`, the first ones, to keep the figure readable).
pub fn pca_figure(
    features: &Tensor,
    labels: &Tensor,
    class_names: &[String],
    title: &str,
    stem: &Path,
    max_points: i64,
) -> Result<Vec<PathBuf>> {
    let n = features.size()[0].min(max_points);
    ensure!(
        labels.size() == [features.size()[0]],
        "labels {:?} do not match features {:?}",
        labels.size(),
        features.size()
    );
    let p = pca_2d(&features.narrow(0, 0, n))?;
    let xy: Vec<f64> = Vec::<f64>::try_from(p.reshape([-1]))?;
    let y: Vec<i64> = Vec::<i64>::try_from(
        labels
            .narrow(0, 0, n)
            .to_kind(Kind::Int64)
            .to_device(tch::Device::Cpu),
    )?;
    let chart = contrast_report::plot::Scatter {
        title: title.to_string(),
        points: (0..n as usize)
            .map(|i| (xy[2 * i], xy[2 * i + 1], y[i].max(0) as usize))
            .collect(),
        class_names: class_names.to_vec(),
    };
    contrast_report::plot::write_svg_png(&chart, stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_recovers_a_plane_in_higher_dimensions() {
        // points a·u + b·v + c with orthonormal u, v in 5-D, var(a) > var(b)
        let u = [0.6, 0.8, 0.0, 0.0, 0.0];
        let v = [0.0, 0.0, 0.0, 1.0, 0.0];
        let a: Vec<f64> = (0..40)
            .map(|i| 3.0 * (i as f64 * 0.7).sin() + 0.1 * i as f64)
            .collect();
        let b: Vec<f64> = (0..40).map(|i| (i as f64 * 1.3).cos()).collect();
        // make b exactly uncorrelated with a (else the principal axes rotate away from u, v)
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (ma0, mb0) = (mean(&a), mean(&b));
        let k = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - ma0) * (y - mb0))
            .sum::<f64>()
            / a.iter().map(|x| (x - ma0).powi(2)).sum::<f64>();
        let ab: Vec<(f64, f64)> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x, y - k * (x - ma0)))
            .collect();
        let rows: Vec<f64> = ab
            .iter()
            .flat_map(|(a, b)| {
                (0..5).map(move |k| a * u[k] + b * v[k] + [1.0, -2.0, 0.5, 3.0, 7.0][k])
            })
            .collect();
        let x = Tensor::from_slice(&rows).view([40, 5]).to_kind(Kind::Float);
        let p = pca_2d(&x).unwrap();
        assert_eq!(p.size(), [40, 2]);
        let (ma, mb) = (
            ab.iter().map(|p| p.0).sum::<f64>() / 40.0,
            ab.iter().map(|p| p.1).sum::<f64>() / 40.0,
        );
        // the first component is ±(a − mean a), the second ±(b − mean b): u's largest loading
        // (0.8) and v's (1.0) are positive, so the signs are +
        for (i, (a, b)) in ab.iter().enumerate() {
            let (p0, p1) = (
                p.double_value(&[i as i64, 0]),
                p.double_value(&[i as i64, 1]),
            );
            assert!((p0 - (a - ma)).abs() < 1e-4, "row {i}: {p0} vs {}", a - ma);
            assert!((p1 - (b - mb)).abs() < 1e-4, "row {i}: {p1} vs {}", b - mb);
        }
        assert!(pca_2d(&Tensor::zeros([1, 3], (Kind::Float, tch::Device::Cpu))).is_err());
    }
}
