// CRATE forward throughput of CrateExecutor: images per second for a model file and a
// batch of images, at the batch sizes given, on the CPU and, where a GPU is usable, on
// CUDA (else a JSON line {"device": "cuda", "skipped": why}). One JSON object per line;
// bench/run.sh prints them beside PyTorch's (bench/crate_torch_bench.py) on the same files.
//
//   bench_crate MODEL.h5 IMAGES.h5 BUDGET_SECONDS BATCH...
//
// One warm-up run at the first batch size (PyTorch's side does the same); then, per batch
// size, repeats until the budget is spent (at least 2, at most 25), estimated from the
// time per image so far; the median is reported. Without a warm-up per batch size, CRATE-
// base at batch 64 is two runs (about a minute here, several with PyTorch).
#include "runtime/Crate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

using namespace raspc;

namespace {

double seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int fail(const std::string &msg) {
  fmt::print(stderr, "bench_crate: {}\n", msg);
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 5) {
    fmt::print(stderr, "usage: bench_crate MODEL.h5 IMAGES.h5 BUDGET_SECONDS BATCH...\n");
    return 2;
  }
  const double budget = std::atof(argv[3]);
  auto model = readCrateModel(argv[1]);
  if (!model) return fail(llvm::toString(model.takeError()));
  auto images = readCrateImages(argv[2], model->cfg);
  if (!images) return fail(llvm::toString(images.takeError()));
  const CrateConfig &c = model->cfg;
  for (Device device : {Device::Cpu, Device::Cuda}) {
    if (auto e = deviceError(device)) {
      fmt::print("{{\"impl\": \"raspc\", \"device\": \"{}\", \"skipped\": \"{}\"}}\n", deviceName(device),
                 llvm::toString(std::move(e)));
      continue;
    }
    auto exec = CrateExecutor::create(*model, argv[1], device);
    if (!exec) return fail(llvm::toString(exec.takeError()));
    double perImage = 0;
    float checksum = 0;
    for (int i = 4; i < argc; ++i) {
      const int batch = std::atoi(argv[i]);
      if (batch < 1 || batch > images->batch)
        return fail(fmt::format("batch {} is not in [1, {}] (the images in {})", batch, images->batch, argv[2]));
      if (i == 4) {
        auto t0 = std::chrono::steady_clock::now();
        auto warm = exec->run(images->data.data(), batch);
        if (!warm) return fail(llvm::toString(warm.takeError()));
        perImage = seconds(t0) / batch;
        checksum += warm->sum();
      }
      const int repeats = std::clamp(int(budget / std::max(perImage * batch, 1e-9)), 2, 25);
      std::vector<double> times;
      for (int r = 0; r < repeats; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        auto logits = exec->run(images->data.data(), batch);
        times.push_back(seconds(t0));
        if (!logits) return fail(llvm::toString(logits.takeError()));
        checksum += (*logits)(0, 0); // keeps the work observable
      }
      perImage = times.front() / batch;
      std::sort(times.begin(), times.end());
      const double median = repeats % 2 ? times[size_t(repeats / 2)]
                                        : 0.5 * (times[size_t(repeats / 2 - 1)] + times[size_t(repeats / 2)]);
      fmt::print("{{\"impl\": \"raspc\", \"device\": \"{}\", \"dim\": {}, \"depth\": {}, \"batch\": {}, "
                 "\"threads\": {}, \"repeats\": {}, \"median_s\": {:.6f}, \"images_per_s\": {:.3f}, "
                 "\"checksum\": {}}}\n",
                 deviceName(device), c.dim, c.depth, batch, Eigen::nbThreads(), repeats, median, double(batch) / median,
                 checksum);
      std::fflush(stdout);
    }
  }
  return 0;
}
