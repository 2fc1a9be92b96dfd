// c10d through a C ABI for Rust: a TCPStore rendezvous and a Gloo process group from the
// libtorch that tch links, and the collectives contrast-core needs. Every function catches
// C++ exceptions and returns them as a message (never unwinds into Rust). The NCCL group is
// made in dist_nccl.cpp, compiled only where the CUDA and NCCL headers are found.
#define USE_C10D_GLOO 1
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/autograd/custom_function.h>

#include "group.hpp"

using contrast::Group;

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

// Runs f; on a C++ exception stores its message in *err and returns -1.
template <class F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    *err = dup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = dup(e.what());
  } catch (...) {
    *err = dup("unknown C++ exception");
  }
  return -1;
}

std::vector<at::Tensor> tensors(at::Tensor** ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

void wait(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout) {
  work->wait(timeout);
}

// SyncBatchNorm in training mode (any device Gloo can stage): statistics over every rank's
// rows, two-pass (mean, then the mean squared deviation, as one process's BatchNorm), running
// statistics updated as torch.nn.BatchNorm does (unbiased variance). Backward: the gradient of
// the *sum* of every rank's loss through the global statistics (sum_dy and sum_dy_xhat
// all-reduced), as torch.nn.SyncBatchNorm; the affine parameters get this rank's part (the
// Trainer's gradient average does the rest).
struct SyncBn : public torch::autograd::Function<SyncBn> {
  static std::vector<int64_t> dims(const at::Tensor& x) {
    std::vector<int64_t> d{0};
    for (int64_t i = 2; i < x.dim(); ++i) d.push_back(i);
    return d;
  }
  static at::Tensor shaped(const at::Tensor& v, const at::Tensor& x) {
    std::vector<int64_t> s(x.dim(), 1);
    s[1] = x.size(1);
    return v.view(s);
  }
  static void reduce(Group* g, at::Tensor& t) {
    std::vector<at::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    wait(g->backend->allreduce(v, o), g->timeout);
  }
  // sums over (N, spatial) of every rank, per channel (CPU for Gloo, back on x's device)
  static at::Tensor global_sum(Group* g, const at::Tensor& local) {
    auto t = g->host_staging ? local.detach().to(at::kCPU).contiguous().clone()
                             : local.detach().contiguous().clone();
    reduce(g, t);
    return t.to(local.device());
  }
  static at::Tensor forward(
      torch::autograd::AutogradContext* ctx,
      at::Tensor x,
      at::Tensor weight,
      at::Tensor bias,
      at::Tensor running_mean,
      at::Tensor running_var,
      double momentum,
      double eps,
      int64_t group) {
    auto g = reinterpret_cast<Group*>(group);
    auto present = [](const at::Tensor& t) { return t.defined() && t.numel() > 0; };
    if (!present(weight)) weight = at::Tensor();
    if (!present(bias)) bias = at::Tensor();
    if (!present(running_mean)) running_mean = at::Tensor();
    if (!present(running_var)) running_var = at::Tensor();
    auto d = dims(x);
    double local_n = static_cast<double>(x.numel() / x.size(1));
    auto n_t = at::full({1}, local_n, x.options().dtype(at::kDouble));
    n_t = global_sum(g, n_t);
    double n = n_t.item<double>();
    auto mean = global_sum(g, x.sum(d)) / n;
    auto xmu = x - shaped(mean, x);
    auto var = global_sum(g, (xmu * xmu).sum(d)) / n;
    auto invstd = (var + eps).rsqrt();
    auto y = xmu * shaped(invstd, x);
    if (weight.defined()) y = y * shaped(weight, x);
    if (bias.defined()) y = y + shaped(bias, x);
    {
      at::NoGradGuard no_grad;
      if (running_mean.defined()) {
        running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.dtype()) * momentum);
      }
      if (running_var.defined()) {
        auto unbiased = var * (n / std::max(n - 1.0, 1.0));
        running_var.mul_(1.0 - momentum).add_(unbiased.to(running_var.dtype()) * momentum);
      }
    }
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["group"] = group;
    ctx->saved_data["n"] = n;
    ctx->saved_data["has_bias"] = bias.defined();
    return y;
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto x = saved[0], weight = saved[1], mean = saved[2], invstd = saved[3];
    auto g = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    double n = ctx->saved_data["n"].toDouble();
    auto dy = grads[0];
    auto d = dims(x);
    auto xhat = (x - shaped(mean, x)) * shaped(invstd, x);
    auto sum_dy = dy.sum(d);
    auto sum_dy_xhat = (dy * xhat).sum(d);
    auto both = global_sum(g, at::cat({sum_dy, sum_dy_xhat}));
    auto c = x.size(1);
    auto g_dy = both.narrow(0, 0, c), g_dy_xhat = both.narrow(0, c, c);
    auto scale = weight.defined() ? invstd * weight : invstd;
    auto dx = shaped(scale, x) *
        (dy - shaped(g_dy, x) / n - xhat * shaped(g_dy_xhat, x) / n);
    at::Tensor dw, db;
    if (weight.defined()) dw = sum_dy_xhat;
    if (ctx->saved_data["has_bias"].toBool()) db = sum_dy;
    return {dx, dw, db, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

} // namespace

extern "C" {

// BatchNorm of `x` [N, C, …] in training mode over the rows of every rank (see SyncBn). weight,
// bias, running_mean, running_var may be null. Returns a new tensor (owned by the caller, as
// tch's tensors are), or null with *err set.
at::Tensor* contrast_dist_sync_batch_norm(
    void* gp,
    at::Tensor* x,
    at::Tensor* weight,
    at::Tensor* bias,
    at::Tensor* running_mean,
    at::Tensor* running_var,
    double momentum,
    double eps,
    char** err) {
  at::Tensor* out = nullptr;
  guarded(err, [&] {
    // absent tensors as empty ones: autograd's Function::apply reads every tensor argument's
    // device, which an undefined tensor has not
    auto opt = [&](at::Tensor* t) { return t ? *t : at::empty({0}, x->options()); };
    auto y = SyncBn::apply(
        *x,
        opt(weight),
        opt(bias),
        opt(running_mean),
        opt(running_var),
        momentum,
        eps,
        reinterpret_cast<int64_t>(gp));
    out = new at::Tensor(y);
  });
  return out;
}


// Whether this build carries the NCCL backend.
int contrast_dist_has_nccl() {
#ifdef CONTRAST_HAVE_NCCL
  return 1;
#else
  return 0;
#endif
}

// backend 0: Gloo (CPU tensors; CUDA ones are staged through host memory by the callers),
// 1: NCCL (CUDA tensors). Rendezvous through a TCPStore at addr:port (the server is opened by rank 0 unless
// client_only, as under torchrun where the elastic agent already serves the store), keys
// under `prefix`, then a Gloo group on one device: `iface` (GLOO_SOCKET_IFNAME) when
// non-empty, else this host's address (loopback when the hostname does not resolve).
void* contrast_dist_new(
    int backend,
    const char* addr,
    int port,
    int rank,
    int world,
    int64_t timeout_ms,
    int client_only,
    const char* prefix,
    const char* iface,
    char** err) {
  Group* g = nullptr;
  int rc = guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = rank == 0 && !client_only;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = false;
    opts.timeout = timeout;
    opts.multiTenant = true;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(addr), opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    if (backend == 1) {
#ifdef CONTRAST_HAVE_NCCL
      g = new Group{store, contrast::make_nccl(store, rank, world, timeout), timeout, false};
      return;
#else
      throw std::runtime_error(
          "this build has no NCCL: contrast-shim found no libtorch_cuda.so, nccl.h or CUDA "
          "headers when it was compiled (or CONTRAST_LINK_CUDA=0)");
#endif
    }
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    std::string name(iface);
    if (!name.empty()) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = 2;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    g = new Group{store, pg, timeout, true};
  });
  return rc == 0 ? g : nullptr;
}

void contrast_dist_free(void* g) { delete static_cast<Group*>(g); }

void contrast_dist_free_str(char* s) { std::free(s); }

// op: 0 sum, 1 average (Gloo has no AVG: sum, then divided here), 2 max, 3 min.
int contrast_dist_all_reduce(void* gp, at::Tensor** ts, int n, int op, char** err) {
  auto g = static_cast<Group*>(gp);
  return guarded(err, [&] {
    auto v = tensors(ts, n);
    c10d::AllreduceOptions o;
    o.reduceOp = op == 2 ? c10d::ReduceOp::MAX
        : op == 3        ? c10d::ReduceOp::MIN
                         : c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    wait(g->backend->allreduce(v, o), g->timeout);
    if (op == 1) {
      for (auto& t : v) t.div_(g->backend->getSize());
    }
  });
}

int contrast_dist_broadcast(void* gp, at::Tensor** ts, int n, int root, char** err) {
  auto g = static_cast<Group*>(gp);
  return guarded(err, [&] {
    auto v = tensors(ts, n);
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = g->timeout;
    wait(g->backend->broadcast(v, o), g->timeout);
  });
}

// outs[r] receives rank r's `input` (same shape and dtype on every rank).
int contrast_dist_all_gather(void* gp, at::Tensor* input, at::Tensor** outs, char** err) {
  auto g = static_cast<Group*>(gp);
  return guarded(err, [&] {
    std::vector<at::Tensor> in{*input};
    std::vector<std::vector<at::Tensor>> out{tensors(outs, g->backend->getSize())};
    c10d::AllgatherOptions o;
    o.timeout = g->timeout;
    wait(g->backend->allgather(out, in, o), g->timeout);
  });
}

int contrast_dist_barrier(void* gp, char** err) {
  auto g = static_cast<Group*>(gp);
  return guarded(err, [&] {
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    wait(g->backend->barrier(o), g->timeout);
  });
}

// Store access for small control values (a run folder's name, a stop flag).
int contrast_dist_store_set(void* gp, const char* key, const uint8_t* data, size_t n, char** err) {
  auto g = static_cast<Group*>(gp);
  return guarded(err, [&] {
    g->store->set(std::string(key), std::vector<uint8_t>(data, data + n));
  });
}

// *out is malloc'ed (free with contrast_dist_free_str).
int contrast_dist_store_get(void* gp, const char* key, uint8_t** out, size_t* n, char** err) {
  auto g = static_cast<Group*>(gp);
  return guarded(err, [&] {
    auto v = g->store->get(std::string(key));
    *out = static_cast<uint8_t*>(std::malloc(v.size() + 1));
    std::memcpy(*out, v.data(), v.size());
    *n = v.size();
  });
}

} // extern "C"
