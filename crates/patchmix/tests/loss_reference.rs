//! The full PatchMix objective against our PyTorch reference (tests/py/patchmix_loss.py) on the
//! same random inputs: every term, the gradients of the queries, the targets; and no gradient
//! reaches the keys.

use contrast_core::loss::InfoNce;
use contrast_core::testing::{assert_close, get, run_reference};
use patchmix::loss::{patchmix_loss, LossInputs};
use patchmix::mix::PatchMixer;
use tch::{Device, Kind, Tensor};

#[test]
fn objective_matches_pytorch_and_keys_get_no_gradient() {
    let (b, d, n_local) = (10i64, 24i64, 3i64);
    let opts = (Kind::Float, Device::Cpu);
    for m in [2i64, 3] {
        let g = tch::Tensor::randn([5 + 2 * n_local, b, d], opts);
        let leaf = |i: i64| g.get(i).copy().set_requires_grad(true);
        let (q1, k1, k2, mq2, mk1) = (leaf(0), leaf(1), leaf(2), leaf(3), leaf(4));
        let lq: Vec<Tensor> = (0..n_local).map(|c| leaf(5 + c)).collect();
        let lmq: Vec<Tensor> = (0..n_local).map(|c| leaf(5 + n_local + c)).collect();
        let mixer = PatchMixer::new(m, 1.0, 2, 0.0).unwrap();
        let (mix_t, mixmix_t) = mixer.targets(b, b, 0, Device::Cpu);
        // the official source target: identity smoothed by no_mixer's default 0.1
        let source = patchmix::mix::source_targets(b, b, 0, 0.1, Device::Cpu);
        let terms = patchmix_loss(
            &InfoNce::new(0.2).unwrap(),
            &LossInputs {
                q1: &q1,
                k1: &k1,
                k2: &k2,
                mq2: &mq2,
                mk1: &mk1,
                mix_target: &mix_t,
                mixmix_target: &mixmix_t,
                source: &source,
                local_q: &lq,
                local_mq: &lmq,
            },
        )
        .unwrap();
        terms.total.backward();
        for k in [&k1, &k2, &mk1] {
            assert!(!k.grad().defined(), "a key received a gradient");
        }
        let inputs = [
            ("q1", &q1),
            ("k1", &k1),
            ("k2", &k2),
            ("mq2", &mq2),
            ("mk1", &mk1),
            ("lq", &Tensor::stack(&lq, 0)),
            ("lmq", &Tensor::stack(&lmq, 0)),
        ];
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/patchmix_loss.py");
        let Some(out) = run_reference(script, &inputs, &["0.2", &m.to_string(), "0.1"]).unwrap()
        else {
            return;
        };
        assert_close(&mix_t, get(&out, "mix_target"), 0.0, 1e-6, "T_mix");
        assert_close(&mixmix_t, get(&out, "mixmix_target"), 0.0, 1e-6, "T_mixmix");
        assert_close(&source, get(&out, "src_target"), 0.0, 1e-7, "I_s");
        for (name, t) in [
            ("orig", &terms.orig),
            ("mix_orig", &terms.mix_orig),
            ("mix_mix", &terms.mix_mix),
            ("multi", &terms.multi),
            ("multi_mix", &terms.multi_mix),
            ("total", &terms.total),
        ] {
            assert_close(t, get(&out, name), 1e-5, 1e-5, &format!("m={m} {name}"));
        }
        assert_close(&q1.grad(), get(&out, "grad_q1"), 1e-6, 1e-4, "dL/dq1");
        assert_close(&mq2.grad(), get(&out, "grad_mq2"), 1e-6, 1e-4, "dL/dmq2");
        let glq = Tensor::stack(&lq.iter().map(|t| t.grad()).collect::<Vec<_>>(), 0);
        let glmq = Tensor::stack(&lmq.iter().map(|t| t.grad()).collect::<Vec<_>>(), 0);
        assert_close(&glq, get(&out, "grad_lq"), 1e-6, 1e-4, "dL/dlq");
        assert_close(&glmq, get(&out, "grad_lmq"), 1e-6, 1e-4, "dL/dlmq");
    }
}
