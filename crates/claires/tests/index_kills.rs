//! `claires index` killed (`SIGKILL`) at random moments while it rebuilds an index in place,
//! alternating between two galleries (96 and 80 images): afterwards the folder always holds a
//! whole index — none yet, or one that loads and equals the uninterrupted build of one gallery,
//! never one gallery's records with the other's embeddings — and the next build finishes and
//! leaves one embeddings file. Each write is stretched by `CONTRAST_FAULT_PAUSE_MS` so that many
//! kills land between the embeddings and `index.json`. `CLAIRES_INDEX_KILLS` sets the number of
//! kills (default 12). Skips visibly without the MiniLM wheel.

mod common;

use claires::index::Index;
use claires::method::{load_run, ClairesMethod};
use claires::text::minilm_dir;
use contrast_core::testing::global_rng_lock;
use contrast_core::train::{RunOptions, Trainer};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `claires index --run RUN --index DIR --manifest M`, not yet waited for.
fn start(run: &Path, dir: &Path, manifest: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_claires"))
        .args(["index", "--run"])
        .arg(run)
        .arg("--index")
        .arg(dir)
        .arg("--manifest")
        .arg(manifest)
        .env("CONTRAST_FAULT_PAUSE_MS", "150")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting claires index")
}

/// Whether an embeddings file (under its final name, not a temporary one) in `dir` was
/// written after `since`.
fn new_embeddings(dir: &Path, since: std::time::SystemTime) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok()).any(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            f.starts_with("embeddings")
                && f.ends_with(".safetensors")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m > since)
        })
    })
}

fn embeddings_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.contains("embeddings"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_index_rebuild_killed_at_any_moment_leaves_a_whole_index() {
    if let Err(e) = minilm_dir() {
        eprintln!("skipped: claires index kill test ({e:#})");
        return;
    }
    let kills: usize = std::env::var("CLAIRES_INDEX_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::write_fixture(tmp.path());
    let cfg = common::tiny_config(&manifest);
    let mut o = RunOptions::new("claires", "run");
    o.runs_root = tmp.path().join("runs");
    let run = {
        let _g = global_rng_lock();
        Trainer::<ClairesMethod>::new(cfg, o).run(None).unwrap().dir
    };
    // two galleries of different sizes (so that embedding them takes a while too)
    let galleries: Vec<_> = [96, 80]
        .iter()
        .map(|&n| {
            let g = tmp.path().join(format!("gallery{n}"));
            std::fs::create_dir_all(&g).unwrap();
            common::write_records(&g, n)
        })
        .collect();
    let (_, model) = load_run(&run).unwrap();
    let checksum = model.checksum();

    // the uninterrupted builds
    let mut wall = Duration::ZERO;
    let references: Vec<Index> = galleries
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let d = tmp.path().join(format!("reference{i}"));
            let t0 = Instant::now();
            assert!(start(&run, &d, g).wait().unwrap().success());
            wall = wall.max(t0.elapsed());
            Index::load(&d, &checksum).unwrap()
        })
        .collect();

    // an index is there when the rebuilds start (the second gallery's; the first rebuild
    // indexes the first)
    let dir = tmp.path().join("index");
    assert!(start(&run, &dir, &galleries[1]).wait().unwrap().success());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut landed, mut inside, mut whole, mut none) = (0, 0, 0, 0);
    for k in 0..kills {
        let spawned = std::time::SystemTime::now();
        let mut child = start(&run, &dir, &galleries[k % 2]);
        // every other kill aims at the moment the new embeddings are on disk (inside the
        // stretched write); the others anywhere up to a little past the build's end
        let aimed = k % 2 == 1;
        let at = Duration::from_secs_f64(rng.gen_range(0.0..1.2) * wall.as_secs_f64());
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            let due = match aimed {
                true => new_embeddings(&dir, spawned) || t.elapsed() > 3 * wall,
                false => t.elapsed() >= at,
            };
            if due {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            landed += 1;
            // the new embeddings are written and `index.json` does not name them yet
            inside += usize::from(aimed && new_embeddings(&dir, spawned));
            child.kill().unwrap();
        }
        child.wait().unwrap();
        if dir.join("index.json").exists() {
            let got = Index::load(&dir, &checksum)
                .unwrap_or_else(|e| panic!("kill {k} after {at:?}: a damaged index: {e:#}"));
            let reference = references
                .iter()
                .find(|r| r.meta.records.len() == got.meta.records.len())
                .expect("an index of one of the galleries");
            let same_records = got
                .meta
                .records
                .iter()
                .zip(&reference.meta.records)
                .all(|(a, b)| a.image == b.image);
            assert!(same_records, "kill {k}: records of neither gallery");
            assert!(
                got.embeddings.equal(&reference.embeddings),
                "kill {k}: the embeddings are not those of its records' uninterrupted build"
            );
            whole += 1;
        } else {
            let e = Index::load(&dir, &checksum).err().expect("no index.json");
            assert!(format!("{e:#}").contains("claires index"), "{e:#}");
            none += 1;
        }
    }
    // and a build to the end: the same index, one embeddings file, no leftovers
    assert!(start(&run, &dir, &galleries[0]).wait().unwrap().success());
    let last = Index::load(&dir, &checksum).unwrap();
    assert!(last.embeddings.equal(&references[0].embeddings));
    let files = embeddings_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    eprintln!(
        "claires index killed {kills} times ({landed} while it ran, {inside} of them between the \
         new embeddings and index.json; uninterrupted build {:.1} s): {whole} left a whole index equal to its gallery's uninterrupted build, {none} left none \
         yet, 0 damaged or mixed; the next build finished with one embeddings file",
        wall.as_secs_f64()
    );
}
