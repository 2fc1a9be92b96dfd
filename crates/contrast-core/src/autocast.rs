//! Mixed precision: a bf16 autocast switch for the training step.
//!
//! tch 0.24 exposes `tch::autocast(enabled, f)`, which toggles libtorch's (deprecated, CUDA-only)
//! `at::autocast::set_enabled` and is a no-op when CUDA is unavailable, but it cannot choose the
//! reduced type: CUDA autocast defaults to **fp16**, which needs loss scaling. We want **bf16**
//! (no scaler needed; what PatchMix's AMP would use on recent GPUs without a `GradScaler`), so
//! [`autocast_bf16`] also sets the CUDA autocast dtype through libtorch's exported C++ function
//! `at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)` (declared below by its
//! Itanium-mangled name; both enums are `int8_t`, so the call is ABI-compatible with an
//! `extern "C"` declaration on the platforms libtorch ships for). The previous dtype is restored
//! afterwards. Tied to the pinned PyTorch 2.11 (`torch-sys = 0.24`).
//!
//! On CPU (or with `enabled = false`) [`autocast_bf16`] calls the closure unchanged: a no-op,
//! tested bit-exactly. CPU autocast is deliberately not used (bf16 matmul is slow on CPU).

use tch::Device;

/// `c10::DeviceType::CUDA`.
const DEVICE_CUDA: i8 = 1;
/// `c10::ScalarType::BFloat16`.
const SCALAR_BF16: i8 = 15;

extern "C" {
    // at::autocast::get_autocast_dtype(c10::DeviceType)
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
    // at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
}

/// The CUDA autocast dtype as a `c10::ScalarType` code (5 = Half, 15 = BFloat16).
pub fn cuda_autocast_dtype_code() -> i8 {
    // SAFETY: reads a thread-local array in libtorch; valid without a GPU.
    unsafe { at_get_autocast_dtype(DEVICE_CUDA) }
}

/// Restores the CUDA autocast dtype when dropped (also on panic).
struct DtypeGuard(i8);

impl Drop for DtypeGuard {
    fn drop(&mut self) {
        // SAFETY: writes a thread-local array in libtorch; `self.0` came from the getter.
        unsafe { at_set_autocast_dtype(DEVICE_CUDA, self.0) }
    }
}

/// Set the CUDA autocast dtype to bf16 for the guard's lifetime.
fn bf16_guard() -> DtypeGuard {
    let prev = cuda_autocast_dtype_code();
    // SAFETY: as above; BFloat16 is a valid autocast dtype for CUDA.
    unsafe { at_set_autocast_dtype(DEVICE_CUDA, SCALAR_BF16) };
    DtypeGuard(prev)
}

/// Whether `autocast_bf16(enabled, device, ..)` actually autocasts.
pub fn autocast_active(enabled: bool, device: Device) -> bool {
    enabled && device.is_cuda() && tch::Cuda::is_available()
}

/// Run `f` (forward and loss; the backward may run outside) under bf16 autocast when `enabled`
/// and `device` is CUDA; otherwise run it unchanged. Use with
/// [`crate::train::RuntimeConfig::autocast`]:
///
/// ```no_run
/// # use contrast_core::autocast::autocast_bf16;
/// # let (cfg, device) = (contrast_core::train::RuntimeConfig::default(), tch::Device::Cpu);
/// let loss = autocast_bf16(cfg.autocast(device), device, || {
///     // forward passes and the loss
///     tch::Tensor::from(1.0f32)
/// });
/// ```
pub fn autocast_bf16<T>(enabled: bool, device: Device, f: impl FnOnce() -> T) -> T {
    if !autocast_active(enabled, device) {
        return f();
    }
    let _guard = bf16_guard();
    tch::autocast(true, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_guard_sets_and_restores_bf16() {
        let before = cuda_autocast_dtype_code();
        assert_eq!(
            before, 5,
            "libtorch's default CUDA autocast dtype is Half (5)"
        );
        {
            let _g = bf16_guard();
            assert_eq!(cuda_autocast_dtype_code(), SCALAR_BF16);
        }
        assert_eq!(cuda_autocast_dtype_code(), before);
    }

    #[test]
    fn cpu_autocast_is_a_bit_exact_no_op() {
        let _rng = crate::testing::global_rng_lock();
        tch::manual_seed(0);
        let a = tch::Tensor::randn([64, 32], (tch::Kind::Float, Device::Cpu));
        let b = tch::Tensor::randn([32, 16], (tch::Kind::Float, Device::Cpu));
        let f = || a.matmul(&b).log_softmax(-1, None);
        let plain = f();
        for enabled in [false, true] {
            assert!(!autocast_active(enabled, Device::Cpu));
            let under = autocast_bf16(enabled, Device::Cpu, f);
            assert_eq!(under.kind(), tch::Kind::Float, "no bf16 on CPU");
            assert!(under.equal(&plain), "bit-identical on CPU");
        }
        assert_eq!(cuda_autocast_dtype_code(), 5, "nothing left changed");
    }
}
