#include "backend/Hdf5.h"
#include "backend/Json.h"
#include "backend/Hdf5Util.h"

#include <fmt/format.h>
#include <hdf5.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/MathExtras.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <set>
#include <unistd.h>

namespace raspc {

namespace {

// Limits that keep a hostile file from asking for absurd allocations.
constexpr int64_t kMaxDim = int64_t(1) << 24;        // any configured size
constexpr int64_t kMaxStrings = int64_t(1) << 24;

using h5::fail;
using h5::Handle;
using h5::dataset;
using h5::exists;
using h5::group;
using h5::objectType;
using h5::plist;
using h5::space;
using h5::type;

bool hasNul(const std::string &s) { return s.find('\0') != std::string::npos; }

// ------------------------------------------------------------------------------------
// Writing

class Writer {
public:
  explicit Writer(std::string what) : what_(std::move(what)) {}

  llvm::Error tensor(hid_t loc, const std::string &name, const Tensor &t) {
    return h5::writeTensor(loc, what_, name, t);
  }
  llvm::Error intAttr(hid_t loc, const std::string &name, int64_t v) {
    return h5::writeIntAttr(loc, what_, "metadata", name, v);
  }
  llvm::Error stringAttr(hid_t loc, const std::string &name, const std::string &v) {
    return h5::writeStringAttr(loc, what_, "metadata", name, v);
  }

  // A 1-d dataset of strings (of shape [1] for the source and the ground truth: a
  // scalar dataset cannot be chunked, hence cannot carry a checksum).
  llvm::Error strings(hid_t loc, const std::string &name, const std::vector<std::string> &v) {
    size_t width = 1;
    for (const std::string &s : v) {
      if (hasNul(s)) return fail(what_, "dataset 'metadata/" + name + "' contains a NUL character");
      width = std::max(width, s.size());
    }
    std::string buf(width * v.size(), '\0');
    for (size_t i = 0; i < v.size(); ++i) std::copy(v[i].begin(), v[i].end(), buf.begin() + ptrdiff_t(i * width));
    Handle t = h5::fixedUtf8(width);
    hsize_t n = v.size();
    Handle sp = space(H5Screate_simple(1, &n, nullptr));
    Handle dcpl = plist(H5Pcreate(H5P_DATASET_CREATE));
    // Checksummed, as the tensors are: the reader requires it. One chunk holds at most
    // 4 GiB; the reader refuses a dataset of strings over 2 GiB anyway.
    if (n > 0 && buf.size() < (size_t(1) << 31)) {
      H5Pset_chunk(dcpl.get(), 1, &n);
      H5Pset_fletcher32(dcpl.get());
    }
    H5Pset_obj_track_times(dcpl.get(), false);
    Handle ds = dataset(H5Dcreate2(loc, name.c_str(), t.get(), sp.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
    if (!ds.ok()) return fail(what_, "cannot create dataset 'metadata/" + name + "'");
    if (!v.empty() && H5Dwrite(ds.get(), t.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
      return fail(what_, "cannot write dataset 'metadata/" + name + "'");
    return llvm::Error::success();
  }

  llvm::Error model(hid_t fid, const Model &m) {
    for (const auto &[name, t] : m.tensors)
      if (auto e = tensor(fid, name, t)) return e;
    Handle g = h5::createGroup(fid, "metadata");
    if (!g.ok()) return fail(what_, "cannot create group 'metadata'");
    hid_t gid = g.get();
    const ModelConfig &c = m.cfg;
    std::pair<const char *, int64_t> ints[] = {
        {"format_version", Model::kFormatVersion},
        {"n_layers", c.n_layers},
        {"d_model", c.d_model},
        {"n_heads", c.n_heads},
        {"d_head", c.d_head},
        {"d_mlp", c.d_mlp},
        {"d_vocab", c.d_vocab},
        {"d_vocab_out", c.d_vocab_out},
        {"n_ctx", c.n_ctx},
        {"causal", c.causal ? 1 : 0},
        {"bos_id", m.bosId},
        {"pad_id", m.padId},
        {"int_tokens", m.intTokens ? 1 : 0},
    };
    for (auto &[name, v] : ints)
      if (auto e = intAttr(gid, name, v)) return e;
    std::pair<const char *, const std::string *> strs[] = {
        {"output_name", &m.outputName},
        {"output_encoding", &m.outputEncoding},
        {"source_name", &m.sourceName},
    };
    for (auto &[name, v] : strs)
      if (auto e = stringAttr(gid, name, *v)) return e;
    if (auto e = strings(gid, "vocab", m.vocab)) return e;
    if (auto e = strings(gid, "residual_labels", m.residualLabels)) return e;
    // Absent for the identity, so that a model without a basis keeps its bytes.
    if (hasResidualBasis(m))
      if (auto e = h5::writeTensor(gid, what_, "residual_basis", m.residualBasis)) return e;
    std::vector<std::string> outs;
    for (const Scalar &s : m.outputValues) outs.push_back(jsonScalar(s));
    if (auto e = strings(gid, "output_values", outs)) return e;
    if (auto e = strings(gid, "source", {m.source})) return e;
    if (auto e = strings(gid, "ground_truth", {groundTruthJson(m.nodes)})) return e;
    return llvm::Error::success();
  }

private:
  std::string what_;
};

// ------------------------------------------------------------------------------------
// Reading

class Reader {
public:
  Reader(std::string what, hid_t fid, int64_t maxParams) : what_(std::move(what)), fid_(fid), maxParams_(maxParams) {}

  llvm::Expected<Model> model() {
    if (!exists(fid_, "metadata")) return fail(what_, "missing group 'metadata'");
    if (objectType(fid_, "metadata") != H5I_GROUP) return fail(what_, "'metadata' is not a group");
    Handle g = group(H5Gopen2(fid_, "metadata", H5P_DEFAULT));
    if (!g.ok()) return fail(what_, "cannot open group 'metadata'");
    hid_t gid = g.get();

    Model m;
    int64_t version;
    if (auto e = intAttr(gid, "format_version", version, INT32_MIN, INT32_MAX)) return e;
    if (version != Model::kFormatVersion)
      return fail(what_, fmt::format("unsupported format_version {} (this raspc reads version {})", version,
                                     Model::kFormatVersion));
    ModelConfig &c = m.cfg;
    struct IntField {
      const char *name;
      int *dst;
      int64_t lo, hi;
    } fields[] = {
        {"n_layers", &c.n_layers, 0, 1 << 16}, {"d_model", &c.d_model, 1, kMaxDim},
        {"n_heads", &c.n_heads, 0, 1 << 16},   {"d_head", &c.d_head, 0, kMaxDim},
        {"d_mlp", &c.d_mlp, 0, kMaxDim},       {"d_vocab", &c.d_vocab, 2, kMaxDim},
        {"d_vocab_out", &c.d_vocab_out, 1, kMaxDim}, {"n_ctx", &c.n_ctx, 1, kMaxDim},
    };
    for (auto &f : fields) {
      int64_t v;
      if (auto e = intAttr(gid, f.name, v, f.lo, f.hi)) return e;
      *f.dst = int(v);
    }
    int64_t v;
    if (auto e = intAttr(gid, "causal", v, 0, 1)) return e;
    c.causal = v != 0;
    if (auto e = intAttr(gid, "bos_id", v, 0, c.d_vocab - 1)) return e;
    m.bosId = int(v);
    if (auto e = intAttr(gid, "pad_id", v, 0, c.d_vocab - 1)) return e;
    m.padId = int(v);
    if (auto e = intAttr(gid, "int_tokens", v, 0, 1)) return e;
    m.intTokens = v != 0;
    if (auto e = stringAttr(gid, "output_name", m.outputName)) return e;
    if (auto e = stringAttr(gid, "output_encoding", m.outputEncoding)) return e;
    if (auto e = stringAttr(gid, "source_name", m.sourceName)) return e;

    if (auto e = strings(gid, "vocab", m.vocab, c.d_vocab)) return e;
    // With a residual basis there is one label per row of the basis (checked below).
    const bool basis = exists(gid, "residual_basis");
    if (auto e = strings(gid, "residual_labels", m.residualLabels, basis ? -1 : c.d_model)) return e;
    std::vector<std::string> outs;
    int64_t nOut = m.outputEncoding == "categorical" ? c.d_vocab_out : -1;
    if (auto e = strings(gid, "output_values", outs, nOut)) return e;
    for (size_t i = 0; i < outs.size(); ++i) {
      auto s = parseJsonScalar(outs[i]);
      if (!s)
        return fail(what_, fmt::format("dataset 'metadata/output_values' entry {}: {}", i,
                                       llvm::toString(s.takeError())));
      m.outputValues.push_back(std::move(*s));
    }
    if (auto e = oneString(gid, "source", m.source)) return e;
    std::string gt;
    if (auto e = oneString(gid, "ground_truth", gt)) return e;
    auto nodes = parseGroundTruth(gt);
    if (!nodes) return fail(what_, "metadata/ground_truth: " + llvm::toString(nodes.takeError()));
    m.nodes = std::move(*nodes);

    // A file may declare sizes that compress to nothing; bound what we allocate (the
    // same limit the compiler applies to what it writes).
    auto expected = expectedTensors(c);
    uint64_t params = 0;
    for (auto &[name, shape] : expected) {
      uint64_t n = 1;
      for (int64_t d : shape) n = llvm::SaturatingMultiply(n, uint64_t(d));
      params = llvm::SaturatingAdd(params, n);
    }
    if (params > uint64_t(maxParams_))
      return fail(what_, fmt::format("the configuration asks for {} parameters, more than the limit of {} (raise it "
                                     "with --max-params)",
                                     params, maxParams_));
    if (basis) {
      // [n_labels, d_model], counted against the limit with the tensors; its shape is
      // checked before anything is allocated.
      auto checkShape = [&](const std::vector<int64_t> &dims) -> llvm::Error {
        const std::vector<int64_t> want = {int64_t(m.residualLabels.size()), c.d_model};
        if (dims != want)
          return fail(what_, fmt::format("dataset 'metadata/residual_basis' has shape {}, expected {} (n_labels = "
                                         "{} residual labels, d_model = {})",
                                         formatShape(dims), formatShape(want), want[0], want[1]));
        const uint64_t n = llvm::SaturatingAdd(params, llvm::SaturatingMultiply(uint64_t(want[0]), uint64_t(want[1])));
        if (n > uint64_t(maxParams_))
          return fail(what_, fmt::format("the configuration and residual basis ask for {} parameters, more than the "
                                         "limit of {} (raise it with --max-params)",
                                         n, maxParams_));
        return llvm::Error::success();
      };
      if (auto e = h5::readTensor(fid_, what_, "metadata/residual_basis", m.residualBasis, std::nullopt, "dataset", 2,
                                  checkShape))
        return e;
    }
    for (auto &[name, shape] : expected) {
      Tensor t;
      if (auto e = tensor(name, shape, t)) return e;
      m.tensors.emplace(name, std::move(t));
    }
    if (auto e = validateModel(m, what_)) return e;
    return m;
  }

private:
  std::string what_;
  hid_t fid_;
  int64_t maxParams_;

  llvm::Error intAttr(hid_t g, const std::string &name, int64_t &out, int64_t lo, int64_t hi) {
    return h5::readIntAttr(g, what_, "metadata", name, out, lo, hi);
  }
  llvm::Error stringAttr(hid_t g, const std::string &name, std::string &out) {
    return h5::readStringAttr(g, what_, "metadata", name, out);
  }

  // Opens dataset metadata/`name` holding strings; checks its rank (1, or, when
  // `scalar`, a scalar or shape [1]) and, when n >= 0, its length, then that it is
  // checksummed and stored, before reading it.
  llvm::Error strings(hid_t g, const std::string &name, std::vector<std::string> &out, int64_t n,
                      bool scalar = false) {
    std::string full = "dataset 'metadata/" + name + "'";
    if (!exists(g, name)) return fail(what_, "missing " + full);
    if (objectType(g, name) != H5I_DATASET) return fail(what_, "'metadata/" + name + "' is not a dataset");
    Handle d = dataset(H5Dopen2(g, name.c_str(), H5P_DEFAULT));
    if (!d.ok()) return fail(what_, "cannot open " + full);
    Handle t = type(H5Dget_type(d.get()));
    if (!t.ok()) return fail(what_, "cannot read the type of " + full);
    if (H5Tget_class(t.get()) != H5T_STRING)
      return fail(what_, full + " is " + h5::typeName(t.get()) + ", expected strings");
    Handle sp = space(H5Dget_space(d.get()));
    std::vector<int64_t> dims;
    bool isScalar = false;
    if (!sp.ok() || !h5::spaceDims(sp.get(), dims, isScalar)) return fail(what_, "cannot read the shape of " + full);
    int64_t count;
    if (scalar) {
      if (!(isScalar || (dims.size() == 1 && dims[0] == 1))) return fail(what_, full + " is not a single string");
      count = 1;
    } else {
      if (dims.size() != 1) return fail(what_, fmt::format("{} has shape {}, expected one dimension", full, formatShape(dims)));
      count = dims[0];
      if (n >= 0 && count != n) return fail(what_, fmt::format("{} has {} entries, expected {}", full, count, n));
      if (count > kMaxStrings) return fail(what_, fmt::format("{} has too many entries ({})", full, count));
    }
    htri_t vlen = H5Tis_variable_str(t.get());
    // A variable-length string is stored as a 16-byte reference in the dataset, and
    // cannot be checksummed (libhdf5 refuses fletcher32 on variable-length types): such
    // datasets (h5py's default for str) are read unchecked, their references validated.
    uint64_t width = vlen > 0 ? 16 : H5Tget_size(t.get());
    if (auto e = h5::checkStoredData(d.get(), what_, full, llvm::SaturatingMultiply(uint64_t(count), width),
                                     vlen <= 0))
      return e;
    return h5::readStrings(d.get(), false, t.get(), size_t(count), what_, full, out);
  }

  llvm::Error oneString(hid_t g, const std::string &name, std::string &out) {
    std::vector<std::string> v;
    if (auto e = strings(g, name, v, 1, true)) return e;
    out = v.empty() ? "" : v[0];
    return llvm::Error::success();
  }

  llvm::Error tensor(const std::string &name, const std::vector<int64_t> &shape, Tensor &t) {
    return h5::readTensor(fid_, what_, name, t, shape);
  }
};

// ------------------------------------------------------------------------------------
// Ground truth JSON

std::string intArray(const std::vector<int> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string quoted(const std::string &s) { return "\"" + jsonEscape(s) + "\""; }

class NodeParser {
public:
  NodeParser(const json::Value &obj, size_t index) : obj_(obj), index_(index) {}

  llvm::Error str(const char *key, std::string &out) {
    const json::Value *v;
    if (auto e = get(key, json::Value::String, v)) return e;
    out = v->s;
    return llvm::Error::success();
  }
  llvm::Error integer(const char *key, int &out) {
    const json::Value *v;
    if (auto e = get(key, json::Value::Int, v)) return e;
    if (v->i < INT32_MIN || v->i > INT32_MAX) return bad(fmt::format("key '{}' is out of range", key));
    out = int(v->i);
    return llvm::Error::success();
  }
  llvm::Error ints(const char *key, std::vector<int> &out) {
    const json::Value *v;
    if (auto e = get(key, json::Value::Array, v)) return e;
    if (auto e = intsOf(key, *v, out)) return e;
    return llvm::Error::success();
  }
  llvm::Error scalars(const char *key, std::vector<Scalar> &out) {
    const json::Value *v;
    if (auto e = get(key, json::Value::Array, v)) return e;
    for (const json::Value &x : v->array) {
      auto s = json::toScalar(x);
      if (!s) {
        llvm::consumeError(s.takeError());
        return bad(fmt::format("key '{}' holds an {}, expected scalars", key, json::kindName(x.kind)));
      }
      out.push_back(std::move(*s));
    }
    return llvm::Error::success();
  }
  llvm::Error mlp(int &begin, int &end) {
    const json::Value *v = obj_.get("mlp");
    if (!v) return bad("missing key 'mlp'");
    if (v->isNull()) {
      begin = end = -1;
      return llvm::Error::success();
    }
    std::vector<int> r;
    if (v->kind != json::Value::Array || intsOf("mlp", *v, r) || r.size() != 2)
      return bad("key 'mlp' must be null or [begin, end]");
    begin = r[0];
    end = r[1];
    return llvm::Error::success();
  }
  llvm::Error bad(const std::string &msg) {
    return llvm::make_error<llvm::StringError>(fmt::format("entry {}: {}", index_, msg), llvm::inconvertibleErrorCode());
  }

private:
  const json::Value &obj_;
  size_t index_;

  llvm::Error get(const char *key, json::Value::Kind kind, const json::Value *&out) {
    out = obj_.get(key);
    if (!out) return bad(fmt::format("missing key '{}'", key));
    if (out->kind != kind)
      return bad(fmt::format("key '{}' is {} {}, expected {} {}", key, article(out->kind), json::kindName(out->kind),
                             article(kind), json::kindName(kind)));
    return llvm::Error::success();
  }
  static const char *article(json::Value::Kind k) {
    return k == json::Value::Int || k == json::Value::Array || k == json::Value::Object ? "an" : "a";
  }
  llvm::Error intsOf(const char *key, const json::Value &arr, std::vector<int> &out) {
    for (const json::Value &x : arr.array) {
      if (x.kind != json::Value::Int || x.i < INT32_MIN || x.i > INT32_MAX)
        return bad(fmt::format("key '{}' must hold integers", key));
      out.push_back(int(x.i));
    }
    return llvm::Error::success();
  }
};

} // namespace

std::string formatShape(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::vector<std::pair<std::string, std::vector<int64_t>>> expectedTensors(const ModelConfig &c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> v;
  int64_t D = c.d_model, H = c.n_heads, Dh = c.d_head, M = c.d_mlp;
  v.push_back({"embed.W_E", {c.d_vocab, D}});
  v.push_back({"pos_embed.W_pos", {c.n_ctx, D}});
  for (int l = 0; l < c.n_layers; ++l) {
    std::string a = fmt::format("blocks.{}.attn.", l), m = fmt::format("blocks.{}.mlp.", l);
    v.push_back({a + "W_Q", {H, D, Dh}});
    v.push_back({a + "W_K", {H, D, Dh}});
    v.push_back({a + "W_V", {H, D, Dh}});
    v.push_back({a + "W_O", {H, Dh, D}});
    v.push_back({a + "b_Q", {H, Dh}});
    v.push_back({a + "b_K", {H, Dh}});
    v.push_back({a + "b_V", {H, Dh}});
    v.push_back({a + "b_O", {D}});
    v.push_back({m + "W_in", {D, M}});
    v.push_back({m + "b_in", {M}});
    v.push_back({m + "W_out", {M, D}});
    v.push_back({m + "b_out", {D}});
  }
  v.push_back({"unembed.W_U", {D, c.d_vocab_out}});
  v.push_back({"unembed.b_U", {c.d_vocab_out}});
  return v;
}

// Where a node or a helper sits, the keys they share: "layer" to "writes".
template <class T> std::string placeJson(const T &x) {
  std::string mlp = x.mlpBegin < 0 ? "null" : fmt::format("[{}, {}]", x.mlpBegin, x.mlpEnd);
  return fmt::format("\"layer\": {}, \"sublayer\": {}, \"heads\": {}, \"mlp\": {}, \"reads\": {}, \"writes\": {}",
                     x.layer, quoted(x.sublayer), intArray(x.heads), mlp, intArray(x.reads), intArray(x.writes));
}

template <class T> llvm::Error parsePlace(NodeParser &p, T &x) {
  if (auto e = p.integer("layer", x.layer)) return e;
  if (auto e = p.str("sublayer", x.sublayer)) return e;
  if (auto e = p.ints("heads", x.heads)) return e;
  if (auto e = p.mlp(x.mlpBegin, x.mlpEnd)) return e;
  if (auto e = p.ints("reads", x.reads)) return e;
  return p.ints("writes", x.writes);
}

std::string helpersJson(const std::vector<HelperBlock> &hs) {
  std::string s = "[";
  for (size_t i = 0; i < hs.size(); ++i)
    s += fmt::format("{}{{\"role\": {}, {}}}", i ? ", " : "", quoted(hs[i].role), placeJson(hs[i]));
  return s + "]";
}

std::string groundTruthJson(const std::vector<NodeInfo> &nodes) {
  std::string s = "[";
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeInfo &n = nodes[i];
    std::string values = "[";
    for (size_t k = 0; k < n.valueSet.size(); ++k) values += (k ? ", " : "") + jsonScalar(n.valueSet[k]);
    values += "]";
    s += fmt::format("{}\n{{\"id\": {}, \"name\": {}, \"kind\": {}, \"op\": {}, \"encoding\": {}, "
                     "\"value_set\": {}, \"location\": {}, {}, \"args\": {}, \"helpers\": {}}}",
                     i ? "," : "", n.id, quoted(n.name), quoted(n.kind), quoted(n.op), quoted(n.encoding), values,
                     quoted(n.location), placeJson(n), intArray(n.args), helpersJson(n.helpers));
  }
  return s + (nodes.empty() ? "]" : "\n]");
}

llvm::Expected<std::vector<NodeInfo>> parseGroundTruth(const std::string &text) {
  auto doc = json::parse(text);
  if (!doc) return doc.takeError();
  if (doc->kind != json::Value::Array)
    return llvm::make_error<llvm::StringError>("expected a JSON array of nodes", llvm::inconvertibleErrorCode());
  std::vector<NodeInfo> nodes;
  for (size_t i = 0; i < doc->array.size(); ++i) {
    const json::Value &o = doc->array[i];
    NodeParser p(o, i);
    if (o.kind != json::Value::Object) return p.bad("expected an object");
    NodeInfo n;
    if (auto e = p.integer("id", n.id)) return e;
    if (auto e = p.str("name", n.name)) return e;
    if (auto e = p.str("kind", n.kind)) return e;
    if (auto e = p.str("op", n.op)) return e;
    if (auto e = p.str("encoding", n.encoding)) return e;
    if (auto e = p.scalars("value_set", n.valueSet)) return e;
    if (auto e = p.str("location", n.location)) return e;
    if (auto e = parsePlace(p, n)) return e;
    if (auto e = p.ints("args", n.args)) return e;
    // "helpers" came after format version 1's first files: absent means none.
    if (const json::Value *hs = o.get("helpers")) {
      if (hs->kind != json::Value::Array) return p.bad("key 'helpers' must be an array");
      for (const json::Value &x : hs->array) {
        if (x.kind != json::Value::Object) return p.bad("key 'helpers' must hold objects");
        NodeParser hp(x, i);
        HelperBlock h;
        if (auto e = hp.str("role", h.role)) return e;
        if (auto e = parsePlace(hp, h)) return e;
        n.helpers.push_back(std::move(h));
      }
    }
    nodes.push_back(std::move(n));
  }
  return nodes;
}

// Where a node or a helper sits (layer, heads, MLP neurons, residual directions) is
// within the configuration. Errors name `who`.
template <class T>
static llvm::Error checkPlace(const std::string &what, const std::string &who, const ModelConfig &c, int64_t nLabels,
                              int minLayer, const T &x) {
  if (x.layer < minLayer || x.layer >= c.n_layers)
    return fail(what, fmt::format("{}: layer {} is out of range (n_layers = {})", who, x.layer, c.n_layers));
  for (int h : x.heads)
    if (h < 0 || h >= c.n_heads)
      return fail(what, fmt::format("{}: head {} is out of range (n_heads = {})", who, h, c.n_heads));
  if (x.mlpBegin >= 0 || x.mlpEnd >= 0)
    if (x.mlpBegin < 0 || x.mlpEnd < x.mlpBegin || x.mlpEnd > c.d_mlp)
      return fail(what, fmt::format("{}: MLP neuron range [{}, {}] is out of range (d_mlp = {})", who, x.mlpBegin,
                                    x.mlpEnd, c.d_mlp));
  for (const std::vector<int> *dirs : {&x.reads, &x.writes})
    for (int d : *dirs)
      if (d < 0 || d >= nLabels)
        return fail(what, nLabels == c.d_model
                              ? fmt::format("{}: residual direction {} is out of range (d_model = {})", who, d, c.d_model)
                              : fmt::format("{}: residual direction {} is out of range ({} residual labels)", who, d,
                                            nLabels));
  return llvm::Error::success();
}

// Every head and MLP neuron with a nonzero weight is one the ground truth places a node
// or a helper on (the compiler accounts for all of them): a ground truth that does not
// describe the weights, an empty one included, is an error.
static llvm::Error checkGroundTruthCovers(const Model &m, const std::string &what) {
  const ModelConfig &c = m.cfg;
  auto uncovered = [&](const std::string &unit, int layer) {
    return fail(what, fmt::format("dataset 'metadata/ground_truth' places no node on {} of layer {}, whose weights are "
                                  "nonzero",
                                  unit, layer));
  };
  for (int l = 0; l < c.n_layers; ++l) {
    std::set<int> heads;
    std::vector<bool> neurons(size_t(c.d_mlp), false);
    auto claim = [&](const auto &x) {
      if (x.layer != l) return;
      heads.insert(x.heads.begin(), x.heads.end());
      // Ranges are within [0, d_mlp] (checkPlace ran first).
      for (int j = std::max(x.mlpBegin, 0); j < x.mlpEnd; ++j) neurons[size_t(j)] = true;
    };
    for (const NodeInfo &n : m.nodes) {
      claim(n);
      for (const HelperBlock &h : n.helpers) claim(h);
    }
    std::string a = fmt::format("blocks.{}.attn.", l), p = fmt::format("blocks.{}.mlp.", l);
    // Per head, the weights of head h are a contiguous block of each of these tensors.
    for (int h = 0; h < c.n_heads; ++h) {
      if (heads.count(h)) continue;
      for (const char *w : {"W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"}) {
        const Tensor &t = m.tensors.at(a + w);
        size_t per = t.data.size() / size_t(c.n_heads);
        auto begin = t.data.begin() + ptrdiff_t(size_t(h) * per);
        if (std::any_of(begin, begin + ptrdiff_t(per), [](float x) { return x != 0; }))
          return uncovered(fmt::format("head {}", h), l);
      }
    }
    const Tensor &win = m.tensors.at(p + "W_in"), &bin = m.tensors.at(p + "b_in"), &wout = m.tensors.at(p + "W_out");
    for (int j = 0; j < c.d_mlp; ++j) {
      if (neurons[size_t(j)]) continue;
      bool nonzero = bin.data[size_t(j)] != 0;
      for (int d = 0; d < c.d_model && !nonzero; ++d)
        nonzero = win.at(d, j) != 0 || wout.at(j, d) != 0;
      if (nonzero) return uncovered(fmt::format("MLP neuron {}", j), l);
    }
  }
  return llvm::Error::success();
}

llvm::Error validateModel(const Model &m, const std::string &what) {
  const ModelConfig &c = m.cfg;
  struct Range {
    const char *name;
    int64_t v, lo, hi;
  } ranges[] = {
      {"n_layers", c.n_layers, 0, 1 << 16}, {"d_model", c.d_model, 1, kMaxDim},
      {"n_heads", c.n_heads, 0, 1 << 16},   {"d_head", c.d_head, 0, kMaxDim},
      {"d_mlp", c.d_mlp, 0, kMaxDim},       {"d_vocab", c.d_vocab, 2, kMaxDim},
      {"d_vocab_out", c.d_vocab_out, 1, kMaxDim}, {"n_ctx", c.n_ctx, 1, kMaxDim},
  };
  for (auto &r : ranges)
    if (r.v < r.lo || r.v > r.hi)
      return fail(what, fmt::format("config {} is {}, expected a value in [{}, {}]", r.name, r.v, r.lo, r.hi));

  // Tensors: exactly the expected ones, with their shapes, finite.
  if (auto e = h5::checkTensors(what, m.tensors, expectedTensors(c))) return e;

  // Vocabulary.
  if (int64_t(m.vocab.size()) != c.d_vocab)
    return fail(what, fmt::format("vocab has {} entries, expected d_vocab = {}", m.vocab.size(), c.d_vocab));
  if (m.bosId < 0 || m.bosId >= c.d_vocab) return fail(what, fmt::format("bos_id {} is out of range", m.bosId));
  if (m.padId < 0 || m.padId >= c.d_vocab) return fail(what, fmt::format("pad_id {} is out of range", m.padId));
  if (m.vocab[size_t(m.bosId)] != "<bos>")
    return fail(what, fmt::format("vocab entry {} (bos_id) is '{}', expected '<bos>'", m.bosId, m.vocab[size_t(m.bosId)]));
  if (m.vocab[size_t(m.padId)] != "<pad>")
    return fail(what, fmt::format("vocab entry {} (pad_id) is '{}', expected '<pad>'", m.padId, m.vocab[size_t(m.padId)]));
  std::set<std::string> seen;
  for (const std::string &tok : m.vocab)
    if (!seen.insert(tok).second) return fail(what, "vocab has '" + tok + "' twice");

  // The residual basis: [n_labels, d_model], finite (docs/weights.md). Without one,
  // the labels are the d_model directions themselves.
  const int64_t nLabels = residualLabelCount(m);
  if (hasResidualBasis(m)) {
    const Tensor &b = m.residualBasis;
    if (b.shape.size() != 2 || b.shape[1] != c.d_model || b.shape[0] < 1 || b.shape[0] > kMaxDim)
      return fail(what, fmt::format("dataset 'metadata/residual_basis' has shape {}, expected [n_labels, d_model] with "
                                    "d_model = {}",
                                    formatShape(b.shape), c.d_model));
    if (b.data.size() != b.numel())
      return fail(what, fmt::format("dataset 'metadata/residual_basis' has {} values for shape {}", b.data.size(),
                                    formatShape(b.shape)));
    for (size_t i = 0; i < b.data.size(); ++i)
      if (!std::isfinite(b.data[i]))
        return fail(what, fmt::format("dataset 'metadata/residual_basis' has a non-finite value ({}) at {}",
                                      std::isnan(b.data[i]) ? "nan" : b.data[i] > 0 ? "inf" : "-inf",
                                      h5::elementIndex(b.shape, i)));
    if (int64_t(m.residualLabels.size()) != nLabels)
      return fail(what, fmt::format("residual_labels has {} entries, expected {} (the rows of "
                                    "'metadata/residual_basis')",
                                    m.residualLabels.size(), nLabels));
  } else if (int64_t(m.residualLabels.size()) != c.d_model) {
    return fail(what, fmt::format("residual_labels has {} entries, expected d_model = {}", m.residualLabels.size(),
                                  c.d_model));
  }

  // Output.
  if (m.outputEncoding == "categorical") {
    if (int64_t(m.outputValues.size()) != c.d_vocab_out)
      return fail(what, fmt::format("output_values has {} entries, expected d_vocab_out = {}", m.outputValues.size(),
                                    c.d_vocab_out));
  } else if (m.outputEncoding != "numerical") {
    return fail(what, "output_encoding is '" + m.outputEncoding + "', expected 'categorical' or 'numerical'");
  } else if (c.d_vocab_out != 1) {
    // A numerical output is one column (backend/Assemble.cpp).
    return fail(what, fmt::format("attribute 'metadata/d_vocab_out' is {}, expected 1 for output_encoding 'numerical'",
                                  c.d_vocab_out));
  }
  // The output node (the last node of that name; an unnamed output cannot be told
  // apart) is encoded as the output says.
  for (auto it = m.nodes.rbegin(); it != m.nodes.rend() && !m.outputName.empty(); ++it) {
    if (it->name != m.outputName) continue;
    if (!it->encoding.empty() && it->encoding != m.outputEncoding)
      return fail(what, fmt::format("attribute 'metadata/output_encoding' is '{}' but the output node {} ('{}') is {}",
                                    m.outputEncoding, it->id, it->name, it->encoding));
    break;
  }

  // Ground truth.
  std::set<int> ids;
  for (const NodeInfo &n : m.nodes)
    if (!ids.insert(n.id).second) return fail(what, fmt::format("ground truth has node id {} twice", n.id));
  for (const NodeInfo &n : m.nodes) {
    std::string node = n.name.empty() ? fmt::format("ground truth node {}", n.id)
                                      : fmt::format("ground truth node {} ('{}')", n.id, n.name);
    for (int a : n.args)
      if (!ids.count(a)) return fail(what, fmt::format("{}: argument {} is not a node", node, a));
    if (auto e = checkPlace(what, node, c, nLabels, -1, n)) return e;
    for (const HelperBlock &h : n.helpers) {
      std::string helper = fmt::format("{}: helper '{}'", node, h.role);
      if (h.sublayer != "attn" && h.sublayer != "mlp")
        return fail(what, fmt::format("{}: sublayer '{}', expected 'attn' or 'mlp'", helper, h.sublayer));
      if (auto e = checkPlace(what, helper, c, nLabels, 0, h)) return e;
    }
    if (!(n.sublayer.empty() || n.sublayer == "embed" || n.sublayer == "attn" || n.sublayer == "mlp" ||
          n.sublayer == "fused"))
      return fail(what, fmt::format("{}: unknown sublayer '{}'", node, n.sublayer));
    if (!(n.encoding.empty() || n.encoding == "categorical" || n.encoding == "numerical"))
      return fail(what, fmt::format("{}: unknown encoding '{}'", node, n.encoding));
    if (!n.writes.empty()) {
      // Categorical: one direction per value other than None (None is "all off").
      size_t present = 0;
      for (const Scalar &v : n.valueSet) present += !isNone(v);
      if (n.encoding == "categorical" && n.writes.size() != present)
        return fail(what, fmt::format("{}: {} written directions for {} values", node, n.writes.size(), present));
      if (n.encoding == "numerical" && n.writes.size() != 1)
        return fail(what, fmt::format("{}: {} written directions, expected 1 for a numerical node", node,
                                      n.writes.size()));
    }
  }
  return checkGroundTruthCovers(m, what);
}

llvm::Error writeModel(const Model &m, const std::string &path, const files::OutputRule &rule) {
  h5::quiet();
  if (auto e = validateModel(m, path)) return e;
  return h5::writeAtomically(path, rule, [&](hid_t fid) { return Writer(path).model(fid, m); });
}

llvm::Expected<Model> readModel(const std::string &path, int64_t maxParams) {
  auto f = h5::openForReading(path);
  if (!f) return f.takeError();
  return Reader(path, f->get(), maxParams).model();
}

llvm::Expected<Model> readModelFromImage(std::string bytes, const std::string &name, int64_t maxParams) {
  auto f = h5::openImage(std::move(bytes), name);
  if (!f) return f.takeError();
  return Reader(name, f->get(), maxParams).model();
}

} // namespace raspc
