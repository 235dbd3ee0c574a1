#include "e2evision/preprocess.h"

#include <cmath>
#include <limits>
#include <fstream>
#include <set>
#include <sstream>

#include "json.h"

namespace e2evision {

namespace {

const char* const kSchema = "e2evision.preprocess";
constexpr int kSchemaVersion = 2;  // version 1 (no per_sample, log1p) is read too
// The orders the engine implements (that of ChannelNormalizer.forward; version 1's four steps).
const std::vector<std::string> kOrder = {"zero_suppression", "channel_scale", "per_sample", "log1p",
                                         "centre_scale", "clip"};
const std::vector<std::string> kOrderV1 = {"zero_suppression", "channel_scale", "centre_scale", "clip"};

std::vector<float> floatList(const json::Value& v, const std::string& what, size_t expected) {
  const auto& arr = v.array(what);
  if (arr.size() != expected) {
    std::ostringstream os;
    os << what << " has " << arr.size() << " entries, the input has " << expected << " channels";
    throw json::JsonError(os.str());
  }
  std::vector<float> out;
  out.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) out.push_back(static_cast<float>(arr[i].number(what + "[" + std::to_string(i) + "]")));
  return out;
}

std::vector<std::string> stringList(const json::Value& v, const std::string& what) {
  std::vector<std::string> out;
  for (size_t i = 0; i < v.array(what).size(); ++i) out.push_back(v.array(what)[i].string(what + "[" + std::to_string(i) + "]"));
  return out;
}

std::vector<int64_t> parseShape(const json::Value& v, const std::string& what) {
  const auto& arr = v.array(what);
  if (arr.size() < 2) throw json::JsonError(what + " must have a batch axis and at least one more dimension");
  std::vector<int64_t> shape;
  for (size_t i = 0; i < arr.size(); ++i) {
    double d = arr[i].number(what + "[" + std::to_string(i) + "]");
    if (d != std::floor(d)) throw json::JsonError(what + " must hold integers");
    shape.push_back(static_cast<int64_t>(d));
  }
  if (shape[0] != -1) throw json::JsonError(what + "[0] must be -1 (the batch axis)");
  for (size_t i = 1; i < shape.size(); ++i)
    if (shape[i] < 1) throw json::JsonError(what + " has a non-positive dimension");
  return shape;
}

ImagePreprocess parseNormalisation(const json::Value& v, const std::string& what, int64_t channels) {
  ImagePreprocess p;
  if (v.has("order")) {
    auto order = stringList(v.at("order", what), what + ".order");
    if (order != kOrder && order != kOrderV1)
      throw json::JsonError(what + ".order must be [zero_suppression, channel_scale, per_sample, log1p, "
                            "centre_scale, clip]: the only order this engine implements");
  }
  p.mode = v.has("mode") ? v.at("mode", what).string(what + ".mode") : "";
  size_t n = static_cast<size_t>(channels);
  const auto& zs = v.at("zero_suppression", what);
  if (!zs.isNull()) {
    double t = zs.number(what + ".zero_suppression");
    if (t < 0) throw json::JsonError(what + ".zero_suppression must be >= 0 or null");
    p.zero_suppression = static_cast<float>(t);
  }
  // Absent channel_scale means all ones (preprocess.json files from before the field existed).
  p.channel_scale = v.has("channel_scale") && !v.at("channel_scale", what).isNull()
                        ? floatList(v.at("channel_scale", what), what + ".channel_scale", n)
                        : std::vector<float>(n, 1.0f);
  if (v.has("per_sample") && !v.at("per_sample", what).isNull()) {
    auto modes = stringList(v.at("per_sample", what), what + ".per_sample");
    if (modes.size() != n)
      throw json::JsonError(what + ".per_sample has " + std::to_string(modes.size()) + " entries, the input has " +
                            std::to_string(n) + " channels");
    for (const auto& m : modes) {
      if (m == "none") p.per_sample.push_back(ImagePreprocess::PerSample::kNone);
      else if (m == "sum") p.per_sample.push_back(ImagePreprocess::PerSample::kSum);
      else if (m == "max") p.per_sample.push_back(ImagePreprocess::PerSample::kMax);
      else throw json::JsonError(what + ".per_sample entries must be none, sum or max, got '" + m + "'");
    }
  }
  if (v.has("log1p") && !v.at("log1p", what).isNull()) {
    const auto& arr = v.at("log1p", what).array(what + ".log1p");
    if (arr.size() != n)
      throw json::JsonError(what + ".log1p has " + std::to_string(arr.size()) + " entries, the input has " +
                            std::to_string(n) + " channels");
    for (size_t i = 0; i < arr.size(); ++i) {
      if (arr[i].isNull()) {
        p.log1p.emplace_back(std::nullopt);
        continue;
      }
      double s = arr[i].number(what + ".log1p[" + std::to_string(i) + "]");
      if (!(s > 0) || !std::isfinite(s)) throw json::JsonError(what + ".log1p scales must be finite and > 0, or null");
      p.log1p.emplace_back(static_cast<float>(s));
    }
  }
  p.centre = floatList(v.at("centre", what), what + ".centre", n);
  p.scale = floatList(v.at("scale", what), what + ".scale", n);
  for (float s : p.scale)
    if (!(s != 0.0f) || !std::isfinite(s)) throw json::JsonError(what + ".scale must be finite and non-zero");
  const auto& clip = v.at("clip", what);
  if (!clip.isNull()) {
    double c = clip.number(what + ".clip");
    if (!(c > 0)) throw json::JsonError(what + ".clip must be > 0 or null");
    p.clip = static_cast<float>(c);
  }
  return p;
}

TensorSpec parseTensor(const json::Value& v, const std::string& what, bool is_input) {
  TensorSpec t;
  t.name = v.at("name", what).string(what + ".name");
  if (t.name.empty()) throw json::JsonError(what + ".name is empty");
  t.kind = v.at("kind", what).string(what + ".kind");
  t.shape = parseShape(v.at("shape", what), what + ".shape");
  if (v.has("dtype") && v.at("dtype", what).string(what + ".dtype") != "float32")
    throw json::JsonError(what + ".dtype must be float32");
  if (is_input) {
    if (t.kind != "image" && t.kind != "scalars") throw json::JsonError(what + ".kind must be image or scalars");
    if (t.kind == "image") {
      if (t.shape.size() != 4) throw json::JsonError(what + ".shape must be [-1, C, H, W] for an image");
      if (v.has("layout") && v.at("layout", what).string(what + ".layout") != "NCHW")
        throw json::JsonError(what + ".layout must be NCHW");
      if (v.has("channels")) t.labels = stringList(v.at("channels", what), what + ".channels");
    } else if (v.has("names")) {
      t.labels = stringList(v.at("names", what), what + ".names");
    }
    if (v.has("preprocess") && !v.at("preprocess", what).isNull())
      t.preprocess = parseNormalisation(v.at("preprocess", what), what + ".preprocess", t.shape[1]);
  } else {
    if (v.has("meaning")) t.meaning = v.at("meaning", what).string(what + ".meaning");
    if (v.has("classes") && !v.at("classes", what).isNull()) t.labels = stringList(v.at("classes", what), what + ".classes");
  }
  return t;
}

}  // namespace

int64_t TensorSpec::sampleSize() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

void ImagePreprocess::apply(const float* in, float* out, int64_t n_images, int64_t channels, int64_t pixels) const {
  const bool zs = zero_suppression.has_value();
  const float threshold = zs ? *zero_suppression : 0.0f;
  const bool clamp = clip.has_value();
  const float lim = clamp ? *clip : 0.0f;
  for (int64_t n = 0; n < n_images; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const float k = channel_scale[c], mu = centre[c], sigma = scale[c];
      const int64_t base = (n * channels + c) * pixels;
      const PerSample ps = per_sample.empty() ? PerSample::kNone : per_sample[c];
      const std::optional<float> log_scale = log1p.empty() ? std::nullopt : log1p[c];
      if (ps == PerSample::kNone && !log_scale) {  // the version-1 path: one pass, as before
        for (int64_t p = 0; p < pixels; ++p) {
          float x = in[base + p];
          if (zs && std::fabs(x) < threshold) x = 0.0f;
          x = (x * k - mu) / sigma;
          if (clamp) x = x < -lim ? -lim : (x > lim ? lim : x);
          out[base + p] = x;
        }
        continue;
      }
      // Two passes: zero suppression and scale factors (and the per-sample reference), then the rest.
      float ref = ps == PerSample::kMax ? -std::numeric_limits<float>::infinity() : 0.0f;
      for (int64_t p = 0; p < pixels; ++p) {
        float x = in[base + p];
        if (zs && std::fabs(x) < threshold) x = 0.0f;
        x = x * k;
        if (ps == PerSample::kSum && x > 0) ref += x;
        if (ps == PerSample::kMax && x > ref) ref = x;
        out[base + p] = x;
      }
      const float div = (ps != PerSample::kNone && ref > 0) ? ref : 1.0f;
      for (int64_t p = 0; p < pixels; ++p) {
        float x = out[base + p];
        if (ps != PerSample::kNone) x = x / div;
        if (log_scale) x = std::copysign(std::log1p(std::fabs(x) / *log_scale), x);
        x = (x - mu) / sigma;
        if (clamp) x = x < -lim ? -lim : (x > lim ? lim : x);
        out[base + p] = x;
      }
    }
  }
}

PreprocessConfig PreprocessConfig::parse(const std::string& text, const std::string& source) {
  PreprocessConfig cfg;
  try {
    json::Value root = json::Value::parse(text);
    root.object("the document");
    const std::string schema = root.at("schema", "").string("schema");
    if (schema != kSchema) throw json::JsonError("schema is '" + schema + "', expected '" + kSchema + "'");
    double version = root.at("schema_version", "").number("schema_version");
    if (version != kSchemaVersion && version != 1)
      throw json::JsonError("schema_version " + std::to_string(static_cast<int>(version)) +
                            " is not supported by this engine (it reads versions 1 to " +
                            std::to_string(kSchemaVersion) + ")");
    cfg.schema_version = static_cast<int>(version);
    std::set<std::string> seen;
    const auto& inputs = root.at("inputs", "").array("inputs");
    if (inputs.empty()) throw json::JsonError("inputs is empty");
    for (size_t i = 0; i < inputs.size(); ++i) {
      cfg.inputs.push_back(parseTensor(inputs[i], "inputs[" + std::to_string(i) + "]", true));
      if (!seen.insert(cfg.inputs.back().name).second) throw json::JsonError("input name '" + cfg.inputs.back().name + "' appears twice");
    }
    seen.clear();
    const auto& outputs = root.at("outputs", "").array("outputs");
    if (outputs.empty()) throw json::JsonError("outputs is empty");
    for (size_t i = 0; i < outputs.size(); ++i) {
      cfg.outputs.push_back(parseTensor(outputs[i], "outputs[" + std::to_string(i) + "]", false));
      if (!seen.insert(cfg.outputs.back().name).second) throw json::JsonError("output name '" + cfg.outputs.back().name + "' appears twice");
    }
    if (root.has("exports")) {
      for (const auto& [format, entry] : root.at("exports", "").object("exports")) {
        ExportEntry e;
        e.format = format;
        e.file = entry.at("file", "exports." + format).string("exports." + format + ".file");
        if (entry.has("bytes")) e.bytes = static_cast<int64_t>(entry.at("bytes", "").number("exports." + format + ".bytes"));
        if (entry.has("sha256")) {
          e.sha256 = entry.at("sha256", "").string("exports." + format + ".sha256");
          if (e.sha256.size() != 64 || e.sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
            throw json::JsonError("exports." + format + ".sha256 is not 64 lower-case hex digits");
        }
        cfg.exports.push_back(e);
      }
    }
  } catch (const json::JsonError& e) {
    throw PreprocessError(source + ": " + e.what());
  }
  return cfg;
}

PreprocessConfig PreprocessConfig::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw PreprocessError(path + ": file not found or unreadable (export writes preprocess.json beside the model)");
  std::ostringstream buf;
  buf << in.rdbuf();
  return parse(buf.str(), path);
}

const TensorSpec* PreprocessConfig::findInput(const std::string& name) const {
  for (const auto& t : inputs)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorSpec* PreprocessConfig::findOutput(const std::string& name) const {
  for (const auto& t : outputs)
    if (t.name == name) return &t;
  return nullptr;
}

const ExportEntry* PreprocessConfig::findExport(const std::string& file_name) const {
  for (const auto& e : exports)
    if (e.file == file_name) return &e;
  return nullptr;
}

std::string defaultPreprocessPath(const std::string& model_path) {
  auto slash = model_path.find_last_of('/');
  return slash == std::string::npos ? "preprocess.json" : model_path.substr(0, slash + 1) + "preprocess.json";
}

}  // namespace e2evision
