//! Raster I/O through GDAL (`gdal` 0.19 on the system libgdal): any raster GDAL opens (GeoTIFF,
//! JPEG, PNG, …), multi-band, windowed reads with on-the-fly data-type conversion, palette
//! expansion; tiling of large scenes into patches with an index; RGB-coded masks → class ids.
//!
//! A GDAL `Dataset` is `Send` but not `Sync` (`DEPENDENCIES.md`): a [`Raster`] is owned by one
//! thread. [`read_tiles`] reads a [`TileIndex`] in parallel with one open `Dataset` per rayon
//! worker (`map_init`), never sharing one between threads.

use anyhow::{bail, ensure, Context, Result};
use gdal::raster::GdalType;
use gdal::Dataset;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A pixel window `[x, x + width) × [y, y + height)` (x = column, y = row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Window {
    pub fn new(x: usize, y: usize, width: usize, height: usize) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }
}

/// Band-sequential pixels `[bands][height][width]` of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels<T> {
    pub data: Vec<T>,
    pub bands: usize,
    pub height: usize,
    pub width: usize,
}

impl<T: Copy> Pixels<T> {
    /// The value at band `b` (0-based), row `y`, column `x`.
    pub fn at(&self, b: usize, y: usize, x: usize) -> T {
        self.data[(b * self.height + y) * self.width + x]
    }

    /// Pixel-interleaved `[height][width][bands]` (the layout of a PIL image / core `ImageRef`).
    pub fn to_hwc(&self) -> Vec<T> {
        let plane = self.height * self.width;
        let mut out = Vec::with_capacity(self.data.len());
        for i in 0..plane {
            for b in 0..self.bands {
                out.push(self.data[b * plane + i]);
            }
        }
        out
    }
}

/// An open raster file (one thread only; see the module docs).
pub struct Raster {
    path: PathBuf,
    ds: Dataset,
}

impl std::fmt::Debug for Raster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Raster({})", self.path.display())
    }
}

impl Raster {
    /// The most bands a raster may have (RGBIR needs 4): a corrupt header can claim 65,000
    /// pixel-interleaved bands, and GDAL then decodes all of them for every block read.
    pub const MAX_BANDS: usize = 64;

    /// Open any raster GDAL can read; the error names the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let ds = Dataset::open(&path)
            .with_context(|| format!("GDAL cannot open raster {}", path.display()))?;
        let r = Self { path, ds };
        ensure!(
            r.bands() > 0,
            "raster {} has no raster bands",
            r.path.display()
        );
        ensure!(
            r.bands() <= Self::MAX_BANDS,
            "raster {} has {} bands, more than {} (corrupt file?)",
            r.path.display(),
            r.bands(),
            Self::MAX_BANDS
        );
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(width, height)` in pixels.
    pub fn size(&self) -> (usize, usize) {
        self.ds.raster_size()
    }

    /// Number of bands.
    pub fn bands(&self) -> usize {
        self.ds.raster_count()
    }

    /// GDAL data type name of every band (`Byte`, `UInt16`, `Float32`, …).
    pub fn band_types(&self) -> Result<Vec<String>> {
        (1..=self.bands())
            .map(|b| Ok(self.band(b)?.band_type().name()))
            .collect()
    }

    /// The affine geotransform `[x0, dx, rx, y0, ry, dy]`; `None` for rasters without
    /// georeferencing (a plain JPEG/PNG).
    pub fn geo_transform(&self) -> Option<[f64; 6]> {
        self.ds.geo_transform().ok()
    }

    /// The no-data value of band `b` (1-based), if set.
    pub fn nodata(&self, b: usize) -> Result<Option<f64>> {
        Ok(self.band(b)?.no_data_value())
    }

    fn band(&self, b: usize) -> Result<gdal::raster::RasterBand<'_>> {
        ensure!(
            b >= 1 && b <= self.bands(),
            "band {b} out of range 1..={} in {}",
            self.bands(),
            self.path.display()
        );
        self.ds
            .rasterband(b)
            .with_context(|| format!("band {b} of {}", self.path.display()))
    }

    fn check_window(&self, w: &Window) -> Result<()> {
        let (cols, rows) = self.size();
        ensure!(
            w.width > 0 && w.height > 0 && w.x + w.width <= cols && w.y + w.height <= rows,
            "window {w:?} is outside {} ({cols}×{rows})",
            self.path.display()
        );
        Ok(())
    }

    /// Read `bands` (1-based; empty = all) of `window`, converted by GDAL to `T`.
    pub fn read<T: Copy + GdalType>(&self, window: Window, bands: &[usize]) -> Result<Pixels<T>> {
        self.check_window(&window)?;
        let all: Vec<usize> = (1..=self.bands()).collect();
        let bands = if bands.is_empty() { &all[..] } else { bands };
        let mut data = Vec::with_capacity(bands.len() * window.width * window.height);
        for &b in bands {
            let buf = self
                .band(b)?
                .read_as::<T>(
                    (window.x as isize, window.y as isize),
                    (window.width, window.height),
                    (window.width, window.height),
                    None,
                )
                .with_context(|| {
                    format!(
                        "reading band {b} window {window:?} of {}",
                        self.path.display()
                    )
                })?;
            data.extend_from_slice(buf.data());
        }
        Ok(Pixels {
            data,
            bands: bands.len(),
            height: window.height,
            width: window.width,
        })
    }

    /// The whole raster as `T`.
    pub fn read_all<T: Copy + GdalType>(&self) -> Result<Pixels<T>> {
        let (w, h) = self.size();
        self.read(Window::new(0, 0, w, h), &[])
    }

    /// `window` as 8-bit RGB: the first three bands of a multi-band raster (Potsdam RGBIR → RGB,
    /// as GraSS's PIL `convert("RGB")`), a palette band expanded through its colour table, a
    /// single grey band replicated. Non-byte data is converted by GDAL (values clamp to 0–255).
    pub fn read_rgb(&self, window: Window) -> Result<Pixels<u8>> {
        let n = self.bands();
        if n >= 3 {
            return self.read::<u8>(window, &[1, 2, 3]);
        }
        let one = self.read::<u8>(window, &[1])?;
        let band = self.band(1)?;
        let plane = window.width * window.height;
        let mut data = vec![0u8; 3 * plane];
        if let Some(ct) = band.color_table() {
            let lut: Vec<[u8; 3]> = (0..ct.entry_count())
                .map(|i| {
                    ct.entry_as_rgb(i).map_or([0, 0, 0], |e| {
                        [
                            e.r.clamp(0, 255) as u8,
                            e.g.clamp(0, 255) as u8,
                            e.b.clamp(0, 255) as u8,
                        ]
                    })
                })
                .collect();
            for (i, &v) in one.data.iter().enumerate() {
                let Some(c) = lut.get(v as usize) else {
                    bail!(
                        "palette index {v} has no colour-table entry ({} entries) in {}",
                        lut.len(),
                        self.path.display()
                    );
                };
                for k in 0..3 {
                    data[k * plane + i] = c[k];
                }
            }
        } else {
            for k in 0..3 {
                data[k * plane..(k + 1) * plane].copy_from_slice(&one.data);
            }
        }
        Ok(Pixels {
            data,
            bands: 3,
            height: window.height,
            width: window.width,
        })
    }
}

/// The most windows [`tile_grid`] cuts one scene into (4 Mi; a 6000 × 6000 Potsdam tile gives
/// 2,116 at size 256, stride 128). A corrupt header can claim a 65535 × 65535 scene in a 2 KB
/// file, which would otherwise be cut into 67 million windows (4.8 GB of tile list).
pub const MAX_TILES: u64 = 1 << 22;

/// Windows of `size × size` with step `stride` covering a `width × height` scene. Along each
/// axis the last window is shifted to end at the border (so every pixel is covered and every
/// window is full-size); a scene smaller than `size` gives no window. More than [`MAX_TILES`]
/// windows is an error.
pub fn tile_grid(width: usize, height: usize, size: usize, stride: usize) -> Result<Vec<Window>> {
    ensure!(
        size > 0 && stride > 0,
        "tile size and stride must be > 0, got {size}/{stride}"
    );
    let count = |n: usize| -> u64 {
        if n < size {
            0
        } else {
            ((n - size) / stride + 1 + usize::from(!(n - size).is_multiple_of(stride))) as u64
        }
    };
    let n = count(width).saturating_mul(count(height));
    ensure!(
        n <= MAX_TILES,
        "a {width} × {height} scene in {size}-pixel tiles every {stride} pixels gives {n} tiles, \
         more than {MAX_TILES} (a corrupt size, or a stride too small)"
    );
    let starts = |n: usize| -> Vec<usize> {
        if n < size {
            return vec![];
        }
        let mut v: Vec<usize> = (0..=n - size).step_by(stride).collect();
        if *v.last().unwrap_or(&0) != n - size {
            v.push(n - size);
        }
        v
    };
    let (xs, ys) = (starts(width), starts(height));
    Ok(ys
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| Window::new(x, y, size, size)))
        .collect())
}

/// One tile of a [`TileIndex`]: image (and optional mask) file and the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tile {
    /// Index into [`TileIndex::scenes`].
    pub scene: usize,
    pub window: Window,
}

/// A scene: image file, optional mask file, size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub image: PathBuf,
    pub mask: Option<PathBuf>,
    pub width: usize,
    pub height: usize,
}

/// Tiles of a set of scenes (serialisable as JSON next to a run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TileIndex {
    pub size: usize,
    pub stride: usize,
    pub scenes: Vec<Scene>,
    pub tiles: Vec<Tile>,
}

impl TileIndex {
    /// Open every scene (image, mask) once to read its size, check that the mask matches,
    /// and cut it into tiles.
    pub fn build(pairs: &[(PathBuf, Option<PathBuf>)], size: usize, stride: usize) -> Result<Self> {
        let mut idx = TileIndex {
            size,
            stride,
            ..Default::default()
        };
        for (image, mask) in pairs {
            let (width, height) = Raster::open(image)?.size();
            if let Some(m) = mask {
                let ms = Raster::open(m)?.size();
                ensure!(
                    ms == (width, height),
                    "mask {} is {}×{} but image {} is {width}×{height}",
                    m.display(),
                    ms.0,
                    ms.1,
                    image.display()
                );
            }
            let s = idx.scenes.len();
            for window in tile_grid(width, height, size, stride)
                .with_context(|| format!("tiling {}", image.display()))?
            {
                idx.tiles.push(Tile { scene: s, window });
            }
            idx.scenes.push(Scene {
                image: image.clone(),
                mask: mask.clone(),
                width,
                height,
            });
        }
        Ok(idx)
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }
}

/// A read tile: RGB pixels `[H][W][3]` and, with a mask, class ids `[H][W]`.
#[derive(Debug, Clone)]
pub struct TileData {
    pub rgb_hwc: Vec<u8>,
    pub labels: Option<Vec<i64>>,
}

/// Read every tile of `idx` (RGB + mapped mask) with `threads` rayon workers (0 = all cores),
/// each keeping its own open `Dataset`s (GDAL datasets are not `Sync`).
pub fn read_tiles(idx: &TileIndex, masks: &MaskCoding, threads: usize) -> Result<Vec<TileData>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building the raster reader pool")?;
    pool.install(|| {
        idx.tiles
            .par_iter()
            .map_init(HashMap::<PathBuf, Raster>::new, |open, t| {
                let scene = &idx.scenes[t.scene];
                let mut get = |p: &PathBuf| -> Result<()> {
                    if !open.contains_key(p) {
                        open.insert(p.clone(), Raster::open(p)?);
                    }
                    Ok(())
                };
                get(&scene.image)?;
                if let Some(m) = &scene.mask {
                    get(m)?;
                }
                let rgb = open[&scene.image].read_rgb(t.window)?;
                let labels = match &scene.mask {
                    Some(m) => Some(masks.decode(&open[m], t.window)?),
                    None => None,
                };
                Ok(TileData {
                    rgb_hwc: rgb.to_hwc(),
                    labels,
                })
            })
            .collect()
    })
}

/// Parse `#RRGGBB`.
pub fn parse_hex(s: &str) -> Result<[u8; 3]> {
    let h = s.trim().trim_start_matches('#');
    ensure!(h.len() == 6 && h.is_ascii(), "colour `{s}` is not #RRGGBB");
    let c = |i: usize| {
        u8::from_str_radix(&h[i..i + 2], 16).with_context(|| format!("colour `{s}` is not #RRGGBB"))
    };
    Ok([c(0)?, c(2)?, c(4)?])
}

/// RGB-coded mask → class ids. Colours listed in `ignore_colors` map to `ignore`; any other
/// colour not in the table is an error (a wrong palette should not silently become "ignore").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColorMap {
    /// `(class name, colour)`; the class id is the position.
    pub classes: Vec<(String, [u8; 3])>,
    pub ignore_colors: Vec<[u8; 3]>,
    pub ignore: i64,
}

impl ColorMap {
    /// From `(name, "#RRGGBB")` pairs.
    pub fn from_hex(classes: &[(&str, &str)], ignore: &[&str], ignore_index: i64) -> Result<Self> {
        Ok(Self {
            classes: classes
                .iter()
                .map(|(n, c)| Ok((n.to_string(), parse_hex(c)?)))
                .collect::<Result<_>>()?,
            ignore_colors: ignore.iter().map(|c| parse_hex(c)).collect::<Result<_>>()?,
            ignore: ignore_index,
        })
    }

    /// The colours actually used by the Dubai aerial masks (`shared/data/README.md`; they
    /// differ from its `classes.json`): Building, Land, Road, Vegetation, Water, Unlabeled;
    /// `#000000` (≈ 0.56 % of pixels) is ignored.
    pub fn dubai(ignore_index: i64) -> Self {
        Self::from_hex(
            &[
                ("building", "#3C1098"),
                ("land", "#8429F6"),
                ("road", "#6EC1E4"),
                ("vegetation", "#FEDD3A"),
                ("water", "#E2A929"),
                ("unlabeled", "#9B9B9B"),
            ],
            &["#000000"],
            ignore_index,
        )
        .expect("valid literal colours")
    }

    /// ISPRS Potsdam (torchgeo order): clutter, impervious, building, low vegetation, tree, car.
    pub fn potsdam(ignore_index: i64) -> Self {
        Self::from_hex(
            &[
                ("clutter", "#FF0000"),
                ("impervious_surfaces", "#FFFFFF"),
                ("building", "#0000FF"),
                ("low_vegetation", "#00FFFF"),
                ("tree", "#00FF00"),
                ("car", "#FFFF00"),
            ],
            &[],
            ignore_index,
        )
        .expect("valid literal colours")
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    pub fn names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.0.clone()).collect()
    }

    /// Map a 3-band (band-sequential) mask to ids `[H][W]`.
    pub fn map(&self, px: &Pixels<u8>) -> Result<Vec<i64>> {
        ensure!(px.bands == 3, "an RGB mask needs 3 bands, got {}", px.bands);
        let key = |c: [u8; 3]| (c[0] as u32) << 16 | (c[1] as u32) << 8 | c[2] as u32;
        let mut lut: HashMap<u32, i64> = HashMap::new();
        for (i, (_, c)) in self.classes.iter().enumerate() {
            lut.insert(key(*c), i as i64);
        }
        for c in &self.ignore_colors {
            lut.insert(key(*c), self.ignore);
        }
        let plane = px.height * px.width;
        let mut out = Vec::with_capacity(plane);
        for i in 0..plane {
            let c = [px.data[i], px.data[plane + i], px.data[2 * plane + i]];
            match lut.get(&key(c)) {
                Some(&id) => out.push(id),
                None => bail!(
                    "mask colour #{:02X}{:02X}{:02X} at pixel ({}, {}) is not in the colour map",
                    c[0],
                    c[1],
                    c[2],
                    i % px.width,
                    i / px.width
                ),
            }
        }
        Ok(out)
    }
}

/// How a mask file encodes classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MaskCoding {
    /// RGB colours (Potsdam, Dubai).
    Rgb(ColorMap),
    /// One band of class values: id = value − `offset`; `nodata` values (and values mapping
    /// outside `0..classes`) are errors unless equal to `nodata`, which maps to `ignore`
    /// (LoveDA: offset 1, nodata 0).
    Index {
        names: Vec<String>,
        offset: i64,
        nodata: i64,
        ignore: i64,
    },
}

impl MaskCoding {
    pub fn num_classes(&self) -> usize {
        match self {
            MaskCoding::Rgb(c) => c.num_classes(),
            MaskCoding::Index { names, .. } => names.len(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        match self {
            MaskCoding::Rgb(c) => c.names(),
            MaskCoding::Index { names, .. } => names.clone(),
        }
    }

    pub fn ignore(&self) -> i64 {
        match self {
            MaskCoding::Rgb(c) => c.ignore,
            MaskCoding::Index { ignore, .. } => *ignore,
        }
    }

    /// LoveDA: values 1..=7 = background, building, road, water, barren, forest, agriculture;
    /// 0 = no-data (ignored).
    pub fn loveda(ignore: i64) -> Self {
        MaskCoding::Index {
            names: [
                "background",
                "building",
                "road",
                "water",
                "barren",
                "forest",
                "agriculture",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            offset: 1,
            nodata: 0,
            ignore,
        }
    }

    /// Class ids `[H][W]` of `window` of a mask raster (errors name the file).
    pub fn decode(&self, r: &Raster, window: Window) -> Result<Vec<i64>> {
        let ctx = || format!("decoding mask {}", r.path().display());
        match self {
            MaskCoding::Rgb(c) => c.map(&r.read_rgb(window)?).with_context(ctx),
            MaskCoding::Index {
                names,
                offset,
                nodata,
                ignore,
            } => {
                let px = r.read::<i32>(window, &[1])?;
                px.data
                    .iter()
                    .map(|&v| {
                        let v = v as i64;
                        if v == *nodata {
                            return Ok(*ignore);
                        }
                        let id = v - offset;
                        ensure!(
                            (0..names.len() as i64).contains(&id),
                            "mask value {v} is not a class (offset {offset}, {} classes)",
                            names.len()
                        );
                        Ok(id)
                    })
                    .collect::<Result<Vec<_>>>()
                    .with_context(ctx)
            }
        }
    }
}
