// Internal: the interface each inference backend implements, on LibTorch tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "e2evision/preprocess.h"

namespace e2evision::detail {

class BackendImpl {
 public:
  virtual ~BackendImpl() = default;
  // Model outputs, in preprocess.json's output order, for already-normalised float32 CPU inputs
  // in preprocess.json's input order. Must be callable from several threads at once.
  virtual std::vector<at::Tensor> forward(const std::vector<at::Tensor>& inputs) const = 0;
};

#ifdef E2EVISION_WITH_ONNXRUNTIME
std::unique_ptr<BackendImpl> makeOrtBackend(const std::string& path, int threads, const PreprocessConfig& cfg);
#endif

}  // namespace e2evision::detail
