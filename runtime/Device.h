// Where the runtime's forward passes run: the CPU (always) or a CUDA GPU (when raspc
// was built with nvcc and a device and driver are present).
#pragma once
#include <llvm/ADT/StringRef.h>
#include <llvm/Support/Error.h>

#include <optional>
#include <string>

namespace raspc {

enum class Device { Cpu, Cuda };

const char *deviceName(Device d); // "cpu", "cuda"
std::optional<Device> parseDevice(llvm::StringRef s);

// Success when `d` can run here; otherwise an error that says why, e.g. "no usable CUDA
// device (CUDA driver version is insufficient for CUDA runtime version)" or "this raspc
// was built without CUDA (...)". The executors' create() put "cannot run on cuda: "
// before it; the command line puts "--device cuda: ".
llvm::Error deviceError(Device d);

// "cannot run on cuda: <why>": how the executors' create() fail on the GPU.
llvm::Error cannotRunOnCuda(const std::string &why);

// What runs on `d`, e.g. "cpu" or "cuda: NVIDIA H100 80GB HBM3 (sm_90)".
std::string describeDevice(Device d);

} // namespace raspc
