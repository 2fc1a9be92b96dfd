//! Evaluation (official `code/utils/test_patch.py`): decoder-1 softmax foreground probability
//! averaged over a sliding window with a voxel stride, thresholded at 0.5, then per-case Dice,
//! Jaccard, 95HD and ASD in voxels with medpy's semantics (empty prediction → all zeros).

use crate::model::FbaNet;
use anyhow::Result;
use contrast_core::eval::segmentation::{case_metrics, dice, SegMetrics};
use contrast_core::volume::nifti::write_nifti;
use contrast_core::volume::sliding::SlidingWindow;
use contrast_core::volume::{Case, Volume};
use serde::Serialize;
use std::path::Path;
use tch::{Device, Kind};

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub id: String,
    pub shape: [usize; 3],
    #[serde(flatten)]
    pub metrics: SegMetrics,
}

/// The binary prediction of one case (`score_map[1] > 0.5`).
pub fn predict_case(
    net: &FbaNet,
    case: &Case,
    sw: &SlidingWindow,
    device: Device,
) -> Result<Volume<bool>> {
    let img = case.image.to_tensor().to_device(device);
    let probs = sw.run(&img, |x| net.predict_probs(x))?;
    let fg = probs
        .get(1)
        .gt(0.5)
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu);
    let flat = Vec::<u8>::try_from(&fg.contiguous().view(-1))?;
    Volume::new(case.image.shape, flat.into_iter().map(|v| v != 0).collect())
}

/// Dice only, averaged over cases (the reference's `var_all_case`, used for "best on test").
pub fn mean_dice(net: &FbaNet, cases: &[Case], sw: &SlidingWindow, device: Device) -> Result<f64> {
    let mut total = 0.0;
    for c in cases {
        let pred = predict_case(net, c, sw, device)?;
        let gt: Vec<bool> = c.label.data.iter().map(|&v| v == 1).collect();
        // `if np.sum(prediction)==0: dice = 0`
        total += if pred.data.iter().any(|&p| p) {
            dice(&pred.data, &gt)
        } else {
            0.0
        };
    }
    Ok(total / cases.len().max(1) as f64)
}

/// Full per-case metrics (`test_all_case`), optionally writing `<dir>/<id>_pred.nii.gz`.
pub fn evaluate(
    net: &FbaNet,
    cases: &[Case],
    sw: &SlidingWindow,
    device: Device,
    save_dir: Option<&Path>,
) -> Result<Vec<CaseResult>> {
    let mut out = vec![];
    for c in cases {
        let pred = predict_case(net, c, sw, device)?;
        let gt: Vec<bool> = c.label.data.iter().map(|&v| v == 1).collect();
        let metrics = case_metrics(&pred.data, &gt, c.label.shape, None)?;
        if let Some(dir) = save_dir {
            std::fs::create_dir_all(dir)?;
            write_nifti(
                dir.join(format!("{}_pred.nii.gz", c.id)),
                &pred.map(|p| p as u8),
                None,
            )?;
        }
        out.push(CaseResult {
            id: c.id.clone(),
            shape: c.label.shape,
            metrics,
        });
    }
    Ok(out)
}

/// Markdown table of per-case results and their mean (Dice/Jaccard in %, distances in voxels).
pub fn case_table(title: &str, results: &[CaseResult]) -> String {
    let mut s = format!(
        "{title}\n\n| case | Dice % | Jaccard % | 95HD vox | ASD vox |\n|---|---|---|---|---|\n"
    );
    for r in results {
        let m = &r.metrics;
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.id,
            m.dice * 100.0,
            m.jaccard * 100.0,
            m.hd95,
            m.asd
        ));
    }
    let all: Vec<SegMetrics> = results.iter().map(|r| r.metrics).collect();
    let m = SegMetrics::mean(&all);
    s.push_str(&format!(
        "| **mean** | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        m.dice * 100.0,
        m.jaccard * 100.0,
        m.hd95,
        m.asd
    ));
    s
}
