//! Fuzz checks for the CLAIRES record loaders (`crates/claires/src/records.rs`): JSON and CSV
//! manifests and the VQA-RAD question/answer JSON. Shared by the cargo-fuzz targets and
//! `crates/claires/tests/fuzz_records.rs`; the includer provides `super::records` and
//! `super::harness`.

#![allow(dead_code)]

use super::harness::{assert_names, Scratch};
use super::records::{load_manifest, vqa_rad_records};
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fn with_scratch<R>(f: impl FnOnce(&Scratch) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = s.get_or_insert_with(|| Scratch::new("claires"));
        f(s)
    })
}

fn check_manifest(name: &str, data: &[u8]) {
    with_scratch(|s| {
        let p = s.file(name, data);
        match load_manifest(&p) {
            Ok(records) => {
                assert!(!records.is_empty());
                for r in &records {
                    assert!(!r.id.is_empty() || r.image.file_stem().is_none());
                    let _ = (r.text(), r.fields.present());
                }
            }
            Err(e) => assert_names(&e, &p),
        }
    })
}

/// A JSON manifest (`[{"image": ..., "<field>": ...}]`).
pub fn check_json(data: &[u8]) {
    check_manifest("manifest.json", data)
}

/// A CSV manifest (header row, RFC 4180 quoting).
pub fn check_csv(data: &[u8]) {
    check_manifest("manifest.csv", data)
}

/// A VQA-RAD folder whose `trainset.json` is the input (`testset.json` empty, three image
/// files named as in the seeds).
pub fn check_vqa_rad(data: &[u8]) {
    with_scratch(|s| {
        let root = s.fresh_dir("vqa");
        let train = s.file("vqa/trainset.json", data);
        s.file("vqa/testset.json", b"[]");
        for n in ["synpic100.jpg", "synpic200.jpg", "synpic300.jpeg"] {
            s.file(&format!("vqa/images/{n}"), b"");
        }
        match vqa_rad_records(&root) {
            Ok((records, skipped)) => {
                assert!(!records.is_empty() && records.len() + skipped <= 3);
                for r in &records {
                    let _ = r.text();
                }
            }
            // an error names the file it read, or the folder for what spans both files
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains(&train.display().to_string())
                        || msg.contains(&root.display().to_string())
                        || msg.contains("image synpic"),
                    "the error names no file: {msg}"
                );
            }
        }
    })
}
