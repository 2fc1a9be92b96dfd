//! Image–text records: an image path plus structured clinical fields, the text template that
//! turns the fields into a sentence, manifest loaders (CSV / JSON) and the VQA-RAD converter.

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Structured clinical fields; `None` = unknown (dropped from the sentence, never "unknown").
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fields {
    /// Imaging modality, e.g. `CT`, `MRI`, `X-ray`, `periapical radiograph`.
    pub modality: Option<String>,
    /// Imaging plane / projection, e.g. `axial`, `PA`.
    pub plane: Option<String>,
    /// Body region, e.g. `head`, `chest`, `abdomen`, `mandibular molar`.
    pub organ: Option<String>,
    /// Age band, e.g. `40-49` (rendered "40-49 year old").
    pub age_band: Option<String>,
    /// `female` / `male`.
    pub sex: Option<String>,
    /// Diagnosis, e.g. `periodontitis stage III grade B generalized`.
    pub diagnosis: Option<String>,
    /// Findings, e.g. `mass, edema` or `normal`.
    pub findings: Option<String>,
}

/// The names accepted in manifests, in the template's order.
pub const FIELD_NAMES: [&str; 7] = [
    "modality",
    "plane",
    "organ",
    "age_band",
    "sex",
    "diagnosis",
    "findings",
];

fn clean(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Fields {
    /// The template sentence. Fixed order; a missing field drops its words:
    /// ```text
    /// {plane} {modality|"image"} of the {organ} of a {age_band} year old {sex} patient,
    /// diagnosis: {diagnosis}, findings: {findings}
    /// ```
    /// e.g. `axial CT of the head, findings: hemorrhage`; `image of the chest`.
    pub fn sentence(&self) -> String {
        let mut head: Vec<&str> = Vec::new();
        if let Some(p) = clean(&self.plane) {
            head.push(p);
        }
        head.push(clean(&self.modality).unwrap_or("image"));
        let mut s = head.join(" ");
        if let Some(o) = clean(&self.organ) {
            s.push_str(" of the ");
            s.push_str(o);
        }
        let age = clean(&self.age_band);
        let sex = clean(&self.sex);
        if age.is_some() || sex.is_some() {
            s.push_str(" of a");
            if let Some(a) = age {
                s.push_str(&format!(" {a} year old"));
            }
            if let Some(x) = sex {
                s.push_str(&format!(" {x}"));
            }
            s.push_str(" patient");
        }
        if let Some(d) = clean(&self.diagnosis) {
            s.push_str(&format!(", diagnosis: {d}"));
        }
        if let Some(f) = clean(&self.findings) {
            s.push_str(&format!(", findings: {f}"));
        }
        s
    }

    /// Set a field by its manifest name.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let v = Some(value.trim().to_string()).filter(|s| !s.is_empty());
        match name {
            "modality" => self.modality = v,
            "plane" => self.plane = v,
            "organ" => self.organ = v,
            "age_band" => self.age_band = v,
            "sex" => self.sex = v,
            "diagnosis" => self.diagnosis = v,
            "findings" => self.findings = v,
            other => bail!(
                "unknown field `{other}` (known: {})",
                FIELD_NAMES.join(", ")
            ),
        }
        Ok(())
    }

    /// `(name, value)` of the known fields, in template order.
    pub fn present(&self) -> Vec<(&'static str, &str)> {
        let all = [
            &self.modality,
            &self.plane,
            &self.organ,
            &self.age_band,
            &self.sex,
            &self.diagnosis,
            &self.findings,
        ];
        FIELD_NAMES
            .iter()
            .zip(all)
            .filter_map(|(n, v)| clean(v).map(|v| (*n, v)))
            .collect()
    }
}

/// One image with its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// A stable id (file stem by default).
    pub id: String,
    /// Absolute or manifest-relative image path (resolved on load).
    pub image: PathBuf,
    pub fields: Fields,
}

impl Record {
    pub fn text(&self) -> String {
        self.fields.sentence()
    }
}

/// A flat manifest row: `id` (optional), `image`, and any of [`FIELD_NAMES`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    #[serde(default)]
    id: Option<String>,
    image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    organ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    age_band: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diagnosis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    findings: Option<String>,
}

impl Row {
    fn split(self) -> (Option<String>, String, Fields) {
        let fields = Fields {
            modality: self.modality,
            plane: self.plane,
            organ: self.organ,
            age_band: self.age_band,
            sex: self.sex,
            diagnosis: self.diagnosis,
            findings: self.findings,
        };
        (self.id, self.image, fields)
    }
}

fn resolve(base: &Path, image: &str) -> PathBuf {
    let p = PathBuf::from(image);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn finish(
    rows: Vec<(Option<String>, String, Fields)>,
    base: &Path,
    what: &Path,
) -> Result<Vec<Record>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for (i, (id, image, fields)) in rows.into_iter().enumerate() {
        ensure!(
            !image.trim().is_empty(),
            "{}: record {} has an empty image path",
            what.display(),
            i + 1
        );
        let image = resolve(base, image.trim());
        let id = id
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| stem(&image));
        ensure!(
            seen.insert(id.clone()),
            "{}: duplicate record id `{id}`",
            what.display()
        );
        out.push(Record { id, image, fields });
    }
    ensure!(!out.is_empty(), "{}: no records", what.display());
    Ok(out)
}

/// Load a JSON manifest: an array of `{"image": ..., "id"?: ..., "<field>"?: ...}`. Relative image
/// paths are resolved against the manifest's folder.
pub fn load_json(path: &Path) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Row> = serde_json::from_str(&text)
        .with_context(|| format!("parsing the JSON manifest {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    finish(rows.into_iter().map(Row::split).collect(), base, path)
}

/// Split one CSV line (RFC 4180 quoting: `"a, b"`, `""` for a quote).
fn csv_split(line: &str, lineno: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    ensure!(!quoted, "line {lineno}: unterminated quote");
    out.push(cur);
    Ok(out)
}

/// Load a CSV manifest with a header row naming `image` (required), `id` and any of
/// [`FIELD_NAMES`]; empty cells are missing fields.
pub fn load_csv(path: &Path) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((hi, header)) = lines.next() else {
        bail!("{}: empty CSV manifest", path.display());
    };
    let cols: Vec<String> = csv_split(header.trim_start_matches('\u{feff}'), hi + 1)
        .with_context(|| format!("in {}", path.display()))?
        .into_iter()
        .map(|c| c.trim().to_string())
        .collect();
    let image_col = cols
        .iter()
        .position(|c| c == "image")
        .with_context(|| format!("{}: the header has no `image` column", path.display()))?;
    for c in &cols {
        ensure!(
            c == "image" || c == "id" || FIELD_NAMES.contains(&c.as_str()),
            "{}: unknown column `{c}` (known: image, id, {})",
            path.display(),
            FIELD_NAMES.join(", ")
        );
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let cells = csv_split(line, i + 1).with_context(|| format!("in {}", path.display()))?;
        ensure!(
            cells.len() == cols.len(),
            "{} line {}: {} cells but the header has {} columns",
            path.display(),
            i + 1,
            cells.len(),
            cols.len()
        );
        let mut fields = Fields::default();
        let mut id = None;
        for (c, v) in cols.iter().zip(&cells) {
            match c.as_str() {
                "image" => {}
                "id" => id = Some(v.trim().to_string()),
                name => fields.set(name, v)?,
            }
        }
        rows.push((id, cells[image_col].clone(), fields));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    finish(rows, base, path)
}

/// Load a manifest by extension (`.csv` or `.json`).
pub fn load_manifest(path: &Path) -> Result<Vec<Record>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => load_csv(path),
        Some("json") => load_json(path),
        _ => bail!("{}: a manifest must be .csv or .json", path.display()),
    }
}

/// Write records as a JSON manifest (absolute image paths).
pub fn write_json(records: &[Record], path: &Path) -> Result<()> {
    let rows: Vec<Row> = records
        .iter()
        .map(|r| {
            let f = r.fields.clone();
            Row {
                id: Some(r.id.clone()),
                image: r.image.display().to_string(),
                modality: f.modality,
                plane: f.plane,
                organ: f.organ,
                age_band: f.age_band,
                sex: f.sex,
                diagnosis: f.diagnosis,
                findings: f.findings,
            }
        })
        .collect();
    let text = serde_json::to_string_pretty(&rows)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// VQA-RAD

/// One VQA-RAD question/answer record (`trainset.json` / `testset.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct VqaRadQa {
    pub image_name: String,
    pub image_organ: String,
    /// Strings, sometimes numbers (counts).
    pub answer: serde_json::Value,
    pub answer_type: String,
    pub question_type: String,
    pub question: String,
}

impl VqaRadQa {
    fn answer_text(&self) -> String {
        match &self.answer {
            serde_json::Value::String(s) => s.trim().to_lowercase(),
            v => v.to_string(),
        }
    }
}

/// Lower-case words of a text (split on anything not alphanumeric: "x-ray" → ["x", "ray"]).
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

fn has_phrase(w: &[String], phrase: &[&str]) -> bool {
    w.windows(phrase.len())
        .any(|win| win.iter().zip(phrase).all(|(a, b)| a == b))
}

/// Modalities a text names: CT, MRI (MR, FLAIR, T1, T2, DWI, diffusion), X-ray (x-ray, xray,
/// radiograph, CXR, film), ultrasound.
fn modalities(w: &[String]) -> Vec<&'static str> {
    let any = |ws: &[&str]| w.iter().any(|x| ws.contains(&x.as_str()));
    let mut m = Vec::new();
    if any(&["ct"]) || has_phrase(w, &["computed", "tomography"]) {
        m.push("CT");
    }
    if any(&["mri", "mr", "flair", "t1", "t2", "dwi", "diffusion"]) {
        m.push("MRI");
    }
    if has_phrase(w, &["x", "ray"]) || any(&["xray", "radiograph", "radiography", "cxr"]) {
        m.push("X-ray");
    }
    if any(&["ultrasound", "sonogram"]) {
        m.push("ultrasound");
    }
    m
}

/// Modalities a question refers to as its subject ("on this CT", "the chest x-ray", "a T2").
fn referenced_modalities(w: &[String]) -> Vec<&'static str> {
    const DET: [&str; 6] = ["this", "the", "on", "a", "an", "in"];
    const REGION: [&str; 4] = ["chest", "abdominal", "head", "brain"];
    let mut out = Vec::new();
    for i in 0..w.len() {
        if !DET.contains(&w[i].as_str()) {
            continue;
        }
        let mut j = i + 1;
        if j < w.len() && REGION.contains(&w[j].as_str()) {
            j += 1;
        }
        if j >= w.len() {
            continue;
        }
        let noun: Vec<String> = match w[j].as_str() {
            "film" => vec!["radiograph".into()],
            "x" if j + 1 < w.len() && w[j + 1] == "ray" => vec!["x".into(), "ray".into()],
            "ct" | "mri" | "mr" | "xray" | "radiograph" | "cxr" | "t1" | "t2" | "flair" => {
                vec![w[j].clone()]
            }
            _ => continue,
        };
        out.extend(modalities(&noun));
    }
    out
}

/// Findings vocabulary looked up in closed presence questions answered "yes".
pub const FINDINGS: [&str; 27] = [
    "pneumothorax",
    "effusion",
    "fracture",
    "mass",
    "nodule",
    "edema",
    "hemorrhage",
    "infarct",
    "cardiomegaly",
    "hydrocephalus",
    "calcification",
    "free air",
    "air fluid",
    "lesion",
    "atelectasis",
    "consolidation",
    "enhancement",
    "herniation",
    "midline shift",
    "obstruction",
    "aneurysm",
    "ascites",
    "cyst",
    "abscess",
    "opacity",
    "tumor",
    "enlarged",
];

/// Fields of one image from its question/answer records:
/// * organ: `image_organ` (HEAD → head, CHEST → chest, ABD → abdomen);
/// * modality: votes — open MODALITY answers (3; not for "does not represent" questions),
///   closed "is this / was this / is the image … <modality>?" answered yes (2), closed
///   MODALITY answers naming a modality (2), and every mention of a modality as the subject of
///   a question ("on this CT", 1); the most voted wins (ties: CT, MRI, X-ray, ultrasound order);
///   none → missing;
/// * findings: vocabulary terms ([`FINDINGS`]) of closed PRES questions answered yes, sorted and
///   joined with ", "; without any, `normal` / `abnormal` from closed ABN questions about the
///   whole image ("is this image normal?", "are there abnormal findings?"), else missing.
pub fn vqa_rad_fields(qas: &[&VqaRadQa]) -> Result<Fields> {
    let Some(first) = qas.first() else {
        bail!("no question/answer records for this image");
    };
    let organ = match first.image_organ.trim().to_uppercase().as_str() {
        "HEAD" => "head",
        "CHEST" => "chest",
        "ABD" => "abdomen",
        other => bail!(
            "image {}: unknown image_organ `{other}` (expected HEAD, CHEST or ABD)",
            first.image_name
        ),
    };
    let mut votes: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut findings = BTreeSet::new();
    let mut normal: Option<bool> = None;
    for qa in qas {
        let a = qa.answer_text();
        let aw = words(&a);
        let qw = words(&qa.question);
        let closed = qa.answer_type.trim().eq_ignore_ascii_case("closed");
        let qtype = qa.question_type.to_uppercase();
        let is_mod = qtype.contains("MODALITY");
        let yes = a == "yes";
        if !closed && is_mod && !qw.iter().any(|x| x == "not") {
            for m in modalities(&aw) {
                *votes.entry(m).or_default() += 3;
            }
        } else if yes {
            let ms = modalities(&qw);
            let asks_this = qw.len() >= 2
                && (qw[0] == "is" || qw[0] == "was")
                && (qw[1] == "this"
                    || (qw[1] == "the" && qw.get(2).is_some_and(|x| x == "image" || x == "scan")));
            if ms.len() == 1 && asks_this {
                *votes.entry(ms[0]).or_default() += 2;
            }
        } else if a != "no" && is_mod {
            for m in modalities(&aw) {
                *votes.entry(m).or_default() += 2;
            }
        }
        for m in referenced_modalities(&qw) {
            *votes.entry(m).or_default() += 1;
        }
        if !closed {
            continue;
        }
        if qtype.contains("PRES") && yes {
            for f in FINDINGS {
                let fw: Vec<&str> = f.split(' ').collect();
                if has_phrase(&qw, &fw) {
                    findings.insert(f.replace("air fluid", "air-fluid level"));
                }
            }
        }
        if qtype.contains("ABN") && normal.is_none() {
            let whole = qw.windows(2).any(|p| {
                (p[0] == "this" || p[0] == "the")
                    && ["image", "scan", "study", "film", "radiograph"].contains(&p[1].as_str())
            });
            if qw.iter().any(|x| x == "normal") && whole && (yes || a == "no") {
                normal = Some(yes);
            } else if qw.iter().any(|x| x == "abnormal")
                && (whole || qw.iter().any(|x| x == "findings"))
                && (yes || a == "no")
            {
                normal = Some(!yes);
            }
        }
    }
    const ORDER: [&str; 4] = ["CT", "MRI", "X-ray", "ultrasound"];
    let modality = ORDER
        .iter()
        .filter_map(|m| votes.get(m).map(|v| (*m, *v)))
        .fold(None::<(&str, u32)>, |best, (m, v)| match best {
            Some((_, bv)) if bv >= v => best,
            _ => Some((m, v)),
        })
        .map(|(m, _)| m.to_string());
    let findings = if !findings.is_empty() {
        Some(findings.into_iter().collect::<Vec<_>>().join(", "))
    } else {
        normal.map(|n| {
            if n {
                "normal".into()
            } else {
                "abnormal".into()
            }
        })
    };
    Ok(Fields {
        modality,
        organ: Some(organ.into()),
        findings,
        ..Default::default()
    })
}

/// Build one record per image of a VQA-RAD folder (`trainset.json`, `testset.json`,
/// `images/`); images without any question are skipped (their count is returned). Sorted by id.
pub fn vqa_rad_records(root: &Path) -> Result<(Vec<Record>, usize)> {
    let mut qas: Vec<VqaRadQa> = Vec::new();
    for f in ["trainset.json", "testset.json"] {
        let p = root.join(f);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "reading {} (is {} a VQA-RAD folder with trainset.json, testset.json and images/?)",
                p.display(),
                root.display()
            )
        })?;
        let mut v: Vec<VqaRadQa> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        qas.append(&mut v);
    }
    let mut by: BTreeMap<&str, Vec<&VqaRadQa>> = BTreeMap::new();
    for q in &qas {
        by.entry(q.image_name.as_str()).or_default().push(q);
    }
    let dir = root.join("images");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_lowercase().ends_with(".jpg") || n.to_lowercase().ends_with(".jpeg"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    let mut skipped = 0;
    for n in names {
        let Some(list) = by.get(n.as_str()) else {
            skipped += 1;
            continue;
        };
        let fields = vqa_rad_fields(list).with_context(|| format!("image {n}"))?;
        let image = dir.join(&n);
        out.push(Record {
            id: stem(&image),
            image,
            fields,
        });
    }
    ensure!(
        !out.is_empty(),
        "{}: no image has question/answer records",
        root.display()
    );
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qa(q: &str, a: &str, at: &str, qt: &str) -> VqaRadQa {
        VqaRadQa {
            image_name: "x.jpg".into(),
            image_organ: "HEAD".into(),
            answer: serde_json::Value::String(a.into()),
            answer_type: at.into(),
            question_type: qt.into(),
            question: q.into(),
        }
    }

    #[test]
    fn template_order_and_dropping() {
        let f = Fields {
            modality: Some("periapical radiograph".into()),
            organ: Some("mandibular molar".into()),
            age_band: Some("40-49".into()),
            sex: Some("female".into()),
            diagnosis: Some("stage III grade B".into()),
            ..Default::default()
        };
        assert_eq!(
            f.sentence(),
            "periapical radiograph of the mandibular molar of a 40-49 year old female patient, \
             diagnosis: stage III grade B"
        );
        let g = Fields {
            organ: Some("chest".into()),
            findings: Some("  ".into()),
            sex: Some("male".into()),
            ..Default::default()
        };
        assert_eq!(g.sentence(), "image of the chest of a male patient");
        let h = Fields {
            plane: Some("axial".into()),
            modality: Some("CT".into()),
            organ: Some("head".into()),
            findings: Some("hemorrhage".into()),
            ..Default::default()
        };
        assert_eq!(h.sentence(), "axial CT of the head, findings: hemorrhage");
        assert_eq!(
            h.present(),
            vec![
                ("modality", "CT"),
                ("plane", "axial"),
                ("organ", "head"),
                ("findings", "hemorrhage")
            ]
        );
    }

    #[test]
    fn csv_and_json_manifests() {
        let d = tempfile::tempdir().unwrap();
        let csv = d.path().join("m.csv");
        std::fs::write(
            &csv,
            "image,organ,modality,findings,sex\na.jpg,chest,X-ray,\"mass, edema\",\n/abs/b.png,head,,,female\n",
        )
        .unwrap();
        let r = load_manifest(&csv).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].id, "a");
        assert_eq!(r[0].image, d.path().join("a.jpg"));
        assert_eq!(r[0].text(), "X-ray of the chest, findings: mass, edema");
        assert_eq!(r[1].image, PathBuf::from("/abs/b.png"));
        assert_eq!(r[1].text(), "image of the head of a female patient");
        let json = d.path().join("m.json");
        write_json(&r, &json).unwrap();
        assert_eq!(load_manifest(&json).unwrap(), r);
        std::fs::write(&csv, "image,colour\na.jpg,red\n").unwrap();
        let e = format!("{:#}", load_manifest(&csv).unwrap_err());
        assert!(e.contains("unknown column `colour`"), "{e}");
        std::fs::write(&csv, "image,organ\na.jpg\n").unwrap();
        assert!(load_manifest(&csv).is_err());
        std::fs::write(&json, r#"[{"image":"a.jpg","colour":"red"}]"#).unwrap();
        assert!(load_manifest(&json).is_err());
    }

    #[test]
    fn vqa_rad_rules() {
        let qs = [
            qa(
                "What kind of scan is this?",
                "MRI - T2 weighted",
                "OPEN",
                "MODALITY",
            ),
            qa("Is there evidence of a mass?", "Yes", "CLOSED", "PRES"),
            qa("Is there a pneumothorax?", "no", "CLOSED", "PRES"),
            qa(
                "Is there midline shift on this CT?",
                "yes",
                "CLOSED",
                "PRES",
            ),
            qa("Is this image normal?", "No", "CLOSED", "ABN"),
        ];
        let refs: Vec<&VqaRadQa> = qs.iter().collect();
        let f = vqa_rad_fields(&refs).unwrap();
        // MRI: 3 (open answer); CT: 1 (referenced as "this CT")
        assert_eq!(f.modality.as_deref(), Some("MRI"));
        assert_eq!(f.organ.as_deref(), Some("head"));
        assert_eq!(f.findings.as_deref(), Some("mass, midline shift"));
        let qs = [
            qa("Is this a chest x-ray?", "yes", "CLOSED", "MODALITY"),
            qa(
                "What imaging does this not represent?",
                "ultrasound",
                "OPEN",
                "MODALITY",
            ),
            qa("Is this image normal?", "No", "CLOSED", "ABN"),
        ];
        let refs: Vec<&VqaRadQa> = qs.iter().collect();
        let f = vqa_rad_fields(&refs).unwrap();
        assert_eq!(f.modality.as_deref(), Some("X-ray"));
        assert_eq!(f.findings.as_deref(), Some("abnormal"));
        let qs = [qa("Is the liver normal?", "yes", "CLOSED", "ABN")];
        let refs: Vec<&VqaRadQa> = qs.iter().collect();
        let f = vqa_rad_fields(&refs).unwrap();
        assert_eq!((f.modality, f.findings), (None, None));
        let mut bad = qa("q", "a", "OPEN", "PRES");
        bad.image_organ = "LEG".into();
        assert!(vqa_rad_fields(&[&bad]).is_err());
    }
}
