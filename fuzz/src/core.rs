//! Fuzz checks for the parsers of `contrast-core`: image-folder decode, CIFAR and STL-10
//! binaries, NIfTI-1, LA h5, config TOML, checkpoints. Each `check_*` takes one input, runs the
//! parser the way the library does and asserts the contract: no panic, an `Ok` that is
//! internally consistent and within the stated size bound, or an error naming the file.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the seeded mutation tests
//! (`crates/contrast-core/tests/fuzz_inputs.rs`), which include this file with `#[path]`
//! next to `harness.rs` (reached as `super::harness`).

#![allow(dead_code)]

use super::harness::{assert_names, Scratch};
use contrast_core::data::{cifar, folder, stl10};
use std::cell::RefCell;
use std::path::Path;

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// Run `f` with this thread's scratch folder.
pub fn with_scratch<R>(f: impl FnOnce(&Scratch) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = s.get_or_insert_with(|| Scratch::new("core"));
        f(s)
    })
}

/// Image-folder decode (`folder::decode_rgb`: JPEG / PNG through the `image` crate, to RGB8).
pub fn check_image(data: &[u8]) {
    with_scratch(|s| {
        let p = s.file("class/img.png", data);
        match folder::decode_rgb(&p) {
            Ok((px, h, w)) => {
                assert_eq!(px.len(), h * w * 3, "RGB buffer size");
            }
            Err(e) => assert_names(&e, &p),
        }
        // the scaled path (`data.scaled_decode`): JPEGs at 1/2 through jpeg-decoder
        for want in [1usize, 2] {
            match folder::decode_rgb_scaled(&p, &mut |_, _| want) {
                Ok((px, h, w, src)) => {
                    assert_eq!(px.len(), h * w * 3, "RGB buffer size (1/{want})");
                    assert!(src.denom == 1 || src.denom == want, "denom {}", src.denom);
                    assert_eq!(
                        (h, w),
                        (
                            src.height.div_ceil(src.denom),
                            src.width.div_ceil(src.denom)
                        ),
                        "decoded size against the header's at 1/{}",
                        src.denom
                    );
                }
                Err(e) => assert_names(&e, &p),
            }
        }
    })
}

/// CIFAR-10 and CIFAR-100 binary records.
pub fn check_cifar(data: &[u8]) {
    with_scratch(|s| {
        let p = s.file("data_batch_1.bin", data);
        for (label_bytes, index, classes) in [(1, 0, 10), (2, 1, 100), (2, 0, 20)] {
            match cifar::read_records(&p, label_bytes, index, classes) {
                Ok((px, labels)) => {
                    assert_eq!(px.len(), labels.len() * 3072);
                    assert_eq!(data.len(), labels.len() * (3072 + label_bytes));
                    assert!(labels.iter().all(|&l| (0..classes as i64).contains(&l)));
                }
                Err(e) => assert_names(&e, &p),
            }
        }
    })
}

/// STL-10 `*_X.bin` images and `*_y.bin` labels.
pub fn check_stl10(data: &[u8]) {
    with_scratch(|s| {
        let x = s.file("train_X.bin", data);
        match stl10::read_images(&x) {
            Ok(px) => assert_eq!(px.len(), data.len()),
            Err(e) => assert_names(&e, &x),
        }
        let y = s.file("train_y.bin", data);
        match stl10::read_labels(&y) {
            Ok(l) => {
                assert_eq!(l.len(), data.len());
                assert!(l.iter().all(|&v| (0..10).contains(&v)));
            }
            Err(e) => assert_names(&e, &y),
        }
    })
}

/// NIfTI-1: the first byte picks `.nii` (the rest as is) or `.nii.gz` (the rest wrapped in gzip
/// here, so that the mutations reach the header parser behind the decompressor).
pub fn check_nifti(data: &[u8]) {
    use contrast_core::volume::nifti::read_nifti;
    let (mode, body) = data.split_first().unwrap_or((&0, &[]));
    with_scratch(|s| {
        let p = if mode & 1 == 0 {
            s.file("case.nii", body)
        } else {
            s.file("case.nii.gz", &gzip_stored(body))
        };
        match read_nifti(&p) {
            Ok(v) => {
                let [x, y, z] = v.volume.shape;
                assert_eq!(v.volume.data.len(), x * y * z);
            }
            Err(e) => assert_names(&e, &p),
        }
    })
}

/// LA h5 (`image` float32 + `label` uint8 through libhdf5): `read_h5_case` as the LA loader
/// calls it.
pub fn check_h5(data: &[u8]) {
    use contrast_core::volume::h5::read_h5_case;
    with_scratch(|s| {
        let p = s.file("mri_norm2.h5", data);
        match read_h5_case(&p, "case", "image", "label") {
            Ok(c) => {
                let [x, y, z] = c.image.shape;
                assert_eq!(c.image.data.len(), x * y * z);
                assert_eq!(c.label.shape, c.image.shape);
            }
            Err(e) => assert_names(&e, &p),
        }
    })
}

/// Config TOML (`load_config` of the toy method's config, nested tables included): the input
/// is the file text, then after a NUL byte one `--set` override per line. A config that loads
/// must survive the round trip through `to_toml`; an error must say where the bad key came
/// from (the file or the command line).
pub fn check_config(data: &[u8]) {
    use contrast_core::train::config::{load_config, to_toml, ConfigSource};
    use contrast_core::train::example::ToyConfig;
    let (file, sets) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(file).into_owned();
    let overrides: Vec<String> = String::from_utf8_lossy(sets)
        .lines()
        .filter(|l| !l.is_empty())
        .take(16)
        .map(String::from)
        .collect();
    let name = "configs/fuzz.toml";
    match load_config::<ToyConfig>(Some(ConfigSource::text(text.clone(), name)), &overrides) {
        Ok(cfg) => {
            let again = to_toml(&cfg).expect("a loaded config serialises");
            let back: ToyConfig = load_config(Some(ConfigSource::text(again, "resolved")), &[])
                .expect("a resolved config loads again");
            // NaN != NaN: compare the TOML text instead of the structs
            assert_eq!(to_toml(&back).unwrap(), to_toml(&cfg).unwrap());
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let cli = msg.contains("command line") || msg.contains("override");
            assert!(
                msg.contains(name) || cli,
                "the error says neither the file nor the command line: {msg}"
            );
            // blame where the key came from: no override, no command line (and no file content,
            // no file) — the preset-file-blamed-for-an-override bug class
            if overrides.is_empty() {
                assert!(!cli, "no override, yet the command line is blamed: {msg}");
            }
            let file_is_empty = toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.is_empty());
            if file_is_empty && msg.contains("config key") {
                assert!(cli, "an empty file is blamed for a key: {msg}");
            }
        }
    }
}

/// A checkpoint of the toy method (two linear layers), saved once per thread, then attacked:
/// the first input byte picks the file and the way, the rest is the payload:
/// * 0: `model.safetensors` replaced, `state.json` as saved (the digest must catch it);
/// * 1: `model.safetensors` replaced **and** its size and SHA-256 recorded in `state.json`
///   (a hostile but consistent checkpoint: the safetensors parser, the tensors and the restore
///   into the model with its shape checks are reached);
/// * 2: `state.json` replaced.
///
/// Loading must fail naming the checkpoint (or a file in it), or succeed; a checkpoint that
/// loads is restored into the model, which must fail naming it or succeed.
pub fn check_checkpoint(data: &[u8]) {
    use contrast_core::train::checkpoint::Checkpointer;
    let (mode, body) = data.split_first().unwrap_or((&0, &[]));
    with_scratch(|s| {
        let dir = checkpoint_copy(s);
        match mode % 3 {
            0 => std::fs::write(dir.join("model.safetensors"), body).unwrap(),
            1 => {
                std::fs::write(dir.join("model.safetensors"), body).unwrap();
                let sp = dir.join("state.json");
                let mut state: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&sp).unwrap()).unwrap();
                state["files"]["model.safetensors"] = serde_json::json!({
                    "bytes": body.len(),
                    "sha256": sha256_hex(body),
                });
                std::fs::write(&sp, serde_json::to_vec(&state).unwrap()).unwrap();
            }
            _ => std::fs::write(dir.join("state.json"), body).unwrap(),
        }
        match Checkpointer::load(&dir) {
            Ok(ck) => {
                use anyhow::Context;
                use contrast_core::train::Method;
                let mut toy = toy();
                // as `Trainer::restore_latest` does
                if let Err(e) = toy
                    .restore(&ck)
                    .with_context(|| format!("restoring {}", dir.display()))
                {
                    assert_names(&e, &dir);
                }
            }
            Err(e) => assert_names(&e, &dir),
        }
    })
}

/// `data` as a gzip member of stored (uncompressed) deflate blocks: what a `.nii.gz` reader
/// decompresses back to `data` (no compression library needed by the includers).
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let n = c.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(c);
    }
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The small toy config every checkpoint check uses.
pub fn toy_config() -> contrast_core::train::example::ToyConfig {
    contrast_core::train::example::ToyConfig {
        dim: 4,
        hidden: 8,
        out_dim: 4,
        clusters: 2,
        ..Default::default()
    }
}

fn toy() -> contrast_core::train::example::Toy {
    use contrast_core::train::Method;
    contrast_core::train::example::Toy::build(&toy_config(), tch::Device::Cpu).unwrap()
}

/// A valid checkpoint of the toy model (step 7) in `<dir>/step-00000007`.
pub fn save_toy_checkpoint(dir: &Path) -> std::path::PathBuf {
    use contrast_core::tensors::named_variables;
    use contrast_core::train::checkpoint::Checkpointer;
    let t = toy();
    let named = named_variables(&t.vs);
    Checkpointer::new(dir, 1)
        .save(7, 3, &[("model", &named)], serde_json::json!({"epoch": 1}))
        .unwrap()
}

/// A fresh copy of the pristine toy checkpoint in the scratch folder.
fn checkpoint_copy(s: &Scratch) -> std::path::PathBuf {
    let pristine = s.path().join("pristine");
    if !pristine.exists() {
        save_toy_checkpoint(&pristine);
    }
    let src = pristine.join("step-00000007");
    let dst = s.fresh_dir("checkpoints/step-00000007");
    for f in ["model.safetensors", "state.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}
