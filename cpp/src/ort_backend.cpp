// ONNX Runtime backend, built only with -DE2EVISION_WITH_ONNXRUNTIME=ON (ONNX Runtime's C++ API
// headers are needed; the pip wheel does not ship them, so this file is not compiled or tested in
// e2evision's CI). Preprocessing still happens in the engine, on LibTorch tensors, so the numbers
// fed to the session are the same as for the other backends.
#include <onnxruntime_cxx_api.h>

#include <ATen/ATen.h>

#include <sstream>

#include "backend.h"
#include "e2evision/errors.h"

namespace e2evision::detail {

namespace {

class OrtBackend : public BackendImpl {
 public:
  OrtBackend(const std::string& path, int threads, const PreprocessConfig& cfg)
      : env_(ORT_LOGGING_LEVEL_WARNING, "e2evision"), session_(nullptr) {
    Ort::SessionOptions options;
    options.SetIntraOpNumThreads(threads > 0 ? threads : 1);  // CMSSW's default: one thread
    options.SetInterOpNumThreads(1);
    options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    try {
      session_ = Ort::Session(env_, path.c_str(), options);
    } catch (const Ort::Exception& e) {
      throw ModelFileError(path + ": not an ONNX model ONNX Runtime can load (" + e.what() + ")");
    }
    Ort::AllocatorWithDefaultOptions alloc;
    for (size_t i = 0; i < session_.GetInputCount(); ++i)
      input_names_.emplace_back(session_.GetInputNameAllocated(i, alloc).get());
    for (size_t i = 0; i < session_.GetOutputCount(); ++i)
      output_names_.emplace_back(session_.GetOutputNameAllocated(i, alloc).get());
    // The session's names must be preprocess.json's, in the same order.
    auto check = [&](const std::vector<std::string>& names, const std::vector<TensorSpec>& specs, const char* what) {
      bool ok = names.size() == specs.size();
      for (size_t i = 0; ok && i < names.size(); ++i) ok = names[i] == specs[i].name;
      if (!ok) throw PreprocessError(path + ": the ONNX graph's " + what + " do not match preprocess.json's");
    };
    check(input_names_, cfg.inputs, "inputs");
    check(output_names_, cfg.outputs, "outputs");
    for (const auto& n : input_names_) input_ptrs_.push_back(n.c_str());
    for (const auto& n : output_names_) output_ptrs_.push_back(n.c_str());
  }

  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& inputs) const override {
    auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Value> values;
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& t : inputs) shapes.push_back(t.sizes().vec());
    for (size_t i = 0; i < inputs.size(); ++i) {
      values.push_back(Ort::Value::CreateTensor<float>(memory, inputs[i].data_ptr<float>(), inputs[i].numel(),
                                                       shapes[i].data(), shapes[i].size()));
    }
    std::vector<Ort::Value> outs;
    try {
      // Session::Run is thread-safe (ONNX Runtime's documented guarantee).
      outs = session_.Run(Ort::RunOptions{nullptr}, input_ptrs_.data(), values.data(), values.size(),
                          output_ptrs_.data(), output_ptrs_.size());
    } catch (const Ort::Exception& e) {
      throw BackendError(std::string("onnxruntime failed: ") + e.what());
    }
    std::vector<at::Tensor> result;
    for (auto& v : outs) {
      auto info = v.GetTensorTypeAndShapeInfo();
      std::vector<int64_t> shape = info.GetShape();
      const float* data = v.GetTensorData<float>();
      result.push_back(at::from_blob(const_cast<float*>(data), shape, at::kFloat).clone());
    }
    return result;
  }

 private:
  Ort::Env env_;
  mutable Ort::Session session_;
  std::vector<std::string> input_names_, output_names_;
  std::vector<const char*> input_ptrs_, output_ptrs_;
};

}  // namespace

std::unique_ptr<BackendImpl> makeOrtBackend(const std::string& path, int threads, const PreprocessConfig& cfg) {
  return std::make_unique<OrtBackend>(path, threads, cfg);
}

}  // namespace e2evision::detail
