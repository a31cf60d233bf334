// Forward throughput of the runtime: sequences per second at batch 1 and 256 on random
// full-length inputs, for a compiled model file, on the CPU (f32 on one thread and on one
// per core, f64) and, where a GPU is usable, on CUDA (else a line saying why not).
// bench/run.sh runs it beside PyTorch and the numpy forward on the same file.
#include "backend/Hdf5.h"
#include "runtime/Executor.h"

#include <fmt/format.h>

#include <chrono>
#include <random>
#include <thread>

using namespace raspc;

int main(int argc, char **argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: bench_forward MODEL.h5 [seconds per row]\n");
    return 2;
  }
  double budget = argc > 2 ? std::atof(argv[2]) : 2.0;
  auto m = readModel(argv[1]);
  if (!m) {
    fmt::print(stderr, "{}\n", llvm::toString(m.takeError()));
    return 1;
  }
  std::vector<std::string> vocab;
  for (int i = 0; i < int(m->vocab.size()); ++i)
    if (i != m->bosId && i != m->padId) vocab.push_back(m->vocab[size_t(i)]);
  int len = m->cfg.n_ctx - 1;
  std::mt19937 rng(1);
  struct Row {
    std::string name;
    Precision p;
    Device d;
    int threads;
  };
  // The CPU on one thread and on one per core (what `raspc run` uses), float32 and float64.
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<Row> rows;
  for (int t : {1, cores}) {
    if (t == cores && cores == 1) break;
    rows.push_back({fmt::format("CPU (f32, {} thread{})", t, t > 1 ? "s" : ""), Precision::F32, Device::Cpu, t});
  }
  rows.push_back({"CPU (f64, 1 thread)", Precision::F64, Device::Cpu, 1});
  rows.push_back({"CUDA (f32)", Precision::F32, Device::Cuda, 1});
  for (const Row &row : rows) {
    if (auto e = deviceError(row.d)) {
      fmt::print("raspc {}: skipped ({})\n", row.name, llvm::toString(std::move(e)));
      continue;
    }
    auto exec = Executor::create(*m, row.p, row.d);
    if (!exec) {
      fmt::print(stderr, "{}\n", llvm::toString(exec.takeError()));
      return 1;
    }
    exec->setThreads(row.threads);
    for (int batchSize : {1, 256}) {
      std::vector<std::vector<std::string>> batch(size_t(batchSize), std::vector<std::string>(size_t(len), ""));
      for (auto &s : batch)
        for (auto &t : s) t = vocab[rng() % vocab.size()];
      (void)exec->run(batch); // warm up
      long seqs = 0;
      auto t0 = std::chrono::steady_clock::now();
      double secs = 0;
      while (secs < budget) {
        auto out = exec->run(batch);
        if (!out) {
          fmt::print(stderr, "{}\n", llvm::toString(out.takeError()));
          return 1;
        }
        seqs += batchSize;
        secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      fmt::print("raspc {:<22} batch {:>3}: {:>10.0f} sequences/s\n", row.name, batchSize, double(seqs) / secs);
    }
  }
  return 0;
}
