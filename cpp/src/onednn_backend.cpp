// oneDNN backend: runs a `.onednn` export (e2evision.export.onednn) with oneDNN primitives called
// directly. The file is safetensors: the weights as float32 tensors, and in its metadata the op
// program the exporter lowered the model to (convolutions with their ReLU and residual add fused as
// post-ops, pooling, linear layers, element-wise ops, softmax).
//
// Why a backend of its own: at batch 1 a small CNN's convolutions take ~10 µs each, and what
// TorchScript adds per op (the interpreter, the oneDNN Graph partition layer, allocations) made
// ResNet-15 1.26× slower than onnxruntime (docs/deployment.md, "Latency"). Here each op is one
// pre-built primitive on pre-packed weights and pre-allocated activations in oneDNN's own layouts,
// so a call is the kernels and little else. Batches run in chunks of at most kChunk rows (one set
// of primitives per chunk size), which keeps a layer's activations in cache at batch 256.
//
// Built only where oneDNN 2.x is installed (Debian's libdnnl-dev; CMake finds it), as the module
// libe2evision_onednn.so, without LibTorch; the engine opens it (onednn_backend.h says why).
#include "onednn_backend.h"

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "e2evision/errors.h"
#include "json.h"

namespace e2evision::detail {

namespace {

using dnnl::algorithm;
using dnnl::memory;
using Tag = memory::format_tag;
using DType = memory::data_type;

constexpr int64_t kChunk = 16;  // rows per primitive call: per-row time is flat up to 16 here

struct Weight {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct PostOp {
  bool sum = false;  // accumulate into `value` (the residual add), else an element-wise op
  int value = -1;
  algorithm alg = algorithm::undef;
  float alpha = 0.f, beta = 0.f;
};

struct OpSpec {
  std::string kind;  // conv, linear, pool, global_pool, eltwise, softmax, add
  std::vector<int> src;
  int dst = -1;
  const Weight* weight = nullptr;
  const Weight* bias = nullptr;
  memory::dims stride{1, 1}, padding{0, 0}, dilation{1, 1}, kernel{1, 1};
  int64_t groups = 1;
  algorithm alg = algorithm::undef;
  float alpha = 0.f, beta = 0.f;
  int axis = 1;
  std::vector<PostOp> post;
};

// ---- the file ------------------------------------------------------------------------------------

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelFileError(path + ": cannot read the oneDNN export");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

algorithm eltwiseAlgorithm(const std::string& name, const std::string& where) {
  static const std::map<std::string, algorithm> algs{
      {"relu", algorithm::eltwise_relu},           {"sigmoid", algorithm::eltwise_logistic},
      {"tanh", algorithm::eltwise_tanh},           {"silu", algorithm::eltwise_swish},
      {"gelu", algorithm::eltwise_gelu_erf},       {"gelu_tanh", algorithm::eltwise_gelu_tanh},
      {"linear", algorithm::eltwise_linear},       {"elu", algorithm::eltwise_elu},
      {"clip", algorithm::eltwise_clip}};
  auto it = algs.find(name);
  if (it == algs.end()) throw json::JsonError(where + ": unknown element-wise op '" + name + "'");
  return it->second;
}

memory::dims pair(const json::Value& op, const std::string& key, const std::string& where, int64_t dflt) {
  if (!op.has(key)) return {dflt, dflt};
  const auto& a = op.at(key, where).array(where + "." + key);
  if (a.size() != 2) throw json::JsonError(where + "." + key + " must have 2 entries");
  return {static_cast<int64_t>(a[0].number(where + "." + key)), static_cast<int64_t>(a[1].number(where + "." + key))};
}

class Program {
 public:
  Program(const std::string& path, const std::vector<std::string>& want_in, const std::vector<std::string>& want_out)
      : path_(path) {
    const std::string bytes = readFile(path);
    try {
      parse(bytes, want_in, want_out);
    } catch (const json::JsonError& e) {
      throw ModelFileError(path + ": not a valid e2evision oneDNN program (" + e.what() + ")");
    }
  }

  const std::string& path() const { return path_; }
  const std::vector<OpSpec>& ops() const { return ops_; }
  int numValues() const { return static_cast<int>(names_.size()); }
  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  const std::string& valueName(int v) const { return names_[v]; }

 private:
  int value(const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    ids_[name] = static_cast<int>(names_.size());
    names_.push_back(name);
    return ids_[name];
  }

  int known(const json::Value& v, const std::string& where) {
    const std::string& name = v.string(where);
    auto it = ids_.find(name);
    if (it == ids_.end()) throw json::JsonError(where + " reads '" + name + "' before any op writes it");
    return it->second;
  }

  void parse(const std::string& bytes, const std::vector<std::string>& want_in, const std::vector<std::string>& want_out) {
    if (bytes.size() < 8) throw json::JsonError("too short for a safetensors file");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
    if (n > bytes.size() - 8) throw json::JsonError("the safetensors header length runs past the end (truncated?)");
    const json::Value header = json::Value::parse(bytes.substr(8, n));
    const size_t data_start = 8 + n;
    for (const auto& [name, t] : header.object("header")) {
      if (name == "__metadata__") continue;
      const std::string where = "tensor '" + name + "'";
      if (t.at("dtype", where).string(where + ".dtype") != "F32")
        throw json::JsonError(where + " is not float32 (dtype " + t.at("dtype", where).string(where) + ")");
      Weight w;
      int64_t count = 1;
      for (const auto& d : t.at("shape", where).array(where + ".shape")) {
        w.shape.push_back(static_cast<int64_t>(d.number(where + ".shape")));
        count *= w.shape.back();
      }
      const auto& off = t.at("data_offsets", where).array(where + ".data_offsets");
      if (off.size() != 2) throw json::JsonError(where + ".data_offsets must have 2 entries");
      const auto begin = static_cast<uint64_t>(off[0].number(where)), end = static_cast<uint64_t>(off[1].number(where));
      if (end < begin || end - begin != static_cast<uint64_t>(count) * 4 || data_start + end > bytes.size())
        throw json::JsonError(where + ": its data_offsets do not fit its shape or the file (truncated?)");
      w.data.resize(static_cast<size_t>(count));
      std::memcpy(w.data.data(), bytes.data() + data_start + begin, static_cast<size_t>(count) * 4);
      weights_[name] = std::move(w);
    }
    if (!header.has("__metadata__")) throw json::JsonError("no __metadata__: not an e2evision oneDNN export");
    const auto& meta = header.at("__metadata__", "header");
    if (!meta.has("format") || meta.at("format", "").string("__metadata__.format") != "e2evision-onednn")
      throw json::JsonError("__metadata__.format is not 'e2evision-onednn'");
    if (meta.at("version", "__metadata__").string("__metadata__.version") != "1")
      throw json::JsonError("__metadata__.version is not 1 (written by a newer e2evision? export again)");
    const json::Value program = json::Value::parse(meta.at("program", "__metadata__").string("__metadata__.program"));

    std::vector<std::string> got_in, got_out;
    for (const auto& io : program.at("inputs", "program").array("program.inputs")) {
      got_in.push_back(io.at("name", "program.inputs").string("program.inputs.name"));
      inputs_.push_back(value(io.at("value", "program.inputs").string("program.inputs.value")));
    }
    if (got_in != want_in) throw json::JsonError("the program's inputs are not preprocess.json's");
    const auto& ops = program.at("ops", "program").array("program.ops");
    for (size_t i = 0; i < ops.size(); ++i) ops_.push_back(parseOp(ops[i], "ops[" + std::to_string(i) + "]"));
    for (const auto& io : program.at("outputs", "program").array("program.outputs")) {
      got_out.push_back(io.at("name", "program.outputs").string("program.outputs.name"));
      outputs_.push_back(known(io.at("value", "program.outputs"), "program.outputs"));
    }
    if (got_out != want_out) throw json::JsonError("the program's outputs are not preprocess.json's");
  }

  const Weight* tensor(const json::Value& op, const std::string& key, const std::string& where) {
    if (!op.has(key) || op.at(key, where).isNull()) return nullptr;
    const std::string& name = op.at(key, where).string(where + "." + key);
    auto it = weights_.find(name);
    if (it == weights_.end()) throw json::JsonError(where + "." + key + " names tensor '" + name + "', which the file lacks");
    return &it->second;
  }

  OpSpec parseOp(const json::Value& op, const std::string& where) {
    OpSpec s;
    s.kind = op.at("op", where).string(where + ".op");
    static const std::vector<std::string> kinds{"conv", "linear", "pool", "global_pool", "eltwise", "softmax", "add"};
    if (std::find(kinds.begin(), kinds.end(), s.kind) == kinds.end())
      throw json::JsonError(where + ": unknown op '" + s.kind + "'");
    for (const auto& v : op.at("src", where).array(where + ".src")) s.src.push_back(known(v, where + ".src"));
    const size_t want_src = s.kind == "add" ? 2 : 1;
    if (s.src.size() != want_src) throw json::JsonError(where + ": " + s.kind + " takes " + std::to_string(want_src) + " sources");
    s.weight = tensor(op, "weight", where);
    s.bias = tensor(op, "bias", where);
    if ((s.kind == "conv" || s.kind == "linear") && !s.weight) throw json::JsonError(where + ": " + s.kind + " without weight");
    s.stride = pair(op, "stride", where, 1);
    s.padding = pair(op, "padding", where, 0);
    s.dilation = pair(op, "dilation", where, 1);
    s.kernel = pair(op, "kernel", where, 1);
    if (op.has("groups")) s.groups = static_cast<int64_t>(op.at("groups", where).number(where + ".groups"));
    if (op.has("axis")) s.axis = static_cast<int>(op.at("axis", where).number(where + ".axis"));
    if (op.has("alpha")) s.alpha = static_cast<float>(op.at("alpha", where).number(where + ".alpha"));
    if (op.has("beta")) s.beta = static_cast<float>(op.at("beta", where).number(where + ".beta"));
    if (s.kind == "pool" || s.kind == "global_pool") {
      const std::string& k = op.at("mode", where).string(where + ".mode");
      if (k == "max") s.alg = algorithm::pooling_max;
      else if (k == "avg") s.alg = algorithm::pooling_avg_include_padding;
      else if (k == "avg_exclude_padding") s.alg = algorithm::pooling_avg_exclude_padding;
      else throw json::JsonError(where + ": unknown pooling mode '" + k + "'");
    }
    if (s.kind == "eltwise") s.alg = eltwiseAlgorithm(op.at("mode", where).string(where + ".mode"), where);
    if (op.has("post")) {
      for (const auto& p : op.at("post", where).array(where + ".post")) {
        PostOp po;
        const std::string& mode = p.at("mode", where + ".post").string(where + ".post.mode");
        if (mode == "sum") {
          po.sum = true;
          po.value = known(p.at("value", where + ".post"), where + ".post.value");
        } else {
          po.alg = eltwiseAlgorithm(mode, where + ".post");
          if (p.has("alpha")) po.alpha = static_cast<float>(p.at("alpha", where).number(where + ".post.alpha"));
          if (p.has("beta")) po.beta = static_cast<float>(p.at("beta", where).number(where + ".post.beta"));
        }
        s.post.push_back(po);
      }
    }
    s.dst = value(op.at("dst", where).string(where + ".dst"));
    return s;
  }

  std::string path_;
  std::map<std::string, Weight> weights_;
  std::map<std::string, int> ids_;
  std::vector<std::string> names_;
  std::vector<OpSpec> ops_;
  std::vector<int> inputs_, outputs_;
};

// ---- primitives for one chunk size ----------------------------------------------------------------

// One step of a plan: a primitive and which values / constant memories it reads and writes.
struct Step {
  dnnl::primitive prim;
  std::vector<std::pair<int, int>> value_args;  // (DNNL_ARG_*, value id)
  std::vector<std::pair<int, memory>> const_args;
  size_t scratchpad = 0;      // bytes; its memory must carry the primitive's own scratchpad desc
  memory::desc scratchpad_md;
  int copy_from = -1;  // a residual add whose sum value lives on: copy it into dst first (a reorder)
  dnnl::primitive copy;
};

struct Plan {
  int64_t rows = 0;
  std::vector<memory::desc> desc;  // per value
  std::vector<int> alias;          // value id whose buffer a value reuses (in-place residual add), or itself
  std::vector<Step> steps;
  std::vector<memory::desc> out_plain;  // per output: the dense row-major layout handed back
  std::vector<dnnl::primitive> out_reorder;  // per output: empty when its layout is already plain
  size_t scratchpad = 0;
};

Tag plainTag(size_t ndims) {
  switch (ndims) {
    case 1: return Tag::a;
    case 2: return Tag::ab;
    case 3: return Tag::abc;
    case 4: return Tag::abcd;
    default: return Tag::abcde;
  }
}

// oneDNN's own == calls layouts equal that differ only in the strides of size-1 axes, yet a
// primitive refuses at execution a memory whose strides are not exactly those it was built for.
bool sameLayout(const memory::desc& a, const memory::desc& b) { return std::memcmp(&a.data, &b.data, sizeof(a.data)) == 0; }

memory::desc plainDesc(const memory::dims& dims) { return memory::desc(dims, DType::f32, plainTag(dims.size())); }

class Builder {
 public:
  Builder(const Program& prog, const dnnl::engine& eng, std::vector<std::vector<std::pair<memory::desc, memory>>>& packed)
      : prog_(prog), eng_(eng), packed_(packed) {}

  std::shared_ptr<Plan> build(int64_t rows, const std::vector<memory::dims>& input_dims) {
    auto plan = std::make_shared<Plan>();
    plan->rows = rows;
    plan->desc.resize(static_cast<size_t>(prog_.numValues()));
    plan->alias.resize(plan->desc.size());
    for (size_t v = 0; v < plan->alias.size(); ++v) plan->alias[v] = static_cast<int>(v);
    for (size_t i = 0; i < prog_.inputs().size(); ++i) plan->desc[static_cast<size_t>(prog_.inputs()[i])] = plainDesc(input_dims[i]);
    last_use_.assign(plan->desc.size(), -1);
    for (size_t i = 0; i < prog_.ops().size(); ++i) {
      for (int v : prog_.ops()[i].src) last_use_[static_cast<size_t>(v)] = static_cast<int>(i);
      for (const auto& p : prog_.ops()[i].post)
        if (p.sum) last_use_[static_cast<size_t>(p.value)] = static_cast<int>(i);
    }
    // Inputs (the caller's tensor) and outputs are never overwritten in place.
    for (int v : prog_.outputs()) last_use_[static_cast<size_t>(v)] = static_cast<int>(prog_.ops().size());
    for (int v : prog_.inputs()) last_use_[static_cast<size_t>(v)] = static_cast<int>(prog_.ops().size());
    for (size_t i = 0; i < prog_.ops().size(); ++i) {
      try {
        addStep(*plan, static_cast<int>(i));
      } catch (const dnnl::error& e) {
        std::ostringstream os;
        os << prog_.path() << ": ops[" << i << "] (" << prog_.ops()[i].kind << ") cannot run on its input "
           << dimsString(plan->desc[static_cast<size_t>(prog_.ops()[i].src[0])].dims()) << " (oneDNN: " << e.what() << ")";
        throw ModelFileError(os.str());
      }
    }
    for (int v : prog_.outputs()) {
      const memory::desc& d = plan->desc[static_cast<size_t>(v)];
      memory::desc plain = plainDesc(d.dims());
      plan->out_plain.push_back(plain);
      plan->out_reorder.push_back(sameLayout(d, plain) ? dnnl::primitive() : dnnl::reorder(dnnl::reorder::primitive_desc(eng_, d, eng_, plain)));
    }
    for (const auto& s : plan->steps) plan->scratchpad = std::max(plan->scratchpad, s.scratchpad);
    return plan;
  }

 private:
  static std::string dimsString(const memory::dims& d) {
    std::ostringstream os;
    os << "(";
    for (size_t i = 0; i < d.size(); ++i) os << (i ? ", " : "") << d[i];
    os << ")";
    return os.str();
  }

  int biasSlot(int op) const { return static_cast<int>(prog_.ops().size()) + op; }

  // The op's weights in the layout its primitive wants, packed once and shared by every plan
  // (slot: the op's index for its weight, biasSlot(op) for its bias).
  memory packed(int op, const memory::desc& want, const Weight& w, const memory::dims& logical) {
    auto& cache = packed_.at(static_cast<size_t>(op));
    for (const auto& [d, m] : cache)
      if (sameLayout(d, want)) return m;
    int64_t count = 1;
    for (auto d : logical) count *= d;
    if (count != static_cast<int64_t>(w.data.size()))
      throw ModelFileError(prog_.path() + ": ops[" + std::to_string(op % prog_.ops().size()) + "] weight or bias has " + std::to_string(w.data.size()) +
                           " values, its layer needs " + std::to_string(count));
    memory src(plainDesc(logical), eng_, const_cast<float*>(w.data.data()));
    memory dst(want, eng_);
    dnnl::stream s(eng_);
    dnnl::reorder(src, dst).execute(s, src, dst);
    s.wait();
    cache.emplace_back(want, dst);
    return dst;
  }

  // The end of every op's step: its scratchpad, the step itself, and the layout of what it wrote.
  template <typename PrimitiveDesc>
  void finish(Plan& plan, int i, const OpSpec& op, Step step, const PrimitiveDesc& pd) {
    step.scratchpad = pd.scratchpad_desc().get_size();
    step.scratchpad_md = pd.scratchpad_desc();
    plan.steps.push_back(std::move(step));
    setDst(plan, i, op, pd.dst_desc());
  }

  // The op's post-ops, and a scratchpad the caller provides (one buffer per workspace).
  dnnl::primitive_attr attrFor(const OpSpec& op) {
    dnnl::post_ops po;
    for (const auto& p : op.post) {
      if (p.sum) po.append_sum(1.f);
      else po.append_eltwise(1.f, p.alg, p.alpha, p.beta);
    }
    dnnl::primitive_attr attr;
    attr.set_post_ops(po);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
  }

  // A source in the layout the primitive wants: reorders into a fresh hidden value when it differs.
  int source(Plan& plan, int v, const memory::desc& want) {
    if (sameLayout(plan.desc[static_cast<size_t>(v)], want)) return v;
    const int tmp = static_cast<int>(plan.desc.size());
    plan.desc.push_back(want);
    plan.alias.push_back(tmp);
    Step s;
    s.prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng_, plan.desc[static_cast<size_t>(v)], eng_, want));
    s.value_args = {{DNNL_ARG_FROM, v}, {DNNL_ARG_TO, tmp}};
    plan.steps.push_back(std::move(s));
    return tmp;
  }

  void setDst(Plan& plan, int op_index, const OpSpec& op, const memory::desc& dst) {
    plan.desc[static_cast<size_t>(op.dst)] = dst;
    for (const auto& p : op.post) {
      if (!p.sum) continue;
      // In place when the summed value is not read after this op and has the same layout; else copy.
      const bool dead = last_use_[static_cast<size_t>(p.value)] <= op_index &&
                        std::find(op.src.begin(), op.src.end(), p.value) == op.src.end();
      if (dead && sameLayout(plan.desc[static_cast<size_t>(p.value)], dst)) {
        plan.alias[static_cast<size_t>(op.dst)] = plan.alias[static_cast<size_t>(p.value)];
      } else {
        plan.steps.back().copy_from = p.value;
        plan.steps.back().copy = dnnl::reorder(dnnl::reorder::primitive_desc(eng_, plan.desc[static_cast<size_t>(p.value)], eng_, dst));
      }
    }
  }

  void addStep(Plan& plan, int i) {
    const OpSpec& op = prog_.ops()[static_cast<size_t>(i)];
    const memory::desc in = plan.desc[static_cast<size_t>(op.src[0])];
    const memory::dims d = in.dims();
    const auto fwd = dnnl::prop_kind::forward_inference;
    Step step;
    if (op.kind == "conv") {
      if (d.size() != 4 || op.weight->shape.size() != 4) throw ModelFileError(prog_.path() + ": ops[" + std::to_string(i) + "] conv needs 4-d input and weight");
      const auto& ws = op.weight->shape;
      const int64_t g = op.groups, oc = ws[0];
      if (g < 1 || oc % g || ws[1] * g != d[1])
        throw ModelFileError(prog_.path() + ": ops[" + std::to_string(i) + "] conv weight " + dimsString(ws) + " with groups " +
                             std::to_string(g) + " does not fit input channels " + std::to_string(d[1]));
      const int64_t oh = (d[2] + 2 * op.padding[0] - op.dilation[0] * (ws[2] - 1) - 1) / op.stride[0] + 1;
      const int64_t ow = (d[3] + 2 * op.padding[1] - op.dilation[1] * (ws[3] - 1) - 1) / op.stride[1] + 1;
      const memory::dims wdims = g == 1 ? memory::dims{oc, ws[1], ws[2], ws[3]} : memory::dims{g, oc / g, ws[1], ws[2], ws[3]};
      memory::desc dst_md({d[0], oc, oh, ow}, DType::f32, Tag::any);
      for (const auto& p : op.post)
        if (p.sum) dst_md = plan.desc[static_cast<size_t>(p.value)];  // accumulate in that layout
      memory::desc src_any(d, DType::f32, Tag::any), w_any(wdims, DType::f32, Tag::any);
      memory::desc b_md({oc}, DType::f32, Tag::a);
      const memory::dims dil{op.dilation[0] - 1, op.dilation[1] - 1};  // oneDNN counts dilation from 0
      dnnl::convolution_forward::primitive_desc pd(
          op.bias ? dnnl::convolution_forward::desc(fwd, algorithm::convolution_direct, src_any, w_any, b_md, dst_md,
                                                    op.stride, dil, op.padding, op.padding)
                  : dnnl::convolution_forward::desc(fwd, algorithm::convolution_direct, src_any, w_any, dst_md, op.stride,
                                                    dil, op.padding, op.padding),
          attrFor(op), eng_);
      const int src = source(plan, op.src[0], pd.src_desc());
      step.prim = dnnl::convolution_forward(pd);
      step.value_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, op.dst}};
      step.const_args.push_back({DNNL_ARG_WEIGHTS, packed(i, pd.weights_desc(), *op.weight, wdims)});
      if (op.bias) step.const_args.push_back({DNNL_ARG_BIAS, packed(biasSlot(i), b_md, *op.bias, {oc})});
      finish(plan, i, op, std::move(step), pd);
    } else if (op.kind == "linear") {
      const auto& ws = op.weight->shape;
      int64_t per_row = 1;
      for (size_t k = 1; k < d.size(); ++k) per_row *= d[k];
      int64_t w_per_row = 1;
      for (size_t k = 1; k < ws.size(); ++k) w_per_row *= ws[k];
      if (per_row != w_per_row)
        throw ModelFileError(prog_.path() + ": ops[" + std::to_string(i) + "] linear weight " + dimsString(ws) +
                             " does not fit its input " + dimsString(d));
      memory::dims wdims{ws[0]};
      wdims.insert(wdims.end(), d.begin() + 1, d.end());  // the input's own layout decides the weights'
      memory::desc src_any(d, DType::f32, Tag::any), w_any(wdims, DType::f32, Tag::any);
      memory::desc b_md({ws[0]}, DType::f32, Tag::a), dst_md({d[0], ws[0]}, DType::f32, Tag::ab);
      dnnl::inner_product_forward::primitive_desc pd(
          op.bias ? dnnl::inner_product_forward::desc(fwd, src_any, w_any, b_md, dst_md)
                  : dnnl::inner_product_forward::desc(fwd, src_any, w_any, dst_md),
          attrFor(op), eng_);
      const int src = source(plan, op.src[0], pd.src_desc());
      step.prim = dnnl::inner_product_forward(pd);
      step.value_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, op.dst}};
      step.const_args.push_back({DNNL_ARG_WEIGHTS, packed(i, pd.weights_desc(), *op.weight, wdims)});
      if (op.bias) step.const_args.push_back({DNNL_ARG_BIAS, packed(biasSlot(i), b_md, *op.bias, {ws[0]})});
      finish(plan, i, op, std::move(step), pd);
    } else if (op.kind == "pool" || op.kind == "global_pool") {
      if (d.size() != 4) throw ModelFileError(prog_.path() + ": ops[" + std::to_string(i) + "] pooling needs a 4-d input");
      const memory::dims kernel = op.kind == "global_pool" ? memory::dims{d[2], d[3]} : op.kernel;
      const memory::dims stride = op.kind == "global_pool" ? kernel : op.stride;
      const memory::dims pad = op.kind == "global_pool" ? memory::dims{0, 0} : op.padding;
      const int64_t oh = (d[2] + 2 * pad[0] - kernel[0]) / stride[0] + 1, ow = (d[3] + 2 * pad[1] - kernel[1]) / stride[1] + 1;
      memory::desc dst_md({d[0], d[1], oh, ow}, DType::f32, Tag::any);
      const dnnl::primitive_attr attr = attrFor(op);
      dnnl::pooling_forward::primitive_desc pd(dnnl::pooling_forward::desc(fwd, op.alg, in, dst_md, stride, kernel, pad, pad), attr, eng_);
      step.prim = dnnl::pooling_forward(pd);
      step.value_args = {{DNNL_ARG_SRC, op.src[0]}, {DNNL_ARG_DST, op.dst}};
      finish(plan, i, op, std::move(step), pd);
    } else if (op.kind == "eltwise") {
      const dnnl::primitive_attr attr = attrFor(op);
      dnnl::eltwise_forward::primitive_desc pd(dnnl::eltwise_forward::desc(fwd, op.alg, in, op.alpha, op.beta), attr, eng_);
      step.prim = dnnl::eltwise_forward(pd);
      step.value_args = {{DNNL_ARG_SRC, op.src[0]}, {DNNL_ARG_DST, op.dst}};
      finish(plan, i, op, std::move(step), pd);
    } else if (op.kind == "softmax") {
      if (op.axis < 0 || op.axis >= static_cast<int>(d.size()))
        throw ModelFileError(prog_.path() + ": ops[" + std::to_string(i) + "] softmax axis out of range");
      const memory::desc plain = plainDesc(d);
      const int src = source(plan, op.src[0], plain);
      const dnnl::primitive_attr attr = attrFor(op);
      dnnl::softmax_forward::primitive_desc pd(dnnl::softmax_forward::desc(fwd, plain, op.axis), attr, eng_);
      step.prim = dnnl::softmax_forward(pd);
      step.value_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, op.dst}};
      finish(plan, i, op, std::move(step), pd);
    } else {  // add
      const int b = source(plan, op.src[1], in);
      const dnnl::primitive_attr attr = attrFor(op);
      dnnl::binary::primitive_desc pd(dnnl::binary::desc(algorithm::binary_add, in, in, in), attr, eng_);
      step.prim = dnnl::binary(pd);
      step.value_args = {{DNNL_ARG_SRC_0, op.src[0]}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, op.dst}};
      finish(plan, i, op, std::move(step), pd);
    }
  }

  const Program& prog_;
  const dnnl::engine& eng_;
  std::vector<std::vector<std::pair<memory::desc, memory>>>& packed_;
  std::vector<int> last_use_;
};

// Buffers and a stream for one call at a time on one plan (oneDNN streams are not thread-safe).
struct Workspace {
  dnnl::stream stream;
  std::vector<memory> values;
  memory scratch;
  std::vector<std::unordered_map<int, memory>> args;  // per step, with the constant arguments
};

class Runner {
 public:
  Runner(const std::string& path, int threads, const std::vector<std::string>& inputs,
         const std::vector<std::vector<int64_t>>& input_rows, const std::vector<std::string>& outputs)
      : program_(path, inputs, outputs), input_rows_(input_rows), threads_(threads), engine_(dnnl::engine::kind::cpu, 0) {
    packed_.resize(2 * program_.ops().size());
    for (const auto& plain : planFor(1)->out_plain) {  // a program that does not fit its inputs fails here
      memory::dims d = plain.dims();
      output_shapes_.emplace_back(d.begin() + 1, d.end());
    }
  }

  const std::vector<std::vector<int64_t>>& outputRowShapes() const { return output_shapes_; }

  void run(const float* const* inputs, int64_t rows, float* const* outputs) const {
    if (threads_ > 0) omp_set_num_threads(threads_);  // per calling thread (an OpenMP ICV)
    for (int64_t start = 0; start < rows; start += kChunk) {
      const int64_t n = std::min(kChunk, rows - start);
      std::shared_ptr<Plan> plan = planFor(n);
      std::unique_ptr<Workspace> ws = acquire(*plan);
      runChunk(*plan, *ws, inputs, outputs, start);
      release(*plan, std::move(ws));
    }
  }

 private:
  std::shared_ptr<Plan> planFor(int64_t rows) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = plans_.find(rows);
    if (it != plans_.end()) return it->second;
    std::vector<memory::dims> dims;
    for (const auto& row : input_rows_) {
      memory::dims d{rows};
      d.insert(d.end(), row.begin(), row.end());
      dims.push_back(d);
    }
    Builder builder(program_, engine_, packed_);
    auto plan = builder.build(rows, dims);
    plans_[rows] = plan;
    return plan;
  }

  std::unique_ptr<Workspace> acquire(const Plan& plan) const {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& pool = pools_[plan.rows];
      if (!pool.empty()) {
        auto ws = std::move(pool.back());
        pool.pop_back();
        return ws;
      }
    }
    auto ws = std::make_unique<Workspace>();
    ws->stream = dnnl::stream(engine_);
    ws->values.resize(plan.desc.size());
    for (size_t v = 0; v < plan.desc.size(); ++v) {
      if (plan.alias[v] != static_cast<int>(v) || plan.desc[v].get_size() == 0) continue;
      const bool input = std::find(program_.inputs().begin(), program_.inputs().end(), static_cast<int>(v)) != program_.inputs().end();
      ws->values[v] = input ? memory(plan.desc[v], engine_, DNNL_MEMORY_NONE) : memory(plan.desc[v], engine_);  // inputs: the caller's
    }
    for (size_t v = 0; v < plan.desc.size(); ++v) {
      const auto a = static_cast<size_t>(plan.alias[v]);
      if (a != v) ws->values[v] = memory(plan.desc[v], engine_, ws->values[a].get_data_handle());
    }
    if (plan.scratchpad) ws->scratch = memory(memory::desc({static_cast<int64_t>(plan.scratchpad)}, DType::u8, Tag::a), engine_);
    for (const auto& step : plan.steps) {
      std::unordered_map<int, memory> args;
      for (const auto& [arg, v] : step.value_args) args[arg] = ws->values[static_cast<size_t>(v)];
      for (const auto& [arg, m] : step.const_args) args[arg] = m;
      // one buffer, sized for the largest, seen by each primitive through its own desc
      if (step.scratchpad) args[DNNL_ARG_SCRATCHPAD] = memory(step.scratchpad_md, engine_, ws->scratch.get_data_handle());
      ws->args.push_back(std::move(args));
    }
    return ws;
  }

  void release(const Plan& plan, std::unique_ptr<Workspace> ws) const {
    std::lock_guard<std::mutex> lock(mutex_);
    pools_[plan.rows].push_back(std::move(ws));
  }

  void runChunk(const Plan& plan, Workspace& ws, const float* const* inputs, float* const* outputs, int64_t start) const {
    for (size_t i = 0; i < program_.inputs().size(); ++i) {
      int64_t row = 1;
      for (auto d : input_rows_[i]) row *= d;
      ws.values[static_cast<size_t>(program_.inputs()[i])].set_data_handle(const_cast<float*>(inputs[i]) + start * row);
    }
    for (size_t s = 0; s < plan.steps.size(); ++s) {
      const Step& step = plan.steps[s];
      if (step.copy_from >= 0) {
        memory& from = ws.values[static_cast<size_t>(step.copy_from)];
        memory& to = ws.args[s].at(DNNL_ARG_DST);
        step.copy.execute(ws.stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
      }
      try {
        step.prim.execute(ws.stream, ws.args[s]);
      } catch (const dnnl::error& e) {
        throw BackendError(program_.path() + ": step " + std::to_string(s) + " of " + std::to_string(plan.steps.size()) +
                           " (primitive kind " + std::to_string(static_cast<int>(step.prim.get_kind())) + ") failed at batch " + std::to_string(plan.rows) + ": " + e.what() + " status " + std::to_string(static_cast<int>(e.status)));
      }
    }
    for (size_t o = 0; o < program_.outputs().size(); ++o) {
      memory& value = ws.values[static_cast<size_t>(program_.outputs()[o])];
      int64_t row = 1;
      for (auto d : output_shapes_[o]) row *= d;
      float* dst = outputs[o] + start * row;
      if (plan.out_reorder[o]) {
        memory out(plan.out_plain[o], engine_, dst);
        plan.out_reorder[o].execute(ws.stream, {{DNNL_ARG_FROM, value}, {DNNL_ARG_TO, out}});
      } else {
        ws.stream.wait();
        std::memcpy(dst, value.get_data_handle(), static_cast<size_t>(plan.rows * row) * sizeof(float));
      }
    }
    ws.stream.wait();
  }

  Program program_;
  std::vector<std::vector<int64_t>> input_rows_;
  std::vector<std::vector<int64_t>> output_shapes_;
  int threads_;
  dnnl::engine engine_;
  mutable std::mutex mutex_;
  mutable std::vector<std::vector<std::pair<memory::desc, memory>>> packed_;  // per op (and per bias)
  mutable std::map<int64_t, std::shared_ptr<Plan>> plans_;
  mutable std::map<int64_t, std::vector<std::unique_ptr<Workspace>>> pools_;
};

void copyError(const char* text, char* err, size_t err_len) {
  if (!err || err_len == 0) return;
  std::strncpy(err, text, err_len - 1);
  err[err_len - 1] = '\0';
}

// The message of an engine error without its "Kind: " prefix (the engine adds its own).
void copyError(const EngineError& e, char* err, size_t err_len) {
  const std::string what = e.what();
  const std::string prefix = e.kind() + ": ";
  copyError(what.compare(0, prefix.size(), prefix) == 0 ? what.c_str() + prefix.size() : what.c_str(), err, err_len);
}

}  // namespace

}  // namespace e2evision::detail

using e2evision::detail::Runner;

extern "C" {

__attribute__((visibility("default"))) void* e2evision_onednn_open(const char* path, int threads, int n_inputs,
                                                                   const E2evOneDnnTensor* inputs, int n_outputs,
                                                                   const char* const* output_names, int* code, char* err,
                                                                   size_t err_len) {
  using namespace e2evision;
  *code = 0;
  try {
    // Plans are built once per chunk size and kept: the primitive cache would only add the
    // std::future machinery whose vtables LibTorch also exports.
    dnnl::set_primitive_cache_capacity(0);
    std::vector<std::string> in_names, out_names;
    std::vector<std::vector<int64_t>> rows;
    for (int i = 0; i < n_inputs; ++i) {
      in_names.emplace_back(inputs[i].name);
      rows.emplace_back(inputs[i].row_shape, inputs[i].row_shape + inputs[i].rank);
    }
    for (int o = 0; o < n_outputs; ++o) out_names.emplace_back(output_names[o]);
    return new Runner(path, threads, in_names, rows, out_names);
  } catch (const ModelFileError& e) {
    *code = 1;
    detail::copyError(e, err, err_len);
  } catch (const EngineError& e) {
    *code = 2;
    detail::copyError(e, err, err_len);
  } catch (const dnnl::error& e) {
    *code = 1;
    detail::copyError((std::string(path) + ": oneDNN cannot build this program (" + e.what() + ")").c_str(), err, err_len);
  } catch (const std::exception& e) {
    *code = 2;
    detail::copyError(e.what(), err, err_len);
  }
  return nullptr;
}

__attribute__((visibility("default"))) const int64_t* e2evision_onednn_output_shape(void* handle, int o, int* rank) {
  const auto& shape = static_cast<Runner*>(handle)->outputRowShapes().at(static_cast<size_t>(o));
  *rank = static_cast<int>(shape.size());
  return shape.data();
}

__attribute__((visibility("default"))) int e2evision_onednn_run(void* handle, const float* const* inputs, int64_t rows,
                                                                float* const* outputs, char* err, size_t err_len) {
  try {
    static_cast<Runner*>(handle)->run(inputs, rows, outputs);
    return 0;
  } catch (const e2evision::EngineError& e) {
    e2evision::detail::copyError(e, err, err_len);
  } catch (const std::exception& e) {
    e2evision::detail::copyError(e.what(), err, err_len);
  }
  return 2;
}

__attribute__((visibility("default"))) void e2evision_onednn_close(void* handle) { delete static_cast<Runner*>(handle); }

}  // extern "C"
