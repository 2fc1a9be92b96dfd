//! Seeded mutation fuzzing of GraSS's raster inputs: a file as the data loader meets it
//! (`Raster::open` → size, bands, types, geotransform, no-data; `TileIndex::build`; the first
//! tiles through `read_rgb` and the Dubai (RGB) and LoveDA (index) mask decoders). The file
//! format itself is parsed by GDAL (C++), which is not ours and is out of scope: what is tested
//! is that our code on top of it never panics, hangs or allocates without bound, and names the
//! file in its errors. Runner in `fuzz/src/runner.rs` (replay of the seeds and regression
//! inputs, then 300 mutated inputs; see `budget` in `fuzz/src/harness.rs`).

#[path = "../../../fuzz/src/harness.rs"]
mod harness;
#[path = "../../../fuzz/src/runner.rs"]
mod runner;

use grass::raster::{MaskCoding, Raster, TileIndex};
use harness::{assert_names, Scratch};

#[global_allocator]
static A: runner::Counting = runner::Counting;

const MIB: usize = 1 << 20;

thread_local! {
    static SCRATCH: Scratch = Scratch::new("raster");
}

fn check_geotiff(data: &[u8]) {
    SCRATCH.with(|s| {
        let p = s.file("scene.tif", data);
        let r = match Raster::open(&p) {
            Ok(r) => r,
            Err(e) => return assert_names(&e, &p),
        };
        let _ = (r.size(), r.band_types(), r.geo_transform(), r.nodata(1));
        let idx = match TileIndex::build(&[(p.clone(), Some(p.clone()))], 16, 8) {
            Ok(idx) => idx,
            Err(e) => return assert_names(&e, &p),
        };
        for t in idx.tiles.iter().take(4) {
            match r.read_rgb(t.window) {
                Ok(px) => assert_eq!(px.data.len(), 3 * 16 * 16),
                Err(e) => assert_names(&e, &p),
            }
            for coding in [
                MaskCoding::Rgb(grass::raster::ColorMap::dubai(255)),
                MaskCoding::loveda(255),
            ] {
                match coding.decode(&r, t.window) {
                    Ok(ids) => assert_eq!(ids.len(), 16 * 16),
                    Err(e) => assert_names(&e, &p),
                }
            }
        }
    })
}

#[test]
fn fuzz_geotiff() {
    // GDAL's own messages about each corrupt file (thousands of lines) are not the test's
    gdal::config::set_config_option("CPL_LOG", "/dev/null").unwrap();
    // GDAL may crash on a corrupt file (upstream): each input runs in a child
    runner::run_isolated(
        env!("CARGO_MANIFEST_DIR"),
        "geotiff",
        check_geotiff,
        31,
        16 << 10,
        64 * MIB,
    );
}

/// Writes the GeoTIFF seeds into `fuzz/seeds/geotiff/` with GDAL:
/// `cargo test -p grass --test fuzz_raster -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    use gdal::raster::Buffer;
    use gdal::DriverManager;
    let out = runner::repo(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/geotiff");
    std::fs::create_dir_all(&out).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (24usize, 20usize);
    let drv = DriverManager::get_driver_by_name("GTiff").unwrap();
    // 3-band Byte with a geotransform (the Dubai / Potsdam case)
    {
        let p = dir.path().join("rgb.tif");
        let mut ds = drv.create_with_band_type::<u8, _>(&p, w, h, 3).unwrap();
        ds.set_geo_transform(&[500.0, 2.0, 0.0, 900.0, 0.0, -2.0])
            .unwrap();
        let colours = [[0x3C, 0x10, 0x98], [0x84, 0x29, 0xF6], [0x00, 0x00, 0x00]];
        for b in 1..=3usize {
            let data: Vec<u8> = (0..w * h).map(|i| colours[(i / 7) % 3][b - 1]).collect();
            ds.rasterband(b)
                .unwrap()
                .write((0, 0), (w, h), &mut Buffer::new((w, h), data))
                .unwrap();
        }
        drop(ds);
        std::fs::copy(&p, out.join("rgb-byte.tif")).unwrap();
    }
    // 1-band UInt16 index mask with no-data (the LoveDA case), tiled
    {
        let p = dir.path().join("index.tif");
        let opts = gdal::raster::RasterCreationOptions::from_iter([
            "TILED=YES",
            "BLOCKXSIZE=16",
            "BLOCKYSIZE=16",
        ]);
        let ds = drv
            .create_with_band_type_with_options::<u16, _>(&p, w, h, 1, &opts)
            .unwrap();
        let mut band = ds.rasterband(1).unwrap();
        band.set_no_data_value(Some(0.0)).unwrap();
        let data: Vec<u16> = (0..w * h).map(|i| (i % 8) as u16).collect();
        band.write((0, 0), (w, h), &mut Buffer::new((w, h), data))
            .unwrap();
        drop(ds);
        std::fs::copy(&p, out.join("index-u16-tiled.tif")).unwrap();
    }
    // 1-band Float32, deflate-compressed
    {
        let p = dir.path().join("f32.tif");
        let opts = gdal::raster::RasterCreationOptions::from_iter(["COMPRESS=DEFLATE"]);
        let ds = drv
            .create_with_band_type_with_options::<f32, _>(&p, w, h, 1, &opts)
            .unwrap();
        let data: Vec<f32> = (0..w * h).map(|i| i as f32 * 0.25 - 3.0).collect();
        ds.rasterband(1)
            .unwrap()
            .write((0, 0), (w, h), &mut Buffer::new((w, h), data))
            .unwrap();
        drop(ds);
        std::fs::copy(&p, out.join("f32-deflate.tif")).unwrap();
    }
}

// ---- regression tests: one per bug found (the inputs are also replayed above)

fn regression(name: &str) -> std::path::PathBuf {
    runner::repo(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions/geotiff")
        .join(name)
}

/// A mutated TIFF claiming 65,281 pixel-interleaved bands took 15 s to read four 16 × 16 tiles
/// (GDAL decodes every band of a block): past the 20 s bound on the loaded VM. Found by the
/// mutation run. Rasters with more than `Raster::MAX_BANDS` bands are refused at open now.
#[test]
fn regression_absurd_band_count_is_refused_at_open() {
    let _serial = runner::serial();
    let p = regression("65281-bands.tif");
    let t = std::time::Instant::now();
    let msg = format!("{:#}", Raster::open(&p).unwrap_err());
    assert!(
        msg.contains("65281 bands") && msg.contains("65281-bands.tif"),
        "{msg}"
    );
    assert!(t.elapsed().as_secs_f64() < 2.0);
}

/// A 1.7 KB TIFF whose header says 65535 × 65535 opened fine and `TileIndex::build` cut it into
/// 67 million windows (4.8 GB). Made by hand after the band-count finding, from the RGB seed.
#[test]
fn regression_absurd_scene_size_is_refused_when_tiling() {
    let _serial = runner::serial();
    let p = regression("65535x65535.tif");
    let r = Raster::open(&p).unwrap();
    assert_eq!(r.size(), (65535, 65535));
    let msg = format!(
        "{:#}",
        TileIndex::build(&[(p.clone(), None)], 16, 8).unwrap_err()
    );
    assert!(
        msg.contains("65535x65535.tif") && msg.contains("tiles"),
        "{msg}"
    );
    // a real scene still tiles
    let ok = grass::raster::tile_grid(6000, 6000, 256, 128).unwrap();
    assert_eq!(ok.len(), 46 * 46);
}
