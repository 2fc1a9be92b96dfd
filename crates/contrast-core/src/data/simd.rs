//! Runtime dispatch of the data pipeline's hot loops to an AVX2 build of the same code.
//!
//! The workspace builds for baseline x86-64 (SSE2), where a 32-bit integer multiply or a
//! `u8 → u32` widening takes several instructions per four lanes. [`avx2_dispatch!`] compiles a
//! function twice, as written and with AVX2 enabled, and calls the AVX2 copy on processors that
//! have it. The arithmetic is the same IEEE-754 `f32` and wrapping integer arithmetic in both
//! copies (AVX2 without FMA: nothing is contracted or reassociated), so both give the same bits;
//! `tests/data_simd.rs` checks it. `CONTRAST_NO_AVX2=1` forces the baseline copies.

use std::sync::atomic::{AtomicU8, Ordering};

/// 0 = not decided yet, 1 = baseline, 2 = AVX2.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Whether the AVX2 copies run: an x86-64 processor with AVX2, and `CONTRAST_NO_AVX2` unset
/// (or not `1`). Decided once per process (see [`force_baseline`] for tests).
#[inline]
pub fn avx2() -> bool {
    match MODE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = detect();
            MODE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

fn detect() -> bool {
    if std::env::var("CONTRAST_NO_AVX2").is_ok_and(|v| v == "1") {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Run the baseline copies (`true`) or decide again from the processor (`false`), for tests
/// that compare the two builds.
pub fn force_baseline(on: bool) {
    MODE.store(if on { 1 } else { 0 }, Ordering::Relaxed);
}

/// `fn name(args) -> ret { body }` compiled twice: as written, and with AVX2 enabled; the
/// function calls the AVX2 copy when [`avx2`] says so. The body must not depend on which copy
/// runs (no intrinsics): only the code generation differs.
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$($lt:lifetime),+>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name $(<$($lt),+>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn with_avx2 $(<$($lt),+>)? ($($arg: $ty),*) $(-> $ret)? $body
                if $crate::data::simd::avx2() {
                    // SAFETY: `avx2()` checked that the processor has AVX2
                    return unsafe { with_avx2($($arg),*) };
                }
            }
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn baseline $(<$($lt),+>)? ($($arg: $ty),*) $(-> $ret)? $body
            baseline($($arg),*)
        }
    };
}
pub(crate) use avx2_dispatch;
