// Compile benchmark: the programs and sizes of Tracr's reference table, side by side
// with Tracr's figures, plus the scaling cases (sort at N = 64 over 16 tokens, 64
// chained diamonds). Times are the median of several runs of the whole pipeline
// after parsing (graph -> weights in memory).
#include "frontend/Program.h"
#include "passes/Compiler.h"

#include <fmt/format.h>
#include <llvm/Support/raw_ostream.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace raspc;

namespace {

struct Row {
  std::string name, file, source;
  std::vector<std::string> vocab;
  int maxLen;
  // Tracr (layers, residual, parameters, compile ms), 0 when not measured there.
  int tLayers = 0, tResidual = 0;
  long tParams = 0;
  double budgetMs; // our target
};

std::vector<std::string> range(int n) {
  std::vector<std::string> v;
  for (int i = 1; i <= n; ++i) v.push_back(std::to_string(i));
  return v;
}

struct Result {
  bool ok = false;
  std::string error;
  CompileStats stats;
  double ms = 0;
};

Result run(const Row &r) {
  Result res;
  std::string diags;
  llvm::raw_string_ostream os(diags);
  Program p(os);
  bool loaded = r.file.empty() ? p.loadSource(r.source, r.name) : p.loadFile(r.file);
  auto out = loaded ? p.resolveOutput(std::nullopt) : std::nullopt;
  if (!out) {
    res.error = os.str();
    return res;
  }
  CompileOptions co;
  co.vocab = r.vocab;
  co.maxLen = r.maxLen;
  std::vector<double> times;
  for (int i = 0; i < 7; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto m = compileProgram(p.graph(), *out, co, p.sourceMgr(), &res.stats);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!m) {
      res.error = llvm::toString(m.takeError());
      return res;
    }
  }
  std::sort(times.begin(), times.end());
  res.ms = times[times.size() / 2];
  res.ok = true;
  return res;
}

// n diamonds: each s-op is used twice by the next (Tracr's graph walk is exponential
// in n here).
std::string diamonds(int n) {
  std::string s = "x0 = tokens;\n";
  for (int i = 1; i <= n; ++i)
    s += fmt::format("a{0} = x{1} + 1;\nb{0} = x{1} * 1;\nx{0} = (a{0} + b{0}) % 5;\n", i, i - 1);
  return s;
}

} // namespace

int main(int argc, char **argv) {
  std::string root = argc > 1 ? argv[1] : ".";
  auto ex = [&](const std::string &f) { return root + "/" + f; };
  std::vector<Row> rows = {
      {"length", ex("examples/length.rasp"), "", range(3), 5, 1, 18, 990, 5},
      {"reverse", ex("examples/reverse.rasp"), "", range(3), 10, 4, 71, 88608, 5},
      {"hist", ex("examples/hist.rasp"), "", range(3), 10, 1, 28, 2240, 5},
      {"sort", ex("examples/sort.rasp"), "", range(3), 10, 3, 61, 35380, 5},
      {"sort_freq", ex("bench/programs/sort_freq_tracr.rasp"), "", range(3), 10, 5, 164, 550384, 5},
      {"shuffle_dyck2", ex("examples/shuffle_dyck2.rasp"), "", {"(", ")", "{", "}"}, 10, 8, 70, 1018150, 5},
      {"sort N=64 |V|=16", ex("examples/sort.rasp"), "", range(16), 64, 0, 0, 0, 1000},
      {"sort_freq N=64 |V|=16", ex("bench/programs/sort_freq_tracr.rasp"), "", range(16), 64, 0, 0, 0, 1000},
      {"64 chained diamonds", "", diamonds(64), range(3), 10, 0, 0, 0, 100},
  };
  fmt::print("{:<24} {:>14} {:>16} {:>22} {:>10} {:>8}\n", "program", "layers", "residual", "parameters",
             "compile", "budget");
  fmt::print("{:<24} {:>14} {:>16} {:>22} {:>10} {:>8}\n", "", "raspc / Tracr", "raspc / Tracr", "raspc / Tracr", "ms",
             "ms");
  int failures = 0;
  for (auto &r : rows) {
    Result res = run(r);
    if (!res.ok) {
      fmt::print("{:<24} error: {}\n", r.name, res.error);
      ++failures;
      continue;
    }
    auto pair = [](long ours, long theirs) {
      return theirs ? fmt::format("{} / {}", ours, theirs) : fmt::format("{} / -", ours);
    };
    bool smaller = !r.tLayers || (res.stats.layers <= r.tLayers && res.stats.residual <= r.tResidual &&
                                  res.stats.parameters <= r.tParams);
    bool fast = res.ms <= r.budgetMs;
    if (!smaller || !fast) ++failures;
    fmt::print("{:<24} {:>14} {:>16} {:>22} {:>10.2f} {:>8}{}\n", r.name, pair(res.stats.layers, r.tLayers),
               pair(res.stats.residual, r.tResidual), pair(res.stats.parameters, r.tParams), res.ms, r.budgetMs,
               smaller ? (fast ? "" : "  SLOW") : "  LARGER THAN TRACR");
  }
  fmt::print("\nTracr figures: BRIEF section 3 (measured with Tracr, vocab {{1,2,3}}). {} row{} off target.\n",
             failures, failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
