//! `claires`: train, index, search, evaluate, serve, or reproduce a preset. Thin: all logic is
//! in the library.

use anyhow::{Context, Result};
use claires::config::ClairesConfig;
use claires::index::Index;
use claires::records::{vqa_rad_records, write_json};
use claires::serve::{AppState, ServeConfig};
use claires::train::{
    data_root, evaluate, format_results, load_records, load_run, materialise, split, train,
};
use clap::{Args, Parser, Subcommand};
use contrast_core::train::RunArgs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "CLAIRES: contrastive language–image retrieval search with a web GUI")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct RunDir {
    /// The training run folder (holds config.toml, model.safetensors, report.json).
    #[arg(long)]
    run: PathBuf,
    /// Index folder (default: <run>/index).
    #[arg(long)]
    index: Option<PathBuf>,
}

impl RunDir {
    fn index_dir(&self) -> PathBuf {
        self.index.clone().unwrap_or_else(|| self.run.join("index"))
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model (CLIP on record images and template sentences) and evaluate it.
    Train(RunArgs),
    /// Embed every record's image with a trained model into an on-disk index.
    Index {
        #[command(flatten)]
        dir: RunDir,
        /// Index the records of this CSV/JSON manifest instead of the run's data.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Text → image search over the index.
    Search {
        query: String,
        #[command(flatten)]
        dir: RunDir,
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Image → image search: the indexed images closest to an image file.
    SearchImage {
        image: PathBuf,
        #[command(flatten)]
        dir: RunDir,
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Re-evaluate a trained model on the run's held-out records.
    Eval {
        #[command(flatten)]
        dir: RunDir,
        /// Candidate pool sizes (0 = whole test gallery); default: the run's eval.pools.
        #[arg(long, value_delimiter = ',')]
        pools: Option<Vec<usize>>,
        /// Also draw the top-k retrieval figure (PNG) for a few test queries.
        #[arg(long)]
        figure: Option<PathBuf>,
    },
    /// The web GUI and JSON API.
    Serve {
        #[command(flatten)]
        dir: RunDir,
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// A bounded concurrent load test of a running server's JSON search API (latency
    /// percentiles).
    Loadtest {
        /// The server, e.g. 127.0.0.1:8080.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Queries to cycle through.
        #[arg(long, default_values_t = ["CT of the abdomen".to_string(), "MRI of the head".to_string(), "X-ray of the chest".to_string(), "image of the head, findings: mass".to_string()])]
        query: Vec<String>,
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Write the records built from a VQA-RAD folder as a JSON manifest.
    Convert {
        /// VQA-RAD folder (default: the shared development copy).
        #[arg(long)]
        vqa_rad: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a preset, evaluate both modes, build the index and run a sample search; print the
    /// metrics beside the paper's.
    Reproduce(RunArgs),
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn print_hits(index: &Index, hits: &[claires::index::Hit]) {
    for (r, h) in hits.iter().enumerate() {
        let rec = &index.meta.records[h.index];
        println!(
            "{:>2}. {:.4}  {:<18} {}",
            r + 1,
            h.score,
            rec.id,
            rec.text()
        );
    }
}

fn build_index(run_dir: &Path, out: &Path, manifest: Option<&Path>) -> Result<Index> {
    let (cfg, model) = load_run(run_dir)?;
    let records = match manifest {
        Some(m) => claires::records::load_manifest(m)?,
        None => load_records(&cfg)?,
    };
    let index = Index::build(&model, records, cfg.data.image_size)?;
    index.save(out)?;
    println!(
        "indexed {} images into {} (model checksum {}…)",
        index.len(),
        out.display(),
        &index.meta.model_checksum[..12]
    );
    Ok(index)
}

fn open(dir: &RunDir) -> Result<(ClairesConfig, claires::model::Claires, Index)> {
    let (cfg, model) = load_run(&dir.run)?;
    let index = Index::load(&dir.index_dir(), &model.checksum())?;
    Ok((cfg, model, index))
}

fn paper_table(report: &serde_json::Value) -> String {
    let mut s = String::from("CLAIRES text → image retrieval (held-out records)\n");
    if let Some(rs) = report["results"].as_array() {
        for r in rs {
            let m = &r["metrics"];
            let pool = match r["pool"].as_u64() {
                Some(0) | None => format!("all {}", r["gallery"]),
                Some(p) => format!("{p} of {}", r["gallery"]),
            };
            let hits: Vec<String> = m["hits"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| format!("hit@{} {:.3}", h[0], h[1].as_f64().unwrap_or(f64::NAN)))
                .collect();
            s.push_str(&format!(
                "  ours  {:<11} pool {:<10} {}  MRR {:.3}\n",
                r["mode"].as_str().unwrap_or("?"),
                pool,
                hits.join("  "),
                m["mrr"].as_f64().unwrap_or(f64::NAN)
            ));
        }
    }
    s.push_str(&format!(
        "  paper (Dental CLAIRES, private dental data, mode/pool unknown): hit@3 {}  MRR {}\n\
         caveat: different data (VQA-RAD radiology records here, private periapical radiographs \
         in the paper) and unknown protocol: the numbers are not comparable.\n",
        report["paper"]["hit3"], report["paper"]["mrr"]
    ));
    s
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Train(args) => {
            let cfg: ClairesConfig = args.config(crate_dir())?;
            let out = train(&cfg, &args.run_options("claires"), args.stop_at)?;
            match out.report {
                Some(r) => {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                    println!("run: {}", out.run_dir.display());
                }
                None => println!("stopped at step {} (continue with --resume)", out.step),
            }
            Ok(())
        }
        Cmd::Index { dir, manifest } => {
            build_index(&dir.run, &dir.index_dir(), manifest.as_deref())?;
            Ok(())
        }
        Cmd::Search { query, dir, top } => {
            let (_, model, index) = open(&dir)?;
            let hits = index.search_text(&model, &query, top)?;
            println!("query: {query}");
            print_hits(&index, &hits);
            Ok(())
        }
        Cmd::SearchImage { image, dir, top } => {
            let (_, model, index) = open(&dir)?;
            let hits = index.search_image_file(&model, &image, top)?;
            print_hits(&index, &hits);
            Ok(())
        }
        Cmd::Eval { dir, pools, figure } => {
            let (cfg, model) = load_run(&dir.run)?;
            let records = load_records(&cfg)?;
            let (_, test) = split(&records, cfg.data.test_fraction, cfg.data.split_seed)?;
            anyhow::ensure!(!test.is_empty(), "the run has no held-out records");
            let (x, t) = materialise(&test, cfg.data.image_size)?;
            let fields: Vec<_> = test.iter().map(|r| r.fields.clone()).collect();
            let pools = pools.unwrap_or_else(|| cfg.eval.pools.clone());
            let res = evaluate(&model, &cfg, &x, &t, &fields, &pools)?;
            print!("{}", format_results(&res));
            if let Some(fig) = figure {
                claires::figures::topk_figure(&model, &x, &test, 5, 4, &fig)?;
                println!("figure: {}", fig.display());
            }
            Ok(())
        }
        Cmd::Serve { dir, addr } => {
            let (_, model, index) = open(&dir)?;
            let report = std::fs::read_to_string(dir.run.join("report.json"))
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok());
            let state = Arc::new(AppState::new(model, index, report, ServeConfig::default()));
            let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                println!("CLAIRES on http://{}", listener.local_addr()?);
                claires::serve::serve(listener, state).await
            })
        }
        Cmd::Loadtest {
            addr,
            requests,
            concurrency,
            query,
            top,
        } => {
            use std::net::ToSocketAddrs;
            anyhow::ensure!(
                requests <= 10_000,
                "at most 10000 requests (got {requests})"
            );
            let sa = addr
                .to_socket_addrs()
                .with_context(|| format!("resolving {addr}"))?
                .next()
                .with_context(|| format!("{addr} resolves to nothing"))?;
            let paths: Vec<String> = query
                .iter()
                .map(|q| format!("/api/search?q={}&k={top}", claires::serve::url_encode(q)))
                .collect();
            let r = claires::loadtest::load_test(sa, &paths, requests, concurrency)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Cmd::Convert { vqa_rad, out } => {
            let root = vqa_rad.unwrap_or_else(|| data_root(&ClairesConfig::default()));
            let (records, skipped) = vqa_rad_records(&root)?;
            write_json(&records, &out)?;
            let with_mod = records
                .iter()
                .filter(|r| r.fields.modality.is_some())
                .count();
            let with_find = records
                .iter()
                .filter(|r| r.fields.findings.is_some())
                .count();
            let distinct: std::collections::BTreeSet<String> =
                records.iter().map(|r| r.text()).collect();
            println!(
                "{} records ({skipped} images without questions skipped): {with_mod} with a \
                 modality, {with_find} with findings, {} distinct sentences -> {}",
                records.len(),
                distinct.len(),
                out.display()
            );
            Ok(())
        }
        Cmd::Reproduce(args) => {
            let cfg: ClairesConfig = args.config(crate_dir())?;
            let out = train(&cfg, &args.run_options("claires"), args.stop_at)?;
            let Some(report) = out.report else {
                println!("stopped at step {} (continue with --resume)", out.step);
                return Ok(());
            };
            let idx_dir = out.run_dir.join("index");
            let index = build_index(&out.run_dir, &idx_dir, None)?;
            let (_, model) = load_run(&out.run_dir)?;
            let sample = index.meta.records[0].text();
            let hits = index.search_text(&model, &sample, 5)?;
            println!("\nsample search: \"{sample}\"");
            print_hits(&index, &hits);
            println!("\n{}", paper_table(&report));
            println!(
                "run: {}\nserve it: claires serve --run {}",
                out.run_dir.display(),
                out.run_dir.display()
            );
            Ok(())
        }
    }
}
