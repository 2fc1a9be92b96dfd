//! GDAL raster I/O on the real files of the development data (skipped with one line where there
//! is none) and on synthetic GeoTIFFs written by GDAL itself (exact values).

use gdal::raster::Buffer;
use gdal::DriverManager;
use grass::raster::{
    read_tiles, tile_grid, ColorMap, MaskCoding, Pixels, Raster, TileIndex, Window,
};
use std::path::PathBuf;

/// The development data beside the repository, or `None` (a fresh clone has none): the tests
/// that read it then skip with one line.
fn shared(test: &str, needs: &str) -> Option<PathBuf> {
    contrast_core::data::dev_data(test, needs)?;
    contrast_core::data::dev_data_root()
}

#[test]
fn reads_rgb_byte_tif_size_bands_geotransform() {
    let Some(shared) = shared("reads_rgb_byte_tif_size_bands_geotransform", "geotiff") else {
        return;
    };
    let r = Raster::open(shared.join("geotiff/RGB.byte.tif")).unwrap();
    assert_eq!(r.size(), (791, 718));
    assert_eq!(r.bands(), 3);
    assert_eq!(r.band_types().unwrap(), vec!["Byte"; 3]);
    assert_eq!(r.nodata(1).unwrap(), Some(0.0));
    let gt = r.geo_transform().expect("georeferenced");
    let want = [
        101985.0,
        300.0379266750948,
        0.0,
        2826915.0,
        0.0,
        -300.041782729805,
    ];
    for (a, b) in gt.iter().zip(want) {
        assert!((a - b).abs() < 1e-9, "geotransform {gt:?} vs {want:?}");
    }
    // a windowed read equals the same pixels of a full read, for every band
    let all = r.read_all::<u8>().unwrap();
    let w = Window::new(300, 200, 17, 9);
    let part = r.read::<u8>(w, &[3, 1]).unwrap();
    assert_eq!((part.bands, part.height, part.width), (2, 9, 17));
    for y in 0..9 {
        for x in 0..17 {
            assert_eq!(part.at(0, y, x), all.at(2, 200 + y, 300 + x));
            assert_eq!(part.at(1, y, x), all.at(0, 200 + y, 300 + x));
        }
    }
    // the scene has real content in the middle (not all nodata)
    assert!(part.data.iter().any(|&v| v > 0));
    // out-of-bounds windows are errors naming the file
    let e = r.read::<u8>(Window::new(790, 0, 2, 1), &[]).unwrap_err();
    assert!(format!("{e:#}").contains("RGB.byte.tif"), "{e:#}");
}

#[test]
fn jpeg_and_palette_png_open_without_georeferencing() {
    let Some(shared) = shared(
        "jpeg_and_palette_png_open_without_georeferencing",
        "dubai-aerial",
    ) else {
        return;
    };
    let d = shared.join("dubai-aerial/Semantic segmentation dataset/Tile 2");
    let img = Raster::open(d.join("images/image_part_001.jpg")).unwrap();
    assert_eq!(img.size(), (509, 544));
    assert_eq!(img.bands(), 3);
    assert!(img.geo_transform().is_none());
    // Tile 2's masks are palette PNGs: one band + colour table, expanded to the true colours
    let m = Raster::open(d.join("masks/image_part_001.png")).unwrap();
    assert_eq!(m.bands(), 1);
    let rgb = m.read_rgb(Window::new(0, 0, 509, 544)).unwrap();
    let ids = ColorMap::dubai(255).map(&rgb).unwrap();
    assert_eq!(ids.len(), 509 * 544);
    assert!(ids.iter().all(|&i| (0..6).contains(&i) || i == 255));
    let distinct: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    assert!(
        distinct.len() >= 3,
        "expected several classes, got {distinct:?}"
    );
}

#[test]
fn corrupt_raster_fails_with_its_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken_scene.tif");
    // a TIFF magic followed by garbage
    let mut bytes = b"II*\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xABu8, 64));
    std::fs::write(&p, bytes).unwrap();
    let e = Raster::open(&p).unwrap_err();
    assert!(format!("{e:#}").contains("broken_scene.tif"), "{e:#}");
    let e = Raster::open(dir.path().join("missing.tif")).unwrap_err();
    assert!(format!("{e:#}").contains("missing.tif"), "{e:#}");
}

/// A 2-band UInt16 GeoTIFF with known values: windowed reads, conversion to f32 and to u8
/// (GDAL clamps), band selection, geotransform round trip.
#[test]
fn synthetic_uint16_geotiff_conversion_and_windows() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("syn.tif");
    let (w, h) = (6usize, 4usize);
    {
        let drv = DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut ds = drv.create_with_band_type::<u16, _>(&p, w, h, 2).unwrap();
        ds.set_geo_transform(&[500.0, 2.0, 0.0, 900.0, 0.0, -2.0])
            .unwrap();
        for b in 1..=2usize {
            let data: Vec<u16> = (0..w * h).map(|i| (i * 100 + b * 7) as u16).collect();
            let mut buf = Buffer::new((w, h), data);
            ds.rasterband(b)
                .unwrap()
                .write((0, 0), (w, h), &mut buf)
                .unwrap();
        }
    }
    let r = Raster::open(&p).unwrap();
    assert_eq!(r.band_types().unwrap(), vec!["UInt16"; 2]);
    assert_eq!(
        r.geo_transform().unwrap(),
        [500.0, 2.0, 0.0, 900.0, 0.0, -2.0]
    );
    let f: Pixels<f32> = r.read(Window::new(2, 1, 3, 2), &[2]).unwrap();
    // pixel (x, y) of band b holds (y·6 + x)·100 + 7b
    assert_eq!(f.data, vec![814.0, 914.0, 1014.0, 1414.0, 1514.0, 1614.0]);
    let u: Pixels<u8> = r.read(Window::new(0, 0, 3, 1), &[1]).unwrap();
    assert_eq!(u.data, vec![7, 107, 207]); // 307 would clamp to 255
    let u: Pixels<u8> = r.read(Window::new(3, 0, 1, 1), &[1]).unwrap();
    assert_eq!(u.data, vec![255]);
    // RGB of a 2-band raster: band 1 replicated
    let rgb = r.read_rgb(Window::new(0, 0, 2, 1)).unwrap();
    assert_eq!(rgb.to_hwc(), vec![7, 7, 7, 107, 107, 107]);
    // index-coded masks (LoveDA style): value − 1, 0 = ignore; 107 is not a class → error
    let m = MaskCoding::Index {
        names: vec!["a".into(); 7],
        offset: 1,
        nodata: 7,
        ignore: 255,
    };
    let e = m.decode(&r, Window::new(0, 0, 2, 1)).unwrap_err();
    assert!(format!("{e:#}").contains("syn.tif"), "{e:#}");
    assert_eq!(m.decode(&r, Window::new(0, 0, 1, 1)).unwrap(), vec![255]);
}

#[test]
fn tile_grid_covers_the_scene_with_full_windows() {
    // width 10, size 4, stride 3: x starts 0, 3, 6 (6 + 4 = 10 ends at the border)
    let g = tile_grid(10, 5, 4, 3).unwrap();
    let xs: Vec<usize> = g.iter().filter(|w| w.y == 0).map(|w| w.x).collect();
    let ys: Vec<usize> = g.iter().filter(|w| w.x == 0).map(|w| w.y).collect();
    assert_eq!(xs, vec![0, 3, 6]);
    // height 5: starts 0, then 1 (shifted to end at the border)
    assert_eq!(ys, vec![0, 1]);
    assert_eq!(g.len(), 6);
    // width 11: 0, 3, 6, then 7 added for the border
    let xs: Vec<usize> = tile_grid(11, 4, 4, 3)
        .unwrap()
        .iter()
        .map(|w| w.x)
        .collect();
    assert_eq!(xs, vec![0, 3, 6, 7]);
    assert!(tile_grid(3, 10, 4, 4).unwrap().is_empty());
    assert!(tile_grid(10, 10, 0, 4).is_err());
}

#[test]
fn tile_index_reads_image_and_mask_tiles_in_parallel() {
    let Some(shared) = shared(
        "tile_index_reads_image_and_mask_tiles_in_parallel",
        "dubai-aerial",
    ) else {
        return;
    };
    let d = shared.join("dubai-aerial/Semantic segmentation dataset/Tile 1");
    let pairs = vec![(
        d.join("images/image_part_001.jpg"),
        Some(d.join("masks/image_part_001.png")),
    )];
    let idx = TileIndex::build(&pairs, 256, 256).unwrap();
    // 797×644: x starts 0, 256, 512, 541; y starts 0, 256, 388
    assert_eq!(idx.scenes[0].width, 797);
    assert_eq!(idx.len(), 12);
    let tiles = read_tiles(&idx, &MaskCoding::Rgb(ColorMap::dubai(255)), 2).unwrap();
    assert_eq!(tiles.len(), 12);
    let full = Raster::open(&pairs[0].0).unwrap().read_all::<u8>().unwrap();
    for (t, data) in idx.tiles.iter().zip(&tiles) {
        assert_eq!(data.rgb_hwc.len(), 256 * 256 * 3);
        assert_eq!(data.labels.as_ref().unwrap().len(), 256 * 256);
        // a pixel of the tile equals the scene's pixel (HWC vs band-sequential)
        let (y, x) = (100, 37);
        for c in 0..3 {
            assert_eq!(
                data.rgb_hwc[(y * 256 + x) * 3 + c],
                full.at(c, t.window.y + y, t.window.x + x)
            );
        }
    }
}

#[test]
fn color_map_maps_known_colours_and_rejects_unknown() {
    let cm = ColorMap::dubai(255);
    // 1×4 mask, band-sequential: building, water, black (ignore), unlabeled
    let px = Pixels {
        data: vec![
            0x3C, 0xE2, 0, 0x9B, 0x10, 0xA9, 0, 0x9B, 0x98, 0x29, 0, 0x9B,
        ],
        bands: 3,
        height: 1,
        width: 4,
    };
    assert_eq!(cm.map(&px).unwrap(), vec![0, 4, 255, 5]);
    let bad = Pixels {
        data: vec![1, 2, 3],
        bands: 3,
        height: 1,
        width: 1,
    };
    let e = cm.map(&bad).unwrap_err();
    assert!(format!("{e}").contains("#010203"), "{e}");
    assert_eq!(ColorMap::potsdam(255).num_classes(), 6);
}
