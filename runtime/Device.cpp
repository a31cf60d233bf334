#include "runtime/Device.h"
#include "runtime/cuda/Cuda.h"

namespace raspc {

const char *deviceName(Device d) { return d == Device::Cuda ? "cuda" : "cpu"; }

std::optional<Device> parseDevice(llvm::StringRef s) {
  if (s == "cpu") return Device::Cpu;
  if (s == "cuda") return Device::Cuda;
  return std::nullopt;
}

llvm::Error deviceError(Device d) {
  if (d == Device::Cpu) return llvm::Error::success();
  std::string why = cuda::unavailableReason();
  if (why.empty()) return llvm::Error::success();
  return llvm::make_error<llvm::StringError>(why, llvm::inconvertibleErrorCode());
}

llvm::Error cannotRunOnCuda(const std::string &why) {
  return llvm::make_error<llvm::StringError>("cannot run on cuda: " + why, llvm::inconvertibleErrorCode());
}

std::string describeDevice(Device d) {
  if (d == Device::Cpu) return "cpu";
  return std::string("cuda: ") + cuda::deviceName();
}

} // namespace raspc
