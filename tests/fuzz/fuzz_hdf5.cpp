// libFuzzer target over the HDF5 readers: the bytes are a file, read from memory as a
// compiled model (readModelFromImage), a CRATE model and a CRATE images file. Errors
// are expected and ignored; only crashes, hangs, unbounded allocations and undefined
// behaviour count. libhdf5 itself is not instrumented: the coverage is that of our
// readers, and a crash inside libhdf5 is reported like any other.
#include "backend/Hdf5.h"
#include "runtime/Crate.h"

#include <llvm/Support/Error.h>

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string bytes(reinterpret_cast<const char *>(data), size);
  // Small limits keep each input fast; the checks are the same at any limit.
  auto model = raspc::readModelFromImage(bytes, "fuzz.h5", int64_t(1) << 22);
  if (!model) llvm::consumeError(model.takeError());
  auto crate = raspc::readCrateModelFromImage(bytes, "fuzz.h5");
  // The seed images (tests/fuzz/seeds-hdf5/) fit this configuration.
  raspc::CrateConfig cfg;
  if (crate) {
    cfg = crate->cfg;
  } else {
    llvm::consumeError(crate.takeError());
    cfg.image_size = 4;
    cfg.patch_size = 2;
    cfg.channels = 3;
  }
  auto images = raspc::readCrateImagesFromImage(std::move(bytes), "fuzz.h5", cfg);
  if (!images) llvm::consumeError(images.takeError());
  return 0;
}
