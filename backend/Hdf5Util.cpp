#include "backend/Hdf5Util.h"
#include "backend/Hdf5.h"

#include <fmt/format.h>
#include <llvm/Support/FileSystem.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <set>
#include <unistd.h>

namespace raspc::h5 {

namespace {

bool hasNul(const std::string &s) { return s.find('\0') != std::string::npos; }

std::string attrLabel(const std::string &where, const std::string &name) {
  return "attribute '" + (where.empty() ? name : where + "/" + name) + "'";
}

} // namespace

llvm::Error fail(const std::string &what, const std::string &msg) {
  return llvm::make_error<llvm::StringError>(what + ": " + msg, llvm::inconvertibleErrorCode());
}

void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// We write fixed-length rather than variable-length strings: HDF5 keeps the latter in
// its global heap, which has no checksum, and libhdf5 crashes on a corrupted global
// heap; fixed-length strings live in checksummed object headers (attributes) or in the
// dataset's own raw data. A string of exactly `size` bytes has no terminator.
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

std::string errorText() {
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

bool exists(hid_t loc, const std::string &name) { return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0; }

H5I_type_t objectType(hid_t loc, const std::string &name) {
  Handle o(H5Oopen(loc, name.c_str(), H5P_DEFAULT), H5Oclose);
  return o.ok() ? H5Iget_type(o.get()) : H5I_BADID;
}

std::string elementIndex(const std::vector<int64_t> &shape, size_t i) {
  std::vector<int64_t> idx(shape.size());
  size_t rest = i;
  for (size_t k = shape.size(); k-- > 0;) {
    idx[k] = int64_t(rest % size_t(std::max<int64_t>(shape[k], 1)));
    rest /= size_t(std::max<int64_t>(shape[k], 1));
  }
  std::string s = "[";
  for (size_t k = 0; k < idx.size(); ++k) s += (k ? ", " : "") + std::to_string(idx[k]);
  return s + "]";
}

llvm::Error checkFinite(const std::string &what, const std::string &name, const Tensor &t) {
  for (size_t i = 0; i < t.data.size(); ++i) {
    if (std::isfinite(t.data[i])) continue;
    return fail(what, fmt::format("tensor '{}' has a non-finite value ({}) at {}", name,
                                  std::isnan(t.data[i]) ? "nan" : t.data[i] > 0 ? "inf" : "-inf",
                                  elementIndex(t.shape, i)));
  }
  return llvm::Error::success();
}

llvm::Error checkTensors(const std::string &what, const std::map<std::string, Tensor> &tensors,
                         const std::vector<std::pair<std::string, std::vector<int64_t>>> &expected) {
  std::set<std::string> names;
  for (auto &[name, shape] : expected) {
    names.insert(name);
    auto it = tensors.find(name);
    if (it == tensors.end()) return fail(what, "missing tensor '" + name + "'");
    const Tensor &t = it->second;
    if (t.shape != shape)
      return fail(what, fmt::format("tensor '{}' has shape {}, expected {}", name, formatShape(t.shape),
                                    formatShape(shape)));
    if (t.data.size() != t.numel())
      return fail(what, fmt::format("tensor '{}' has {} values for shape {}", name, t.data.size(), formatShape(shape)));
    if (auto e = checkFinite(what, name, t)) return e;
  }
  for (auto &[name, t] : tensors)
    if (!names.count(name)) return fail(what, "unexpected tensor '" + name + "'");
  return llvm::Error::success();
}

// ------------------------------------------------------------------------------------
// Writing

llvm::Error writeTensor(hid_t loc, const std::string &what, const std::string &name, const Tensor &t) {
  std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
  Handle sp = space(H5Screate_simple(int(dims.size()), dims.data(), nullptr));
  if (!sp.ok()) return fail(what, "cannot create the dataspace of tensor '" + name + "'");
  Handle dcpl = plist(H5Pcreate(H5P_DATASET_CREATE));
  if (!dcpl.ok()) return fail(what, "cannot create a property list");
  // One chunk per tensor, with a checksum (corruption is detected on reading) and
  // deflate (compiled weights are mostly zeros). Both are built into h5py.
  size_t bytes = t.numel() * sizeof(float);
  if (t.numel() > 0 && bytes < (size_t(1) << 31)) {
    H5Pset_chunk(dcpl.get(), int(dims.size()), dims.data());
    if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) H5Pset_deflate(dcpl.get(), 4);
    H5Pset_fletcher32(dcpl.get());
  }
  Handle ds = dataset(
      H5Dcreate2(loc, name.c_str(), H5T_IEEE_F32LE, sp.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  if (!ds.ok()) return fail(what, "cannot create tensor '" + name + "'");
  if (t.numel() > 0 && H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data.data()) < 0)
    return fail(what, "cannot write tensor '" + name + "'");
  return llvm::Error::success();
}

llvm::Error writeIntAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                         int64_t v) {
  Handle sp = space(H5Screate(H5S_SCALAR));
  Handle a = attribute(H5Acreate2(loc, name.c_str(), H5T_STD_I64LE, sp.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!a.ok() || H5Awrite(a.get(), H5T_NATIVE_INT64, &v) < 0)
    return fail(what, "cannot write " + attrLabel(where, name));
  return llvm::Error::success();
}

llvm::Error writeDoubleAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                            double v) {
  Handle sp = space(H5Screate(H5S_SCALAR));
  Handle a = attribute(H5Acreate2(loc, name.c_str(), H5T_IEEE_F64LE, sp.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!a.ok() || H5Awrite(a.get(), H5T_NATIVE_DOUBLE, &v) < 0)
    return fail(what, "cannot write " + attrLabel(where, name));
  return llvm::Error::success();
}

llvm::Error writeStringAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                            const std::string &v) {
  if (hasNul(v)) return fail(what, attrLabel(where, name) + " contains a NUL character");
  Handle t = fixedUtf8(v.size());
  Handle sp = space(H5Screate(H5S_SCALAR));
  Handle a = attribute(H5Acreate2(loc, name.c_str(), t.get(), sp.get(), H5P_DEFAULT, H5P_DEFAULT));
  std::string buf = v;
  buf.resize(std::max<size_t>(v.size(), 1), '\0');
  if (!a.ok() || H5Awrite(a.get(), t.get(), buf.data()) < 0)
    return fail(what, "cannot write " + attrLabel(where, name));
  return llvm::Error::success();
}

// ------------------------------------------------------------------------------------
// Reading

namespace {

// Opens attribute `name` of `loc` and its type, checking that it holds a single value.
llvm::Error openAttr(hid_t loc, const std::string &what, const std::string &full, const std::string &name, Handle &a,
                     Handle &t) {
  if (H5Aexists(loc, name.c_str()) <= 0) return fail(what, "missing " + full);
  a = attribute(H5Aopen(loc, name.c_str(), H5P_DEFAULT));
  if (!a.ok()) return fail(what, "cannot open " + full);
  t = type(H5Aget_type(a.get()));
  if (!t.ok()) return fail(what, "cannot read the type of " + full);
  return llvm::Error::success();
}

} // namespace

llvm::Error readIntAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                        int64_t &out, int64_t lo, int64_t hi) {
  std::string full = attrLabel(where, name);
  Handle a, t;
  if (auto e = openAttr(loc, what, full, name, a, t)) return e;
  if (H5Tget_class(t.get()) != H5T_INTEGER) return fail(what, full + " is " + typeName(t.get()) + ", expected an integer");
  Handle sp = space(H5Aget_space(a.get()));
  std::vector<int64_t> dims;
  bool scalar;
  if (!sp.ok() || !spaceDims(sp.get(), dims, scalar) || H5Sget_simple_extent_npoints(sp.get()) != 1)
    return fail(what, full + " is not a single value");
  if (H5Tget_sign(t.get()) == H5T_SGN_NONE && H5Tget_size(t.get()) >= 8) {
    uint64_t u = 0;
    if (H5Aread(a.get(), H5T_NATIVE_UINT64, &u) < 0) return fail(what, "cannot read " + full);
    out = u > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(u);
  } else if (H5Aread(a.get(), H5T_NATIVE_INT64, &out) < 0) {
    return fail(what, "cannot read " + full);
  }
  if (out < lo || out > hi) return fail(what, fmt::format("{} is {}, expected a value in [{}, {}]", full, out, lo, hi));
  return llvm::Error::success();
}

llvm::Error readDoubleAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                           double &out) {
  std::string full = attrLabel(where, name);
  Handle a, t;
  if (auto e = openAttr(loc, what, full, name, a, t)) return e;
  H5T_class_t cls = H5Tget_class(t.get());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER)
    return fail(what, full + " is " + typeName(t.get()) + ", expected a number");
  Handle sp = space(H5Aget_space(a.get()));
  if (!sp.ok() || H5Sget_simple_extent_npoints(sp.get()) != 1) return fail(what, full + " is not a single value");
  if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, &out) < 0) return fail(what, "cannot read " + full);
  if (!std::isfinite(out)) return fail(what, full + " is not finite");
  return llvm::Error::success();
}

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

llvm::Error readStringAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                           std::string &out) {
  std::string full = attrLabel(where, name);
  Handle a, t;
  if (auto e = openAttr(loc, what, full, name, a, t)) return e;
  if (H5Tget_class(t.get()) != H5T_STRING) return fail(what, full + " is " + typeName(t.get()) + ", expected a string");
  Handle sp = space(H5Aget_space(a.get()));
  if (!sp.ok() || H5Sget_simple_extent_npoints(sp.get()) != 1) return fail(what, full + " is not a single string");
  std::vector<std::string> v;
  if (!readStrings(a.get(), true, t.get(), sp.get(), 1, v)) return fail(what, "cannot read " + full);
  out = v[0];
  return llvm::Error::success();
}

llvm::Error readTensor(hid_t loc, const std::string &what, const std::string &name, Tensor &t,
                       const std::optional<std::vector<int64_t>> &shape, const std::string &kind, int rank) {
  std::string full = kind + " '" + name + "'";
  if (!exists(loc, name)) return fail(what, "missing " + full);
  if (objectType(loc, name) != H5I_DATASET) return fail(what, full + " is not a dataset");
  Handle d = dataset(H5Dopen2(loc, name.c_str(), H5P_DEFAULT));
  if (!d.ok()) return fail(what, "cannot open " + full);
  Handle ft = type(H5Dget_type(d.get()));
  if (!ft.ok()) return fail(what, "cannot read the type of " + full);
  if (!(H5Tequal(ft.get(), H5T_IEEE_F32LE) > 0 || H5Tequal(ft.get(), H5T_IEEE_F32BE) > 0)) {
    std::string tn = typeName(ft.get());
    if (tn == "float32") tn = "a non-IEEE float32";
    return fail(what, full + " is " + tn + ", expected float32");
  }
  Handle sp = space(H5Dget_space(d.get()));
  std::vector<int64_t> dims;
  bool scalar;
  if (!sp.ok() || !spaceDims(sp.get(), dims, scalar)) return fail(what, "cannot read the shape of " + full);
  if (shape && dims != *shape)
    return fail(what, fmt::format("{} has shape {}, expected {}", full, formatShape(dims), formatShape(*shape)));
  if (!shape && rank >= 0 && int(dims.size()) != rank)
    return fail(what, fmt::format("{} has shape {}, expected {} dimensions", full, formatShape(dims), rank));
  t.shape = dims;
  size_t n = 1;
  for (int64_t x : dims) {
    if (x != 0 && n > size_t(kMaxTensorElems) / size_t(x)) return fail(what, full + " is too large");
    n *= size_t(x);
  }
  if (n > size_t(kMaxTensorElems)) return fail(what, full + " is too large");
  t.data.assign(n, 0.0f);
  if (n > 0 && H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data.data()) < 0)
    return fail(what, "cannot read " + full + " (corrupt data)");
  return llvm::Error::success();
}

llvm::Expected<Handle> openForReading(const std::string &path) {
  quiet();
  if (llvm::sys::fs::is_directory(path)) return fail(path, "is a directory");
  std::FILE *probe = std::fopen(path.c_str(), "rb");
  if (!probe) return fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::fclose(probe);
  htri_t isH5 = H5Fis_hdf5(path.c_str());
  if (isH5 == 0) return fail(path, "not an HDF5 file");
  if (isH5 < 0) return fail(path, "cannot read the file");
  Handle f = file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!f.ok()) {
    std::string why = errorText();
    if (why.find("truncated") != std::string::npos) return fail(path, "truncated HDF5 file");
    return fail(path, "corrupt HDF5 file");
  }
  return f;
}

namespace {

// Bob Jenkins' lookup3 hashlittle, byte by byte: HDF5's metadata checksum.
uint32_t lookup3(const uint8_t *k, size_t length) {
  auto rot = [](uint32_t x, int r) { return (x << r) | (x >> (32 - r)); };
  auto word = [](const uint8_t *p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  };
  uint32_t a, b, c;
  a = b = c = 0xdeadbeefu + uint32_t(length);
  while (length > 12) {
    a += word(k), b += word(k + 4), c += word(k + 8);
    a -= c, a ^= rot(c, 4), c += b;
    b -= a, b ^= rot(a, 6), a += c;
    c -= b, c ^= rot(b, 8), b += a;
    a -= c, a ^= rot(c, 16), c += b;
    b -= a, b ^= rot(a, 19), a += c;
    c -= b, c ^= rot(b, 4), b += a;
    length -= 12, k += 12;
  }
  if (length == 0) return c;
  uint8_t tail[12] = {};
  std::memcpy(tail, k, length);
  a += word(tail), b += word(tail + 4), c += word(tail + 8);
  c ^= b, c -= rot(b, 14);
  a ^= c, a -= rot(c, 11);
  b ^= a, b -= rot(a, 25);
  c ^= b, c -= rot(b, 16);
  a ^= c, a -= rot(c, 4);
  b ^= a, b -= rot(a, 14);
  c ^= b, c -= rot(b, 24);
  return c;
}

// HDF5 1.10's H5Fget_file_image clears the "open for writing" flags of a version 2/3
// superblock in the image but leaves the old checksum, so the image would not open.
// Recompute it: the checksum follows 12 bytes and four addresses.
void fixSuperblockChecksum(std::string &image) {
  auto *p = reinterpret_cast<uint8_t *>(image.data());
  if (image.size() < 12 || std::memcmp(p, "\x89HDF\r\n\x1a\n", 8) != 0 || p[8] < 2) return;
  size_t at = 12 + 4 * size_t(p[9]);
  if (image.size() < at + 4) return;
  uint32_t sum = lookup3(p, at);
  for (int i = 0; i < 4; ++i) p[at + size_t(i)] = uint8_t(sum >> (8 * i));
}

} // namespace

llvm::Error writeAtomically(const std::string &path, const files::OutputRule &rule,
                            const std::function<llvm::Error(hid_t)> &fill) {
  quiet();
  // Refused outputs cost no work.
  if (auto e = files::checkOutput(path, rule)) return e;
  // The file is built in memory (HDF5's core driver, no backing store) and written by
  // files::writeFileAtomically: every byte that reaches the disk goes through one
  // writer that checks each write, and libhdf5 never meets a full disk.
  static std::atomic<unsigned> serial{0};
  std::string image;
  {
    Handle fapl = plist(H5Pcreate(H5P_FILE_ACCESS));
    if (!fapl.ok() || H5Pset_fapl_core(fapl.get(), size_t(1) << 20, false) < 0)
      return fail(path, "cannot set up HDF5's in-memory file");
    // The HDF5 1.10 file format: every piece of file metadata is checksummed (the
    // single-chunk index of a dataset included), so corruption is detected, not
    // interpreted. Readable by any h5py built on HDF5 >= 1.10.
    H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110);
    std::string name = fmt::format("raspc-image-{}-{}", ::getpid(), serial++);
    Handle f = file(H5Fcreate(name.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get()));
    if (!f.ok()) return fail(path, "cannot create an HDF5 file in memory: " + errorText());
    if (auto e = fill(f.get())) return e;
    if (H5Fflush(f.get(), H5F_SCOPE_GLOBAL) < 0) return fail(path, "cannot write the HDF5 file: " + errorText());
    ssize_t n = H5Fget_file_image(f.get(), nullptr, 0);
    if (n <= 0) return fail(path, "cannot write the HDF5 file: " + errorText());
    image.resize(size_t(n));
    if (H5Fget_file_image(f.get(), image.data(), image.size()) != n)
      return fail(path, "cannot write the HDF5 file: " + errorText());
    if (!f.close()) return fail(path, "cannot write the HDF5 file: " + errorText());
  }
  fixSuperblockChecksum(image);
  return files::writeFileAtomically(path, image, rule);
}

} // namespace raspc::h5
