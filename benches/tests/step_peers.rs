//! Every training-step case runs its method's `Method::step` (see `steps::Through`) and
//! computes, on the exported weights and inputs, the loss its PyTorch peer
//! (`benches/py/steps.py check`) computes: what `cargo xtask bench --vs-pytorch` checks before
//! it times anything, here in the test suite so that a change to a method's step cannot leave
//! the bench timing something else.

use contrast_benches::steps::{build, export, CASES};
use std::path::Path;
use std::process::Command;
use tch::Device;

/// The bench's bound (`xtask/src/bench.rs`): a larger relative difference stops the bench.
const MAX_REL: f64 = 1e-4;

#[test]
fn every_step_case_computes_the_loss_of_its_pytorch_peer() {
    let Some(py) = contrast_core::testing::python() else {
        return;
    };
    let _rng = contrast_core::testing::global_rng_lock();
    let dir = contrast_core::testing::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/steps.py");
    for case in CASES {
        let mut c = build(case, None, true, Device::Cpu)
            .unwrap_or_else(|e| panic!("building the {case} case: {e:#}"));
        let js = export(c.as_mut(), &dir).unwrap();
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
        let ours = spec["loss_rust"].as_f64().unwrap();
        let out = Command::new(&py)
            .arg(&script)
            .arg("check")
            .arg(&js)
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{case}: the peer failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `loss <name> <value>`
        let theirs: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("loss "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{case}: no loss line in the peer's output:\n{text}"));
        let rel = (ours - theirs).abs() / theirs.abs().max(1e-12);
        println!("{case}: ours {ours:.7} PyTorch {theirs:.7} (rel. diff {rel:.1e})");
        assert!(
            rel <= MAX_REL,
            "{case}: ours {ours} vs PyTorch {theirs} (rel. {rel:.2e} > {MAX_REL:e})"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
