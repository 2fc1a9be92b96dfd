//! Per-iteration schedules for learning rate, weight decay and EMA momentum, as data.
//!
//! A [`Schedule`] deserialises from TOML (`kind = "..."`) and maps an optimisation step (0-based,
//! counted in iterations) to a value with [`Schedule::value`]. Kinds:
//!
//! | kind | value at step s |
//! |---|---|
//! | `constant` | `value` |
//! | `linear` | `end·w + start·(1 − w)`, `w = min(s / steps, 1)` (classy-vision `LinearParamScheduler`) |
//! | `cosine` | `end + ½(start − end)(1 + cos(π s / steps))`, `end` for `s ≥ steps` |
//! | `warmup_cosine` | DINO/PatchMix `cosine_scheduler` (below) |
//! | `cosine_wave` | `trough + ½(peak − trough)(1 + cos(π (s + phase) / half_period))` (no clamping) |
//! | `step` | `base · gamma^#{m ∈ milestones : m ≤ s}` (`torch.optim.lr_scheduler.MultiStepLR`) |
//! | `poly` | `(base − end)(1 − min(s, steps)/steps)^power + end` (MMSegmentation `poly`, `min_lr = end`) |
//! | `composite` | piece k covers `[until_{k−1}, until_k)` and is evaluated at `s − until_{k−1}`; steps past the last `until` stay in the last piece |
//!
//! `warmup_cosine` is PatchMix `utils/misc.py::cosine_scheduler` (= DINO's) exactly, with
//! `W = warmup_steps`, `T = total_steps`:
//! `s < W`: `np.linspace(warmup_start, base, W)[s]` (endpoint included: `base` is reached at
//! `s = W − 1`); `W ≤ s < T`: `final + ½(base − final)(1 + cos(π (s − W) / (T − W)))`; `s ≥ T`:
//! `final` (the Python array has no entry there).
//!
//! Recipes: PatchMix lr = `warmup_cosine { base = base_lr·batch/256 ([`scaled_lr`]), final =
//! 1e-6, warmup = 100 epochs }`; its weight decay = `cosine { start = 0.04, end = 0.4 }`
//! (cosine *increasing*, DINO); EMA momentum 0.996 → 1 (BYOL / MoCo-v3 / PatchMix
//! `adjust_moco_momentum`) = `cosine { start = 0.996, end = 1 }` over all steps
//! ([`Schedule::ema_momentum`]); GraSS's VISSL composite = [`Schedule::grass_vissl`].

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// One piece of a [`Schedule::Composite`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// First step *not* covered by this piece (absolute).
    pub until: u64,
    pub schedule: Schedule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant {
        value: f64,
    },
    Linear {
        start: f64,
        end: f64,
        /// May be fractional (VISSL expresses lengths as fractions of training).
        steps: f64,
    },
    Cosine {
        start: f64,
        end: f64,
        steps: u64,
    },
    WarmupCosine {
        base: f64,
        final_value: f64,
        total_steps: u64,
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        warmup_start: f64,
    },
    CosineWave {
        peak: f64,
        trough: f64,
        half_period: f64,
        #[serde(default)]
        phase: f64,
    },
    Step {
        base: f64,
        milestones: Vec<u64>,
        gamma: f64,
    },
    Poly {
        base: f64,
        #[serde(default)]
        end: f64,
        power: f64,
        steps: u64,
    },
    Composite {
        pieces: Vec<Piece>,
    },
}

/// The linear scaling rule `base_lr · batch / 256` (Goyal et al. 2017; PatchMix, MoCo-v3).
pub fn scaled_lr(base_lr: f64, batch: usize) -> f64 {
    base_lr * batch as f64 / 256.0
}

fn finite(xs: &[(&str, f64)]) -> Result<()> {
    for (n, x) in xs {
        ensure!(x.is_finite(), "schedule value `{n}` = {x} is not finite");
    }
    Ok(())
}

impl Schedule {
    /// A constant.
    pub fn constant(value: f64) -> Self {
        Schedule::Constant { value }
    }

    /// Cosine EMA momentum from `start` (e.g. 0.996) to 1 over `total_steps`:
    /// `m = 1 − ½(1 + cos(π s/T))(1 − start)` (BYOL; MoCo-v3 / PatchMix `adjust_moco_momentum`
    /// with fractional epoch `s / steps_per_epoch`).
    pub fn ema_momentum(start: f64, total_steps: u64) -> Self {
        Schedule::Cosine {
            start,
            end: 1.0,
            steps: total_steps,
        }
    }

    /// GraSS's learning rate (`grass_1gpu_resnet_b256.yaml`, VISSL `composite` with rescaled
    /// intervals; `shared/papers/grass-claires.md` §1.5) over `total_steps` iterations, as a
    /// composite of exactly the values VISSL computes at `where = step / total_steps`:
    /// * `where < 0.1`: linear 0.6 → 4.8;
    /// * else `u = (where − 0.1)/0.9` into `cosine_warm_restart { start 4.8, end 0.0048,
    ///   wave_type full, is_adaptive, restart_interval_length 0.334 }`: restarts at u ∈ {0,
    ///   0.334}, adaptive peaks `end + ½(start − end)(1 + cos(π(0.334 + r)))` ≈ 3.5954, 1.1929,
    ///   value `end + ½(peak_k − end)(1 + cos(π u / 0.334))` (the cosine phase runs on, so the
    ///   second wave first rises from 0.0048 to its peak at u = 0.668, then falls).
    ///
    /// Piece boundaries are the first steps VISSL assigns to the next piece (classy-vision's
    /// `where + 1e-6 > 0.1` test, `bisect` for the restart), and the fractional offsets of those
    /// integer boundaries go into the `phase`, so the values match at every step.
    pub fn grass_vissl(total_steps: u64) -> Result<Self> {
        ensure!(total_steps > 0, "GraSS schedule needs total_steps > 0");
        let t = total_steps as f64;
        let (start, end, len) = (4.8_f64, 0.0048_f64, 0.334_f64);
        let peak = |r: f64| end + 0.5 * (start - end) * (1.0 + (PI * (len + r)).cos());
        let where_ = |s: u64| s as f64 / t;
        // first step of the restart part: classy `CompositeParamScheduler` moves on when
        // `where + WHERE_EPSILON > running_total`
        let b1 = (0..=total_steps)
            .find(|&s| where_(s) + 1e-6 > 0.1)
            .unwrap_or(total_steps);
        let u = |s: u64| (where_(s) - 0.1) / 0.9;
        let b2 = (b1..=total_steps)
            .find(|&s| u(s) >= len)
            .unwrap_or(total_steps);
        let half_period = len * 0.9 * t; // π·u/len = π·(step − 0.1T)/(len·0.9T)
        Ok(Schedule::Composite {
            pieces: vec![
                Piece {
                    until: b1,
                    schedule: Schedule::Linear {
                        start: 0.6,
                        end: 4.8,
                        steps: 0.1 * t,
                    },
                },
                Piece {
                    until: b2,
                    schedule: Schedule::CosineWave {
                        peak: peak(0.0),
                        trough: end,
                        half_period,
                        phase: b1 as f64 - 0.1 * t,
                    },
                },
                Piece {
                    until: total_steps.max(b2 + 1),
                    schedule: Schedule::CosineWave {
                        peak: peak(len),
                        trough: end,
                        half_period,
                        phase: b2 as f64 - 0.1 * t,
                    },
                },
            ],
        })
    }

    /// Check the parameters (call once after deserialising; errors name the field).
    pub fn validate(&self) -> Result<()> {
        match self {
            Schedule::Constant { value } => finite(&[("value", *value)]),
            Schedule::Linear { start, end, steps } => {
                finite(&[("start", *start), ("end", *end), ("steps", *steps)])?;
                ensure!(*steps > 0.0, "linear schedule needs steps > 0, got {steps}");
                Ok(())
            }
            Schedule::Cosine { start, end, steps } => {
                finite(&[("start", *start), ("end", *end)])?;
                ensure!(*steps > 0, "cosine schedule needs steps > 0");
                Ok(())
            }
            Schedule::WarmupCosine {
                base,
                final_value,
                total_steps,
                warmup_steps,
                warmup_start,
            } => {
                finite(&[
                    ("base", *base),
                    ("final_value", *final_value),
                    ("warmup_start", *warmup_start),
                ])?;
                ensure!(
                    warmup_steps < total_steps,
                    "warmup_cosine: warmup_steps {warmup_steps} must be < total_steps {total_steps}"
                );
                Ok(())
            }
            Schedule::CosineWave {
                peak,
                trough,
                half_period,
                phase,
            } => {
                finite(&[
                    ("peak", *peak),
                    ("trough", *trough),
                    ("half_period", *half_period),
                    ("phase", *phase),
                ])?;
                ensure!(*half_period > 0.0, "cosine_wave needs half_period > 0");
                Ok(())
            }
            Schedule::Step {
                base,
                milestones,
                gamma,
            } => {
                finite(&[("base", *base), ("gamma", *gamma)])?;
                ensure!(
                    milestones.windows(2).all(|w| w[0] <= w[1]),
                    "step schedule milestones must be sorted: {milestones:?}"
                );
                Ok(())
            }
            Schedule::Poly {
                base,
                end,
                power,
                steps,
            } => {
                finite(&[("base", *base), ("end", *end), ("power", *power)])?;
                ensure!(*steps > 0, "poly schedule needs steps > 0");
                ensure!(*power > 0.0, "poly schedule needs power > 0, got {power}");
                Ok(())
            }
            Schedule::Composite { pieces } => {
                ensure!(!pieces.is_empty(), "composite schedule has no pieces");
                let mut prev = 0u64;
                for (i, p) in pieces.iter().enumerate() {
                    ensure!(
                        p.until > prev,
                        "composite piece {i} ends at step {} but must end after step {prev}",
                        p.until
                    );
                    p.schedule
                        .validate()
                        .with_context(|| format!("composite piece {i}"))?;
                    prev = p.until;
                }
                Ok(())
            }
        }
    }

    /// Parse from a TOML table (e.g. `kind = "cosine"\nstart = 0.04\nend = 0.4\nsteps = 1000`)
    /// and validate.
    pub fn from_toml(text: &str) -> Result<Self> {
        let s: Schedule = toml::from_str(text).context("parsing a schedule")?;
        s.validate()?;
        Ok(s)
    }

    /// The value at (0-based) iteration `step`. Assumes [`Schedule::validate`] passed.
    pub fn value(&self, step: u64) -> f64 {
        let s = step as f64;
        match self {
            Schedule::Constant { value } => *value,
            Schedule::Linear { start, end, steps } => {
                let w = (s / steps).min(1.0);
                end * w + start * (1.0 - w)
            }
            Schedule::Cosine { start, end, steps } => {
                if step >= *steps {
                    *end
                } else {
                    end + 0.5 * (start - end) * (1.0 + (PI * s / *steps as f64).cos())
                }
            }
            Schedule::WarmupCosine {
                base,
                final_value,
                total_steps,
                warmup_steps,
                warmup_start,
            } => {
                if step < *warmup_steps {
                    if *warmup_steps == 1 {
                        *warmup_start
                    } else {
                        // np.linspace(start, base, W): start + i·(base − start)/(W − 1)
                        let delta = (base - warmup_start) / (*warmup_steps - 1) as f64;
                        s * delta + warmup_start
                    }
                } else if step < *total_steps {
                    let i = (step - warmup_steps) as f64;
                    let n = (total_steps - warmup_steps) as f64;
                    final_value + 0.5 * (base - final_value) * (1.0 + (PI * i / n).cos())
                } else {
                    *final_value
                }
            }
            Schedule::CosineWave {
                peak,
                trough,
                half_period,
                phase,
            } => trough + 0.5 * (peak - trough) * (1.0 + (PI * (s + phase) / half_period).cos()),
            Schedule::Step {
                base,
                milestones,
                gamma,
            } => {
                let k = milestones.iter().filter(|&&m| m <= step).count();
                base * gamma.powi(k as i32)
            }
            Schedule::Poly {
                base,
                end,
                power,
                steps,
            } => {
                let f = 1.0 - (step.min(*steps) as f64) / *steps as f64;
                (base - end) * f.powf(*power) + end
            }
            Schedule::Composite { pieces } => {
                let mut start = 0u64;
                for (i, p) in pieces.iter().enumerate() {
                    if step < p.until || i + 1 == pieces.len() {
                        return p.schedule.value(step - start);
                    }
                    start = p.until;
                }
                f64::NAN // unreachable for a validated (non-empty) composite
            }
        }
    }
}

/// Validate a schedule read from a config, naming the config key at fault.
pub fn checked(schedule: Schedule, key: &str) -> Result<Schedule> {
    if let Err(e) = schedule.validate() {
        bail!("schedule `{key}`: {e:#}");
    }
    Ok(schedule)
}
