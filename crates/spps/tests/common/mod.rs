//! The tiny SPPS config the end-to-end tests share (ResNet [1,1,1,1] on a synthetic CIFAR-10
//! of 16 px, batch 8, 2 epochs).

use spps::config::SppsConfig;
use std::path::Path;

/// SimCLR by default; `root` holds the synthetic CIFAR-10 (`write_synthetic_cifar10`).
pub fn tiny(root: &Path) -> SppsConfig {
    let mut c = SppsConfig::default();
    c.data.format = "cifar10".into();
    c.data.root = root.display().to_string();
    c.data.threads = 1;
    c.data.image_size = 16;
    c.data.eval_size = 16;
    c.model.layers = vec![1, 1, 1, 1];
    c.simclr.hidden = 32;
    c.simclr.out_dim = 16;
    c.mocov2.hidden_dim = 32;
    c.mocov2.out_dim = 16;
    c.mocov2.queue_size = 16;
    c.mocov2.momentum = 0.99;
    c.optim.epochs = 2;
    c.optim.batch_size = 8;
    c.optim.lr = 0.05;
    c.eval.knn_k = vec![3];
    c.eval.linear_epochs = 2;
    c.eval.linear_batch_size = 8;
    c.log.log_every = 1;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 3;
    c.sampler.top_k = 2;
    c.sampler.block_size = 16;
    c
}
