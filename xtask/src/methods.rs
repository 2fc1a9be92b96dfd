//! The registry of methods that `reproduce`, `doctor` and the data planner know: adding a
//! method crate is one entry here.

/// A method that `reproduce` knows: name, package, binary, default preset.
pub struct Method {
    pub name: &'static str,
    pub package: &'static str,
    pub binary: &'static str,
    pub default_preset: &'static str,
    pub what: &'static str,
    /// The run-name suffixes of the method's run and of its baseline run in one `reproduce`
    /// (for `--seeds`); `None` where `reproduce` has no single baseline.
    pub pair: Option<(&'static str, &'static str)>,
}

pub const METHODS: &[Method] = &[
    Method {
        name: "patchmix",
        package: "patchmix",
        binary: "patchmix",
        default_preset: "smoke",
        what: "PatchMix vs its no-mix baseline (ViT, CIFAR-10)",
        pair: Some(("", "-nomix")),
    },
    Method {
        name: "multinet",
        package: "multinet",
        binary: "multinet",
        default_preset: "smoke",
        what: "MNCLGLF vs a plain-SimCLR baseline (ResNet-18, CIFAR-10)",
        pair: Some(("", "-simclr")),
    },
    Method {
        name: "fba-net",
        package: "fba-net",
        binary: "fba-net",
        default_preset: "smoke",
        what: "FBA-Net+ vs a supervised V-Net (semi-supervised 3D LA segmentation)",
        pair: Some(("", "-supervised")),
    },
    Method {
        name: "spade",
        package: "spade",
        binary: "spade",
        default_preset: "smoke",
        what: "V-Net fine-tune from scratch / 3-D SimCLR / Spade global / Spade global+local (LA)",
        pair: Some(("-finetune-spade", "-finetune-scratch")),
    },
    Method {
        name: "claires",
        package: "claires",
        binary: "claires",
        default_preset: "smoke",
        what: "CLAIRES: CLIP text-to-image retrieval on VQA-RAD records (paired + label-match)",
        pair: None,
    },
    Method {
        name: "grass",
        package: "grass",
        binary: "grass",
        default_preset: "smoke",
        what: "GraSS vs its SimCLR warm-up baseline (ResNet + DeepLabV3+, mIoU; Dubai tiles)",
        pair: Some(("-grass-ft", "-simclr-ft")),
    },
    Method {
        name: "spps",
        package: "spps",
        binary: "spps",
        default_preset: "smoke",
        what: "SimCLR vs SimCLR+SPPS semantic positive pairs (ResNet, CIFAR-10)",
        pair: Some(("-spps", "-baseline")),
    },
    Method {
        name: "toy",
        package: "contrast-core",
        binary: "contrast-toy",
        default_preset: "toy",
        what: "core example: InfoNCE on synthetic blobs (harness smoke test)",
        pair: None,
    },
];
