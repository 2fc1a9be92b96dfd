//! Every preset parses (unknown keys are errors) and carries the published settings.

use contrast_core::train::{load_config, ConfigSource};
use spps::config::SppsConfig;

fn preset(name: &str) -> SppsConfig {
    let p = format!("{}/configs/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    load_config(Some(ConfigSource::file(&p).unwrap()), &[]).unwrap()
}

#[test]
fn presets_parse() {
    let im = preset("paper-imagenet");
    assert_eq!((im.optim.batch_size, im.optim.epochs), (1024, 800));
    assert_eq!(im.paper.linear_delta, Some(4.18));
    for p in ["paper-cifar10", "paper-stl10", "smoke"] {
        let c = preset(p);
        assert_eq!((c.simclr.out_dim, c.sampler.top_k), (128, 1), "{p}");
    }
    let s = preset("smoke");
    assert_eq!(s.runtime.threads, 1);
    assert_eq!(s.mocov2.temperature, 0.2);
}
