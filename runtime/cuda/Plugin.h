// The CUDA executor as a plugin: runtime/cuda/Cuda.cu is built into libraspc_cuda.so,
// which exports one function returning this table. runtime/cuda/Loader.cpp opens the
// plugin with dlopen the first time the GPU is asked for, so cudart and cuBLAS (hundreds
// of MB) are never loaded by a command that runs on the CPU.
#pragma once
#include "runtime/cuda/Cuda.h"

namespace raspc::cuda {

struct PluginApi {
  int version; // kPluginVersion: a plugin from another build is refused
  std::string (*unavailableReason)();
  std::string (*deviceName)();
  std::unique_ptr<RaspForward> (*createRasp)(const RaspWeights &w, std::string *error);
  std::unique_ptr<CrateForward> (*createCrate)(const CrateWeights &w, std::string *error);
};

constexpr int kPluginVersion = 1;

} // namespace raspc::cuda

extern "C" const raspc::cuda::PluginApi *raspc_cuda_plugin();
