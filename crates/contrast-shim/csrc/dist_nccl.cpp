// The NCCL backend (c10d::ProcessGroupNCCL, exported by the wheel's libtorch_cuda.so), compiled
// only where build.rs finds the CUDA runtime and NCCL headers (the nvidia-* wheels PyTorch
// depends on) and libtorch_cuda.so.
#define USE_C10D_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "group.hpp"

namespace contrast {

c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
}

} // namespace contrast
