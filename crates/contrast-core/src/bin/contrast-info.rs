//! Prints libtorch as seen from Rust: used by `cargo xtask doctor`.

fn main() {
    println!(
        "  LIBTORCH (build)    {}",
        option_env!("LIBTORCH").unwrap_or("(unset)")
    );
    println!("  CUDA available      {}", tch::Cuda::is_available());
    println!("  CUDA devices        {}", tch::Cuda::device_count());
    println!("  cuDNN available     {}", tch::Cuda::cudnn_is_available());
    println!("  MKL-DNN             {}", tch::utils::has_mkldnn());
    println!("  intra-op threads    {}", tch::get_num_threads());
    let dev = tch::Device::cuda_if_available();
    let a = tch::Tensor::ones([64, 64], (tch::Kind::Float, dev));
    let s = a.matmul(&a).sum(tch::Kind::Float).double_value(&[]);
    println!("  64×64 matmul check  {s} on {dev:?} (expect 262144)");
}
