// HDF5 helpers shared by the readers and writers of raspc's weight files (the
// compiled-model format of backend/Hdf5.cpp and the CRATE format of runtime/Crate.cpp):
// scoped identifiers, float32 tensors, scalar attributes, opening a file for reading
// with clear errors, and atomic writing.
//
// Every error is an llvm::StringError whose text starts with `what` (the file name),
// then names the tensor, attribute or dataset at fault, e.g.
//   model.h5: tensor 'blocks.0.attn.W_Q' has shape [2, 10, 4], expected [2, 12, 4]
//   model.h5: missing attribute 'metadata/dim'
// Including this header needs the HDF5 include directories (link raspc_hdf5).
#pragma once
#include "backend/Model.h"
#include "support/Files.h"

#include <hdf5.h>
#include <llvm/Support/Error.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace raspc::h5 {

// Limits that keep a hostile file from asking for absurd allocations.
constexpr int64_t kMaxTensorElems = int64_t(1) << 31; // 8 GiB of float32
// Deflate compresses at most about 1032:1, so a dataset declaring more bytes than this
// ratio (plus a little slack for tiny datasets) of what it stores cannot be genuine: its
// size is refused before anything is allocated.
constexpr uint64_t kMaxCompressionRatio = 1100;
constexpr uint64_t kCompressionSlackBytes = 4096;

// "what: msg" as an llvm::StringError.
llvm::Error fail(const std::string &what, const std::string &msg);

// Turns off HDF5's own printing of its error stack (we report errors ourselves).
void quiet();

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

inline Handle file(hid_t id) { return Handle(id, H5Fclose); }
inline Handle group(hid_t id) { return Handle(id, H5Gclose); }
inline Handle dataset(hid_t id) { return Handle(id, H5Dclose); }
inline Handle attribute(hid_t id) { return Handle(id, H5Aclose); }
inline Handle space(hid_t id) { return Handle(id, H5Sclose); }
inline Handle type(hid_t id) { return Handle(id, H5Tclose); }
inline Handle plist(hid_t id) { return Handle(id, H5Pclose); }

// A new group `name` in `loc`, without timestamps (the same model, the same bytes).
Handle createGroup(hid_t loc, const std::string &name);

// A fixed-length UTF-8 string type of `size` bytes, NUL-padded.
Handle fixedUtf8(size_t size);

// "float32", "int64", "string", ... for a datatype.
std::string typeName(hid_t t);

// The dimensions of a dataspace; a scalar has none. False for a null dataspace.
bool spaceDims(hid_t sp, std::vector<int64_t> &dims, bool &scalar);

// The descriptions on HDF5's current error stack, one per line.
std::string errorText();

bool exists(hid_t loc, const std::string &name);
// H5I_GROUP, H5I_DATASET, ... for the object at `name`; H5I_BADID if it cannot be opened.
H5I_type_t objectType(hid_t loc, const std::string &name);

// The index of element `i` of a row-major tensor of shape `shape`, as "[0, 3]".
std::string elementIndex(const std::vector<int64_t> &shape, size_t i);

// Fails ("tensor 'NAME' has a non-finite value (nan) at [0, 3]") unless every value is finite.
llvm::Error checkFinite(const std::string &what, const std::string &name, const Tensor &t);

// Checks that `tensors` holds exactly the `expected` names, each with its shape, a
// matching number of values, and finite values.
llvm::Error checkTensors(const std::string &what, const std::map<std::string, Tensor> &tensors,
                         const std::vector<std::pair<std::string, std::vector<int64_t>>> &expected);

// The chunk shape for a dataset of shape `dims`: the whole of it when it holds at most
// `maxBytes`, else the largest dimensions halved until it does.
std::vector<hsize_t> chunkShape(std::vector<hsize_t> dims, hsize_t elemBytes, hsize_t maxBytes);

// Writing. `where` is the group's path as errors name it ("metadata"; "" for the root).
llvm::Error writeTensor(hid_t loc, const std::string &what, const std::string &name, const Tensor &t);
llvm::Error writeIntAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                         int64_t v);
llvm::Error writeDoubleAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                            double v);
llvm::Error writeStringAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                            const std::string &v);

// Reading. An integer attribute must be an integer in [lo, hi]; a double attribute a
// float or an integer, finite; a string attribute a single string.
llvm::Error readIntAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                        int64_t &out, int64_t lo, int64_t hi);
llvm::Error readDoubleAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                           double &out);
llvm::Error readStringAttr(hid_t loc, const std::string &what, const std::string &where, const std::string &name,
                           std::string &out);
// Reads the strings of an attribute or dataset `obj` (isAttr tells which) with file
// type `ft` and `n` elements; `full` names it in errors ("dataset 'metadata/vocab'").
// Fixed-length and variable-length strings are accepted; the latter only from a file
// opened by openForReading/openImage, and only after every element's global-heap
// reference has been checked against the file's bytes (libhdf5 trusts the heap and
// crashes on a damaged one).
llvm::Error readStrings(hid_t obj, bool isAttr, hid_t ft, size_t n, const std::string &what, const std::string &full,
                        std::vector<std::string> &out);

// The error for a failed read of `full`: "tensor 'W' fails its checksum (corrupt data)"
// when HDF5's error stack says so, else "cannot read tensor 'W' (corrupt data)".
llvm::Error readFailure(const std::string &what, const std::string &full);

// Checks, before a dataset's data is read, that it is checksummed (the fletcher32
// filter; a dataset without elements has nothing to checksum) unless !requireChecksum,
// and that its stored bytes can hold its `declaredBytes`: written at all (not only fill
// values), and within kMaxCompressionRatio of them. `full` names it: "tensor 'embed.W_E'".
//   model.h5: dataset 'metadata/source' has no checksum
//   model.h5: tensor 'embed.W_E' has no stored data (never written)
llvm::Error checkStoredData(hid_t dset, const std::string &what, const std::string &full, uint64_t declaredBytes,
                            bool requireChecksum = true);

// Reads float32 dataset `name` (`kind` names it in errors: "tensor", "dataset"). With
// `shape`, its shape must be exactly that; without, any shape of rank `rank` (or any
// rank when rank < 0) is read. `checkShape`, if given, sees the declared shape before
// anything is allocated or read (e.g. to check it against a configuration). The data
// must be checksummed and actually stored (checkStoredData).
llvm::Error readTensor(hid_t loc, const std::string &what, const std::string &name, Tensor &t,
                       const std::optional<std::vector<int64_t>> &shape, const std::string &kind = "tensor",
                       int rank = -1,
                       const std::function<llvm::Error(const std::vector<int64_t> &)> &checkShape = nullptr);

// An HDF5 file opened read-only from its bytes in memory (the core driver on a file
// image, never copied). Keeps the bytes alive while the file is open and lets the
// string readers check variable-length strings against them.
class File {
public:
  struct Image;
  File() = default;
  File(File &&) noexcept;
  File &operator=(File &&) noexcept;
  ~File();
  hid_t get() const { return handle_.get(); }

private:
  friend llvm::Expected<File> openImage(std::string bytes, const std::string &what);
  void release();
  Handle handle_;
  std::shared_ptr<Image> image_;
};

// Opens an HDF5 file for reading. The whole file is read into memory first
// (files::readRegularFile: a directory, FIFO or device is refused at once, never waited
// on), then opened from memory. A missing, non-HDF5, truncated or corrupt file, or one
// in a format before HDF5 1.8's (no metadata checksums), is an error naming `path`:
//   model.h5: not an HDF5 file
//   model.h5: truncated HDF5 file
//   model.h5: the file has no metadata checksums (HDF5 superblock version 0): write it with libver 'v110'
llvm::Expected<File> openForReading(const std::string &path);
// The same from bytes already in memory; `what` names them in errors.
llvm::Expected<File> openImage(std::string bytes, const std::string &what);

// Writes the HDF5 file that `fill` fills to `path` under files::writeFileAtomically's
// rule (support/Files.h): `fill` writes into a file in memory, whose bytes are then
// written atomically; on any error nothing is left behind.
llvm::Error writeAtomically(const std::string &path, const files::OutputRule &rule,
                            const std::function<llvm::Error(hid_t)> &fill);

} // namespace raspc::h5
