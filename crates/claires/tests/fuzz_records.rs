//! Seeded mutation fuzzing of the CLAIRES inputs: JSON and CSV record manifests, VQA-RAD
//! question/answer JSON (`records.rs`), and an index folder (`index.json` + embeddings,
//! `Index::load`). Checks in `fuzz/src/claires.rs` (shared with the cargo-fuzz targets) and
//! below; runner in `fuzz/src/runner.rs` (replay of the seeds and regression inputs, then
//! 300 mutated inputs; see `budget` in `fuzz/src/harness.rs`).

use claires::records;

#[path = "../../../fuzz/src/claires.rs"]
mod claires_checks;
#[path = "../../../fuzz/src/harness.rs"]
mod harness;
#[path = "../../../fuzz/src/runner.rs"]
mod runner;

#[global_allocator]
static A: runner::Counting = runner::Counting;

const MIB: usize = 1 << 20;

fn run(target: &str, check: fn(&[u8]), seed: u64, max_len: usize, heap_bound: usize) {
    runner::run(
        env!("CARGO_MANIFEST_DIR"),
        target,
        check,
        seed,
        max_len,
        heap_bound,
    );
}

#[test]
fn fuzz_claires_json() {
    run(
        "claires_json",
        claires_checks::check_json,
        21,
        16 << 10,
        16 * MIB,
    );
}

#[test]
fn fuzz_claires_csv() {
    run(
        "claires_csv",
        claires_checks::check_csv,
        22,
        16 << 10,
        16 * MIB,
    );
}

#[test]
fn fuzz_vqa_rad() {
    run(
        "vqa_rad",
        claires_checks::check_vqa_rad,
        23,
        16 << 10,
        16 * MIB,
    );
}

/// `index.json` of an index folder (the embeddings file as saved): `Index::load` must refuse a
/// corrupt or hostile one naming the file, never panic.
fn check_index(data: &[u8]) {
    use claires::index::Index;
    thread_local! {
        static DIR: tempfile::TempDir = {
            let d = tempfile::tempdir().unwrap();
            tch::Tensor::write_safetensors(
                &[("embeddings", tch::Tensor::zeros([2, 4], (tch::Kind::Float, tch::Device::Cpu)))],
                d.path().join("embeddings.safetensors"),
            )
            .unwrap();
            d
        };
    }
    DIR.with(|d| {
        let p = d.path().join("index.json");
        std::fs::write(&p, data).unwrap();
        match Index::load(d.path(), "0123456789abcdef0123") {
            Ok(ix) => assert_eq!(ix.embeddings.size(), [ix.len() as i64, ix.meta.dim]),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains(&p.display().to_string())
                        || msg.contains(&d.path().display().to_string()),
                    "the error names no file: {msg}"
                );
            }
        }
    })
}

#[test]
fn fuzz_claires_index() {
    run("claires_index", check_index, 24, 16 << 10, 16 * MIB);
}

// ---- regression tests: one per bug found (the inputs are also replayed above)

/// An `index.json` whose model checksum holds a multi-byte character made `Index::load` panic
/// ("byte index 12 is not a char boundary") while wording the stale-index error. Found while
/// writing this target (a hand-made input), not by the mutation run.
#[test]
fn regression_index_checksum_with_multibyte_characters() {
    let dir = tempfile::tempdir().unwrap();
    let input = std::fs::read(
        runner::repo(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/claires_index/checksum-not-char-boundary.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("index.json"), input).unwrap();
    let Err(e) = claires::index::Index::load(dir.path(), "0123456789abcdef0123") else {
        panic!("a stale index loaded");
    };
    let msg = format!("{e:#}");
    assert!(
        msg.contains("stale index") && msg.contains("aééééé"),
        "{msg}"
    );
}

/// A CSV manifest whose header has an unterminated quote failed with "line 1: unterminated
/// quote", naming no file (the rows named it, the header did not).
#[test]
fn regression_csv_header_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("manifest.csv");
    let input = std::fs::read(
        runner::repo(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/claires_csv/header-unterminated-quote.csv"),
    )
    .unwrap();
    std::fs::write(&p, input).unwrap();
    let msg = format!("{:#}", records::load_csv(&p).unwrap_err());
    assert!(
        msg.contains("manifest.csv") && msg.contains("unterminated quote"),
        "{msg}"
    );
}
