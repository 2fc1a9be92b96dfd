// Declarations only (see README.md): the one member ProcessGroupGloo.hpp calls inline.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
