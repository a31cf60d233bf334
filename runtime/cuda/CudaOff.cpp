// runtime/cuda/Cuda.h for builds without nvcc: every request for the GPU fails with
// the reason, so that `--device cuda` says what to do instead of being missing.
#include "runtime/cuda/Cuda.h"

namespace raspc::cuda {

std::string unavailableReason() {
  return "this raspc was built without CUDA (CMake found no nvcc; install the CUDA toolkit and reconfigure)";
}

std::string deviceName() { return "none"; }

std::unique_ptr<RaspForward> RaspForward::create(const RaspWeights &, std::string *error) {
  if (error) *error = unavailableReason();
  return nullptr;
}

std::unique_ptr<CrateForward> CrateForward::create(const CrateWeights &, std::string *error) {
  if (error) *error = unavailableReason();
  return nullptr;
}

} // namespace raspc::cuda
