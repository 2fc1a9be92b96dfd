//! The BYOL / PatchMix views of our pipeline (`Recipe::byol`) against the OFFICIAL ones
//! (`module/augmentation.py` TwoCropsTransform: torchvision v1 on PIL images, PIL's blur) on the
//! same CIFAR-10 images, as distributions: per view, the mean over images and draws of the
//! pixel mean, pixel std, mean |Laplacian| (high-frequency energy: what blur and interpolation
//! change) and the grayscale rate. The two sides draw their randomness independently, so each
//! statistic is compared against its standard error.
//!
//! Needs the official checkout and CIFAR-10 as an image folder (`datasets/cifar10-jpeg`, made by
//! `cargo xtask reproduce patchmix --preset smoke`); skips with one line otherwise.

use contrast_core::data::augment::{sample_rng, Recipe};
use contrast_core::data::dataset::ImageRef;
use contrast_core::data::folder::decode_rgb;
use contrast_core::testing::{get, run_reference};
use std::borrow::Cow;
use std::path::PathBuf;
use tch::Tensor;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

fn stats(v: &[f32], s: usize) -> [f64; 4] {
    let x: Vec<f32> = (0..3 * s * s)
        .map(|i| v[i] * STD[i / (s * s)] + MEAN[i / (s * s)])
        .collect();
    let n = x.len() as f64;
    let mean = x.iter().map(|&a| a as f64).sum::<f64>() / n;
    let var = x.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let mut lap = 0.0;
    for c in 0..3 {
        let p = |y: usize, xx: usize| x[c * s * s + y * s + xx] as f64;
        for y in 1..s - 1 {
            for xx in 1..s - 1 {
                lap += (4.0 * p(y, xx) - p(y - 1, xx) - p(y + 1, xx) - p(y, xx - 1) - p(y, xx + 1))
                    .abs();
            }
        }
    }
    lap /= (3 * (s - 2) * (s - 2)) as f64;
    let gray = (0..s * s).all(|i| {
        (x[i] - x[s * s + i]).abs() < 1e-3 && (x[s * s + i] - x[2 * s * s + i]).abs() < 1e-3
    });
    [mean, var.sqrt(), lap, gray as u8 as f64]
}

#[test]
fn our_views_are_distributed_like_the_official_views() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let official = root.join(".official/patchmix");
    let data = std::env::var_os("CONTRAST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("datasets"))
        .join("cifar10-jpeg/test");
    if !official.join(".contrast-commit").exists() || !data.is_dir() {
        println!(
            "official_views: skipped (needs {} and {})",
            official.display(),
            data.display()
        );
        return;
    }
    let (per_class, draws) = (40usize, 4usize);
    let mut paths = Vec::new();
    let mut classes: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    classes.sort();
    for c in classes {
        let mut f: Vec<_> = std::fs::read_dir(&c)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        paths.extend(f.into_iter().take(per_class));
    }
    let recipe = Recipe::byol(32, 0.1).unwrap();
    let mut ours = [Vec::new(), Vec::new()];
    for (i, p) in paths.iter().enumerate() {
        let (px, h, w) = decode_rgb(p).unwrap();
        let img = ImageRef {
            pixels: Cow::Owned(px),
            height: h,
            width: w,
            channels: 3,
        };
        for d in 0..draws {
            let mut rng = sample_rng(1, d as u64, i as u64);
            let (mut a, mut b) = (vec![0f32; 3 * 32 * 32], vec![0f32; 3 * 32 * 32]);
            recipe.apply(&img, &mut rng, &mut [&mut a, &mut b]).unwrap();
            ours[0].push(stats(&a, 32));
            ours[1].push(stats(&b, 32));
        }
    }
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        list.path(),
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_views.py");
    let dummy = Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
    let args = [
        official.display().to_string(),
        list.path().display().to_string(),
        draws.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(out) = run_reference(script, &[("unused", &dummy)], &args).unwrap() else {
        println!("official_views: skipped (no Python with torch)");
        return;
    };
    let off = get(&out, "stats"); // [2, n, 4]
    let names = [
        "pixel mean",
        "pixel std",
        "mean |Laplacian|",
        "grayscale rate",
    ];
    let mut failures = Vec::new();
    for (v, ours_v) in ours.iter().enumerate() {
        for (k, name) in names.iter().enumerate() {
            let o: Vec<f64> = Vec::<f32>::try_from(off.get(v as i64).select(1, k as i64))
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            let u: Vec<f64> = ours_v.iter().map(|s| s[k]).collect();
            let m = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
            let se = |x: &[f64]| {
                let mu = m(x);
                (x.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0)).sqrt()
                    / (x.len() as f64).sqrt()
            };
            let (mu, mo) = (m(&u), m(&o));
            let z = (mu - mo) / (se(&u).powi(2) + se(&o).powi(2)).sqrt().max(1e-12);
            println!(
                "official_views: view {} {name}: ours {mu:.4} official {mo:.4} (z {z:+.1})",
                v + 1
            );
            if z.abs() > 4.0 {
                failures.push(format!(
                    "view {} {name}: ours {mu:.4} vs official {mo:.4} (z {z:+.1})",
                    v + 1
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "views differ from the official ones: {failures:?}"
    );
}
