//! Semantic-segmentation metrics from a confusion matrix, with an ignore index: per-class IoU,
//! mean IoU and overall (pixel) accuracy, as MMSegmentation's `IoUMetric` computes them:
//!
//! ```text
//! IoU_c = TP_c / (TP_c + FP_c + FN_c)      NaN when class c is in neither prediction nor truth
//! mIoU  = nanmean_c IoU_c                   (absent classes do not count)
//! OA    = Σ_c TP_c / #(pixels with target ≠ ignore)
//! ```
//! Pixels whose target is the ignore index are dropped before counting.

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

/// Accumulated `[classes × classes]` counts: `counts[t · C + p]` = pixels of true class t
/// predicted as p.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    classes: usize,
    ignore: i64,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize, ignore: i64) -> Result<Self> {
        ensure!(classes > 0, "a confusion matrix needs at least one class");
        Ok(Self {
            classes,
            ignore,
            counts: vec![0; classes * classes],
        })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `counts[t][p]`.
    pub fn count(&self, truth: usize, pred: usize) -> u64 {
        self.counts[truth * self.classes + pred]
    }

    /// Add predictions and targets of the same shape (any shape; integer class ids). Targets
    /// equal to the ignore index are skipped; any other target or prediction outside
    /// `0..classes` is an error.
    pub fn update(&mut self, pred: &Tensor, target: &Tensor) -> Result<()> {
        ensure!(
            pred.size() == target.size(),
            "prediction shape {:?} differs from target shape {:?}",
            pred.size(),
            target.size()
        );
        let c = self.classes as i64;
        let p = pred
            .to_device(Device::Cpu)
            .to_kind(Kind::Int64)
            .reshape([-1]);
        let t = target
            .to_device(Device::Cpu)
            .to_kind(Kind::Int64)
            .reshape([-1]);
        let keep = t.ne(self.ignore);
        let (p, t) = (p.masked_select(&keep), t.masked_select(&keep));
        if t.numel() == 0 {
            return Ok(());
        }
        let bad = |x: &Tensor| x.lt(0).logical_or(&x.ge(c)).any().int64_value(&[]) != 0;
        ensure!(
            !bad(&t),
            "target holds a class id outside 0..{c} (ignore index {})",
            self.ignore
        );
        ensure!(!bad(&p), "prediction holds a class id outside 0..{c}");
        let bins = (t * c + p).bincount::<Tensor>(None, c * c);
        let add = Vec::<i64>::try_from(bins)?;
        for (a, b) in self.counts.iter_mut().zip(add) {
            *a += b as u64;
        }
        Ok(())
    }

    /// Per-class IoU (NaN for a class absent from both prediction and truth).
    pub fn iou(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|k| {
                let tp = self.count(k, k) as f64;
                let row: u64 = (0..self.classes).map(|p| self.count(k, p)).sum();
                let col: u64 = (0..self.classes).map(|t| self.count(t, k)).sum();
                let union = (row + col) as f64 - tp;
                if union == 0.0 {
                    f64::NAN
                } else {
                    tp / union
                }
            })
            .collect()
    }

    /// Mean of the non-NaN per-class IoUs (NaN when no class occurred).
    pub fn miou(&self) -> f64 {
        let v: Vec<f64> = self.iou().into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    /// Correct pixels / counted pixels (NaN before any pixel).
    pub fn overall_accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().sum();
        let correct: u64 = (0..self.classes).map(|k| self.count(k, k)).sum();
        if total == 0 {
            f64::NAN
        } else {
            correct as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[i64]) -> Tensor {
        Tensor::from_slice(v)
    }

    /// 3 classes, ignore 255. Kept pixels (t→p): 0→0, 0→1, 1→1, 1→1, 2→1, 0→0; the 255 target
    /// is dropped even though its prediction is 2.
    /// counts: row0 = [2,1,0], row1 = [0,2,0], row2 = [0,1,0].
    /// IoU0 = 2/(3+2−2) = 2/3; IoU1 = 2/(2+4−2) = 1/2; IoU2 = 0/(1+0−0) = 0.
    /// mIoU = (2/3 + 1/2 + 0)/3 = 7/18; OA = 4/6.
    #[test]
    fn hand_derived_counts() {
        let mut cm = ConfusionMatrix::new(3, 255).unwrap();
        cm.update(&t(&[0, 1, 1, 1, 1, 0, 2]), &t(&[0, 0, 1, 1, 2, 0, 255]))
            .unwrap();
        assert_eq!(cm.count(0, 0), 2);
        assert_eq!(cm.count(2, 1), 1);
        let iou = cm.iou();
        assert!((iou[0] - 2.0 / 3.0).abs() < 1e-12);
        assert!((iou[1] - 0.5).abs() < 1e-12);
        assert_eq!(iou[2], 0.0);
        assert!((cm.miou() - 7.0 / 18.0).abs() < 1e-12);
        assert!((cm.overall_accuracy() - 4.0 / 6.0).abs() < 1e-12);
        // accumulating a second batch: one more 2→2 pixel makes IoU2 = 1/2
        cm.update(&t(&[2]), &t(&[2])).unwrap();
        assert!((cm.iou()[2] - 0.5).abs() < 1e-12);
    }

    /// A class in neither prediction nor truth is NaN and left out of the mean.
    #[test]
    fn absent_class_is_nan_and_skipped() {
        // a prediction outside the classes is an error (where the target is not ignored)
        let mut cm = ConfusionMatrix::new(4, -1).unwrap();
        cm.update(&t(&[0, -1]), &t(&[0, 1])).unwrap_err();
        let mut cm2 = ConfusionMatrix::new(4, -1).unwrap();
        cm2.update(&t(&[0, 1, 1, 3]), &t(&[0, 1, 0, -1])).unwrap();
        let iou = cm2.iou();
        // kept: 0→0, 1→1, 0→1. IoU0 = 1/2, IoU1 = 1/2, classes 2 and 3 absent (the 3 was ignored)
        assert!(iou[2].is_nan() && iou[3].is_nan());
        assert!((cm2.miou() - 0.5).abs() < 1e-12);
        let e = ConfusionMatrix::new(2, 255)
            .unwrap()
            .update(&t(&[0]), &t(&[5]))
            .unwrap_err();
        assert!(format!("{e}").contains("outside 0..2"));
    }
}
