// c10d through a C ABI for Rust: a TCPStore rendezvous and a Gloo process group from the
// libtorch that tch links, and the collectives contrast-core needs. Every function catches
// C++ exceptions and returns them as a message (never unwinds into Rust).
#define USE_C10D_GLOO 1
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

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

} // namespace

extern "C" {

// Rendezvous through a TCPStore at addr:port (the server is opened by rank 0 unless
// client_only, as under torchrun where the elastic agent already serves the store), keys
// under `prefix`, then a Gloo group on one device: `iface` (GLOO_SOCKET_IFNAME) when
// non-empty, else this host's address (loopback when the hostname does not resolve).
void* contrast_dist_new_gloo(
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
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    std::string name(iface);
    if (!name.empty()) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = 2;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    g = new Group{store, pg, timeout};
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
