//! The five-row comparison: a supervised V-Net fine-tuned on the labelled LA cases from scratch,
//! from 3-D SimCLR, from Spade (global), from Spade (global + local), and from Spade (global +
//! local) with its local decoder transferred too. Pretrainings run as `Trainer<SpadePretrain>`,
//! fine-tunes as `Trainer<FbaNetMethod>` (FBA-Net's supervised V-Net).

use crate::config::SpadeConfig;
use crate::method::{SpadePretrain, ENCODER, ENCODER_DECODER};
use anyhow::{Context, Result};
use contrast_core::train::{RunOptions, Trainer};
use fba_net::FbaNetMethod;
use serde_json::{json, Value};
use std::path::PathBuf;

/// The weight files a finished pretraining left.
struct Pretrained {
    encoder: PathBuf,
    encoder_decoder: Option<PathBuf>,
}

/// Pretrain `cfg` as run `opts` (resumable); `None` when `stop_at` ended it early.
fn pretrain(
    cfg: &SpadeConfig,
    opts: &RunOptions,
    stop_at: Option<u64>,
) -> Result<Option<Pretrained>> {
    let out = Trainer::<SpadePretrain>::new(cfg.clone(), opts.clone())
        .run(stop_at)
        .with_context(|| format!("pretraining {}", cfg.pretrain.method))?;
    Ok(out.report.map(|_| Pretrained {
        encoder: out.dir.join(ENCODER),
        encoder_decoder: (cfg.pretrain.method == "spade").then(|| out.dir.join(ENCODER_DECODER)),
    }))
}

/// One row: the initialisation and the fine-tune's report.
pub struct Row {
    pub init: &'static str,
    pub report: Value,
}

/// Runs the pretrainings and fine-tunes under `opts.name`-prefixed run names; `None` when
/// `stop_at` ended a run early (continue with `--resume`).
pub fn reproduce(
    cfg: &SpadeConfig,
    opts: &RunOptions,
    stop_at: Option<u64>,
) -> Result<Option<Vec<Row>>> {
    let mut rows = Vec::new();
    // (row, pretraining method, fine-tune from the decoder-transfer file)
    let plan: [(&'static str, Option<&str>, bool); 5] = [
        ("scratch", None, false),
        ("3-D SimCLR", Some("simclr"), false),
        ("Spade global", Some("spade-global"), false),
        ("Spade global + local", Some("spade"), false),
        (
            "Spade global + local, decoder transferred",
            Some("spade"),
            true,
        ),
    ];
    let mut spade_pre: Option<Pretrained> = None;
    for (init, method, with_decoder) in plan {
        let mut ft = cfg.finetune.clone();
        ft.model.variant = "supervised".into();
        ft.runtime = cfg.runtime.clone();
        if let Some(m) = method {
            // the spade pretraining serves both of its rows
            let pre = match spade_pre.take().filter(|_| m == "spade") {
                Some(p) => p,
                None => {
                    let mut pc = cfg.clone();
                    pc.pretrain.method = m.into();
                    let mut po = opts.clone();
                    po.name = format!("{}-pretrain-{m}", opts.name);
                    match pretrain(&pc, &po, stop_at)? {
                        Some(p) => p,
                        None => return Ok(None),
                    }
                }
            };
            let file = if with_decoder {
                pre.encoder_decoder
                    .clone()
                    .context("the spade pretraining left no encoder_decoder.safetensors")?
            } else {
                pre.encoder.clone()
            };
            ft.model.init = file.display().to_string();
            if m == "spade" {
                spade_pre = Some(pre);
            }
        }
        let mut fo = opts.clone();
        fo.method = "spade".into();
        let tag = match (method, with_decoder) {
            (Some(m), true) => format!("{m}-decoder"),
            (Some(m), false) => m.to_string(),
            (None, _) => "scratch".into(),
        };
        fo.name = format!("{}-finetune-{tag}", opts.name);
        let out = Trainer::<FbaNetMethod>::new(ft, fo)
            .run(None)
            .with_context(|| format!("fine-tuning from {init}"))?;
        let Some(report) = out.report else {
            return Ok(None);
        };
        rows.push(Row {
            init,
            report: serde_json::to_value(&report)?,
        });
    }
    Ok(Some(rows))
}

/// Markdown table of the rows: Dice (last iteration and best on test), Jaccard, 95HD, ASD.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| initialisation | Dice % (last) | Dice % (best on test) | Jaccard % | 95HD vox | ASD vox |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let last = &r.report["last_iteration"]["mean"];
        let best = &r.report["best_on_test"]["mean"];
        let f = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.2}"));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.init,
            f(&last["dice"]),
            f(&best["dice"]),
            f(&last["jaccard"]),
            f(&last["hd95"]),
            f(&last["asd"]),
        ));
    }
    s
}

/// The rows as JSON (written next to the runs by the binary).
pub fn to_json(rows: &[Row]) -> Value {
    json!(rows
        .iter()
        .map(|r| json!({"init": r.init, "report": r.report}))
        .collect::<Vec<_>>())
}
