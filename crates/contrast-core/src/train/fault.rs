//! Fault injection for the reliability checks (`cargo xtask torture`): hooks that do nothing
//! unless their environment variable is set, so that a test can stretch a write window, fail a
//! write as a full disk would, or poison a loss term at a chosen step, in the real binaries.
//!
//! * `CONTRAST_FAULT_PAUSE_MS=<ms>`: sleep that long inside every checkpoint write (after the
//!   weights are written to the temporary folder, before it is renamed into place), so that a
//!   `kill -9` at a random moment often lands inside a write.
//! * `CONTRAST_FAULT_FAIL_WRITE=<n>`: the `n`-th checkpoint write of this process (1-based)
//!   fails with `ENOSPC` ("No space left on device"), as a full disk does; with
//!   `CONTRAST_FAULT_FAIL_ERRNO=<e>` it fails with that error number instead (30 `EROFS`, a
//!   file system remounted read-only; 13 `EACCES`, permission denied). With
//!   `CONTRAST_FAULT_FAIL_FILE=metrics` the `n`-th line of `metrics.jsonl` fails instead, after
//!   half of it is written (a torn line, as a disk that fills mid-write leaves); with
//!   `report`, the `n`-th write of `report.json`.
//! * `CONTRAST_FAULT_NAN_STEP=<k>`: the first loss term of step `k` (1-based, as logged) is
//!   replaced by NaN after the step is computed, as a diverging run would produce.
//! * `CONTRAST_FAULT_INPUT_STEP=<k>`: the first element of the first floating-point input
//!   tensor of step `k`'s batch ([`Method::batch_tensors`](super::Method::batch_tensors)) is
//!   set to NaN before the step, as a corrupt sample would.
//! * `CONTRAST_FAULT_GRAD_STEP=<k>`: after step `k`'s backward pass, the first element of the
//!   first parameter gradient is set to NaN.
//! * `CONTRAST_FAULT_VALUE=nan|inf|-inf`: the value the three hooks above inject (default NaN).
//! * `CONTRAST_FAULT_LR_STEP=<k>`: step `k` runs at `CONTRAST_FAULT_LR_FACTOR` (default 1e30)
//!   times its scheduled learning rate, an lr spike.
//! * `CONTRAST_FAULT_ABORT_STEP=<k>`: the process aborts (`SIGABRT`, no cleanup) once step `k`
//!   is done (and checkpointed when one is due), as a crashed or OOM-killed rank would end;
//!   with `CONTRAST_FAULT_ABORT_RANK=<r>` only rank `r` of a distributed run does.
//! * `CONTRAST_PERTURB_INIT=<seed>`: after the method is built, every floating-point tensor of
//!   its state is multiplied by `1 + u·2⁻²³` (`u` uniform in [−1, 1] from `seed`): one float32
//!   rounding, for tests that measure how far fp32 arithmetic alone moves a run (the drift
//!   bound of `testing::official`).
//!
//! Each hook reads its variable once per call; none costs anything measurable when unset.

use std::sync::atomic::{AtomicU64, Ordering};

fn var(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Inside a checkpoint write: the `CONTRAST_FAULT_PAUSE_MS` pause.
pub fn pause_in_write() {
    if let Some(ms) = var("CONTRAST_FAULT_PAUSE_MS") {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

static WRITES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// The files whose writes `CONTRAST_FAULT_FAIL_WRITE` can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Checkpoint = 0,
    Metrics = 1,
    Report = 2,
}

/// Before a write of `what`: the `CONTRAST_FAULT_FAIL_WRITE` injected `ENOSPC` (or
/// `CONTRAST_FAULT_FAIL_ERRNO`), when `CONTRAST_FAULT_FAIL_FILE` names `what` (default:
/// checkpoints).
pub fn fail_write_of(what: Written) -> std::io::Result<()> {
    let file = match std::env::var("CONTRAST_FAULT_FAIL_FILE").as_deref() {
        Ok("metrics") => Written::Metrics,
        Ok("report") => Written::Report,
        _ => Written::Checkpoint,
    };
    if file != what {
        return Ok(());
    }
    let n = WRITES[what as usize].fetch_add(1, Ordering::SeqCst) + 1;
    match var("CONTRAST_FAULT_FAIL_WRITE") {
        Some(k) if k == n => Err(std::io::Error::from_raw_os_error(
            var("CONTRAST_FAULT_FAIL_ERRNO").map_or(28, |e| e as i32),
        )),
        _ => Ok(()),
    }
}

/// Before a checkpoint write: [`fail_write_of`] for checkpoints.
pub fn fail_write() -> std::io::Result<()> {
    fail_write_of(Written::Checkpoint)
}

/// The value the NaN hooks inject (`CONTRAST_FAULT_VALUE`, default NaN).
fn value() -> f64 {
    match std::env::var("CONTRAST_FAULT_VALUE")
        .as_deref()
        .map(str::trim)
    {
        Ok("inf") | Ok("+inf") => f64::INFINITY,
        Ok("-inf") => f64::NEG_INFINITY,
        _ => f64::NAN,
    }
}

/// The value step `done`'s (1-based) first loss term is replaced by (`CONTRAST_FAULT_NAN_STEP`).
pub fn loss_at(done: u64) -> Option<f64> {
    (var("CONTRAST_FAULT_NAN_STEP") == Some(done)).then(value)
}

/// Set the first element of `t` (any layout; nothing when it is empty) to [`value`], in place.
fn set_first(t: &tch::Tensor) {
    if t.numel() == 0 {
        return;
    }
    let mut x = t.shallow_clone();
    while x.dim() > 0 {
        x = x.select(0, 0);
    }
    tch::no_grad(|| {
        let _ = x.fill_(value());
    });
}

/// Before step `done`: the `CONTRAST_FAULT_INPUT_STEP` poisoning of the batch's first
/// floating-point tensor, in place.
pub fn poison_input(done: u64, inputs: &crate::tensors::Named) {
    if var("CONTRAST_FAULT_INPUT_STEP") != Some(done) {
        return;
    }
    if let Some((name, t)) = inputs.iter().find(|(_, t)| t.is_floating_point()) {
        set_first(t);
        eprintln!("CONTRAST_FAULT_INPUT_STEP: input `{name}` of step {done} poisoned");
    }
}

/// After step `done`'s backward pass: the `CONTRAST_FAULT_GRAD_STEP` poisoning of the first
/// gradient of `params`.
pub fn poison_grad(done: u64, params: &[(String, tch::Tensor)]) {
    if var("CONTRAST_FAULT_GRAD_STEP") != Some(done) {
        return;
    }
    if let Some((name, g)) = params
        .iter()
        .find_map(|(n, p)| crate::optim::grad_of(p).map(|g| (n, g)))
    {
        set_first(&g);
        eprintln!("CONTRAST_FAULT_GRAD_STEP: gradient of `{name}` at step {done} poisoned");
    }
}

/// The factor step `done`'s learning rate is multiplied by (`CONTRAST_FAULT_LR_STEP`,
/// `CONTRAST_FAULT_LR_FACTOR`; 1 when unset).
pub fn lr_factor(done: u64) -> f64 {
    if var("CONTRAST_FAULT_LR_STEP") != Some(done) {
        return 1.0;
    }
    std::env::var("CONTRAST_FAULT_LR_FACTOR")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1e30)
}

/// After step `done` (1-based): the `CONTRAST_FAULT_ABORT_STEP` abort.
pub fn abort_at(done: u64) {
    if var("CONTRAST_FAULT_ABORT_STEP") == Some(done)
        && var("CONTRAST_FAULT_ABORT_RANK").is_none_or(|r| r == crate::dist::rank() as u64)
    {
        eprintln!("CONTRAST_FAULT_ABORT_STEP: aborting after step {done}");
        std::process::abort();
    }
}

/// After `build`: the `CONTRAST_PERTURB_INIT` rounding perturbation of `state`.
pub fn perturb_init(state: &[(String, crate::tensors::Named)]) {
    if let Some(seed) = var("CONTRAST_PERTURB_INIT") {
        let ts: Vec<tch::Tensor> = state
            .iter()
            .flat_map(|(_, n)| n.iter().map(|(_, t)| t.shallow_clone()))
            .collect();
        crate::testing::official::perturb_rounding(&ts, seed);
    }
}
