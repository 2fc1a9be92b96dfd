// The process group behind the C ABI of dist.cpp, shared with dist_nccl.cpp.
#pragma once
#include <chrono>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace contrast {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  // Gloo: collectives on CPU tensors (CUDA ones go through host memory); NCCL: on the device.
  bool host_staging;
};

#ifdef CONTRAST_HAVE_NCCL
// c10d::ProcessGroupNCCL over `store` (dist_nccl.cpp).
c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout);
#endif

} // namespace contrast
