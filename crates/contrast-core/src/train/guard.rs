//! The NaN/Inf guard: stop a run at the first non-finite loss term, naming the step and the term.

use anyhow::{bail, Result};

/// Error unless every `(name, value)` is finite. The message names the step and each bad term,
/// e.g. `non-finite loss at step 57: mixed_vs_mixed = NaN`.
pub fn check_finite(step: u64, terms: &[(&str, f64)]) -> Result<()> {
    let bad: Vec<String> = terms
        .iter()
        .filter(|(_, v)| !v.is_finite())
        .map(|(n, v)| format!("{n} = {v}"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        bail!("non-finite loss at step {step}: {}", bad.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_step_and_terms() {
        assert!(check_finite(3, &[("a", 1.0), ("b", -2.0)]).is_ok());
        let e = check_finite(
            57,
            &[("ok", 1.0), ("mixed", f64::NAN), ("inf", f64::INFINITY)],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "non-finite loss at step 57: mixed = NaN, inf = inf");
    }
}
