// The e2evision inference engine: one object per model, built once (e.g. in a CMSSW GlobalCache)
// and shared by every caller. Its run() has the signature of CMSSW's cms::Ort::ONNXRuntime::run,
// and it applies preprocess.json itself, so raw detector images go in.
//
//   e2evision::Engine engine("exports/resnet15.pt");            // preprocess.json beside it
//   e2evision::FloatArrays in{raw_image};                        // N × C × H × W floats, C order
//   auto out = engine.run({"image"}, in, {}, {"prob"}, N);      // out[0]: N probabilities
//
// This header pulls in no LibTorch header (the implementation is behind a pointer), so code that
// uses the engine compiles fast.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "e2evision/errors.h"
#include "e2evision/preprocess.h"

namespace e2evision {

using FloatArrays = std::vector<std::vector<float>>;

enum class Backend {
  Auto,         // from preprocess.json's export table, else the file extension
  TorchScript,  // .pt / .ts: torch::jit::load
  AOTInductor,  // .pt2: torch::inductor::AOTIModelPackageLoader
  ONNXRuntime,  // .onnx: only when built with -DE2EVISION_WITH_ONNXRUNTIME=ON
  OneDNN,       // .onednn: oneDNN primitives on the exported op program (built where oneDNN 2.x is found)
};

// How the TorchScript backend runs its frozen graph (docs/deployment.md, "Latency", has the figures).
enum class GraphMode {
  Auto,       // Fused below EngineOptions::large_batch rows, from there on Inference for a graph
              // with convolutions and Plain for one without (two copies of the graph; the fastest
              // measured at batch 1 and at batch 256)
  Plain,      // the exported frozen graph under LibTorch's default executor, nothing added at load
  Inference,  // + torch::jit::optimize_for_inference at load (oneDNN-packed convolutions, folding)
  Fused,      // oneDNN Graph (LLGA) fusion under the profiling executor: convolution/linear + bias
              // + ReLU + residual add become compiled oneDNN partitions, specialised per input shape
};

const char* backendName(Backend b);
Backend parseBackend(const std::string& name);  // "auto", "torchscript", "aoti", "onnxruntime", "onednn"
bool backendAvailable(Backend b);
const char* graphModeName(GraphMode m);
GraphMode parseGraphMode(const std::string& name);  // "auto", "plain", "inference", "fused"

struct EngineOptions {
  Backend backend = Backend::Auto;
  // LibTorch's intra-op threads, process-wide (at::set_num_threads), as CMSSW sets one thread per
  // ONNX Runtime session by default (the oneDNN backend sets OpenMP's count on each calling
  // thread). <= 0 leaves LibTorch's own default.
  int intra_op_threads = 1;
  // Empty: preprocess.json in the model's directory.
  std::string preprocess_path;
  // false: feed inputs to the model as given (they are then already normalised).
  bool apply_preprocessing = true;
  // TorchScript only (ignored by AOTInductor). oneDNN Graph fusion is a process-wide LibTorch
  // switch: once an engine in the process has enabled it, later TorchScript engines are fused too.
  GraphMode graph_mode = GraphMode::Auto;
  // GraphMode::Auto: batches of at least this many rows run the Inference (or Plain) graph.
  int64_t large_batch = 32;
  // Calls at batch 1 on a constant image inside the constructor (best effort), so that the
  // profiling executor has specialised and oneDNN has compiled its partitions before the first
  // real event.
  int warmup_runs = 3;
  // An export directory as model path: timed batch-1 calls per candidate export (their median
  // decides which one the engine keeps).
  int selection_calls = 20;
};

// One export an engine opened on an export directory timed before keeping the fastest.
struct ExportTiming {
  std::string file;  // path of the export
  Backend backend;
  double median_ms;  // of EngineOptions::selection_calls model calls at batch 1 (no preprocessing)
};

class Engine {
 public:
  // Loads preprocess.json and the model; throws PreprocessError / ModelFileError.
  // model_path is a model file, or an export directory: then every export its preprocess.json lists
  // that this build can run (only those of options.backend unless Auto) is loaded and verified,
  // timed at batch 1, and the fastest is kept, so the engine runs the fastest verified export.
  explicit Engine(const std::string& model_path, const EngineOptions& options = EngineOptions());
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;

  // Run a batch, as cms::Ort::ONNXRuntime::run does:
  //  * input_names[i] names input_values[i]; every model input must be given, unknown names throw;
  //  * input_shapes empty: each input has shape {batch_size, <per-sample shape from preprocess.json>};
  //    otherwise input_shapes[i] is input i's full shape (batch first), checked against the model;
  //  * each input_values[i] must hold exactly the product of its shape (raw, un-normalised images);
  //  * returns one flat vector per name in output_names (all outputs, in order, when empty).
  // input_values is not modified (the reference mirrors CMSSW's signature). Safe to call from
  // several threads at once. Throws InputError for caller mistakes, BackendError otherwise.
  FloatArrays run(const std::vector<std::string>& input_names, FloatArrays& input_values,
                  const std::vector<std::vector<int64_t>>& input_shapes = {},
                  const std::vector<std::string>& output_names = {}, int64_t batch_size = 1) const;

  std::vector<std::string> getInputNames() const;
  std::vector<std::string> getOutputNames() const;
  // Shapes with -1 for the batch axis; throw InputError for an unknown name.
  const std::vector<int64_t>& getInputShape(const std::string& name) const;
  const std::vector<int64_t>& getOutputShape(const std::string& name) const;

  const PreprocessConfig& preprocess() const;
  Backend backend() const;
  // The TorchScript graph mode asked for; GraphMode::Auto for other backends.
  GraphMode graphMode() const;
  const std::string& modelPath() const;  // the export kept, for an export directory
  // For an export directory: every candidate timed, in preprocess.json's order; empty otherwise.
  const std::vector<ExportTiming>& exportTimings() const;

  struct Impl;

 private:
  void keepFastestExport(const std::string& dir, const EngineOptions& options);
  double batchOneMedianMs(int calls) const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace e2evision
