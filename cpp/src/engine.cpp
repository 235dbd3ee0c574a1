#include "e2evision/engine.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/codegen/onednn/interface.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <atomic>
#include <mutex>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "backend.h"
#ifdef E2EVISION_WITH_ONEDNN
#include "onednn_backend.h"
#endif
#include "sha256.h"
#include "e2evision/npy.h"

namespace e2evision {

namespace {

std::string firstLine(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string joinNames(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out.empty() ? "(none)" : out;
}

std::string fileName(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string extension(const std::string& path) {
  std::string name = fileName(path);
  auto dot = name.find_last_of('.');
  return dot == std::string::npos ? "" : name.substr(dot);
}

std::vector<at::Tensor> unpackOutputs(const c10::IValue& out) {
  std::vector<at::Tensor> tensors;
  if (out.isTensor()) {
    tensors.push_back(out.toTensor());
  } else if (out.isTuple()) {
    for (const auto& v : out.toTupleRef().elements()) tensors.push_back(v.toTensor());
  } else if (out.isTensorList()) {
    for (const auto& t : out.toTensorVector()) tensors.push_back(t);
  } else {
    throw BackendError("the TorchScript model returned " + out.tagKind() + ", expected tensors");
  }
  return tensors;
}

torch::jit::Module loadTorchScript(const std::string& path) {
  try {
    torch::jit::Module module = torch::jit::load(path, c10::Device(c10::kCPU));
    module.eval();
    return module;
  } catch (const std::exception& e) {
    throw ModelFileError(path + ": not a TorchScript model LibTorch can load (" + firstLine(e.what()) + ")");
  }
}

// LibTorch's switch is process-wide and registers a graph pass; set it once.
void enableOneDnnGraph() {
  static std::once_flag once;
  std::call_once(once, [] {
    torch::jit::getProfilingMode() = true;  // the fuser works on profiled shapes
    torch::jit::RegisterLlgaFuseGraph::setEnabled(true);
  });
}

class TorchScriptBackend : public detail::BackendImpl {
 public:
  // Auto holds two copies of the graph: the fused one for batches below large_batch (per-call
  // overhead dominates there) and from large_batch on (kernel time does) the oneDNN-packed one,
  // or the plain one for a graph without convolutions.
  TorchScriptBackend(const std::string& path, GraphMode mode, int64_t large_batch)
      : large_batch_(mode == GraphMode::Auto ? large_batch : 0),
        fusing_(mode == GraphMode::Fused || mode == GraphMode::Auto) {
    small_ = loadTorchScript(path);
    if (mode == GraphMode::Fused || mode == GraphMode::Auto) enableOneDnnGraph();
    if (mode == GraphMode::Inference) {
      small_ = optimized(small_, path);
      unfused_only_ = true;  // an optimize_for_inference graph never goes through the fuser
    }
    // The unfused twin: Auto's large-batch graph, and for both fusing modes the graph calls go to
    // once the fuser has failed on this model (a module it failed on stays broken, so a separate
    // copy that never sees the fuser).
    if (mode == GraphMode::Auto) {
      large_ = loadTorchScript(path);
      if (hasConvolution(large_)) large_ = optimized(large_, path);
    }
    if (mode == GraphMode::Fused) large_ = loadTorchScript(path);
  }

  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& inputs) const override {
    const bool large = large_batch_ > 0 && !inputs.empty() && inputs.front().size(0) >= large_batch_;
    if (!large && !unfused_only_.load()) {
      try {
        return unpackOutputs(small_.forward(std::vector<c10::IValue>(inputs.begin(), inputs.end())));
      } catch (const std::exception&) {
        // Either the input is bad (the unfused graph below throws too, and that error is reported)
        // or the oneDNN Graph fuser broke this graph (seen on the lens-ROI graph's data-dependent
        // scalar arithmetic): then the unfused twin succeeds and is used from now on.
        if (!fusing_) throw;
        auto out = unfused(large_, inputs);
        unfused_only_ = true;
        return out;
      }
    }
    return unfused(large || (fusing_ && unfused_only_) ? large_ : small_, inputs);
  }

 private:
  // With the executor's passes off (thread-local): no oneDNN Graph fusion, which also cannot read
  // the oneDNN-packed graph optimize_for_inference wrote.
  static std::vector<at::Tensor> unfused(torch::jit::Module& module, const std::vector<at::Tensor>& inputs) {
    torch::jit::GraphOptimizerEnabledGuard no_passes(false);
    return unpackOutputs(module.forward(std::vector<c10::IValue>(inputs.begin(), inputs.end())));
  }

  // optimize_for_inference pays through oneDNN-packed convolutions; on a graph without any (the
  // ViTs, whose patch embedding is a matrix product) it only repacks the linear layers, which ran
  // slower than the plain graph at batch 256 (docs/deployment.md, "Latency").
  static bool hasConvolution(const torch::jit::Module& module) {
    auto graph = module.get_method("forward").graph()->copy();
    torch::jit::Inline(*graph);
    static const std::vector<c10::Symbol> convs{
        c10::Symbol::fromQualString("aten::_convolution"), c10::Symbol::fromQualString("aten::convolution"),
        c10::Symbol::fromQualString("aten::conv1d"), c10::Symbol::fromQualString("aten::conv2d"),
        c10::Symbol::fromQualString("aten::conv3d")};
    std::vector<torch::jit::Block*> todo{graph->block()};
    while (!todo.empty()) {
      torch::jit::Block* block = todo.back();
      todo.pop_back();
      for (torch::jit::Node* node : block->nodes()) {
        if (std::find(convs.begin(), convs.end(), node->kind()) != convs.end()) return true;
        for (torch::jit::Block* sub : node->blocks()) todo.push_back(sub);
      }
    }
    return false;
  }

  static torch::jit::Module optimized(torch::jit::Module module, const std::string& path) {
    try {
      return torch::jit::optimize_for_inference(module);
    } catch (const std::exception& e) {
      throw BackendError(path + ": optimize_for_inference failed (" + firstLine(e.what()) + "); use GraphMode::Plain");
    }
  }

  int64_t large_batch_;
  bool fusing_;
  mutable std::atomic<bool> unfused_only_{false};
  // Module::forward is not const; running a loaded TorchScript module concurrently is supported.
  mutable torch::jit::Module small_, large_;
};

// The shared object inside an AOTInductor package lists libtorch.so among its dependencies (as
// Python has it loaded). The engine links only libtorch_cpu and libc10, so load libtorch.so from
// the same directory, globally, before the package is opened; only the AOTInductor backend pays.
void preloadLibtorch() {
  static const bool done = [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&at::set_num_threads), &info) && info.dli_fname) {
      std::string lib = info.dli_fname;
      auto slash = lib.find_last_of('/');
      lib = (slash == std::string::npos ? std::string() : lib.substr(0, slash + 1)) + "libtorch.so";
      dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL);  // failure shows up as the loader's own error
    }
    return true;
  }();
  (void)done;
}

class AotiBackend : public detail::BackendImpl {
 public:
  explicit AotiBackend(const std::string& path) {
    preloadLibtorch();
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
    } catch (const std::exception& e) {
      throw ModelFileError(path + ": not an AOTInductor package LibTorch can load (" + firstLine(e.what()) + ")");
    }
  }

  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& inputs) const override {
    // The package's model container hands each concurrent call its own model instance (waiting
    // for a free one), so run() may be called from several threads.
    return loader_->run(inputs);
  }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

#ifdef E2EVISION_WITH_ONEDNN
// The oneDNN backend's shared object: $E2EVISION_ONEDNN_MODULE, else the one built beside this
// engine (onednn_backend.h says why it is a separate object opened with deep binding).
std::string oneDnnModulePath() {
  const char* env = std::getenv("E2EVISION_ONEDNN_MODULE");
  return env && *env ? std::string(env) : std::string(E2EVISION_ONEDNN_MODULE_PATH);
}

struct OneDnnModule {
  E2evOneDnnOpen open = nullptr;
  E2evOneDnnOutputShape output_shape = nullptr;
  E2evOneDnnRun run = nullptr;
  E2evOneDnnClose close = nullptr;
  std::string error;  // why it could not be loaded
};

const OneDnnModule& oneDnnModule() {
  static const OneDnnModule module = [] {
    OneDnnModule m;
    const std::string path = oneDnnModulePath();
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!lib) {
      const char* why = dlerror();
      m.error = path + ": cannot load the oneDNN backend (" + (why ? why : "dlopen failed") + ")";
      return m;
    }
    m.open = reinterpret_cast<E2evOneDnnOpen>(dlsym(lib, "e2evision_onednn_open"));
    m.output_shape = reinterpret_cast<E2evOneDnnOutputShape>(dlsym(lib, "e2evision_onednn_output_shape"));
    m.run = reinterpret_cast<E2evOneDnnRun>(dlsym(lib, "e2evision_onednn_run"));
    m.close = reinterpret_cast<E2evOneDnnClose>(dlsym(lib, "e2evision_onednn_close"));
    if (!m.open || !m.output_shape || !m.run || !m.close) m.error = path + ": not an e2evision oneDNN backend module";
    return m;
  }();
  return module;
}

// LibTorch tensors in and out of the oneDNN module (which sees plain float buffers only).
class OneDnnBackend : public detail::BackendImpl {
 public:
  OneDnnBackend(const std::string& path, int threads, const PreprocessConfig& cfg) : module_(oneDnnModule()) {
    if (!module_.error.empty()) throw BackendError(module_.error);
    std::vector<E2evOneDnnTensor> inputs;
    std::vector<std::vector<int64_t>> rows;
    for (const auto& spec : cfg.inputs) rows.emplace_back(spec.shape.begin() + 1, spec.shape.end());
    for (size_t i = 0; i < cfg.inputs.size(); ++i)
      inputs.push_back({cfg.inputs[i].name.c_str(), static_cast<int>(rows[i].size()), rows[i].data()});
    std::vector<const char*> outputs;
    for (const auto& spec : cfg.outputs) outputs.push_back(spec.name.c_str());
    int code = 0;
    char err[2048] = {0};
    handle_ = module_.open(path.c_str(), threads, static_cast<int>(inputs.size()), inputs.data(),
                           static_cast<int>(outputs.size()), outputs.data(), &code, err, sizeof(err));
    if (!handle_) {
      if (code == 1) throw ModelFileError(err);
      throw BackendError(err);
    }
    for (size_t o = 0; o < cfg.outputs.size(); ++o) {
      int rank = 0;
      const int64_t* shape = module_.output_shape(handle_, static_cast<int>(o), &rank);
      row_shapes_.emplace_back(shape, shape + rank);
    }
  }
  ~OneDnnBackend() override { module_.close(handle_); }
  OneDnnBackend(const OneDnnBackend&) = delete;
  OneDnnBackend& operator=(const OneDnnBackend&) = delete;

  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& inputs) const override {
    const int64_t rows = inputs.front().size(0);
    std::vector<at::Tensor> contiguous;
    std::vector<const float*> in;
    for (const auto& t : inputs) {
      contiguous.push_back(t.to(at::kFloat).contiguous());
      in.push_back(contiguous.back().data_ptr<float>());
    }
    std::vector<at::Tensor> outputs;
    std::vector<float*> out;
    for (const auto& row_shape : row_shapes_) {
      std::vector<int64_t> shape{rows};
      shape.insert(shape.end(), row_shape.begin(), row_shape.end());
      outputs.push_back(at::empty(shape, at::TensorOptions().dtype(at::kFloat)));
      out.push_back(outputs.back().data_ptr<float>());
    }
    char err[2048] = {0};
    if (module_.run(handle_, in.data(), rows, out.data(), err, sizeof(err)) != 0) throw BackendError(err);
    return outputs;
  }

 private:
  const OneDnnModule& module_;
  void* handle_ = nullptr;
  std::vector<std::vector<int64_t>> row_shapes_;
};
#endif

Backend backendFromExtension(const std::string& path) {
  const std::string ext = extension(path);
  if (ext == ".pt" || ext == ".ts" || ext == ".torchscript" || ext == ".jit") return Backend::TorchScript;
  if (ext == ".pt2") return Backend::AOTInductor;
  if (ext == ".onnx") return Backend::ONNXRuntime;
  if (ext == ".onednn") return Backend::OneDNN;
  throw ModelFileError(path + ": cannot tell the model format from the extension '" + ext +
                       "' (expected .pt TorchScript, .pt2 AOTInductor, .onnx or .onednn) and preprocess.json does not list the file");
}

// preprocess.json's export format names.
Backend backendFromFormat(const std::string& format) {
  if (format == "torchscript") return Backend::TorchScript;
  if (format == "aoti") return Backend::AOTInductor;
  if (format == "onednn") return Backend::OneDNN;
  return Backend::ONNXRuntime;
}

}  // namespace

const char* backendName(Backend b) {
  switch (b) {
    case Backend::Auto: return "auto";
    case Backend::TorchScript: return "torchscript";
    case Backend::AOTInductor: return "aoti";
    case Backend::ONNXRuntime: return "onnxruntime";
    case Backend::OneDNN: return "onednn";
  }
  return "?";
}

Backend parseBackend(const std::string& name) {
  if (name == "auto") return Backend::Auto;
  if (name == "torchscript") return Backend::TorchScript;
  if (name == "aoti") return Backend::AOTInductor;
  if (name == "onnxruntime" || name == "onnx") return Backend::ONNXRuntime;
  if (name == "onednn") return Backend::OneDNN;
  throw InputError("unknown backend '" + name + "' (auto, torchscript, aoti, onnxruntime, onednn)");
}

const char* graphModeName(GraphMode m) {
  switch (m) {
    case GraphMode::Auto: return "auto";
    case GraphMode::Plain: return "plain";
    case GraphMode::Inference: return "inference";
    case GraphMode::Fused: return "fused";
  }
  return "?";
}

GraphMode parseGraphMode(const std::string& name) {
  if (name == "auto") return GraphMode::Auto;
  if (name == "plain") return GraphMode::Plain;
  if (name == "inference") return GraphMode::Inference;
  if (name == "fused") return GraphMode::Fused;
  throw InputError("unknown graph mode '" + name + "' (auto, plain, inference, fused)");
}

bool backendAvailable(Backend b) {
#ifndef E2EVISION_WITH_ONNXRUNTIME
  if (b == Backend::ONNXRuntime) return false;
#endif
#ifdef E2EVISION_WITH_ONEDNN
  if (b == Backend::OneDNN) return oneDnnModule().error.empty();
#else
  if (b == Backend::OneDNN) return false;
#endif
  return true;
}

struct Engine::Impl {
  std::string model_path;
  EngineOptions options;
  PreprocessConfig config;
  Backend backend = Backend::Auto;
  GraphMode graph_mode = GraphMode::Auto;
  std::unique_ptr<detail::BackendImpl> impl;
  std::vector<ExportTiming> timings;
};

namespace {

// Batch-1 calls on a constant image, so that the profiling executor specialises (and oneDNN
// compiles its partitions) at load time rather than on the first event. Best effort: a graph that
// refuses a synthetic input (a lens finder that needs a ring) is then specialised by its first
// real call instead; the real call reports any real error.
void warmUp(const Engine::Impl& impl, int runs) {
  if (runs <= 0) return;
  c10::InferenceMode guard;
  std::vector<int64_t> batches{1};
  if (impl.backend == Backend::TorchScript && impl.graph_mode == GraphMode::Auto && impl.options.large_batch > 1)
    batches.push_back(impl.options.large_batch);  // the second graph too
  for (int64_t batch : batches) {
    std::vector<at::Tensor> inputs;
    for (const auto& spec : impl.config.inputs) {
      std::vector<int64_t> shape = spec.shape;
      shape[0] = batch;
      inputs.push_back(at::ones(shape, at::TensorOptions().dtype(at::kFloat)));
    }
    try {
      for (int i = 0; i < runs; ++i) impl.impl->forward(inputs);
    } catch (const std::exception&) {
      return;
    }
  }
}

}  // namespace

Engine::Engine(const std::string& model_path, const EngineOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->model_path = model_path;
  impl_->options = options;
  struct stat st {};
  if (model_path.empty() || ::stat(model_path.c_str(), &st) != 0) throw ModelFileError(model_path + ": model file not found");
  if (S_ISDIR(st.st_mode)) {
    keepFastestExport(model_path, options);
    return;
  }
  if (!S_ISREG(st.st_mode)) throw ModelFileError(model_path + ": not a regular file");
  std::ifstream probe(model_path, std::ios::binary);
  if (!probe) throw ModelFileError(model_path + ": model file is not readable");

  const std::string pre_path = options.preprocess_path.empty() ? defaultPreprocessPath(model_path) : options.preprocess_path;
  impl_->config = PreprocessConfig::load(pre_path);

  const ExportEntry* entry = impl_->config.findExport(fileName(model_path));
  Backend b = options.backend;
  if (b == Backend::Auto) b = entry ? backendFromFormat(entry->format) : backendFromExtension(model_path);
  impl_->backend = b;
  if (entry && entry->bytes >= 0 && static_cast<int64_t>(st.st_size) != entry->bytes) {
    std::ostringstream os;
    os << model_path << ": the file has " << st.st_size << " bytes, " << pre_path << " recorded " << entry->bytes
       << " at export (truncated or replaced; export again)";
    throw ModelFileError(os.str());
  }
  if (entry && !entry->sha256.empty()) {  // flipped bytes still load and give wrong numbers
    std::string got;
    try {
      got = detail::sha256File(model_path);
    } catch (const std::exception& e) {
      throw ModelFileError(e.what());
    }
    if (got != entry->sha256)
      throw ModelFileError(model_path + ": sha256 " + got.substr(0, 12) + "... differs from exports." + entry->format +
                           ".sha256 " + entry->sha256.substr(0, 12) + "... in " + pre_path +
                           " (corrupted or replaced; export again)");
  }
  if (options.intra_op_threads > 0) at::set_num_threads(options.intra_op_threads);

  switch (b) {
    case Backend::TorchScript:
      impl_->graph_mode = options.graph_mode;
      impl_->impl = std::make_unique<TorchScriptBackend>(model_path, options.graph_mode, options.large_batch);
      break;
    case Backend::AOTInductor: impl_->impl = std::make_unique<AotiBackend>(model_path); break;
    case Backend::ONNXRuntime:
#ifdef E2EVISION_WITH_ONNXRUNTIME
      impl_->impl = detail::makeOrtBackend(model_path, options.intra_op_threads, impl_->config);
      break;
#else
      throw BackendError(model_path + ": this build has no ONNX Runtime backend (configure with -DE2EVISION_WITH_ONNXRUNTIME=ON)");
#endif
    case Backend::OneDNN:
#ifdef E2EVISION_WITH_ONEDNN
      impl_->impl = std::make_unique<OneDnnBackend>(model_path, options.intra_op_threads, impl_->config);
      break;
#else
      throw BackendError(model_path + ": this build has no oneDNN backend (install oneDNN 2.x, e.g. Debian's libdnnl-dev, and rebuild)");
#endif
    case Backend::Auto: break;
  }
  warmUp(*impl_, options.warmup_runs);
}

// Which export of a directory runs fastest depends on the model (TorchScript for the CNNs, the
// AOTInductor package for the ViTs: docs/deployment.md, "Latency"), so it is measured, not guessed.
void Engine::keepFastestExport(const std::string& dir, const EngineOptions& options) {
  EngineOptions opts = options;
  if (opts.preprocess_path.empty()) opts.preprocess_path = dir + "/preprocess.json";
  const PreprocessConfig config = PreprocessConfig::load(opts.preprocess_path);
  std::vector<std::string> files;
  for (const auto& entry : config.exports) {
    const Backend b = backendFromFormat(entry.format);
    if (backendAvailable(b) && (options.backend == Backend::Auto || options.backend == b))
      files.push_back(dir + "/" + entry.file);
  }
  if (files.empty())
    throw ModelFileError(dir + ": " + opts.preprocess_path + " lists no export this engine can run" +
                         (options.backend == Backend::Auto ? std::string()
                                                           : std::string(" with backend ") + backendName(options.backend)) +
                         " (export one with e2evision export --format torchscript or aoti)");
  std::vector<ExportTiming> timings;
  double best = 0.0;
  for (const auto& file : files) {
    Engine candidate(file, opts);  // size, SHA-256, load and warm-up, as for a single file
    double ms = std::numeric_limits<double>::infinity();  // a graph that refuses a synthetic image
    try {                                                // (a lens finder) is kept only if alone
      ms = candidate.batchOneMedianMs(std::max(1, options.selection_calls));
    } catch (const std::exception&) {
    }
    timings.push_back({file, candidate.backend(), ms});
    if (timings.size() == 1 || ms < best) {
      best = ms;
      impl_ = std::move(candidate.impl_);
    }
  }
  impl_->timings = std::move(timings);
}

double Engine::batchOneMedianMs(int calls) const {
  c10::InferenceMode guard;
  std::vector<at::Tensor> inputs;
  for (const auto& spec : impl_->config.inputs) {
    std::vector<int64_t> shape = spec.shape;
    shape[0] = 1;
    inputs.push_back(at::ones(shape, at::TensorOptions().dtype(at::kFloat)));
  }
  for (int i = 0; i < calls; ++i) impl_->impl->forward(inputs);  // caches, page faults, specialisation
  std::vector<double> ms;
  for (int i = 0; i < calls; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    impl_->impl->forward(inputs);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

const std::vector<ExportTiming>& Engine::exportTimings() const { return impl_->timings; }

Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

FloatArrays Engine::run(const std::vector<std::string>& input_names, FloatArrays& input_values,
                        const std::vector<std::vector<int64_t>>& input_shapes,
                        const std::vector<std::string>& output_names, int64_t batch_size) const {
  const PreprocessConfig& cfg = impl_->config;
  if (input_names.size() != input_values.size()) {
    std::ostringstream os;
    os << input_names.size() << " input names but " << input_values.size() << " value arrays";
    throw InputError(os.str());
  }
  if (!input_shapes.empty() && input_shapes.size() != input_names.size()) {
    std::ostringstream os;
    os << input_shapes.size() << " input shapes for " << input_names.size() << " inputs (give one per input or none)";
    throw InputError(os.str());
  }
  std::vector<std::string> model_inputs;
  for (const auto& spec : cfg.inputs) model_inputs.push_back(spec.name);
  for (size_t i = 0; i < input_names.size(); ++i) {
    if (!cfg.findInput(input_names[i]))
      throw InputError("'" + input_names[i] + "' is not an input of this model (inputs: " + joinNames(model_inputs) + ")");
    if (std::count(input_names.begin(), input_names.end(), input_names[i]) > 1)
      throw InputError("input '" + input_names[i] + "' is given twice");
  }

  c10::InferenceMode guard;
  std::vector<at::Tensor> tensors;
  int64_t batch = -1;
  for (const auto& spec : cfg.inputs) {
    auto it = std::find(input_names.begin(), input_names.end(), spec.name);
    if (it == input_names.end())
      throw InputError("input '" + spec.name + "' is not provided (given: " + joinNames(input_names) + ")");
    const size_t idx = static_cast<size_t>(it - input_names.begin());
    std::vector<int64_t> shape;
    if (input_shapes.empty()) {
      shape = spec.shape;
      shape[0] = batch_size;
    } else {
      shape = input_shapes[idx];
      std::vector<int64_t> want(spec.shape.begin() + 1, spec.shape.end());
      if (shape.size() != spec.shape.size() || !std::equal(want.begin(), want.end(), shape.begin() + 1)) {
        std::ostringstream os;
        os << "input '" << spec.name << "' has shape " << shapeString(shape) << ", the model expects (N";
        for (auto d : want) os << ", " << d;
        os << ")";
        throw InputError(os.str());
      }
    }
    if (shape[0] < 1) throw InputError("batch size of input '" + spec.name + "' is " + std::to_string(shape[0]) + ", must be >= 1");
    if (batch >= 0 && shape[0] != batch)
      throw InputError("inputs disagree on the batch size (" + std::to_string(batch) + " vs " + std::to_string(shape[0]) + ")");
    batch = shape[0];
    const int64_t expected = batch * spec.sampleSize();
    const auto& values = input_values[idx];
    if (static_cast<int64_t>(values.size()) != expected) {
      std::ostringstream os;
      os << "input '" << spec.name << "' has a wrong size of " << values.size() << " values; shape "
         << shapeString(shape) << " needs " << expected;
      throw InputError(os.str());
    }
    // Policy: non-finite inputs are refused, never run: a model maps NaN/inf to NaN or to a
    // plausible-looking probability, and neither may reach an analysis unnoticed.
    for (size_t j = 0; j < values.size(); ++j) {
      if (!std::isfinite(values[j])) {
        std::ostringstream os;
        os << "input '" << spec.name << "' has a " << (std::isnan(values[j]) ? "NaN" : "infinite") << " value at sample "
           << static_cast<int64_t>(j) / spec.sampleSize() << " (element " << static_cast<int64_t>(j) % spec.sampleSize()
           << "); the engine refuses non-finite inputs: clean or drop that sample";
        throw InputError(os.str());
      }
    }
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
    if (spec.preprocess && impl_->options.apply_preprocessing) {
      const int64_t channels = shape[1];
      const int64_t pixels = spec.sampleSize() / channels;
      spec.preprocess->apply(values.data(), t.data_ptr<float>(), batch, channels, pixels);
    } else {
      std::memcpy(t.data_ptr<float>(), values.data(), values.size() * sizeof(float));
    }
    tensors.push_back(std::move(t));
  }

  std::vector<size_t> wanted;
  if (output_names.empty()) {
    for (size_t i = 0; i < cfg.outputs.size(); ++i) wanted.push_back(i);
  } else {
    for (const auto& name : output_names) {
      const TensorSpec* spec = cfg.findOutput(name);
      if (!spec) {
        throw InputError("'" + name + "' is not an output of this model (outputs: " + joinNames(getOutputNames()) + ")");
      }
      wanted.push_back(static_cast<size_t>(spec - cfg.outputs.data()));
    }
  }

  std::vector<at::Tensor> outputs;
  try {
    outputs = impl_->impl->forward(tensors);
  } catch (const EngineError&) {
    throw;
  } catch (const std::exception& e) {
    throw BackendError(std::string(backendName(impl_->backend)) + " backend failed on " + impl_->model_path + ": " + firstLine(e.what()));
  }
  if (outputs.size() != cfg.outputs.size()) {
    std::ostringstream os;
    os << impl_->model_path << " returned " << outputs.size() << " outputs, preprocess.json lists " << cfg.outputs.size();
    throw BackendError(os.str());
  }
  FloatArrays result;
  for (size_t i : wanted) {
    at::Tensor out = outputs[i].to(at::kFloat).contiguous();
    const int64_t expected = batch * cfg.outputs[i].sampleSize();
    if (out.numel() != expected || out.dim() < 1 || out.size(0) != batch) {
      throw BackendError("output '" + cfg.outputs[i].name + "' has shape " + shapeString(out.sizes().vec()) +
                         ", preprocess.json promises " + std::to_string(cfg.outputs[i].sampleSize()) + " values per sample");
    }
    const float* p = out.data_ptr<float>();
    result.emplace_back(p, p + out.numel());
  }
  return result;
}

std::vector<std::string> Engine::getInputNames() const {
  std::vector<std::string> names;
  for (const auto& t : impl_->config.inputs) names.push_back(t.name);
  return names;
}

std::vector<std::string> Engine::getOutputNames() const {
  std::vector<std::string> names;
  for (const auto& t : impl_->config.outputs) names.push_back(t.name);
  return names;
}

const std::vector<int64_t>& Engine::getInputShape(const std::string& name) const {
  const TensorSpec* t = impl_->config.findInput(name);
  if (!t) throw InputError("'" + name + "' is not an input of this model (inputs: " + joinNames(getInputNames()) + ")");
  return t->shape;
}

const std::vector<int64_t>& Engine::getOutputShape(const std::string& name) const {
  const TensorSpec* t = impl_->config.findOutput(name);
  if (!t) throw InputError("'" + name + "' is not an output of this model (outputs: " + joinNames(getOutputNames()) + ")");
  return t->shape;
}

const PreprocessConfig& Engine::preprocess() const { return impl_->config; }
Backend Engine::backend() const { return impl_->backend; }
GraphMode Engine::graphMode() const { return impl_->graph_mode; }
const std::string& Engine::modelPath() const { return impl_->model_path; }

}  // namespace e2evision
