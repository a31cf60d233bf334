// runtime/cuda/Cuda.h for the rest of the runtime: forwards to the CUDA plugin
// (libraspc_cuda.so, runtime/cuda/Plugin.h), opened with dlopen on the first request for
// the GPU. Every failure (a build without nvcc, a missing plugin or cuBLAS, no device)
// becomes the reason `--device cuda` prints.
#include "runtime/cuda/Plugin.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace raspc::cuda {

namespace {

struct Loaded {
  const PluginApi *api = nullptr;
  std::string error; // why there is no api
};

const Loaded &plugin() {
  static const Loaded loaded = [] {
    Loaded l;
#ifndef RASPC_CUDA_PLUGIN
    l.error = "this raspc was built without CUDA (CMake found no nvcc; install the CUDA toolkit and reconfigure)";
#else
    // RASPC_CUDA_PLUGIN names another build's plugin (or a moved one); the default is
    // the one built beside this binary.
    const char *env = std::getenv("RASPC_CUDA_PLUGIN");
    const std::string path = env && *env ? env : RASPC_CUDA_PLUGIN;
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *e = dlerror();
      l.error = "cannot load the CUDA plugin (" + std::string(e ? e : path.c_str()) + ")";
      return l;
    }
    auto entry = reinterpret_cast<const PluginApi *(*)()>(dlsym(h, "raspc_cuda_plugin"));
    const PluginApi *api = entry ? entry() : nullptr;
    if (!api || api->version != kPluginVersion) {
      l.error = "the CUDA plugin " + path + " is not from this build of raspc";
      return l;
    }
    l.api = api; // never closed: its code backs executors until the process ends
#endif
    return l;
  }();
  return loaded;
}

} // namespace

std::string unavailableReason() {
  const Loaded &p = plugin();
  return p.api ? p.api->unavailableReason() : p.error;
}

std::string deviceName() {
  const Loaded &p = plugin();
  return p.api ? p.api->deviceName() : "none";
}

std::unique_ptr<RaspForward> RaspForward::create(const RaspWeights &w, std::string *error) {
  const Loaded &p = plugin();
  if (p.api) return p.api->createRasp(w, error);
  if (error) *error = p.error;
  return nullptr;
}

std::unique_ptr<CrateForward> CrateForward::create(const CrateWeights &w, std::string *error) {
  const Loaded &p = plugin();
  if (p.api) return p.api->createCrate(w, error);
  if (error) *error = p.error;
  return nullptr;
}

} // namespace raspc::cuda
