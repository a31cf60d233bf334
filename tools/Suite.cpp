// raspc suite build | index | list: the ground-truth suite (suite/Suite.h, docs/suite.md).
#include "suite/Suite.h"
#include "tools/Commands.h"
#include "tools/Progress.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <llvm/ADT/StringRef.h>

#include <chrono>
#include <iostream>

namespace raspc::tools {

namespace {

struct SuiteFlags {
  suite::BuildOptions build;
  std::optional<std::string> shard; // "I/N"
  std::string indexDir;
  bool json = false;
};

int fail(llvm::Error e) {
  std::cerr << "raspc: error: " << llvm::toString(std::move(e)) << "\n";
  return 1;
}

int runBuild(SuiteFlags &f) {
  if (f.shard) {
    auto [i, n] = llvm::StringRef(*f.shard).split('/');
    unsigned I = 0, N = 0;
    if (i.getAsInteger(10, I) || n.getAsInteger(10, N) || N < 1 || I < 1 || I > N) {
      std::cerr << "raspc: error: --shard " << *f.shard << ": give I/N with 1 <= I <= N, e.g. 3/10\n";
      return 2;
    }
    f.build.shardIndex = int(I);
    f.build.shardCount = int(N);
  }
  std::optional<Progress> bar;
  auto t0 = std::chrono::steady_clock::now();
  auto r = suite::build(f.build, [&](const suite::ModelSummary &s, size_t done, size_t total) {
    if (!bar) bar.emplace(total, !f.json);
    if (s.status != "ok") bar->message("raspc: error: " + s.name + ": " + s.error);
    bar->step(done, s.name);
  });
  if (!r) return fail(r.takeError());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int failed = r->failed();
  if (f.json) {
    std::string models;
    for (size_t i = 0; i < r->built.size(); ++i) models += (i ? ",\n  " : "\n  ") + r->built[i].json();
    std::cout << fmt::format("{{\"dir\": \"{}\", \"built\": {}, \"failed\": {}, \"seconds\": {:.3f}, \"models\": [{}\n]}}\n",
                             jsonEscape(f.build.dir), r->built.size() - size_t(failed), failed, secs, models);
  } else {
    std::string names;
    for (auto &s : r->built)
      if (s.status != "ok") names += (names.empty() ? "" : ", ") + s.name;
    std::cout << fmt::format("built {} model{} into {} in {:.1f} s{}\n", r->built.size() - size_t(failed),
                             r->built.size() - size_t(failed) == 1 ? "" : "s", f.build.dir, secs,
                             failed ? fmt::format("; {} failed: {}", failed, names) : "");
  }
  return failed ? 1 : 0;
}

} // namespace

std::function<std::optional<int>()> addSuiteCommands(CLI::App &app) {
  auto f = std::make_shared<SuiteFlags>();
  auto *suiteCmd = app.add_subcommand("suite", "the ground-truth suite of compiled models (docs/suite.md)");
  suiteCmd->require_subcommand(1);

  auto *build = suiteCmd->add_subcommand("build", "compile the suite's programs into a folder of models");
  build->add_option("DIR", f->build.dir, "the folder to build into")->required();
  build->add_option("--programs", f->build.programs,
                    "which programs: a pattern of suite program names ('classic_*'), or, with a '/' or "
                    "ending in .rasp, a glob of your own files");
  build->add_option("--jobs", f->build.jobs, "models built at once (default: one per core)")->check(CLI::Range(0, 4096));
  build->add_option("--shard", f->shard, "build programs I, I+N, I+2N, ... (1-based), for job arrays");
  build->add_flag("--force", f->build.force, "rebuild models whose folders exist");
  build->add_flag("--json", f->json, "print this run's model summaries as JSON");

  auto *index = suiteCmd->add_subcommand("index", "rewrite index.json, index.csv and README.md from the models' summaries");
  index->add_option("DIR", f->indexDir, "a built suite's folder")->required();
  index->add_flag("--json", f->json, "print index.json");

  auto *list = suiteCmd->add_subcommand("list", "the suite's programs and their descriptions");
  list->add_flag("--json", f->json, "print JSON");

  return [=]() -> std::optional<int> {
    if (build->parsed()) return runBuild(*f);
    if (index->parsed()) {
      auto r = suite::writeIndex(f->indexDir);
      if (!r) return fail(r.takeError());
      if (f->json) std::cout << *r;
      else std::cout << "wrote " << f->indexDir << "/index.json, index.csv and README.md\n";
      return 0;
    }
    if (list->parsed()) {
      if (f->json) {
        auto r = suite::listJson();
        if (!r) return fail(r.takeError());
        std::cout << *r;
        return 0;
      }
      auto progs = suite::embeddedPrograms();
      if (!progs) return fail(progs.takeError());
      for (auto &p : *progs)
        std::cout << fmt::format("{:<32} {:<20} {:<7} {}\n", p.name, p.category, p.difficulty, p.description);
      return 0;
    }
    return std::nullopt;
  };
}

} // namespace raspc::tools
