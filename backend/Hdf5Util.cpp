#include "backend/Hdf5Util.h"
#include "backend/Hdf5.h"
#include "support/Files.h"

#include <fmt/format.h>
#include <llvm/Support/FileSystem.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <mutex>
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

Handle createGroup(hid_t loc, const std::string &name) {
  Handle gcpl = plist(H5Pcreate(H5P_GROUP_CREATE));
  if (gcpl.ok()) H5Pset_obj_track_times(gcpl.get(), false);
  return group(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, gcpl.ok() ? gcpl.get() : H5P_DEFAULT, H5P_DEFAULT));
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

std::vector<hsize_t> chunkShape(std::vector<hsize_t> dims, hsize_t elemBytes, hsize_t maxBytes) {
  auto bytes = [&] {
    hsize_t n = elemBytes;
    for (hsize_t d : dims) n *= d;
    return n;
  };
  while (bytes() > maxBytes) {
    auto big = std::max_element(dims.begin(), dims.end());
    if (*big <= 1) break;
    *big = (*big + 1) / 2;
  }
  return dims;
}

llvm::Error writeTensor(hid_t loc, const std::string &what, const std::string &name, const Tensor &t) {
  std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
  Handle sp = space(H5Screate_simple(int(dims.size()), dims.data(), nullptr));
  if (!sp.ok()) return fail(what, "cannot create the dataspace of tensor '" + name + "'");
  Handle dcpl = plist(H5Pcreate(H5P_DATASET_CREATE));
  if (!dcpl.ok()) return fail(what, "cannot create a property list");
  // Chunked, with a checksum (corruption is detected on reading; the readers require
  // it) and deflate (compiled weights are mostly zeros); both are built into h5py. One
  // chunk per tensor up to 1 GiB; a larger one is split along its largest dimensions,
  // as a chunk holds at most 4 GiB.
  if (t.numel() > 0) {
    std::vector<hsize_t> chunk = chunkShape(dims, sizeof(float), hsize_t(1) << 30);
    H5Pset_chunk(dcpl.get(), int(chunk.size()), chunk.data());
    if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) H5Pset_deflate(dcpl.get(), 4);
    H5Pset_fletcher32(dcpl.get());
  }
  H5Pset_obj_track_times(dcpl.get(), false); // the same model, the same bytes
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

// ------------------------------------------------------------------------------------
// Files opened from memory, and variable-length strings checked against their bytes

struct File::Image {
  std::string bytes;
  uint64_t base = 0;        // where the superblock is: heap addresses are relative to it
  unsigned sizeofAddr = 0;  // bytes of a file address ("size of offsets")
  unsigned sizeofSize = 0;  // bytes of a length
  unsigned long fileno = 0; // HDF5's number for the open file, our key in the registry
};

namespace {

// The images of the files open through openImage, by HDF5 file number, so that a string
// reader holding only an attribute or dataset can find the bytes of its file.
std::mutex registryMutex;
std::map<unsigned long, std::shared_ptr<File::Image>> &registry() {
  static std::map<unsigned long, std::shared_ptr<File::Image>> r;
  return r;
}

std::shared_ptr<File::Image> imageOf(hid_t obj) {
  Handle f = file(H5Iget_file_id(obj));
  H5O_info_t info;
  if (!f.ok() || H5Oget_info2(f.get(), &info, H5O_INFO_BASIC) < 0) return nullptr;
  std::lock_guard<std::mutex> lock(registryMutex);
  auto it = registry().find(info.fileno);
  return it == registry().end() ? nullptr : it->second;
}

uint64_t le(const unsigned char *p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = n; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

// Checks the global-heap reference of one variable-length element (its raw on-disk
// form: length, collection address, object index) the way libhdf5 will follow it:
// the collection's header, every object header of the collection walked as the
// library walks them (each step inside the collection, none of zero size: the library
// trusts these and reads out of bounds or loops forever), and the object itself
// present with exactly `length` bytes (the library copies the object's size into a
// buffer of `length`). Returns an empty string or what is wrong.
std::string checkHeapRef(const File::Image &im, const unsigned char *raw) {
  const std::string &b = im.bytes;
  uint64_t length = le(raw, 4), addr = le(raw + 4, 8), index = le(raw + 12, 4);
  if (addr == 0) return length == 0 ? "" : "a string with no heap object has a nonzero length";
  if (addr > b.size() || im.base > b.size() - addr) return fmt::format("heap collection at {} is outside the file", addr);
  uint64_t at = im.base + addr;
  const uint64_t hdr = 8 + 8; // "GCOL", version, 3 reserved, collection size
  if (b.size() - at < hdr) return fmt::format("heap collection at {} is outside the file", addr);
  const auto *p = reinterpret_cast<const unsigned char *>(b.data()) + at;
  if (std::memcmp(p, "GCOL", 4) != 0 || p[4] != 1) return fmt::format("no heap collection at {}", addr);
  uint64_t size = le(p + 8, 8);
  if (size < 4096 || size > b.size() - at)
    return fmt::format("heap collection at {} has an impossible size {}", addr, size);
  bool found = false;
  uint64_t objSize = 0;
  const uint64_t objHdr = 16; // index, references, reserved, size
  for (uint64_t off = hdr; off < size;) {
    if (size - off < objHdr) break; // the library takes the tail as free space
    uint64_t idx = le(p + off, 2), sz = le(p + off + 8, 8), need;
    if (idx > 0) {
      if (sz > size - off - objHdr) return fmt::format("heap collection at {} has an object past its end", addr);
      need = objHdr + ((sz + 7) & ~uint64_t(7));
    } else {
      need = sz;
    }
    if (need < objHdr || need > size - off)
      return fmt::format("heap collection at {} has an object of impossible size {}", addr, sz);
    if (idx == index && idx > 0) {
      found = true; // the library keeps the last object of an index
      objSize = sz;
    }
    off += need;
  }
  if (!found) return fmt::format("no object {} in the heap collection at {}", index, addr);
  if (objSize != length)
    return fmt::format("heap object {} at {} has {} bytes for a string of {}", index, addr, objSize, length);
  return "";
}

// A conversion from variable-length strings to an opaque type of this tag that leaves
// the bytes as they are: reading into it yields each element's raw heap reference
// without libhdf5 following it.
const char *const kRawVlenTag = "raspc: raw variable-length string reference";

herr_t rawVlenConversion(hid_t src, hid_t dst, H5T_cdata_t *cdata, size_t, size_t, size_t, void *, void *, hid_t) {
  if (cdata->command != H5T_CONV_INIT) return 0; // converting: the raw bytes are the result
  if (H5Tis_variable_str(src) <= 0 || H5Tget_class(dst) != H5T_OPAQUE || H5Tget_size(src) != H5Tget_size(dst))
    return -1;
  char *tag = H5Tget_tag(dst);
  bool ours = tag && std::strcmp(tag, kRawVlenTag) == 0;
  H5free_memory(tag);
  if (!ours) return -1;
  cdata->need_bkg = H5T_BKG_NO;
  return 0;
}

// The opaque type of a raw reference (16 bytes with 8-byte file addresses).
Handle rawVlenType() {
  static std::once_flag once;
  std::call_once(once, [] {
    Handle s = type(H5Tcopy(H5T_C_S1));
    H5Tset_size(s.get(), H5T_VARIABLE);
    Handle o = type(H5Tcreate(H5T_OPAQUE, 16));
    H5Tset_tag(o.get(), kRawVlenTag);
    H5Tregister(H5T_PERS_SOFT, "raspc_raw_vlen", s.get(), o.get(), rawVlenConversion);
  });
  Handle o = type(H5Tcreate(H5T_OPAQUE, 16));
  if (o.ok() && H5Tset_tag(o.get(), kRawVlenTag) < 0) o.reset();
  return o;
}

llvm::Error checkVlenStrings(hid_t obj, bool isAttr, size_t n, const std::string &what, const std::string &full) {
  auto im = imageOf(obj);
  if (!im) return fail(what, full + " holds variable-length strings, read only from files raspc opened");
  if (im->sizeofAddr != 8 || im->sizeofSize != 8)
    return fail(what, full + " holds variable-length strings in a file without 8-byte addresses (unsupported)");
  Handle raw = rawVlenType();
  if (!raw.ok() || n > im->bytes.size() / 16) return fail(what, "cannot read " + full);
  std::vector<unsigned char> refs(n * 16);
  herr_t r = isAttr ? H5Aread(obj, raw.get(), refs.data())
                    : H5Dread(obj, raw.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, refs.data());
  if (r < 0) return fail(what, "cannot read " + full);
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    std::string why = checkHeapRef(*im, refs.data() + i * 16);
    if (!why.empty())
      return fail(what, fmt::format("{} has a damaged variable-length string (entry {}: {})", full, i, why));
    total += le(refs.data() + i * 16, 4);
  }
  // Elements may share a heap object: bound what they expand to.
  if (total > im->bytes.size())
    return fail(what, fmt::format("{} has variable-length strings of {} bytes in all, more than the file's {}", full,
                                  total, im->bytes.size()));
  return llvm::Error::success();
}

} // namespace

llvm::Error readStrings(hid_t obj, bool isAttr, hid_t ft, size_t n, const std::string &what, const std::string &full,
                        std::vector<std::string> &out) {
  out.clear();
  if (n == 0) return llvm::Error::success();
  htri_t vlen = H5Tis_variable_str(ft);
  if (vlen < 0) return fail(what, "cannot read " + full);
  if (vlen > 0) {
    if (auto e = checkVlenStrings(obj, isAttr, n, what, full)) return e;
    Handle mt = type(H5Tcopy(H5T_C_S1));
    if (!mt.ok() || H5Tset_size(mt.get(), H5T_VARIABLE) < 0 || H5Tset_cset(mt.get(), H5Tget_cset(ft)) < 0)
      return fail(what, "cannot read " + full);
    std::vector<char *> ptrs(n, nullptr);
    herr_t r = isAttr ? H5Aread(obj, mt.get(), ptrs.data())
                      : H5Dread(obj, mt.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data());
    if (r < 0) return readFailure(what, full);
    for (char *p : ptrs) out.emplace_back(p ? p : "");
    hsize_t dim = n;
    Handle sp = space(H5Screate_simple(1, &dim, nullptr));
    H5Dvlen_reclaim(mt.get(), sp.get(), H5P_DEFAULT, ptrs.data());
    return llvm::Error::success();
  }
  size_t size = H5Tget_size(ft);
  if (size == 0 || size > (size_t(1) << 30) || n > ((size_t(1) << 31) / size))
    return fail(what, fmt::format("{} is too large ({} strings of {} bytes)", full, n, size));
  Handle mt = type(H5Tcopy(ft));
  if (!mt.ok()) return fail(what, "cannot read " + full);
  std::vector<char> buf(n * size, '\0');
  herr_t r = isAttr ? H5Aread(obj, mt.get(), buf.data())
                    : H5Dread(obj, mt.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
  if (r < 0) return readFailure(what, full);
  bool spacePad = H5Tget_strpad(ft) == H5T_STR_SPACEPAD;
  for (size_t i = 0; i < n; ++i) {
    std::string s(buf.data() + i * size, size);
    size_t end = s.find('\0');
    if (end != std::string::npos) s.resize(end);
    if (spacePad)
      while (!s.empty() && s.back() == ' ') s.pop_back();
    out.push_back(std::move(s));
  }
  return llvm::Error::success();
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
  if (auto e = readStrings(a.get(), true, t.get(), 1, what, full, v)) return e;
  out = v[0];
  return llvm::Error::success();
}

llvm::Error readFailure(const std::string &what, const std::string &full) {
  if (errorText().find("Fletcher32") != std::string::npos)
    return fail(what, full + " fails its checksum (corrupt data)");
  return fail(what, "cannot read " + full + " (corrupt data)");
}

llvm::Error checkStoredData(hid_t dset, const std::string &what, const std::string &full, uint64_t declaredBytes,
                            bool requireChecksum) {
  if (declaredBytes == 0) return llvm::Error::success(); // no elements: nothing to checksum or store
  Handle dcpl = plist(H5Dget_create_plist(dset));
  if (!dcpl.ok()) return fail(what, "cannot read the storage of " + full);
  unsigned flags = 0, info = 0;
  size_t nValues = 0;
  if (requireChecksum &&
      H5Pget_filter_by_id2(dcpl.get(), H5Z_FILTER_FLETCHER32, &flags, &nValues, nullptr, 0, nullptr, &info) < 0)
    return fail(what, full + " has no checksum");
  haddr_t stored = H5Dget_storage_size(dset);
  if (stored == 0) return fail(what, full + " has no stored data (never written)");
  if (declaredBytes > stored * kMaxCompressionRatio + kCompressionSlackBytes)
    return fail(what, fmt::format("{} declares {} bytes but stores only {} (more than {}:1 compression is not genuine)",
                                  full, declaredBytes, uint64_t(stored), kMaxCompressionRatio));
  return llvm::Error::success();
}

llvm::Error readTensor(hid_t loc, const std::string &what, const std::string &name, Tensor &t,
                       const std::optional<std::vector<int64_t>> &shape, const std::string &kind, int rank,
                       const std::function<llvm::Error(const std::vector<int64_t> &)> &checkShape) {
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
  if (checkShape)
    if (auto e = checkShape(dims)) return e;
  uint64_t n = 1;
  for (int64_t x : dims) {
    if (x != 0 && n > uint64_t(kMaxTensorElems) / uint64_t(x)) return fail(what, full + " is too large");
    n *= uint64_t(x);
  }
  if (n > uint64_t(kMaxTensorElems)) return fail(what, full + " is too large");
  if (auto e = checkStoredData(d.get(), what, full, n * sizeof(float))) return e;
  t.shape = dims;
  t.data.assign(size_t(n), 0.0f);
  if (n > 0 && H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data.data()) < 0)
    return readFailure(what, full);
  return llvm::Error::success();
}

// ------------------------------------------------------------------------------------
// Opening

namespace {

// File-image callbacks that hand libhdf5 our buffer instead of letting it copy the file
// (twice: into the property list and into the driver): every "allocation" of the image
// is the buffer itself, every "copy" a no-op, every "free" nothing. The file is opened
// read-only, so the buffer is never written or resized.
void *imageMalloc(size_t size, H5FD_file_image_op_t, void *udata) {
  auto *im = static_cast<File::Image *>(udata);
  return size == im->bytes.size() ? im->bytes.data() : nullptr;
}
void *imageMemcpy(void *dest, const void *src, size_t size, H5FD_file_image_op_t, void *) {
  if (dest != src) std::memcpy(dest, src, size);
  return dest;
}
void *imageRealloc(void *, size_t, H5FD_file_image_op_t, void *) { return nullptr; }
herr_t imageFree(void *, H5FD_file_image_op_t, void *) { return 0; }
void *udataCopy(void *udata) { return udata; }
herr_t udataFree(void *) { return 0; }

// Where libhdf5 looks for the superblock: offset 0, then 512, 1024, 2048, ...
std::optional<uint64_t> findSuperblock(const std::string &b) {
  static const char kSig[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  for (uint64_t at = 0; at <= b.size() && b.size() - at >= 8; at = at ? at * 2 : 512)
    if (std::memcmp(b.data() + at, kSig, 8) == 0) return at;
  return std::nullopt;
}

} // namespace

File::File(File &&o) noexcept = default;
File &File::operator=(File &&o) noexcept {
  if (this != &o) {
    release();
    handle_ = std::move(o.handle_);
    image_ = std::move(o.image_);
  }
  return *this;
}
File::~File() { release(); }
void File::release() {
  // Close the file before its bytes go away, then forget them.
  handle_.reset();
  if (image_) {
    std::lock_guard<std::mutex> lock(registryMutex);
    auto it = registry().find(image_->fileno);
    if (it != registry().end() && it->second == image_) registry().erase(it);
  }
  image_.reset();
}

llvm::Expected<File> openImage(std::string bytes, const std::string &what) {
  quiet();
  auto im = std::make_shared<File::Image>();
  im->bytes = std::move(bytes);
  const std::string &b = im->bytes;
  auto super = findSuperblock(b);
  if (!super) return fail(what, "not an HDF5 file");
  im->base = *super;
  const auto *p = reinterpret_cast<const unsigned char *>(b.data()) + *super;
  uint64_t avail = b.size() - *super;
  if (avail < 16) return fail(what, "truncated HDF5 file");
  unsigned version = p[8];
  if (version < 2)
    return fail(what, fmt::format("the file has no metadata checksums (HDF5 superblock version {}): write it with "
                                  "libver 'v110'",
                                  version));
  im->sizeofAddr = p[9];
  im->sizeofSize = p[10];
  // Versions 2 and 3: the end-of-file address follows the base and extension addresses.
  if (im->sizeofAddr == 8) {
    if (avail < 12 + 3 * 8) return fail(what, "truncated HDF5 file");
    uint64_t eof = le(p + 12 + 2 * 8, 8);
    if (eof > avail) return fail(what, "truncated HDF5 file");
  }

  Handle fapl = plist(H5Pcreate(H5P_FILE_ACCESS));
  if (!fapl.ok() || H5Pset_fapl_core(fapl.get(), 1 << 20, false) < 0) return fail(what, "cannot read the file");
  // The callbacks' user data is the Image, which outlives the open file.
  H5FD_file_image_callbacks_t cb = {imageMalloc, imageMemcpy, imageRealloc, imageFree, udataCopy, udataFree,
                                    im.get()};
  if (H5Pset_file_image_callbacks(fapl.get(), &cb) < 0 ||
      H5Pset_file_image(fapl.get(), im->bytes.data(), im->bytes.size()) < 0)
    return fail(what, "cannot read the file");
  // The core driver refuses a name that exists on disk, and takes two open files of the
  // same name for one: a unique name under /dev/null can never exist.
  static std::atomic<uint64_t> counter{0};
  std::string name = fmt::format("/dev/null/raspc-file-image-{}", counter++);
  Handle f = file(H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl.get()));
  fapl.reset();
  if (!f.ok()) {
    std::string why = errorText();
    if (why.find("truncated") != std::string::npos) return fail(what, "truncated HDF5 file");
    return fail(what, "corrupt HDF5 file");
  }
  H5O_info_t info;
  if (H5Oget_info2(f.get(), &info, H5O_INFO_BASIC) < 0) return fail(what, "corrupt HDF5 file");
  im->fileno = info.fileno;
  File out;
  out.handle_ = std::move(f);
  out.image_ = im;
  std::lock_guard<std::mutex> lock(registryMutex);
  registry()[im->fileno] = im;
  return out;
}

llvm::Expected<File> openForReading(const std::string &path) {
  auto bytes = files::readRegularFile(path);
  if (!bytes) return bytes.takeError();
  return openImage(std::move(*bytes), path);
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
    Handle fcpl = plist(H5Pcreate(H5P_FILE_CREATE));
    if (fcpl.ok()) H5Pset_obj_track_times(fcpl.get(), false); // the root group's header
    Handle f = file(H5Fcreate(name.c_str(), H5F_ACC_EXCL, fcpl.ok() ? fcpl.get() : H5P_DEFAULT, fapl.get()));
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
