//! Seeded mutation fuzzing of the parsers in contrast-core, as ordinary tests: image-folder
//! decode, CIFAR / STL-10 binaries, NIfTI-1, LA h5 (libhdf5), config TOML, checkpoints.
//!
//! Each test replays the committed seeds and regression inputs of its target, then mutates them
//! (300 inputs; 1,000 in `cargo xtask fuzz --quick`, the CI form; see `harness::budget`)
//! through the same checks as the cargo-fuzz targets (`fuzz/src/core.rs`): no panic, no hang,
//! no Rust allocation beyond the target's bound, an error naming the file. The runner
//! (`fuzz/src/runner.rs`) says how.

#[path = "../../../fuzz/src/core.rs"]
mod core_checks;
#[path = "../../../fuzz/src/harness.rs"]
mod harness;

#[path = "../../../fuzz/src/runner.rs"]
mod runner;

#[global_allocator]
static A: runner::Counting = runner::Counting;

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

const MIB: usize = 1 << 20;

#[test]
fn fuzz_image_decode() {
    run(
        "image_decode",
        core_checks::check_image,
        1,
        64 << 10,
        512 * MIB,
    );
}

#[test]
fn fuzz_cifar() {
    run("cifar", core_checks::check_cifar, 2, 16 << 10, 64 * MIB);
}

#[test]
fn fuzz_stl10() {
    run("stl10", core_checks::check_stl10, 3, 64 << 10, 64 * MIB);
}

#[test]
fn fuzz_nifti() {
    run("nifti", core_checks::check_nifti, 4, 16 << 10, 512 * MIB);
}

#[test]
fn fuzz_h5() {
    // MAX_VOXELS (2^28) as f32 plus the u8 label: 1.25 GiB is what a valid header may cost.
    // libhdf5 itself crashes on some corrupt files (upstream): each input runs in a child.
    runner::run_isolated(
        env!("CARGO_MANIFEST_DIR"),
        "h5",
        core_checks::check_h5,
        5,
        64 << 10,
        1536 * MIB,
    );
}

#[test]
fn fuzz_config_toml() {
    run(
        "config_toml",
        core_checks::check_config,
        6,
        4 << 10,
        16 * MIB,
    );
}

#[test]
fn fuzz_checkpoint() {
    run(
        "checkpoint",
        core_checks::check_checkpoint,
        7,
        8 << 10,
        64 * MIB,
    );
}

/// Writes the seeds that need Rust (NIfTI, h5, checkpoint) into `fuzz/seeds/`:
/// `cargo test -p contrast-core --test fuzz_inputs -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    use contrast_core::volume::{h5::write_h5_case, nifti::write_nifti, Case, Volume};
    let seeds = runner::repo(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let dir = tempfile::tempdir().unwrap();
    let put = |target: &str, name: &str, data: &[u8]| {
        let d = seeds.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
    };
    // NIfTI: f32 and u8 volumes, `.nii` (mode byte 0) and `.nii.gz` (mode byte 1)
    let img = Volume::new([4, 3, 2], (0..24).map(|i| i as f32 * 0.5).collect()).unwrap();
    let lab = Volume::new(
        [4, 3, 2],
        (0..24).map(|i| (i % 3) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let p = dir.path().join("img.nii");
    write_nifti(&p, &img, None).unwrap();
    let b = std::fs::read(&p).unwrap();
    put("nifti", "f32.nii", &[&[0u8][..], &b].concat());
    put("nifti", "f32.nii.gz", &[&[1u8][..], &b].concat());
    let p = dir.path().join("lab.nii");
    write_nifti(&p, &lab, None).unwrap();
    put(
        "nifti",
        "u8.nii",
        &[&[0u8][..], &std::fs::read(&p).unwrap()].concat(),
    );
    // h5: the LA layout
    let p = dir.path().join("case.h5");
    write_h5_case(&p, &Case::new("c", img.clone(), lab.clone()).unwrap()).unwrap();
    put("h5", "la-case.h5", &std::fs::read(&p).unwrap());
    // checkpoint: the three ways (see `check_checkpoint`)
    let ck = core_checks::save_toy_checkpoint(dir.path());
    let model = std::fs::read(ck.join("model.safetensors")).unwrap();
    let state = std::fs::read(ck.join("state.json")).unwrap();
    put(
        "checkpoint",
        "0-model-as-saved",
        &[&[0u8][..], &model].concat(),
    );
    put(
        "checkpoint",
        "1-model-consistent",
        &[&[1u8][..], &model].concat(),
    );
    put("checkpoint", "2-state", &[&[2u8][..], &state].concat());
}

// ---- regression tests: one per bug the fuzzing found (the inputs are also replayed above)

fn regression_input(target: &str, name: &str) -> Vec<u8> {
    let p = runner::repo(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A NIfTI header whose `bitpix` (0) disagrees with its datatype made the `nifti` crate panic
/// ("Inconsistent raw data size") inside `read_nifti`: now an error naming the file.
#[test]
fn regression_nifti_bitpix_datatype_mismatch_is_an_error() {
    let _serial = runner::serial();
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "bitpix-datatype-mismatch-f32",
        "bitpix-datatype-mismatch-u8",
    ] {
        let input = regression_input("nifti", name);
        let p = dir.path().join("case.nii");
        std::fs::write(&p, &input[1..]).unwrap();
        let e = contrast_core::volume::nifti::read_nifti(&p).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("bitpix") && msg.contains("case.nii"), "{msg}");
    }
}

/// A NIfTI header claiming more voxels than the file holds is refused before any voxel buffer
/// is sized (the crate reserved the header's size first).
#[test]
fn regression_nifti_cut_short_is_named_before_allocating() {
    let _serial = runner::serial();
    use contrast_core::volume::{nifti::read_nifti, MAX_VOXELS};
    let dir = tempfile::tempdir().unwrap();
    let seed =
        &std::fs::read(runner::repo(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/nifti/f32.nii"))
            .unwrap()[1..];
    // dims 4×3×2 → 2000×2000×60 (240 M voxels, within MAX_VOXELS): 960 MB of f32 claimed
    let mut big = seed.to_vec();
    for (i, d) in [2000i16, 2000, 60].iter().enumerate() {
        big[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    const { assert!(2000 * 2000 * 60 <= MAX_VOXELS) };
    for name in ["big.nii", "big.nii.gz"] {
        let p = dir.path().join(name);
        let data = if name.ends_with(".gz") {
            core_checks::gzip_stored(&big)
        } else {
            big.clone()
        };
        std::fs::write(&p, data).unwrap();
        let t = std::time::Instant::now();
        let msg = format!("{:#}", read_nifti(&p).unwrap_err());
        assert!(msg.contains("cut short") && msg.contains(name), "{msg}");
        assert!(t.elapsed().as_secs_f64() < 1.0);
    }
    // and beyond the bound: 32767³
    let mut huge = seed.to_vec();
    for i in 0..3 {
        huge[42 + 2 * i..44 + 2 * i].copy_from_slice(&32767i16.to_le_bytes());
    }
    let p = dir.path().join("huge.nii");
    std::fs::write(&p, &huge).unwrap();
    let msg = format!("{:#}", read_nifti(&p).unwrap_err());
    assert!(msg.contains("exceed") && msg.contains("huge.nii"), "{msg}");
}

/// An LA h5 file whose `image` dataset declares 103 GB (unwritten chunks cost nothing on disk)
/// made `read_h5_case` allocate it and abort the process: now refused from the shape.
#[test]
fn regression_h5_huge_shape_is_refused_before_reading() {
    let _serial = runner::serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mri_norm2.h5");
    std::fs::write(&p, regression_input("h5", "huge-shape.h5")).unwrap();
    let e = contrast_core::volume::h5::read_h5_case(&p, "c", "image", "label").unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("voxels") && msg.contains("mri_norm2.h5"),
        "{msg}"
    );
}

/// A 16384 × 16384 grey PNG is 1.2 MB (zlib, fast); decoding it took 268 MB and converting it to
/// RGB8 805 MB more. It is refused from its header now, before decoding.
#[test]
fn regression_png_pixel_bomb_is_refused_from_its_header() {
    let _serial = runner::serial();
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = !0u32;
        for &b in &out[start..] {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        out.extend_from_slice(&(!crc).to_be_bytes());
    }
    let side = 16384u32;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let row = vec![0u8; side as usize + 1];
    for _ in 0..side {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    assert!(png.len() < 2 << 20, "{} bytes", png.len());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.png");
    std::fs::write(&p, &png).unwrap();
    let t = std::time::Instant::now();
    let e = contrast_core::data::folder::decode_rgb(&p).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("bomb.png") && msg.contains("more than"),
        "{msg}"
    );
    assert!(t.elapsed().as_secs_f64() < 1.0, "decoded before refusing?");
}

/// A mutated LA h5 file whose `image` dataset became compact with no data (24 floats, 0 bytes
/// stored) made libhdf5 1.10.8 copy past its buffer in `H5Dread` (SIGSEGV, the process gone,
/// no file named). Found by a 120 s mutation run. The storage is checked against the shape
/// before reading now.
#[test]
fn regression_h5_storage_smaller_than_the_shape_is_refused() {
    let _serial = runner::serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mri_norm2.h5");
    std::fs::write(&p, regression_input("h5", "compact-layout-without-data.h5")).unwrap();
    let e = contrast_core::volume::h5::read_h5_case(&p, "c", "image", "label").unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("`image` needs 96 bytes") && msg.contains("mri_norm2.h5"),
        "{msg}"
    );
}

/// `--set 'ruftIm`.fe6ice=cpw'` (a key holding a backtick) was reported as "unknown config key
/// … in configs/fuzz.toml", blaming the preset file for a key from the command line: the origin
/// is traced through serde's message, which a backtick in the name cuts short. Found by the
/// mutation run once the check also asked *where* a key is blamed. Override keys are bare TOML
/// keys now, and anything else is refused as a bad override.
#[test]
fn regression_config_override_key_with_a_backtick_is_blamed_on_the_command_line() {
    let _serial = runner::serial();
    use contrast_core::train::config::{load_config, ConfigSource};
    use contrast_core::train::example::ToyConfig;
    let input = regression_input("config_toml", "override-key-with-backtick");
    let ov = String::from_utf8(input[1..].to_vec()).unwrap();
    let src = ConfigSource::text("", "configs/toy.toml");
    let e = load_config::<ToyConfig>(Some(src), &[ov]).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("override") && msg.contains("bad key"), "{msg}");
    assert!(!msg.contains("toy.toml"), "{msg}");
}
