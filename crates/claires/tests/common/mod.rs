//! Shared fixtures: a tiny record set of synthetic, solid-coloured PNG images (our own, written
//! by the test) with a CSV manifest, and a tiny config.

#![allow(dead_code)]

use claires::config::ClairesConfig;
use std::path::Path;

/// Solid colours of the synthetic images (distinct, saturated: findable in a screenshot).
pub const COLOURS: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
];

/// Write 8 images + `manifest.csv` into `dir`; returns the manifest path.
pub fn write_fixture(dir: &Path) -> std::path::PathBuf {
    write_records(dir, COLOURS.len())
}

/// Write `n` images (the colours in turn, the dark square moving with the index) +
/// `manifest.csv` into `dir`; returns the manifest path.
pub fn write_records(dir: &Path, n: usize) -> std::path::PathBuf {
    let organs = ["chest", "head", "abdomen", "chest"];
    let mods = ["X-ray", "MRI", "CT", ""];
    let mut csv = String::from("image,organ,modality,findings\n");
    for (i, c) in COLOURS.iter().cycle().take(n).enumerate() {
        let mut img = image::RgbImage::from_pixel(40, 40, image::Rgb(*c));
        // a small dark square whose position depends on i: images differ in structure too
        for y in 0..8 {
            for x in 0..8 {
                img.put_pixel((i as u32 * 4 + x) % 40, 10 + y, image::Rgb([10, 10, 10]));
            }
        }
        let name = format!("img{i}.png");
        img.save(dir.join(&name)).unwrap();
        let findings = if i % 3 == 0 { "mass" } else { "" };
        csv.push_str(&format!(
            "{name},{},{},{findings}\n",
            organs[i % 4],
            mods[i % 4]
        ));
    }
    let m = dir.join("manifest.csv");
    std::fs::write(&m, csv).unwrap();
    m
}

/// A tiny config over that manifest (ResNet-18 at 32 px, frozen MiniLM, 32-d heads).
pub fn tiny_config(manifest: &Path) -> ClairesConfig {
    let mut c = ClairesConfig::default();
    c.runtime.threads = 1;
    c.runtime.seed = 3;
    c.data.manifest = manifest.display().to_string();
    c.data.image_size = 32;
    c.data.test_fraction = 0.25;
    c.model.image_arch = "resnet18".into();
    c.model.freeze_text = true;
    c.model.embed_dim = 32;
    c.loss.kind = "clip".into();
    c.optim.epochs = 2;
    c.optim.batch_size = 3;
    c.optim.lr_text = 0.0;
    c.eval.pools = vec![0, 2];
    c.log.log_every = 1;
    c
}
