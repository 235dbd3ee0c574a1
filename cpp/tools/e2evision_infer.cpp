// e2evision-infer: run an exported e2evision model on raw images from .npy files.
//
//   e2evision-infer --model exports/resnet15.pt --input image=raw.npy --output prob=pred.npy
//   e2evision-infer --model exports/resnet15.pt --input image=raw.npy --bench 200 --batch-size 256
//   e2evision-infer --model exports/ --info    # an export directory: the fastest verified export
//
// Exit status: 0 success, 2 an e2evision::EngineError (message names its kind), 1 bad usage.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "e2evision/engine.h"
#include "e2evision/npy.h"

namespace {

const char* kUsage =
    "usage: e2evision-infer --model PATH [--preprocess PATH] [--backend auto|torchscript|aoti|onnxruntime|onednn]\n"
    "                       [--graph-mode auto|plain|inference|fused] [--large-batch B] [--load-warmup N]\n"
    "                       --input [NAME=]FILE.npy ... [--output NAME=FILE.npy ...]\n"
    "                       [--batch-size B] [--threads N] [--no-preprocess]\n"
    "                       [--bench REPS [--warmup W]] [--info]\n"
    "PATH is a model file or an export directory (the engine then keeps the fastest verified export\n"
    "its preprocess.json lists; --info shows each one's time). Inputs are raw (un-normalised)\n"
    "little-endian float32 C-order arrays with the batch first;\n"
    "the engine applies preprocess.json. Outputs are written as float32 .npy files.\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::pair<std::string, std::string> splitAssign(const std::string& arg) {
  auto eq = arg.find('=');
  if (eq == std::string::npos) return {"", arg};
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string jsonShape(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  return os.str() + "]";
}

// Rows [start, start + count) of `arr`, cycling when the array has fewer rows (for benchmarks).
std::vector<float> rows(const e2evision::NpyArray& arr, int64_t start, int64_t count) {
  const int64_t size = arr.rowSize();
  std::vector<float> out(static_cast<size_t>(count * size));
  for (int64_t r = 0; r < count; ++r) {
    const int64_t src = (start + r) % arr.rows();
    std::copy_n(arr.data.begin() + src * size, size, out.begin() + r * size);
  }
  return out;
}

int run(int argc, char** argv) {
  std::string model;
  std::vector<std::pair<std::string, std::string>> inputs, outputs;
  int64_t batch_size = 0;
  int reps = 0, warmup = 10;
  bool info = false;
  e2evision::EngineOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    auto integer = [&](const std::string& v) -> long long {
      try {
        size_t used = 0;
        long long x = std::stoll(v, &used);
        if (used != v.size()) throw std::invalid_argument(v);
        return x;
      } catch (const std::exception&) {
        throw UsageError(a + " needs an integer, got '" + v + "'");
      }
    };
    if (a == "--model") model = value();
    else if (a == "--preprocess") options.preprocess_path = value();
    else if (a == "--backend") options.backend = e2evision::parseBackend(value());
    else if (a == "--graph-mode") options.graph_mode = e2evision::parseGraphMode(value());
    else if (a == "--load-warmup") options.warmup_runs = static_cast<int>(integer(value()));
    else if (a == "--large-batch") options.large_batch = integer(value());
    else if (a == "--input") inputs.push_back(splitAssign(value()));
    else if (a == "--output") {
      auto o = splitAssign(value());
      if (o.first.empty()) throw UsageError("--output needs NAME=FILE.npy");
      outputs.push_back(o);
    } else if (a == "--batch-size") batch_size = integer(value());
    else if (a == "--threads") options.intra_op_threads = static_cast<int>(integer(value()));
    else if (a == "--no-preprocess") options.apply_preprocessing = false;
    else if (a == "--bench") reps = static_cast<int>(integer(value()));
    else if (a == "--warmup") warmup = static_cast<int>(integer(value()));
    else if (a == "--info") info = true;
    else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else throw UsageError("unknown argument '" + a + "'");
  }
  if (model.empty()) throw UsageError("--model is required");

  e2evision::Engine engine(model, options);
  if (info) {
    std::cout << "{\"backend\": " << jsonString(e2evision::backendName(engine.backend()))
              << ", \"graph_mode\": " << jsonString(e2evision::graphModeName(engine.graphMode()))
              << ", \"model\": " << jsonString(engine.modelPath()) << ", \"candidates\": [";
    const auto& timings = engine.exportTimings();
    for (size_t i = 0; i < timings.size(); ++i) {
      std::cout << (i ? ", " : "") << "{\"file\": " << jsonString(timings[i].file)
                << ", \"backend\": " << jsonString(e2evision::backendName(timings[i].backend)) << ", \"median_ms\": ";
      if (std::isfinite(timings[i].median_ms)) std::cout << timings[i].median_ms;
      else std::cout << "null";
      std::cout << "}";
    }
    std::cout << "], \"inputs\": {";
    auto in = engine.getInputNames();
    for (size_t i = 0; i < in.size(); ++i)
      std::cout << (i ? ", " : "") << jsonString(in[i]) << ": " << jsonShape(engine.getInputShape(in[i]));
    std::cout << "}, \"outputs\": {";
    auto out = engine.getOutputNames();
    for (size_t i = 0; i < out.size(); ++i)
      std::cout << (i ? ", " : "") << jsonString(out[i]) << ": " << jsonShape(engine.getOutputShape(out[i]));
    std::cout << "}}\n";
    return 0;
  }
  if (inputs.empty()) throw UsageError("give at least one --input [NAME=]FILE.npy");
  if (reps <= 0 && outputs.empty()) throw UsageError("give at least one --output NAME=FILE.npy (or --bench REPS)");

  std::vector<std::string> names;
  std::vector<e2evision::NpyArray> arrays;
  for (auto& [name, path] : inputs) {
    if (name.empty()) {
      if (inputs.size() != 1) throw UsageError("name every input (--input NAME=FILE.npy) when there are several");
      name = engine.getInputNames().front();
    }
    names.push_back(name);
    arrays.push_back(e2evision::readNpy(path));
    if (arrays.back().shape.empty()) throw e2evision::InputError(path + ": a 0-d array has no batch axis");
  }
  const int64_t n = arrays.front().rows();
  for (size_t i = 1; i < arrays.size(); ++i)
    if (arrays[i].rows() != n)
      throw e2evision::InputError("inputs '" + names[0] + "' and '" + names[i] + "' have " + std::to_string(n) + " and " +
                                  std::to_string(arrays[i].rows()) + " rows");
  if (n < 1) throw e2evision::InputError("the input arrays have no rows");
  if (batch_size <= 0) batch_size = n;

  std::vector<std::string> out_names;
  for (const auto& o : outputs) out_names.push_back(o.first);

  auto call = [&](int64_t start, int64_t count) {
    e2evision::FloatArrays values;
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& arr : arrays) {
      values.push_back(rows(arr, start, count));
      std::vector<int64_t> shape = arr.shape;
      shape[0] = count;
      shapes.push_back(shape);
    }
    return engine.run(names, values, shapes, out_names, count);
  };

  if (reps > 0) {
    // Latency of one run() on `batch_size` rows (cycled when the file has fewer), inputs prepared
    // outside the timed region as a producer would have them.
    e2evision::FloatArrays values;
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& arr : arrays) {
      values.push_back(rows(arr, 0, batch_size));
      std::vector<int64_t> shape = arr.shape;
      shape[0] = batch_size;
      shapes.push_back(shape);
    }
    for (int i = 0; i < warmup; ++i) engine.run(names, values, shapes, out_names, batch_size);
    std::vector<double> ms;
    for (int i = 0; i < reps; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      engine.run(names, values, shapes, out_names, batch_size);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    auto q = [&](double p) { return sorted[static_cast<size_t>(p * (sorted.size() - 1) + 0.5)]; };
    double mean = std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size();
    std::printf("{\"backend\": \"%s\", \"graph_mode\": \"%s\", \"batch_size\": %lld, \"reps\": %d, \"threads\": %d, \"median_ms\": %.6f, "
                "\"mean_ms\": %.6f, \"p10_ms\": %.6f, \"p90_ms\": %.6f, \"min_ms\": %.6f, \"times_ms\": [",
                e2evision::backendName(engine.backend()), e2evision::graphModeName(engine.graphMode()),
                static_cast<long long>(batch_size), reps,
                options.intra_op_threads, q(0.5), mean, q(0.1), q(0.9), sorted.front());
    for (size_t i = 0; i < ms.size(); ++i) std::printf("%s%.6f", i ? ", " : "", ms[i]);
    std::printf("]}\n");
    if (outputs.empty()) return 0;
  }

  std::vector<std::vector<float>> collected(out_names.size());
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t count = std::min(batch_size, n - start);
    auto result = call(start, count);
    for (size_t i = 0; i < result.size(); ++i) collected[i].insert(collected[i].end(), result[i].begin(), result[i].end());
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::vector<int64_t> shape = engine.getOutputShape(out_names[i]);
    shape[0] = n;
    e2evision::writeNpy(outputs[i].second, shape, collected[i]);
    std::cout << "wrote " << out_names[i] << " " << e2evision::shapeString(shape) << " to " << outputs[i].second << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "e2evision-infer: " << e.what() << "\n" << kUsage;
    return 1;
  } catch (const e2evision::EngineError& e) {
    std::cerr << "e2evision-infer: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "e2evision-infer: unexpected error: " << e.what() << "\n";
    return 3;
  }
}
