#include "backend/Hdf5.h"
#include "backend/Json.h"

#include <fmt/format.h>
#include <hdf5.h>
#include <llvm/Support/FileSystem.h>

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
constexpr int64_t kMaxTensorElems = int64_t(1) << 31; // 8 GiB of float32
constexpr int64_t kMaxStrings = int64_t(1) << 24;
constexpr int64_t kMaxParams = int64_t(1) << 30;      // 4 GiB of float32 in all

llvm::Error fail(const std::string &what, const std::string &msg) {
  return llvm::make_error<llvm::StringError>(what + ": " + msg, llvm::inconvertibleErrorCode());
}

// Turns off HDF5's own printing of its error stack (we report errors ourselves).
void quietHdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// An HDF5 identifier closed on scope exit.
class Handle {
public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  Handle(const Handle &) = delete;
  Handle &operator=(const Handle &) = delete;
  Handle(Handle &&o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle &operator=(Handle &&o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  ~Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  // Closes now, reporting whether closing succeeded (a file flushes on close).
  bool close() {
    if (id_ < 0) return true;
    herr_t r = close_ ? close_(id_) : 0;
    id_ = -1;
    return r >= 0;
  }
  bool ok() const { return id_ >= 0; }
  hid_t get() const { return id_; }

private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

Handle file(hid_t id) { return Handle(id, H5Fclose); }
Handle group(hid_t id) { return Handle(id, H5Gclose); }
Handle dataset(hid_t id) { return Handle(id, H5Dclose); }
Handle attribute(hid_t id) { return Handle(id, H5Aclose); }
Handle space(hid_t id) { return Handle(id, H5Sclose); }
Handle type(hid_t id) { return Handle(id, H5Tclose); }
Handle plist(hid_t id) { return Handle(id, H5Pclose); }

// A fixed-length UTF-8 string type of `size` bytes, NUL-padded (a string of exactly
// `size` bytes has no terminator). We write fixed-length rather than variable-length
// strings: HDF5 keeps the latter in its global heap, which has no checksum, and
// libhdf5 crashes on a corrupted global heap; fixed-length strings live in checksummed
// object headers (attributes) or in the dataset's own raw data.
Handle fixedUtf8(size_t size) {
  Handle t = type(H5Tcopy(H5T_C_S1));
  if (t.ok()) {
    H5Tset_size(t.get(), std::max<size_t>(size, 1));
    H5Tset_strpad(t.get(), H5T_STR_NULLPAD);
    H5Tset_cset(t.get(), H5T_CSET_UTF8);
  }
  return t;
}

std::string typeName(hid_t t) {
  size_t bits = H5Tget_size(t) * 8;
  switch (H5Tget_class(t)) {
  case H5T_INTEGER: return fmt::format("{}int{}", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits);
  case H5T_FLOAT: return fmt::format("float{}", bits);
  case H5T_STRING: return "string";
  case H5T_TIME: return "time";
  case H5T_BITFIELD: return "bitfield";
  case H5T_OPAQUE: return "opaque";
  case H5T_COMPOUND: return "compound";
  case H5T_REFERENCE: return "reference";
  case H5T_ENUM: return "enum";
  case H5T_VLEN: return "vlen";
  case H5T_ARRAY: return "array";
  default: return "unknown type";
  }
}

// The dimensions of a dataspace; a scalar has none. False for a null dataspace.
bool spaceDims(hid_t sp, std::vector<int64_t> &dims, bool &scalar) {
  H5S_class_t cls = H5Sget_simple_extent_type(sp);
  scalar = cls == H5S_SCALAR;
  dims.clear();
  if (cls == H5S_SCALAR) return true;
  if (cls != H5S_SIMPLE) return false;
  int rank = H5Sget_simple_extent_ndims(sp);
  if (rank < 0 || rank > 32) return false;
  std::vector<hsize_t> d(size_t(rank), 0);
  if (H5Sget_simple_extent_dims(sp, d.data(), nullptr) < 0) return false;
  for (hsize_t x : d) dims.push_back(x > hsize_t(INT64_MAX) ? INT64_MAX : int64_t(x));
  return true;
}

// Collects the descriptions on HDF5's current error stack.
std::string hdf5ErrorText() {
  std::string text;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t *e, void *data) -> herr_t {
        auto *s = static_cast<std::string *>(data);
        if (e && e->desc) *s += std::string(e->desc) + "\n";
        return 0;
      },
      &text);
  return text;
}

bool hasNul(const std::string &s) { return s.find('\0') != std::string::npos; }

// ------------------------------------------------------------------------------------
// Writing

class Writer {
public:
  explicit Writer(std::string what) : what_(std::move(what)) {}

  llvm::Error tensor(hid_t loc, const std::string &name, const Tensor &t) {
    std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
    Handle sp = space(H5Screate_simple(int(dims.size()), dims.data(), nullptr));
    if (!sp.ok()) return fail(what_, "cannot create the dataspace of tensor '" + name + "'");
    Handle dcpl = plist(H5Pcreate(H5P_DATASET_CREATE));
    if (!dcpl.ok()) return fail(what_, "cannot create a property list");
    // One chunk per tensor, with a checksum (corruption is detected on reading) and
    // deflate (compiled weights are mostly zeros). Both are built into h5py.
    size_t bytes = t.numel() * sizeof(float);
    if (t.numel() > 0 && bytes < (size_t(1) << 31)) {
      H5Pset_chunk(dcpl.get(), int(dims.size()), dims.data());
      if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) H5Pset_deflate(dcpl.get(), 4);
      H5Pset_fletcher32(dcpl.get());
    }
    Handle ds = dataset(H5Dcreate2(loc, name.c_str(), H5T_IEEE_F32LE, sp.get(), H5P_DEFAULT, dcpl.get(),
                                   H5P_DEFAULT));
    if (!ds.ok()) return fail(what_, "cannot create tensor '" + name + "'");
    if (t.numel() > 0 &&
        H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data.data()) < 0)
      return fail(what_, "cannot write tensor '" + name + "'");
    return llvm::Error::success();
  }

  llvm::Error intAttr(hid_t loc, const std::string &name, int64_t v) {
    Handle sp = space(H5Screate(H5S_SCALAR));
    Handle a = attribute(H5Acreate2(loc, name.c_str(), H5T_STD_I64LE, sp.get(), H5P_DEFAULT, H5P_DEFAULT));
    if (!a.ok() || H5Awrite(a.get(), H5T_NATIVE_INT64, &v) < 0)
      return fail(what_, "cannot write attribute 'metadata/" + name + "'");
    return llvm::Error::success();
  }

  llvm::Error stringAttr(hid_t loc, const std::string &name, const std::string &v) {
    if (hasNul(v)) return fail(what_, "attribute 'metadata/" + name + "' contains a NUL character");
    Handle t = fixedUtf8(v.size());
    Handle sp = space(H5Screate(H5S_SCALAR));
    Handle a = attribute(H5Acreate2(loc, name.c_str(), t.get(), sp.get(), H5P_DEFAULT, H5P_DEFAULT));
    std::string buf = v;
    buf.resize(std::max<size_t>(v.size(), 1), '\0');
    if (!a.ok() || H5Awrite(a.get(), t.get(), buf.data()) < 0)
      return fail(what_, "cannot write attribute 'metadata/" + name + "'");
    return llvm::Error::success();
  }

  // A 1-d dataset of strings, or a scalar one when `scalar` (then exactly one string).
  llvm::Error strings(hid_t loc, const std::string &name, const std::vector<std::string> &v, bool scalar) {
    size_t width = 1;
    for (const std::string &s : v) {
      if (hasNul(s)) return fail(what_, "dataset 'metadata/" + name + "' contains a NUL character");
      width = std::max(width, s.size());
    }
    std::string buf(width * v.size(), '\0');
    for (size_t i = 0; i < v.size(); ++i) std::copy(v[i].begin(), v[i].end(), buf.begin() + ptrdiff_t(i * width));
    Handle t = fixedUtf8(width);
    hsize_t n = v.size();
    Handle sp = space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr));
    Handle dcpl = plist(H5Pcreate(H5P_DATASET_CREATE));
    // Checksummed, as the tensors are (a scalar dataset cannot be chunked).
    if (!scalar && n > 0 && buf.size() < (size_t(1) << 31)) {
      H5Pset_chunk(dcpl.get(), 1, &n);
      H5Pset_fletcher32(dcpl.get());
    }
    Handle ds = dataset(H5Dcreate2(loc, name.c_str(), t.get(), sp.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
    if (!ds.ok()) return fail(what_, "cannot create dataset 'metadata/" + name + "'");
    if (!v.empty() && H5Dwrite(ds.get(), t.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
      return fail(what_, "cannot write dataset 'metadata/" + name + "'");
    return llvm::Error::success();
  }

  llvm::Error model(hid_t fid, const Model &m) {
    for (const auto &[name, t] : m.tensors)
      if (auto e = tensor(fid, name, t)) return e;
    Handle g = group(H5Gcreate2(fid, "metadata", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
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
    if (auto e = strings(gid, "vocab", m.vocab, false)) return e;
    if (auto e = strings(gid, "residual_labels", m.residualLabels, false)) return e;
    std::vector<std::string> outs;
    for (const Scalar &s : m.outputValues) outs.push_back(jsonScalar(s));
    if (auto e = strings(gid, "output_values", outs, false)) return e;
    if (auto e = strings(gid, "source", {m.source}, true)) return e;
    if (auto e = strings(gid, "ground_truth", {groundTruthJson(m.nodes)}, true)) return e;
    return llvm::Error::success();
  }

private:
  std::string what_;
};

// ------------------------------------------------------------------------------------
// Reading

class Reader {
public:
  Reader(std::string what, hid_t fid) : what_(std::move(what)), fid_(fid) {}

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
    if (auto e = strings(gid, "residual_labels", m.residualLabels, c.d_model)) return e;
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

    // A file may declare sizes that compress to nothing; bound what we allocate.
    auto expected = expectedTensors(c);
    double params = 0;
    for (auto &[name, shape] : expected) {
      double n = 1;
      for (int64_t d : shape) n *= double(d);
      params += n;
    }
    if (params > double(kMaxParams))
      return fail(what_, fmt::format("the configuration asks for {:.0f} parameters, more than the {} raspc reads",
                                     params, kMaxParams));
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

  static bool exists(hid_t loc, const std::string &name) { return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0; }
  // H5I_GROUP, H5I_DATASET, ... for the object at `name`; H5I_BADID if it cannot be opened.
  static H5I_type_t objectType(hid_t loc, const std::string &name) {
    Handle o(H5Oopen(loc, name.c_str(), H5P_DEFAULT), H5Oclose);
    return o.ok() ? H5Iget_type(o.get()) : H5I_BADID;
  }

  // Opens metadata attribute `name` and its type, which must be of class `cls`.
  llvm::Error openAttr(hid_t g, const std::string &name, H5T_class_t cls, const char *clsName, Handle &a,
                       Handle &t) {
    std::string full = "attribute 'metadata/" + name + "'";
    if (H5Aexists(g, name.c_str()) <= 0) return fail(what_, "missing " + full);
    a = attribute(H5Aopen(g, name.c_str(), H5P_DEFAULT));
    if (!a.ok()) return fail(what_, "cannot open " + full);
    t = type(H5Aget_type(a.get()));
    if (!t.ok()) return fail(what_, "cannot read the type of " + full);
    if (H5Tget_class(t.get()) != cls) return fail(what_, full + " is " + typeName(t.get()) + ", expected " + clsName);
    return llvm::Error::success();
  }

  llvm::Error intAttr(hid_t g, const std::string &name, int64_t &out, int64_t lo, int64_t hi) {
    std::string full = "attribute 'metadata/" + name + "'";
    Handle a, t;
    if (auto e = openAttr(g, name, H5T_INTEGER, "an integer", a, t)) return e;
    Handle sp = space(H5Aget_space(a.get()));
    std::vector<int64_t> dims;
    bool scalar;
    if (!sp.ok() || !spaceDims(sp.get(), dims, scalar) || H5Sget_simple_extent_npoints(sp.get()) != 1)
      return fail(what_, full + " is not a single value");
    if (H5Tget_sign(t.get()) == H5T_SGN_NONE && H5Tget_size(t.get()) >= 8) {
      uint64_t u = 0;
      if (H5Aread(a.get(), H5T_NATIVE_UINT64, &u) < 0) return fail(what_, "cannot read " + full);
      out = u > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(u);
    } else if (H5Aread(a.get(), H5T_NATIVE_INT64, &out) < 0) {
      return fail(what_, "cannot read " + full);
    }
    if (out < lo || out > hi)
      return fail(what_, fmt::format("{} is {}, expected a value in [{}, {}]", full, out, lo, hi));
    return llvm::Error::success();
  }

  // Reads the strings of an attribute or dataset `obj` (isAttr tells which) with file
  // type `ft` and `n` elements. Variable-length and fixed-length strings are accepted.
  bool readStrings(hid_t obj, bool isAttr, hid_t ft, hid_t sp, size_t n, std::vector<std::string> &out) {
    out.clear();
    if (n == 0) return true;
    htri_t vlen = H5Tis_variable_str(ft);
    if (vlen < 0) return false;
    if (vlen > 0) {
      Handle mt = type(H5Tcopy(H5T_C_S1));
      if (!mt.ok() || H5Tset_size(mt.get(), H5T_VARIABLE) < 0 || H5Tset_cset(mt.get(), H5Tget_cset(ft)) < 0)
        return false;
      std::vector<char *> ptrs(n, nullptr);
      herr_t r = isAttr ? H5Aread(obj, mt.get(), ptrs.data())
                        : H5Dread(obj, mt.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data());
      if (r < 0) return false;
      for (char *p : ptrs) out.emplace_back(p ? p : "");
      H5Dvlen_reclaim(mt.get(), sp, H5P_DEFAULT, ptrs.data());
      return true;
    }
    size_t size = H5Tget_size(ft);
    if (size == 0 || size > (size_t(1) << 30) || n > ((size_t(1) << 31) / size)) return false;
    Handle mt = type(H5Tcopy(ft));
    if (!mt.ok()) return false;
    std::vector<char> buf(n * size, '\0');
    herr_t r = isAttr ? H5Aread(obj, mt.get(), buf.data())
                      : H5Dread(obj, mt.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
    if (r < 0) return false;
    bool spacePad = H5Tget_strpad(ft) == H5T_STR_SPACEPAD;
    for (size_t i = 0; i < n; ++i) {
      std::string s(buf.data() + i * size, size);
      size_t end = s.find('\0');
      if (end != std::string::npos) s.resize(end);
      if (spacePad)
        while (!s.empty() && s.back() == ' ') s.pop_back();
      out.push_back(std::move(s));
    }
    return true;
  }

  llvm::Error stringAttr(hid_t g, const std::string &name, std::string &out) {
    std::string full = "attribute 'metadata/" + name + "'";
    Handle a, t;
    if (auto e = openAttr(g, name, H5T_STRING, "a string", a, t)) return e;
    Handle sp = space(H5Aget_space(a.get()));
    if (!sp.ok() || H5Sget_simple_extent_npoints(sp.get()) != 1) return fail(what_, full + " is not a single string");
    std::vector<std::string> v;
    if (!readStrings(a.get(), true, t.get(), sp.get(), 1, v)) return fail(what_, "cannot read " + full);
    out = v[0];
    return llvm::Error::success();
  }

  // Opens dataset metadata/`name` holding strings; checks its rank (1, or scalar when
  // `scalar`) and, when n >= 0, its length.
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
      return fail(what_, full + " is " + typeName(t.get()) + ", expected strings");
    Handle sp = space(H5Dget_space(d.get()));
    std::vector<int64_t> dims;
    bool isScalar = false;
    if (!sp.ok() || !spaceDims(sp.get(), dims, isScalar)) return fail(what_, "cannot read the shape of " + full);
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
    if (!readStrings(d.get(), false, t.get(), sp.get(), size_t(count), out)) return fail(what_, "cannot read " + full);
    return llvm::Error::success();
  }

  llvm::Error oneString(hid_t g, const std::string &name, std::string &out) {
    std::vector<std::string> v;
    if (auto e = strings(g, name, v, 1, true)) return e;
    out = v.empty() ? "" : v[0];
    return llvm::Error::success();
  }

  llvm::Error tensor(const std::string &name, const std::vector<int64_t> &shape, Tensor &t) {
    std::string full = "tensor '" + name + "'";
    if (!exists(fid_, name)) return fail(what_, "missing " + full);
    if (objectType(fid_, name) != H5I_DATASET) return fail(what_, full + " is not a dataset");
    Handle d = dataset(H5Dopen2(fid_, name.c_str(), H5P_DEFAULT));
    if (!d.ok()) return fail(what_, "cannot open " + full);
    Handle ft = type(H5Dget_type(d.get()));
    if (!ft.ok()) return fail(what_, "cannot read the type of " + full);
    if (!(H5Tequal(ft.get(), H5T_IEEE_F32LE) > 0 || H5Tequal(ft.get(), H5T_IEEE_F32BE) > 0)) {
      std::string tn = typeName(ft.get());
      if (tn == "float32") tn = "a non-IEEE float32";
      return fail(what_, full + " is " + tn + ", expected float32");
    }
    Handle sp = space(H5Dget_space(d.get()));
    std::vector<int64_t> dims;
    bool scalar;
    if (!sp.ok() || !spaceDims(sp.get(), dims, scalar)) return fail(what_, "cannot read the shape of " + full);
    if (dims != shape)
      return fail(what_, fmt::format("{} has shape {}, expected {}", full, formatShape(dims), formatShape(shape)));
    t.shape = shape;
    size_t n = 1;
    for (int64_t x : shape) {
      if (x != 0 && n > size_t(kMaxTensorElems) / size_t(x)) return fail(what_, full + " is too large");
      n *= size_t(x);
    }
    if (n > size_t(kMaxTensorElems)) return fail(what_, full + " is too large");
    t.data.assign(n, 0.0f);
    if (n > 0 && H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data.data()) < 0)
      return fail(what_, "cannot read " + full + " (corrupt data)");
    return llvm::Error::success();
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

std::string groundTruthJson(const std::vector<NodeInfo> &nodes) {
  std::string s = "[";
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeInfo &n = nodes[i];
    std::string values = "[";
    for (size_t k = 0; k < n.valueSet.size(); ++k) values += (k ? ", " : "") + jsonScalar(n.valueSet[k]);
    values += "]";
    std::string mlp = n.mlpBegin < 0 ? "null" : fmt::format("[{}, {}]", n.mlpBegin, n.mlpEnd);
    s += fmt::format("{}\n{{\"id\": {}, \"name\": {}, \"kind\": {}, \"op\": {}, \"encoding\": {}, "
                     "\"value_set\": {}, \"location\": {}, \"layer\": {}, \"sublayer\": {}, \"heads\": {}, "
                     "\"mlp\": {}, \"reads\": {}, \"writes\": {}, \"args\": {}}}",
                     i ? "," : "", n.id, quoted(n.name), quoted(n.kind), quoted(n.op), quoted(n.encoding), values,
                     quoted(n.location), n.layer, quoted(n.sublayer), intArray(n.heads), mlp, intArray(n.reads),
                     intArray(n.writes), intArray(n.args));
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
    if (auto e = p.integer("layer", n.layer)) return e;
    if (auto e = p.str("sublayer", n.sublayer)) return e;
    if (auto e = p.ints("heads", n.heads)) return e;
    if (auto e = p.mlp(n.mlpBegin, n.mlpEnd)) return e;
    if (auto e = p.ints("reads", n.reads)) return e;
    if (auto e = p.ints("writes", n.writes)) return e;
    if (auto e = p.ints("args", n.args)) return e;
    nodes.push_back(std::move(n));
  }
  return nodes;
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
  auto expected = expectedTensors(c);
  std::set<std::string> names;
  for (auto &[name, shape] : expected) {
    names.insert(name);
    auto it = m.tensors.find(name);
    if (it == m.tensors.end()) return fail(what, "missing tensor '" + name + "'");
    const Tensor &t = it->second;
    if (t.shape != shape)
      return fail(what, fmt::format("tensor '{}' has shape {}, expected {}", name, formatShape(t.shape),
                                    formatShape(shape)));
    if (t.data.size() != t.numel())
      return fail(what, fmt::format("tensor '{}' has {} values for shape {}", name, t.data.size(), formatShape(shape)));
    for (size_t i = 0; i < t.data.size(); ++i) {
      if (std::isfinite(t.data[i])) continue;
      std::vector<int64_t> idx(shape.size());
      size_t rest = i;
      for (size_t k = shape.size(); k-- > 0;) {
        idx[k] = int64_t(rest % size_t(shape[k]));
        rest /= size_t(shape[k]);
      }
      return fail(what, fmt::format("tensor '{}' has a non-finite value ({}) at {}", name,
                                    std::isnan(t.data[i]) ? "nan" : t.data[i] > 0 ? "inf" : "-inf",
                                    formatShape(idx)));
    }
  }
  for (auto &[name, t] : m.tensors)
    if (!names.count(name)) return fail(what, "unexpected tensor '" + name + "'");

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

  if (int64_t(m.residualLabels.size()) != c.d_model)
    return fail(what, fmt::format("residual_labels has {} entries, expected d_model = {}", m.residualLabels.size(),
                                  c.d_model));

  // Output.
  if (m.outputEncoding == "categorical") {
    if (int64_t(m.outputValues.size()) != c.d_vocab_out)
      return fail(what, fmt::format("output_values has {} entries, expected d_vocab_out = {}", m.outputValues.size(),
                                    c.d_vocab_out));
  } else if (m.outputEncoding != "numerical") {
    return fail(what, "output_encoding is '" + m.outputEncoding + "', expected 'categorical' or 'numerical'");
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
    if (n.layer < -1 || n.layer >= c.n_layers)
      return fail(what, fmt::format("{}: layer {} is out of range (n_layers = {})", node, n.layer, c.n_layers));
    if (!(n.sublayer.empty() || n.sublayer == "embed" || n.sublayer == "attn" || n.sublayer == "mlp" ||
          n.sublayer == "fused"))
      return fail(what, fmt::format("{}: unknown sublayer '{}'", node, n.sublayer));
    if (!(n.encoding.empty() || n.encoding == "categorical" || n.encoding == "numerical"))
      return fail(what, fmt::format("{}: unknown encoding '{}'", node, n.encoding));
    for (int h : n.heads)
      if (h < 0 || h >= c.n_heads)
        return fail(what, fmt::format("{}: head {} is out of range (n_heads = {})", node, h, c.n_heads));
    if (n.mlpBegin >= 0 || n.mlpEnd >= 0)
      if (n.mlpBegin < 0 || n.mlpEnd < n.mlpBegin || n.mlpEnd > c.d_mlp)
        return fail(what, fmt::format("{}: MLP neuron range [{}, {}] is out of range (d_mlp = {})", node, n.mlpBegin,
                                      n.mlpEnd, c.d_mlp));
    for (const std::vector<int> *dirs : {&n.reads, &n.writes})
      for (int d : *dirs)
        if (d < 0 || d >= c.d_model)
          return fail(what, fmt::format("{}: residual direction {} is out of range (d_model = {})", node, d, c.d_model));
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
  return llvm::Error::success();
}

llvm::Error writeModel(const Model &m, const std::string &path) {
  quietHdf5();
  if (auto e = validateModel(m, path)) return e;
  std::string tmp = path + ".tmp";
  auto cleanup = [&](llvm::Error e) {
    std::remove(tmp.c_str());
    return e;
  };
  {
    Handle fapl = plist(H5Pcreate(H5P_FILE_ACCESS));
    // The HDF5 1.10 file format: every piece of file metadata is checksummed (the
    // single-chunk index of a dataset included), so corruption is detected, not
    // interpreted. Readable by any h5py built on HDF5 >= 1.10.
    if (fapl.ok()) H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110);
    Handle f = file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.ok() ? fapl.get() : H5P_DEFAULT));
    if (!f.ok()) return fail(path, fmt::format("cannot create '{}': {}", tmp, std::strerror(errno)));
    if (auto e = Writer(path).model(f.get(), m)) {
      f.reset();
      return cleanup(std::move(e));
    }
    if (!f.close()) return cleanup(fail(path, "cannot write '" + tmp + "'"));
  }
  // Make the data durable before the rename makes it visible.
  int fd = ::open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = std::strerror(errno);
    return cleanup(fail(path, "cannot rename '" + tmp + "' to it: " + why));
  }
  return llvm::Error::success();
}

llvm::Expected<Model> readModel(const std::string &path) {
  quietHdf5();
  if (llvm::sys::fs::is_directory(path)) return fail(path, "is a directory");
  std::FILE *probe = std::fopen(path.c_str(), "rb");
  if (!probe) return fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::fclose(probe);
  htri_t isH5 = H5Fis_hdf5(path.c_str());
  if (isH5 == 0) return fail(path, "not an HDF5 file");
  if (isH5 < 0) return fail(path, "cannot read the file");
  Handle f = file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!f.ok()) {
    std::string why = hdf5ErrorText();
    if (why.find("truncated") != std::string::npos) return fail(path, "truncated HDF5 file");
    return fail(path, "corrupt HDF5 file");
  }
  return Reader(path, f.get()).model();
}

} // namespace raspc
