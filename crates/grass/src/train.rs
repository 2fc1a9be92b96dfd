//! Pre-training (stage A: SimCLR warm-up; stage B: gradient-guided sampling) and the
//! DeepLabV3+ fine-tune with mIoU, on the shared run harness.

use crate::config::{GrassConfig, PretrainConfig};
use crate::data::{source, Source};
use crate::deeplab::{DeepLabConfig, DeepLabV3Plus};
use crate::model::GrassNet;
use crate::overlay::save_overlays;
use crate::raster::{read_tiles, tile_grid, MaskCoding, Raster, TileIndex, Window};
use crate::sampling::{feature_gradient, gradient_guided_crops, BoxRect};
use anyhow::{bail, ensure, Context, Result};
use contrast_core::data::augment::{IMAGENET_MEAN, IMAGENET_STD};
use contrast_core::data::{InMemoryDataset, Loader, LoaderConfig, Recipe};
use contrast_core::eval::miou::ConfusionMatrix;
use contrast_core::loss::NtXent;
use contrast_core::optim::lars::{Lars, LarsConfig, LarsMode};
use contrast_core::optim::schedule::Schedule;
use contrast_core::optim::{single_group, Optimizer, ParamGroup, Sgd};
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::config::to_toml;
use contrast_core::train::runtime::seed_step;
use contrast_core::train::{Checkpointer, Progress, Run, RunOptions};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Reduction, Tensor};

/// The data set of a config.
pub fn open_source(cfg: &GrassConfig) -> Result<Source> {
    if cfg.data.root.is_empty() {
        bail!("data.root is empty: pass --set data.root=<folder> or use `cargo xtask reproduce grass`");
    }
    source(
        &cfg.data.format,
        Path::new(&cfg.data.root),
        cfg.data.test_every,
        cfg.data.max_scenes,
        cfg.data.ignore_index,
    )
}

/// GraSS/VISSL parameter groups: BN parameters without weight decay (`regularize_bn: False`),
/// every other parameter (biases included) with it.
pub fn grass_groups(named: Named, wd: f64) -> Vec<ParamGroup> {
    let (bn, rest): (Named, Named) = named
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .partition(|(n, _)| n.contains(".bn") || n.contains("downsample.1"));
    vec![
        ParamGroup {
            name: "decay".into(),
            params: rest,
            weight_decay: wd,
            lr_scale: 1.0,
        },
        ParamGroup {
            name: "bn".into(),
            params: bn,
            weight_decay: 0.0,
            lr_scale: 1.0,
        },
    ]
}

/// The pre-training optimiser at learning rate `lr`: VISSL's LARC (`clip: False`, i.e. scale
/// mode) over SGD with momentum, BN parameters in a no-decay group.
pub fn build_optimizer(p: &PretrainConfig, net: &GrassNet, lr: f64) -> Result<Lars> {
    Lars::new(
        grass_groups(named_variables(&net.vs), p.weight_decay),
        LarsConfig {
            momentum: p.momentum,
            trust_coefficient: p.trust_coefficient,
            mode: LarsMode::Scale,
            ..LarsConfig::grass(lr)
        },
    )
}

/// The loss of one pre-training step on the views `x [2N, 3, S, S]` (`[x₁…x_N, x'₁…x'_N]`).
/// With `sampling` (the GS stage) a first forward gives `dL/dF` of the layer-4 map only, every
/// view is cropped to its gradient-guided box (`threshold_ratio`), and the loss is that of a
/// second forward on the crops; the boxes are returned too (`None` entries: views kept whole).
pub fn step_loss(
    net: &GrassNet,
    loss_fn: &NtXent,
    x: &Tensor,
    sampling: bool,
    threshold_ratio: f32,
) -> Result<(Tensor, Option<Vec<Option<BoxRect>>>)> {
    let mut boxes = None;
    let crops;
    let x = if sampling {
        // first forward (train mode, as the official step): only dL/dF of the layer-4 map is
        // needed, so the trunk runs without an autograd graph and the gradient flows through
        // the pooling and the head alone: the same F and dL/dF as through the full graph (and
        // the same BN statistics updates), without recording the trunk's backward
        let f = tch::no_grad(|| net.trunk.forward_features(x, true))?
            .layer4
            .detach()
            .set_requires_grad(true);
        let z = net.project(&f.adaptive_avg_pool2d([1, 1]).flatten(1, -1), true);
        let l0 = loss_fn.forward(&z)?;
        let g = feature_gradient(&l0, &f)?;
        let (c, b, _) = gradient_guided_crops(x, &f.detach(), &g, threshold_ratio)?;
        boxes = Some(b);
        crops = c;
        &crops
    } else {
        x
    };
    let out = net.forward(x, true)?;
    Ok((loss_fn.forward(&out.z)?, boxes))
}

/// Unlabelled training tiles as an in-memory data set (HWC bytes).
fn pretrain_dataset(cfg: &GrassConfig, src: &Source) -> Result<InMemoryDataset> {
    let pairs: Vec<(PathBuf, Option<PathBuf>)> =
        src.train.iter().map(|(i, _)| (i.clone(), None)).collect();
    let idx = TileIndex::build(&pairs, cfg.data.tile_size, cfg.data.tile_stride)?;
    ensure!(
        !idx.is_empty(),
        "no training tiles of {} px",
        cfg.data.tile_size
    );
    let tiles = read_tiles(&idx, &src.masks, cfg.data.threads)?;
    let t = cfg.data.tile_size;
    let mut px = Vec::with_capacity(tiles.len() * t * t * 3);
    for d in &tiles {
        px.extend_from_slice(&d.rgb_hwc);
    }
    InMemoryDataset::from_nhwc(px, t, t, 3, vec![-1; tiles.len()], vec![])
}

/// What a finished stage reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Option<serde_json::Value>,
    pub step: u64,
    pub dir: PathBuf,
}

/// Pre-train (or resume). `pretrain.method = "grass"`: SimCLR for `warmup_epochs`, then
/// gradient-guided sampling; `"simclr"`: SimCLR throughout (the baseline).
pub fn pretrain(cfg: &GrassConfig, opts: &RunOptions, stop_at: Option<u64>) -> Result<Outcome> {
    let p = &cfg.pretrain;
    let Some(warmup_epochs) = p.warmup_epochs else {
        bail!("pretrain.warmup_epochs is required (the paper does not give it): set it in the preset or with --set pretrain.warmup_epochs=N");
    };
    let gs = match p.method.as_str() {
        "grass" => true,
        "simclr" => false,
        other => bail!("unknown pretrain.method `{other}`: use grass or simclr"),
    };
    ensure!(
        warmup_epochs <= p.epochs,
        "pretrain.warmup_epochs {warmup_epochs} exceeds pretrain.epochs {}",
        p.epochs
    );
    let device = cfg.runtime.init_without_autocast("grass")?;
    let mut opts = opts.clone();
    opts.keep_checkpoints = cfg.log.keep_checkpoints;
    let mut run = Run::open(&opts, &to_toml(cfg)?)?;
    let t0 = std::time::Instant::now();
    let src = open_source(cfg)?;
    let ds: Arc<dyn contrast_core::data::Dataset> = Arc::new(pretrain_dataset(cfg, &src)?);
    let n_tiles = ds.len();
    let loader = Loader::new(
        Arc::clone(&ds),
        // VISSL's ImgPilGaussianBlur: PIL's radius-σ filter (official config)
        Recipe::simclr_pil_blur(cfg.data.crop_size, cfg.data.blur_p)?,
        LoaderConfig {
            batch_size: p.batch_size,
            shuffle: true,
            drop_last: true,
            seed: cfg.runtime.seed,
            prefetch: cfg.data.prefetch.max(1),
            threads: cfg.data.threads,
        },
    )?;
    let iters = loader.batches_per_epoch() as u64;
    ensure!(
        iters > 0,
        "{n_tiles} training tiles are fewer than one batch of {}",
        p.batch_size
    );
    let total = iters * p.epochs;
    let warmup_steps = iters * warmup_epochs;

    tch::manual_seed(cfg.runtime.seed as i64);
    let net = GrassNet::new(
        device,
        &cfg.model.arch,
        cfg.model.out_dim,
        cfg.model.head_relu,
    )?;
    let lr_s = Schedule::grass_vissl(total)?;
    let mut opt = build_optimizer(p, &net, lr_s.value(0) * p.lr_scale)?;
    let loss_fn = NtXent::new(p.temperature)?;
    let start = run.start_step();
    if let Some(ck) = &run.resumed {
        load_into(&net.vs, ck.group("model")?, true).context("restoring the model")?;
        opt.load_state(ck.group("optim")?)
            .context("restoring the optimiser")?;
        eprintln!("resumed {} at step {start}/{total}", run.dir.display());
    }
    let end = stop_at.map_or(total, |s| s.min(total));
    let progress = Progress::new(total, start, if gs { "grass" } else { "simclr" });
    let save = |run: &Run, step: u64, opt: &Lars| -> Result<()> {
        let model = named_variables(&net.vs);
        let optim = opt.state();
        run.checkpoints.save(
            step,
            cfg.runtime.seed,
            &[("model", &model), ("optim", &optim)],
            json!({"epoch": step / iters}),
        )?;
        Ok(())
    };
    let mut step = start;
    while step < end {
        let epoch = step / iters;
        for batch in loader.epoch_from(epoch, (step % iters) as usize) {
            if step >= end {
                break;
            }
            let batch = batch?;
            seed_step(cfg.runtime.seed, step);
            opt.set_lr(lr_s.value(step) * p.lr_scale);
            // [x_1..x_N, x'_1..x'_N] (VISSL simclr_collator)
            let x = Tensor::cat(&[&batch.views[0], &batch.views[1]], 0).to_device(device);
            let sampling = gs && step >= warmup_steps;
            let (loss, boxes) = step_loss(&net, &loss_fn, &x, sampling, p.threshold_ratio)?;
            let mut box_area = f64::NAN;
            let mut kept = 0usize;
            if let Some(boxes) = &boxes {
                let s = cfg.data.crop_size as f64;
                let areas: Vec<f64> = boxes
                    .iter()
                    .map(|b| b.map_or(1.0, |b| (b.height() * b.width()) as f64 / (s * s)))
                    .collect();
                kept = boxes.iter().filter(|b| b.is_none()).count();
                box_area = areas.iter().sum::<f64>() / areas.len() as f64;
            }
            let lv = loss.double_value(&[]);
            let done = step + 1;
            run.check_finite(done, &[("loss", lv)])?;
            opt.zero_grad();
            loss.backward();
            opt.step()?;
            step = done;
            if done % cfg.log.log_every == 0 || done == end {
                let mut f = vec![
                    ("loss", json!(lv)),
                    ("lr", json!(opt.lr())),
                    ("epoch", json!(epoch)),
                    ("stage", json!(if sampling { "gs" } else { "id" })),
                    ("elapsed_s", json!(t0.elapsed().as_secs_f64())),
                ];
                if sampling {
                    f.push(("box_area_frac", json!(box_area)));
                    f.push(("views_kept", json!(kept)));
                }
                run.metrics.log(done, &f)?;
            }
            progress.update(
                done,
                &format!(
                    "ep {epoch} {} loss {lv:.4}",
                    if sampling { "GS" } else { "ID" }
                ),
            );
            if done % cfg.log.checkpoint_every.max(1) == 0 || done == end {
                save(&run, done, &opt)?;
            }
        }
    }
    progress.finish();
    if end < total {
        return Ok(Outcome {
            report: None,
            step: end,
            dir: run.dir.clone(),
        });
    }
    let train_wall = t0.elapsed().as_secs_f64();
    // heat-map boxes of the first images of the first batch, as PNG overlays
    let overlays = if p.overlays > 0 {
        let b = loader.batch(0, 0)?;
        let x = Tensor::cat(&[&b.views[0], &b.views[1]], 0).to_device(device);
        save_overlays(
            &net,
            &loss_fn,
            &x,
            p.overlays,
            p.threshold_ratio,
            &run.figures_dir()?,
        )?
    } else {
        vec![]
    };
    let report = json!({
        "method": "grass",
        "stage": "pretrain",
        "variant": if gs { "grass" } else { "simclr (warm-up method only)" },
        "data": format!("{} ({} scenes → {} tiles of {} px)", cfg.data.format, src.train.len(), n_tiles, cfg.data.tile_size),
        "model": format!("{} head_relu={}", cfg.model.arch, cfg.model.head_relu),
        "epochs": p.epochs,
        "warmup_epochs": warmup_epochs,
        "batch_size": p.batch_size,
        "crop_size": cfg.data.crop_size,
        "steps": total,
        "gs_steps": if gs { total - warmup_steps } else { 0 },
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "train_wall_s": train_wall,
        "overlays": overlays,
    });
    run.write_report(&report)?;
    Ok(Outcome {
        report: Some(report),
        step: end,
        dir: run.dir.clone(),
    })
}

/// Images `[N, H, W, 3]` bytes → normalised float `[N, 3, H, W]`.
fn normalise(hwc: &Tensor) -> Tensor {
    let x = hwc.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0;
    let dev = x.device();
    let m = Tensor::from_slice(&IMAGENET_MEAN)
        .view([1, 3, 1, 1])
        .to_device(dev);
    let s = Tensor::from_slice(&IMAGENET_STD)
        .view([1, 3, 1, 1])
        .to_device(dev);
    (x - m) / s
}

/// The segmentation network: pretrained trunk + DeepLabV3+ decoder.
struct SegNet {
    net: GrassNet,
    dec_vs: tch::nn::VarStore,
    dec: DeepLabV3Plus,
    frozen: bool,
}

impl SegNet {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (h, w) = (x.size()[2], x.size()[3]);
        let f = if self.frozen {
            // frozen_stages=4 + norm_eval: eval-mode BN, no gradient
            tch::no_grad(|| self.net.trunk.forward_features(x, false))?
        } else {
            self.net.trunk.forward_features(x, train)?
        };
        Ok(self.dec.forward_t(&f.layer1, &f.layer4, (h, w), train))
    }
}

/// Windows covering a scene with tiles of at most `size` (a scene smaller than `size` is one
/// window).
fn eval_windows(w: usize, h: usize, size: usize) -> Result<Vec<Window>> {
    let (tw, th) = (size.min(w), size.min(h));
    let xs: Vec<usize> = tile_grid(w, th, tw, tw)?.iter().map(|t| t.x).collect();
    let ys: Vec<usize> = tile_grid(tw, h, th, th)?.iter().map(|t| t.y).collect();
    Ok(ys
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| Window::new(x, y, tw, th)))
        .collect())
}

/// Predict every test scene tile by tile into a full-size canvas (each pixel counted once)
/// and accumulate the confusion matrix.
fn evaluate(
    seg: &SegNet,
    scenes: &[(PathBuf, Option<PathBuf>)],
    masks: &MaskCoding,
    tile: usize,
    device: Device,
) -> Result<ConfusionMatrix> {
    let mut cm = ConfusionMatrix::new(masks.num_classes(), masks.ignore())?;
    let progress = Progress::new(scenes.len() as u64, 0, "evaluate");
    for (k, (img, mask)) in scenes.iter().enumerate() {
        let mask = mask
            .as_ref()
            .with_context(|| format!("test scene {} has no mask", img.display()))?;
        let r = Raster::open(img)?;
        let (w, h) = r.size();
        let canvas = Tensor::zeros([h as i64, w as i64], (Kind::Int64, Device::Cpu));
        for win in eval_windows(w, h, tile)? {
            let px = r.read_rgb(win)?;
            let x = Tensor::from_slice(&px.to_hwc())
                .view([1, win.height as i64, win.width as i64, 3])
                .to_device(device);
            let pred = tch::no_grad(|| -> Result<Tensor> {
                Ok(seg.logits(&normalise(&x), false)?.argmax(1, false))
            })?;
            canvas
                .narrow(0, win.y as i64, win.height as i64)
                .narrow(1, win.x as i64, win.width as i64)
                .copy_(&pred.get(0).to_device(Device::Cpu));
        }
        let m = Raster::open(mask)?;
        ensure!(
            m.size() == (w, h),
            "mask {} size differs from image {}",
            mask.display(),
            img.display()
        );
        let labels = masks.decode(&m, Window::new(0, 0, w, h))?;
        cm.update(
            &canvas,
            &Tensor::from_slice(&labels).view([h as i64, w as i64]),
        )?;
        progress.update(k as u64 + 1, "");
    }
    progress.finish();
    Ok(cm)
}

/// Fine-tune DeepLabV3+ on the encoder of `finetune.encoder` (a pretraining run folder) and
/// report mIoU / per-class IoU / OA on the test scenes.
pub fn finetune(cfg: &GrassConfig, opts: &RunOptions, stop_at: Option<u64>) -> Result<Outcome> {
    let f = &cfg.finetune;
    let frozen = match f.mode.as_str() {
        "frozen" => true,
        "finetune" => false,
        other => bail!("unknown finetune.mode `{other}`: use frozen or finetune"),
    };
    ensure!(
        f.label_fraction > 0.0 && f.label_fraction <= 1.0,
        "finetune.label_fraction must be in (0, 1], got {}",
        f.label_fraction
    );
    let device = cfg.runtime.init_without_autocast("grass")?;
    let mut opts = opts.clone();
    opts.keep_checkpoints = cfg.log.keep_checkpoints;
    let mut run = Run::open(&opts, &to_toml(cfg)?)?;
    let t0 = std::time::Instant::now();
    let src = open_source(cfg)?;
    let idx = TileIndex::build(&src.train, cfg.data.tile_size, cfg.data.tile_stride)?;
    let tiles = read_tiles(&idx, &src.masks, cfg.data.threads)?;
    let mut order: Vec<usize> = (0..tiles.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.runtime.seed ^ 0x1abe1));
    let n = ((tiles.len() as f64 * f.label_fraction).ceil() as usize).max(1);
    order.truncate(n);
    order.sort();
    let t = cfg.data.tile_size as i64;
    let mut px = Vec::with_capacity(n * (t * t * 3) as usize);
    let mut lab = Vec::with_capacity(n * (t * t) as usize);
    for &i in &order {
        px.extend_from_slice(&tiles[i].rgb_hwc);
        lab.extend_from_slice(
            tiles[i]
                .labels
                .as_ref()
                .context("training tile without mask")?,
        );
    }
    drop(tiles);
    let images = Tensor::from_slice(&px).view([n as i64, t, t, 3]);
    let labels = Tensor::from_slice(&lab).view([n as i64, t, t]);
    drop((px, lab));

    tch::manual_seed(cfg.runtime.seed as i64);
    let mut net = GrassNet::with_output_stride(
        device,
        &cfg.model.arch,
        cfg.model.out_dim,
        cfg.model.head_relu,
        f.output_stride,
    )?;
    let encoder_step = if f.encoder.is_empty() {
        None
    } else {
        let dir = Path::new(&f.encoder).join("checkpoints");
        let latest = Checkpointer::new(&dir, usize::MAX)
            .latest()?
            .with_context(|| format!("no checkpoint in {}", dir.display()))?;
        let ck = Checkpointer::load(&latest)?;
        load_into(&net.vs, ck.group("model")?, true)
            .with_context(|| format!("loading the encoder from {}", latest.display()))?;
        Some(ck.state.step)
    };
    if frozen {
        net.vs.freeze();
    }
    let c4 = net.trunk.num_features();
    let low = c4 / 8; // layer1 width: 64·expansion = C4 / 8 for both block kinds
    let dec_vs = tch::nn::VarStore::new(device);
    let dec = DeepLabV3Plus::new(
        dec_vs.root() / "decode_head",
        &DeepLabConfig {
            in_channels: c4,
            low_channels: low,
            channels: f.channels,
            c1_channels: f.c1_channels,
            dilations: f.dilations.clone(),
            dropout: f.dropout,
            num_classes: src.masks.num_classes() as i64,
        },
    )?;
    let mut groups = single_group(&dec_vs, f.weight_decay);
    if !frozen {
        groups.extend(single_group(&net.vs, f.weight_decay));
    }
    let mut opt = Sgd::new(groups, f.lr, f.momentum, 0.0, false)?;
    let lr_s = Schedule::Poly {
        base: f.lr,
        end: f.min_lr,
        power: f.power,
        steps: f.iters,
    };
    let start = run.start_step();
    if let Some(ck) = &run.resumed {
        load_into(&dec_vs, ck.group("decoder")?, true).context("restoring the decoder")?;
        if !frozen {
            load_into(&net.vs, ck.group("encoder")?, true).context("restoring the encoder")?;
        }
        opt.load_state(ck.group("optim")?)
            .context("restoring the optimiser")?;
        eprintln!("resumed {} at step {start}/{}", run.dir.display(), f.iters);
    }
    let seg = SegNet {
        net,
        dec_vs,
        dec,
        frozen,
    };
    let end = stop_at.map_or(f.iters, |s| s.min(f.iters));
    let progress = Progress::new(f.iters, start, "finetune");
    let save = |run: &Run, step: u64, opt: &Sgd| -> Result<()> {
        let d = named_variables(&seg.dec_vs);
        let o = opt.state();
        let e = named_variables(&seg.net.vs);
        let mut g: Vec<(&str, &Named)> = vec![("decoder", &d), ("optim", &o)];
        if !frozen {
            g.push(("encoder", &e));
        }
        run.checkpoints
            .save(step, cfg.runtime.seed, &g, json!({}))?;
        Ok(())
    };
    let bs = f.batch_size.min(n);
    for step in start..end {
        seed_step(cfg.runtime.seed, step);
        let mut rng = ChaCha8Rng::seed_from_u64(contrast_core::train::step_seed(
            cfg.runtime.seed ^ 0xf1e,
            step,
        ) as u64);
        let ids: Vec<i64> = (0..bs).map(|_| rng.gen_range(0..n as i64)).collect();
        let ids = Tensor::from_slice(&ids);
        let mut x = images.index_select(0, &ids);
        let mut y = labels.index_select(0, &ids);
        if f.crop_size > 0 && (f.crop_size as i64) < t {
            let c = f.crop_size as i64;
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for i in 0..bs as i64 {
                let (oy, ox) = (rng.gen_range(0..=t - c), rng.gen_range(0..=t - c));
                xs.push(x.get(i).narrow(0, oy, c).narrow(1, ox, c));
                ys.push(y.get(i).narrow(0, oy, c).narrow(1, ox, c));
            }
            x = Tensor::stack(&xs, 0);
            y = Tensor::stack(&ys, 0);
        }
        let mut x = normalise(&x).to_device(device);
        let mut y = y.to_device(device);
        if f.flip {
            let (hf, vf): (Vec<bool>, Vec<bool>) = (0..bs)
                .map(|_| (rng.gen_bool(0.5), rng.gen_bool(0.5)))
                .unzip();
            let flip = |x: &Tensor, y: &Tensor, i: usize, dx: i64, dy: i64| {
                let i = i as i64;
                x.get(i).copy_(&x.get(i).flip([dx]));
                y.get(i).copy_(&y.get(i).flip([dy]));
            };
            x = x.copy();
            y = y.copy();
            for i in 0..bs {
                if hf[i] {
                    flip(&x, &y, i, 2, 1);
                }
                if vf[i] {
                    flip(&x, &y, i, 1, 0);
                }
            }
        }
        opt.set_lr(lr_s.value(step));
        let logits = seg.logits(&x, true)?;
        let loss = logits.cross_entropy_loss::<Tensor>(
            &y,
            None,
            Reduction::Mean,
            cfg.data.ignore_index,
            0.0,
        );
        let lv = loss.double_value(&[]);
        let done = step + 1;
        run.check_finite(done, &[("loss", lv)])?;
        opt.zero_grad();
        loss.backward();
        opt.step()?;
        if done % cfg.log.log_every == 0 || done == end {
            run.metrics.log(
                done,
                &[
                    ("loss", json!(lv)),
                    ("lr", json!(opt.lr())),
                    ("elapsed_s", json!(t0.elapsed().as_secs_f64())),
                ],
            )?;
        }
        progress.update(done, &format!("loss {lv:.4}"));
        if done % cfg.log.checkpoint_every.max(1) == 0 || done == end {
            save(&run, done, &opt)?;
        }
    }
    progress.finish();
    if end < f.iters {
        return Ok(Outcome {
            report: None,
            step: end,
            dir: run.dir.clone(),
        });
    }
    let train_wall = t0.elapsed().as_secs_f64();
    let cm = evaluate(&seg, &src.test, &src.masks, f.eval_tile, device)?;
    let names = src.masks.names();
    let iou = cm.iou();
    let report = json!({
        "method": "grass",
        "stage": "finetune",
        "encoder": if f.encoder.is_empty() { "random init".to_string() } else { f.encoder.clone() },
        "encoder_step": encoder_step,
        "mode": f.mode,
        "metric": "mIoU (%)",
        "value": cm.miou() * 100.0,
        "miou": cm.miou() * 100.0,
        "overall_accuracy": cm.overall_accuracy() * 100.0,
        "per_class_iou": names.iter().zip(&iou).map(|(n, v)| json!({"class": n, "iou": if v.is_nan() { None } else { Some(v * 100.0) }})).collect::<Vec<_>>(),
        "data": format!("{}: {} train scenes → {} labelled tiles of {} px (label fraction {}); {} test scenes", cfg.data.format, src.train.len(), n, t, f.label_fraction, src.test.len()),
        "iters": f.iters,
        "batch_size": f.batch_size,
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "train_wall_s": train_wall,
        "wall_s": t0.elapsed().as_secs_f64(),
    });
    run.write_report(&report)?;
    Ok(Outcome {
        report: Some(report),
        step: end,
        dir: run.dir.clone(),
    })
}
