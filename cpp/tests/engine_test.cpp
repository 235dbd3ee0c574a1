// C++ tests of the e2evision engine: preprocessing arithmetic, preprocess.json and .npy validation,
// and, given an exported model, batch invariance, concurrent calls and every named error.
//
//   e2evision-engine-test --workdir DIR [--model M --raw raw.npy [--scalars s.npy]
//                         [--expected NAME=ref.npy ...]]
//
// Prints one "ok"/"FAIL" line per check; exits 1 when any check fails. pytest runs it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "e2evision/engine.h"
#include "e2evision/npy.h"

using namespace e2evision;

namespace {

int failures = 0;

void check(bool ok, const std::string& name, const std::string& detail = "") {
  std::cout << (ok ? "ok   - " : "FAIL - ") << name << (ok || detail.empty() ? "" : ": " + detail) << "\n";
  if (!ok) ++failures;
}

// Expect `fn` to throw exactly exception type E whose message contains `fragment`.
template <class E>
void expectThrow(const std::string& name, const std::function<void()>& fn, const std::string& fragment) {
  try {
    fn();
    check(false, name, "no exception");
  } catch (const E& e) {
    std::string msg = e.what();
    check(msg.find(fragment) != std::string::npos, name, "message '" + msg + "' lacks '" + fragment + "'");
  } catch (const std::exception& e) {
    check(false, name, std::string("wrong exception type: ") + e.what());
  }
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::string fileName(const std::string& path) {
  auto s = path.find_last_of('/');
  return s == std::string::npos ? path : path.substr(s + 1);
}

std::string dirName(const std::string& path) {
  auto s = path.find_last_of('/');
  return s == std::string::npos ? "." : path.substr(0, s);
}

float maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

void testPreprocessArithmetic() {
  ImagePreprocess p;
  p.zero_suppression = 0.5f;
  p.channel_scale = {2.0f, 1.0f};
  p.centre = {1.0f, 0.0f};
  p.scale = {2.0f, 4.0f};
  p.clip = 1.5f;
  // one image, 2 channels × 3 pixels
  std::vector<float> in = {0.4f, -0.6f, 3.0f, 0.49f, 8.0f, -2.0f}, out(6);
  p.apply(in.data(), out.data(), 1, 2, 3);
  // ch0: 0.4 -> 0 -> (0*2-1)/2=-0.5 ; -0.6 -> (-1.2-1)/2=-1.1 ; 3 -> (6-1)/2=2.5 -> clip 1.5
  // ch1: 0.49 -> 0 -> 0 ; 8 -> 2 -> clip 1.5 ; -2 -> -0.5
  std::vector<float> want = {-0.5f, -1.1f, 1.5f, 0.0f, 1.5f, -0.5f};
  check(maxAbsDiff(out, want) < 1e-6f, "preprocess: zero suppression, channel scale, centre/scale, clip in order");
  ImagePreprocess none;
  none.channel_scale = {1.0f};
  none.centre = {0.5f};
  none.scale = {0.25f};
  std::vector<float> a = {0.1f, -3.0f}, b(2);
  none.apply(a.data(), b.data(), 1, 1, 2);
  check(maxAbsDiff(b, {(0.1f - 0.5f) / 0.25f, (-3.0f - 0.5f) / 0.25f}) == 0.0f, "preprocess: no zero suppression or clip when null");

  // Version 2: per-sample normalisation and signed log1p, per channel, between scale and centre.
  ImagePreprocess v2;
  v2.channel_scale = {1.0f, 2.0f, 1.0f};
  v2.per_sample = {ImagePreprocess::PerSample::kSum, ImagePreprocess::PerSample::kMax,
                   ImagePreprocess::PerSample::kSum};
  v2.log1p = {0.5f, std::nullopt, 2.0f};
  v2.centre = {0.0f, 0.0f, 1.0f};
  v2.scale = {1.0f, 1.0f, 2.0f};
  // ch0: 1, 3, -2 -> sum of positives 4 -> 0.25, 0.75, -0.5 -> sign*log1p(|x|/0.5)
  // ch1: 1, 2, 3 (*2) -> max 6 -> 1/3, 2/3, 1
  // ch2: all <= 0 -> no per-sample division; -4 -> -log1p(2); then (x - 1) / 2
  std::vector<float> x2 = {1.0f, 3.0f, -2.0f, 0.5f, 1.0f, 1.5f, -4.0f, 0.0f, -0.0f}, y2(9);
  v2.apply(x2.data(), y2.data(), 1, 3, 3);
  std::vector<float> w2 = {std::log1p(0.5f), std::log1p(1.5f), -std::log1p(1.0f), 1.0f / 3.0f, 2.0f / 3.0f, 1.0f,
                           (-std::log1p(2.0f) - 1.0f) / 2.0f, -0.5f, -0.5f};
  check(maxAbsDiff(y2, w2) < 1e-6f, "preprocess v2: per-sample sum/max and signed log1p per channel");
}

const char* kValid = R"({"schema": "e2evision.preprocess", "schema_version": 1,
  "inputs": [{"name": "image", "kind": "image", "dtype": "float32", "layout": "NCHW", "shape": [-1, 2, 4, 4],
              "preprocess": {"order": ["zero_suppression", "channel_scale", "centre_scale", "clip"],
                             "mode": "scale", "zero_suppression": null, "centre": [0, 0], "scale": [1, 2], "clip": null}}],
  "outputs": [{"name": "prob", "kind": "probability", "shape": [-1, 1], "meaning": "p"}]})";

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  auto at = s.find(from);
  if (at == std::string::npos) throw std::logic_error("test bug: '" + from + "' not in template");
  return s.replace(at, from.size(), to);
}

void testPreprocessJson() {
  auto cfg = PreprocessConfig::parse(kValid);
  check(cfg.inputs.size() == 1 && cfg.inputs[0].preprocess && cfg.inputs[0].preprocess->channel_scale == std::vector<float>{1, 1},
        "preprocess.json: valid file parses; absent channel_scale means ones");
  expectThrow<PreprocessError>("preprocess.json: not JSON", [] { PreprocessConfig::parse("{\"schema\": ", "x.json"); }, "x.json: invalid JSON");
  expectThrow<PreprocessError>("preprocess.json: wrong schema",
                               [] { PreprocessConfig::parse(replaced(kValid, "e2evision.preprocess", "weaver")); }, "schema is 'weaver'");
  expectThrow<PreprocessError>("preprocess.json: newer schema version",
                               [] { PreprocessConfig::parse(replaced(kValid, "\"schema_version\": 1", "\"schema_version\": 3")); }, "schema_version 3");
  expectThrow<PreprocessError>("preprocess.json: missing field",
                               [] { PreprocessConfig::parse(replaced(kValid, "\"centre\": [0, 0], ", "")); }, "missing field 'inputs[0].preprocess.centre'");
  expectThrow<PreprocessError>("preprocess.json: per-channel list of the wrong length",
                               [] { PreprocessConfig::parse(replaced(kValid, "\"scale\": [1, 2]", "\"scale\": [1]")); }, "scale has 1 entries");
  expectThrow<PreprocessError>("preprocess.json: zero scale",
                               [] { PreprocessConfig::parse(replaced(kValid, "\"scale\": [1, 2]", "\"scale\": [1, 0]")); }, "non-zero");
  expectThrow<PreprocessError>("preprocess.json: another order of operations",
                               [] { PreprocessConfig::parse(replaced(kValid, "\"zero_suppression\", \"channel_scale\"", "\"channel_scale\", \"zero_suppression\"")); }, "order");
  expectThrow<PreprocessError>("preprocess.json: wrong type",
                               [] { PreprocessConfig::parse(replaced(kValid, "\"clip\": null", "\"clip\": \"big\"")); }, "clip must be a number");
  expectThrow<PreprocessError>("preprocess.json: batch axis not -1",
                               [] { PreprocessConfig::parse(replaced(kValid, "[-1, 2, 4, 4]", "[1, 2, 4, 4]")); }, "must be -1");
  expectThrow<PreprocessError>("preprocess.json: missing file", [] { PreprocessConfig::load("/nonexistent/preprocess.json"); }, "not found");
}

void testNpy(const std::string& dir) {
  const std::string good = dir + "/good.npy";
  std::vector<float> data = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  writeNpy(good, {3, 2}, data);
  NpyArray back = readNpy(good);
  check(back.shape == std::vector<int64_t>{3, 2} && back.data == data && back.rowSize() == 2, "npy: write/read round trip");
  const std::string bytes = readFile(good);
  auto variant = [&](const std::string& name, const std::string& from, const std::string& to) {
    std::string path = dir + "/" + name;
    writeFile(path, replaced(bytes, from, to));
    return path;
  };
  std::string f8 = variant("f8.npy", "'<f4'", "'<f8'");
  expectThrow<NpyError>("npy: float64 rejected", [&] { readNpy(f8); }, "dtype '<f8' is not supported");
  std::string be = variant("be.npy", "'<f4'", "'>f4'");
  expectThrow<NpyError>("npy: big-endian rejected", [&] { readNpy(be); }, "big-endian");
  std::string fo = variant("fortran.npy", "False", "True ");
  expectThrow<NpyError>("npy: Fortran order rejected", [&] { readNpy(fo); }, "Fortran");
  std::string tr = dir + "/truncated.npy";
  writeFile(tr, bytes.substr(0, bytes.size() - 5));
  expectThrow<NpyError>("npy: truncated data", [&] { readNpy(tr); }, "truncated");
  std::string bad = dir + "/bad.npy";
  writeFile(bad, "PK\x03\x04 definitely not numpy");
  expectThrow<NpyError>("npy: not a .npy file", [&] { readNpy(bad); }, "bad magic");
  expectThrow<NpyError>("npy: missing file", [&] { readNpy(dir + "/absent.npy"); }, "not found");
}

void testModel(const std::string& model, const std::string& dir, const std::string& raw_path, const std::string& scalars_path,
               const std::vector<std::pair<std::string, std::string>>& expected) {
  Engine engine(model);
  NpyArray raw = readNpy(raw_path);
  const auto in_names = engine.getInputNames();
  const auto out_names = engine.getOutputNames();
  const int64_t n = raw.rows();
  check(engine.getInputShape("image").size() == 4 && raw.rowSize() * n == static_cast<int64_t>(raw.data.size()),
        std::string("model loads with the ") + backendName(engine.backend()) + " backend");

  std::vector<std::string> names = {"image"};
  FloatArrays values = {raw.data};
  NpyArray scalars;
  if (!scalars_path.empty()) {
    scalars = readNpy(scalars_path);
    names.push_back("scalars");
    values.push_back(scalars.data);
  }
  // CMSSW-style call: no shapes, the batch size, raw values.
  FloatArrays all = engine.run(names, values, {}, {}, n);
  check(all.size() == out_names.size(), "run returns every output when output_names is empty");
  check(values[0] == raw.data, "run leaves input_values unchanged");
  for (const auto& [name, path] : expected) {
    NpyArray ref = readNpy(path);
    size_t idx = std::find(out_names.begin(), out_names.end(), name) - out_names.begin();
    float d = idx < all.size() ? maxAbsDiff(all[idx], ref.data) : INFINITY;
    check(d <= 1e-5f, "output '" + name + "' equals PyTorch's within 1e-5", "max |diff| " + std::to_string(d));
  }

  // Batch invariance: one sample at a time gives the batched numbers.
  const auto& first_out = out_names.front();
  const int64_t per = engine.getOutputShape(first_out)[1];
  float worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    FloatArrays one;
    one.emplace_back(raw.data.begin() + i * raw.rowSize(), raw.data.begin() + (i + 1) * raw.rowSize());
    if (!scalars_path.empty())
      one.emplace_back(scalars.data.begin() + i * scalars.rowSize(), scalars.data.begin() + (i + 1) * scalars.rowSize());
    auto r = engine.run(names, one, {}, {first_out}, 1);
    std::vector<float> slice(all[0].begin() + i * per, all[0].begin() + (i + 1) * per);
    worst = std::max(worst, maxAbsDiff(r[0], slice));
  }
  check(worst <= 1e-5f, "batch size 1, sample by sample, equals the batched run", "max |diff| " + std::to_string(worst));

  // Concurrent calls on one shared engine (as CMSSW streams share a GlobalCache).
  std::vector<float> threaded_worst(4, 0.0f);
  std::vector<std::string> thread_errors(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int rep = 0; rep < 5; ++rep) {
          FloatArrays v = values;
          auto r = engine.run(names, v, {}, {first_out}, n);
          threaded_worst[t] = std::max(threaded_worst[t], maxAbsDiff(r[0], all[0]));
        }
      } catch (const std::exception& e) {
        thread_errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  bool threads_ok = true;
  for (int t = 0; t < 4; ++t) threads_ok = threads_ok && thread_errors[t].empty() && threaded_worst[t] <= 1e-6f;
  check(threads_ok, "4 threads × 5 concurrent runs agree with the single-threaded result", thread_errors[0]);

  // Caller mistakes: named InputErrors.
  expectThrow<InputError>("unknown input name", [&] {
    FloatArrays v = values;
    auto bad = names;
    bad[0] = "images";
    engine.run(bad, v, {}, {}, n);
  }, "'images' is not an input of this model");
  expectThrow<InputError>("input not provided", [&] {
    FloatArrays v;
    engine.run({}, v, {}, {}, n);
  }, "input 'image' is not provided");
  expectThrow<InputError>("wrong flat size", [&] {
    FloatArrays v = values;
    v[0].pop_back();
    engine.run(names, v, {}, {}, n);
  }, "wrong size");
  expectThrow<InputError>("flat size of another batch size", [&] {
    FloatArrays v = values;
    engine.run(names, v, {}, {}, n + 1);
  }, "wrong size");
  expectThrow<InputError>("names and values disagree", [&] {
    FloatArrays v = {values[0], values[0], values[0]};
    engine.run(names, v, {}, {}, n);
  }, "value arrays");
  expectThrow<InputError>("shape that does not match the model", [&] {
    FloatArrays v = values;
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& nm : names) shapes.push_back(engine.getInputShape(nm));
    shapes[0][0] = n;
    std::swap(shapes[0][2], shapes[0][1]);
    engine.run(names, v, shapes, {}, n);
  }, "the model expects");
  expectThrow<InputError>("batch size 0", [&] {
    FloatArrays v;
    for (size_t i = 0; i < names.size(); ++i) v.emplace_back();
    engine.run(names, v, {}, {}, 0);
  }, "must be >= 1");
  expectThrow<InputError>("unknown output name", [&] {
    FloatArrays v = values;
    engine.run(names, v, {}, {"score"}, n);
  }, "'score' is not an output");
  expectThrow<InputError>("unknown name in getInputShape", [&] { engine.getInputShape("x"); }, "not an input");

  // Model and preprocess.json files: named errors, no crash.
  const std::string pre = readFile(dirName(model) + "/preprocess.json");
  const std::string model_bytes = readFile(model);
  expectThrow<ModelFileError>("missing model file", [&] { Engine e(dir + "/absent" + model.substr(model.find_last_of('.'))); }, "model file not found");
  writeFile(dir + "/preprocess.json", pre);
  writeFile(dir + "/garbage.pt", "this is not a TorchScript archive");
  expectThrow<ModelFileError>("corrupt TorchScript file", [&] { Engine e(dir + "/garbage.pt"); }, "not a TorchScript model");
  writeFile(dir + "/garbage.pt2", "this is not an AOTInductor package");
  expectThrow<ModelFileError>("corrupt AOTInductor package", [&] { Engine e(dir + "/garbage.pt2"); }, "not an AOTInductor package");
  if (backendAvailable(Backend::OneDNN)) {
    writeFile(dir + "/garbage.onednn", "this is not a oneDNN program");
    expectThrow<ModelFileError>("corrupt oneDNN program", [&] { Engine e(dir + "/garbage.onednn"); }, "not a valid e2evision oneDNN program");
  }
  const std::string ext = model.substr(model.find_last_of('.'));
  writeFile(dir + "/halved" + ext, model_bytes.substr(0, model_bytes.size() / 2));
  expectThrow<ModelFileError>("truncated model file (not in the export table)", [&] { Engine e(dir + "/halved" + ext); }, "not a");
  writeFile(dir + "/" + fileName(model), model_bytes.substr(0, model_bytes.size() - 100));
  expectThrow<ModelFileError>("truncated model file (size recorded at export)", [&] { Engine e(dir + "/" + fileName(model)); }, "truncated or replaced");
  writeFile(dir + "/odd.bin", model_bytes);
  EngineOptions by_ext;
  by_ext.preprocess_path = dir + "/preprocess.json";
  expectThrow<ModelFileError>("unknown extension", [&] { Engine e(dir + "/odd.bin", by_ext); }, "cannot tell the model format");
  writeFile(dir + "/preprocess.json", "{\"schema\": \"e2evision.preprocess\", ");
  writeFile(dir + "/" + fileName(model), model_bytes);
  expectThrow<PreprocessError>("corrupt preprocess.json", [&] { Engine e(dir + "/" + fileName(model)); }, "invalid JSON");
  std::remove((dir + "/preprocess.json").c_str());
  expectThrow<PreprocessError>("missing preprocess.json", [&] { Engine e(dir + "/" + fileName(model)); }, "preprocess.json: file not found");
  EngineOptions explicit_pre;
  explicit_pre.preprocess_path = dirName(model) + "/preprocess.json";
  Engine moved(dir + "/" + fileName(model), explicit_pre);
  FloatArrays v = values;
  check(maxAbsDiff(moved.run(names, v, {}, {first_out}, n)[0], all[0]) == 0.0f, "a copied model with an explicit preprocess.json path");
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, raw, scalars, workdir;
  std::vector<std::pair<std::string, std::string>> expected;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--model") model = v;
    else if (a == "--raw") raw = v;
    else if (a == "--scalars") scalars = v;
    else if (a == "--workdir") workdir = v;
    else if (a == "--expected") {
      auto eq = v.find('=');
      expected.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  if (workdir.empty()) {
    std::cerr << "usage: e2evision-engine-test --workdir DIR [--model M --raw raw.npy [--scalars s.npy] [--expected NAME=ref.npy ...]]\n";
    return 2;
  }
  try {
    testPreprocessArithmetic();
    testPreprocessJson();
    testNpy(workdir);
    if (!model.empty()) testModel(model, workdir, raw, scalars, expected);
  } catch (const std::exception& e) {
    check(false, "unexpected exception", e.what());
  }
  std::cout << (failures ? std::to_string(failures) + " check(s) failed" : "all checks passed") << "\n";
  return failures ? 1 : 0;
}
