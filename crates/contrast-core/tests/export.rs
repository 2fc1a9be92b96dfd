//! `nn::export`: an exported ViT loads strictly into timm's `VisionTransformer` and an exported
//! ResNet (CIFAR stem) into torchvision's `ResNet`, through the Python snippet the export ships,
//! and both embed an input as ours does (within 1e-5).

use contrast_core::nn::export::{backbone_state, resnet_meta, vit_meta, write_export, Export};
use contrast_core::nn::resnet::{resnet18, ResNet, Stem};
use contrast_core::nn::vit::{vit_tiny, VisionTransformer};
use contrast_core::tensors::named_variables;
use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

/// Non-trivial BN statistics and affine values, so eval mode is exercised.
fn perturb_norms(vs: &VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in named_variables(vs) {
            let r = Tensor::rand(t.size().as_slice(), (Kind::Float, Device::Cpu));
            if name.ends_with("running_mean") || name.ends_with("bias") {
                t.copy_(&((r - 0.5) * 0.2));
            } else if name.ends_with("running_var") || (name.ends_with("weight") && t.dim() == 1) {
                t.copy_(&(r + 0.5));
            }
        }
    });
}

#[test]
fn exported_backbones_load_strictly_into_timm_and_torchvision() {
    let _rng = global_rng_lock();
    tch::manual_seed(3);
    let dir = tempfile::tempdir().unwrap();

    // ViT-T/4 at 32 px under a method's prefix, as PatchMix's encoder holds it
    let vit_vs = VarStore::new(Device::Cpu);
    let vcfg = vit_tiny(32, 4);
    let vit = VisionTransformer::new(vit_vs.root() / "encoder", &vcfg).unwrap();
    perturb_norms(&vit_vs);
    let e = Export {
        tensors: backbone_state(&named_variables(&vit_vs), "encoder"),
        meta: vit_meta(&vcfg),
    };
    assert!(e.tensors.iter().any(|(n, _)| n == "cls_token"));
    write_export(&e, &dir.path().join("vit"), "backbone").unwrap();

    // ResNet-18, CIFAR stem, under `backbone.` as MNCLGLF's encoder holds it
    let rn_vs = VarStore::new(Device::Cpu);
    let mut rcfg = resnet18();
    rcfg.stem = Stem::Cifar;
    let rn = ResNet::new(rn_vs.root() / "backbone", &rcfg).unwrap();
    perturb_norms(&rn_vs);
    let e = Export {
        tensors: backbone_state(&named_variables(&rn_vs), "backbone"),
        meta: resnet_meta(&rcfg),
    };
    assert!(e
        .tensors
        .iter()
        .any(|(n, t)| n == "bn1.num_batches_tracked" && t.kind() == Kind::Int64));
    write_export(&e, &dir.path().join("resnet"), "backbone").unwrap();

    let xv = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let xr = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let ours_v = tch::no_grad(|| vit.forward_t(&xv, false));
    let ours_r = tch::no_grad(|| rn.forward_t(&xr, false));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/export_load.py");
    let (dv, dr) = (
        dir.path().join("vit").display().to_string(),
        dir.path().join("resnet").display().to_string(),
    );
    let Some(out) =
        run_reference(&script, &[("x_vit", &xv), ("x_resnet", &xr)], &[&dv, &dr]).unwrap()
    else {
        return;
    };
    assert_eq!(ours_v.size(), [2, 192]);
    assert_eq!(ours_r.size(), [2, 512]);
    assert_close(
        &ours_v,
        get(&out, "feat_vit"),
        1e-5,
        1e-5,
        "timm ViT features",
    );
    assert_close(
        &ours_r,
        get(&out, "feat_resnet"),
        1e-5,
        1e-5,
        "torchvision ResNet features",
    );
}
