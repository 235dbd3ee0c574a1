// The preprocess.json contract written by `e2evision export`: input and output names and shapes,
// and the per-channel normalisation to apply to raw detector images, in this order:
//   (1) zero suppression  |x| < threshold -> 0
//   (2) x *= channel_scale[c]
//   (3) per_sample[c]: divide the sample's channel by the sum of its positive values ("sum") or
//       by its maximum ("max") when that is > 0 (schema version 2)
//   (4) log1p[c]: x = sign(x) * log1p(|x| / log1p[c]) where set (schema version 2)
//   (5) x = (x - centre[c]) / scale[c]
//   (6) clamp to [-clip, clip] when clip is set
// the same arithmetic, in float32, as e2evision.transforms.ChannelNormalizer.forward.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "e2evision/errors.h"

namespace e2evision {

struct ImagePreprocess {
  std::string mode;
  std::optional<float> zero_suppression;
  std::vector<float> channel_scale;
  enum class PerSample { kNone, kSum, kMax };
  std::vector<PerSample> per_sample;          // one per channel; empty means none everywhere
  std::vector<std::optional<float>> log1p;    // one per channel; empty means linear everywhere
  std::vector<float> centre;
  std::vector<float> scale;
  std::optional<float> clip;

  // out[n, c, p] = normalised in[n, c, p] for n_images × channels × pixels values (C order).
  // `in` and `out` may be the same buffer.
  void apply(const float* in, float* out, int64_t n_images, int64_t channels, int64_t pixels) const;
};

struct TensorSpec {
  std::string name;
  std::string kind;                 // inputs: "image" or "scalars"; outputs: "probability", "logit", "value"
  std::vector<int64_t> shape;       // shape[0] == -1 is the batch axis
  std::vector<std::string> labels;  // channel names (image), scalar names, or class names (outputs)
  std::string meaning;              // outputs: what the numbers are
  std::optional<ImagePreprocess> preprocess;

  // Values per sample: the product of shape[1:].
  int64_t sampleSize() const;
};

struct ExportEntry {
  std::string format;  // "torchscript", "aoti", "onnx"
  std::string file;    // file name, relative to preprocess.json's directory
  int64_t bytes = -1;  // size of the file when exported (a cheap truncation check)
  std::string sha256;  // lower-case hex SHA-256 of the file at export (checked before loading)
};

struct PreprocessConfig {
  int schema_version = 0;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  std::vector<ExportEntry> exports;

  // Read and validate; throws PreprocessError naming the file and the field.
  static PreprocessConfig load(const std::string& path);
  static PreprocessConfig parse(const std::string& text, const std::string& source = "preprocess.json");

  const TensorSpec* findInput(const std::string& name) const;
  const TensorSpec* findOutput(const std::string& name) const;
  const ExportEntry* findExport(const std::string& file_name) const;
};

// The preprocess.json that belongs to a model: the one in the model's directory.
std::string defaultPreprocessPath(const std::string& model_path);

}  // namespace e2evision
