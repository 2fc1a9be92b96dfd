//! With no semantic pairs the SPPS training step is plain SimCLR: for the same seed, the SPPS
//! model (pair file with zero pairs, partner picker, multi-positive loss) gives the same loss
//! and the same gradients as core `SimClr::loss` (NT-Xent).

use contrast_core::data::dataset::InMemoryDataset;
use contrast_core::data::Recipe;
use contrast_core::frameworks::{SimClr, SimClrConfig};
use contrast_core::testing::global_rng_lock;
use spps::config::{SamplerConfig, SppsConfig};
use spps::model::{backbone_config, Model};
use spps::sampler::{Pair, PairSet};
use spps::train::PartnerPicker;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn cfg() -> SppsConfig {
    let mut c = SppsConfig::default();
    c.model.layers = vec![1, 1, 1, 1];
    c.simclr.hidden = 32;
    c.simclr.out_dim = 16;
    c.spps.enabled = true;
    c
}

fn pairset(n: usize, pairs: Vec<Pair>) -> PairSet {
    PairSet {
        n,
        dim: 4,
        source: "test".into(),
        settings: SamplerConfig::default(),
        pairs,
        precision: None,
    }
}

#[test]
fn no_pairs_is_plain_simclr_loss_and_gradients() {
    let _g = global_rng_lock();
    let c = cfg();
    let o = (Kind::Float, Device::Cpu);
    tch::manual_seed(21);
    let x1 = Tensor::randn([6, 3, 16, 16], o);
    let x2 = Tensor::randn([6, 3, 16, 16], o);

    // the SPPS path: an empty pair set → the picker chooses nothing → loss without partners
    let pixels: Vec<u8> = (0..6 * 16 * 16 * 3).map(|i| (i % 251) as u8).collect();
    let ds = InMemoryDataset::from_nhwc(pixels, 16, 16, 3, vec![0; 6], vec![]).unwrap();
    let picker =
        PartnerPicker::new(&pairset(6, vec![]), 1.0, 0, Recipe::mocov2(16, 1).unwrap()).unwrap();
    let picked = picker.pick(&ds, &[0, 1, 2, 3, 4, 5], 0).unwrap();
    assert!(picked.chosen.is_empty() && picked.partners.is_none());
    tch::manual_seed(5);
    let mut model = Model::new(&c, Device::Cpu).unwrap();
    let l_spps = model.loss(&x1, &x2, picked.partners.as_ref()).unwrap();
    l_spps.backward();

    // plain SimCLR from core, same seed and architecture
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let net = SimClr::with_backbone(
        vs.root(),
        &backbone_config(&c).unwrap(),
        &SimClrConfig {
            hidden_dim: 32,
            out_dim: 16,
            ..SimClrConfig::default()
        },
    )
    .unwrap();
    let l_plain = net.loss(&x1, &x2, true).unwrap();
    l_plain.backward();

    let (a, b) = (l_spps.double_value(&[]), l_plain.double_value(&[]));
    assert!((a - b).abs() < 1e-6, "SPPS without pairs {a} vs SimCLR {b}");
    let vars_a = model.trained_vs().variables();
    let vars_b = vs.variables();
    assert_eq!(vars_a.len(), vars_b.len());
    // a bias right before a BatchNorm has a true gradient of zero: what is computed there is
    // float rounding (≈ 1e-7), so the absolute part of the tolerance follows the network's
    // largest gradient, not that parameter's own
    let largest = vars_b
        .values()
        .filter(|v| v.requires_grad())
        .map(|v| v.grad().abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    let mut checked = 0;
    for (name, va) in &vars_a {
        let vb = &vars_b[name];
        assert!(va.allclose(vb, 0.0, 0.0, false), "{name}: different init");
        if va.requires_grad() {
            let (ga, gb) = (va.grad(), vb.grad());
            let diff = (&ga - &gb).abs().max().double_value(&[]);
            let scale = gb.abs().max().double_value(&[]).max(1e-12);
            assert!(
                diff <= 1e-5 * scale + 1e-6 * largest,
                "{name}: grad differs by {diff} (scale {scale}, largest gradient {largest})"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} gradients compared");
}

#[test]
fn picker_uses_share_and_partner_rows() {
    let _g = global_rng_lock();
    let pixels: Vec<u8> = (0..4 * 8 * 8 * 3).map(|i| (i % 200) as u8).collect();
    let ds = InMemoryDataset::from_nhwc(pixels, 8, 8, 3, vec![0, 0, 1, 1], vec![]).unwrap();
    let pairs = vec![
        Pair {
            i: 0,
            j: 1,
            sim: 0.9,
        },
        Pair {
            i: 2,
            j: 3,
            sim: 0.8,
        },
    ];
    let p = PartnerPicker::new(
        &pairset(4, pairs.clone()),
        1.0,
        3,
        Recipe::mocov2(8, 1).unwrap(),
    )
    .unwrap();
    // batch rows: indices [2, 1, 0] → anchors with partners are rows 0 (2→3) and 2 (0→1)
    let got = p.pick(&ds, &[2, 1, 0], 7).unwrap();
    assert_eq!(got.chosen, vec![(0, 3, 0.8), (2, 1, 0.9)]);
    let parts = got.partners.unwrap();
    assert_eq!(parts.x.size(), vec![2, 3, 8, 8]);
    assert_eq!(Vec::<i64>::try_from(&parts.anchor).unwrap(), vec![0, 2]);
    // share 0 → nothing
    let none =
        PartnerPicker::new(&pairset(4, pairs), 0.0, 3, Recipe::mocov2(8, 1).unwrap()).unwrap();
    assert!(none.pick(&ds, &[2, 1, 0], 7).unwrap().chosen.is_empty());
}
