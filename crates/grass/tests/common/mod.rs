//! The synthetic Dubai-format data set and the small configuration the Trainer tests share.

use contrast_core::train::LogConfig;
use grass::config::GrassConfig;
use image::{Rgb, RgbImage};
use std::path::Path;

/// Three 128×128 scenes (`Tile 1/images/*.jpg`, `Tile 1/masks/*.png`): smooth colour fields
/// and masks of the Dubai colours in bands; the third is the test scene.
pub fn dubai_like(root: &Path) {
    let colours = [
        [0x3C, 0x10, 0x98],
        [0x84, 0x29, 0xF6],
        [0x6E, 0xC1, 0xE4],
        [0xFE, 0xDD, 0x3A],
        [0xE2, 0xA9, 0x29],
        [0x9B, 0x9B, 0x9B],
    ];
    let tile = root.join("Tile 1");
    std::fs::create_dir_all(tile.join("images")).unwrap();
    std::fs::create_dir_all(tile.join("masks")).unwrap();
    for k in 0..3u32 {
        let img = RgbImage::from_fn(128, 128, |x, y| {
            Rgb([
                ((x * (k + 1) + 3 * y) % 256) as u8,
                ((y * (k + 2) + x * x / 64) % 256) as u8,
                ((x * y / 32 + 40 * k) % 256) as u8,
            ])
        });
        img.save(tile.join(format!("images/scene_{k}.jpg")))
            .unwrap();
        let mask = RgbImage::from_fn(128, 128, |x, y| {
            Rgb(colours[((x / 24 + y / 40 + k) % 6) as usize])
        });
        mask.save(tile.join(format!("masks/scene_{k}.png")))
            .unwrap();
    }
}

pub fn config(data: &Path) -> GrassConfig {
    let mut c = GrassConfig::default();
    c.runtime.device = "cpu".into();
    c.runtime.threads = 2;
    c.runtime.seed = 5;
    c.data.format = "dubai".into();
    c.data.root = data.display().to_string();
    c.data.test_every = 3;
    c.data.tile_size = 64;
    c.data.tile_stride = 64;
    c.data.crop_size = 64;
    c.data.threads = 1;
    c.data.prefetch = 1;
    c.model.arch = "resnet18".into();
    c.model.out_dim = 16;
    // 2 train scenes → 8 tiles → 2 steps per epoch; epoch 2 is gradient-guided
    c.pretrain.epochs = 2;
    c.pretrain.warmup_epochs = Some(1);
    c.pretrain.batch_size = 4;
    c.pretrain.overlays = 2;
    c.finetune.iters = 4;
    c.finetune.batch_size = 4;
    c.finetune.crop_size = 32;
    c.finetune.channels = 16;
    c.finetune.c1_channels = 8;
    c.finetune.dilations = vec![1, 2];
    c.finetune.output_stride = 32;
    c.finetune.eval_tile = 64;
    c.log = LogConfig {
        log_every: 1,
        checkpoint_every: 3,
        checkpoint_every_epochs: 0,
        keep_checkpoints: 3,
    };
    c
}
