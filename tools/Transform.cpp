// raspc transform: a rotated or compressed variant of a compiled model, measured
// against it (backend/Variants.h, runtime/VariantCheck.h).
#include "backend/Hdf5.h"
#include "backend/Safetensors.h"
#include "runtime/VariantCheck.h"
#include "tools/Commands.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <llvm/Support/raw_ostream.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <unistd.h>

namespace raspc::tools {

namespace {

void error(const std::string &msg) { llvm::errs() << "raspc: error: " << msg << "\n"; }

struct TransformFlags {
  std::string model, out, format = "hdf5";
  bool rotate = false, force = false, json = false;
  std::optional<std::string> compress; // K or "auto"
  uint64_t seed = 1;
  uint64_t inputs = 2000;
  std::optional<int64_t> maxParams;
};

// A bar per measured width on a terminal; nothing when piped or with --json.
class WidthProgress {
public:
  explicit WidthProgress(bool enabled) : enabled_(enabled && isatty(2)) {}
  void operator()(uint64_t done, uint64_t total, int width) {
    if (!enabled_) return;
    const int pct = int(100 * done / std::max<uint64_t>(1, total));
    const int bar = pct * 30 / 100;
    fprintf(stderr, "\rd_model %d: [%s%s] %3d%% %llu/%llu", width, std::string(size_t(bar), '#').c_str(),
            std::string(size_t(30 - bar), ' ').c_str(), pct, (unsigned long long)done, (unsigned long long)total);
    if (done == total) fprintf(stderr, "\n");
  }

private:
  bool enabled_;
};

int runTransform(const TransformFlags &f) {
  if (f.rotate == bool(f.compress)) {
    error("transform: give one of --rotate and --compress K|auto");
    return 2;
  }
  std::optional<int> k;
  if (f.compress && *f.compress != "auto") {
    char *end = nullptr;
    errno = 0;
    const long v = std::strtol(f.compress->c_str(), &end, 10);
    if (f.compress->empty() || *end || errno || v < 1 || v > (1 << 24)) {
      error("--compress: expected a number of dimensions (at least 1) or 'auto', got '" + *f.compress + "'");
      return 2;
    }
    k = int(v);
  }
  files::OutputRule rule{f.force, {f.model}};
  if (int rc = checkOutputs({{"-o", f.out}}, rule)) return rc;
  auto m = readModel(f.model, f.maxParams.value_or(kDefaultMaxParams));
  if (!m) {
    error(llvm::toString(m.takeError()));
    return 1;
  }
  if (k && *k >= m->cfg.d_model) {
    error(fmt::format("--compress {}: {} has d_model {}; a compression has fewer dimensions (--rotate keeps them "
                      "all)",
                      *k, f.model, m->cfg.d_model));
    return 1;
  }
  VariantOptions opts;
  opts.seed = f.seed;
  opts.maxInputs = f.inputs;
  WidthProgress bar(!f.json);
  opts.progress = [&](uint64_t done, uint64_t total, int width) { bar(done, total, width); };
  auto v = f.rotate ? makeRotated(*m, opts) : k ? makeCompressed(*m, *k, opts) : searchCompression(*m, opts);
  if (!v) {
    error(f.model + ": " + llvm::toString(v.takeError()));
    return 1;
  }
  const VariantReport &r = v->report;
  // A rotation changes nothing a user can see: if it did, it is a failure, not a variant.
  if (f.rotate && !r.result.exact()) {
    error(fmt::format("{}: the rotated model decodes differently on {} of {} inputs (largest logit difference {:.3g}); "
                      "nothing written",
                      f.model, r.result.inputs - r.result.exactInputs, r.result.inputs, r.result.maxLogitError));
    return 1;
  }
  if (auto e =
          f.format == "safetensors" ? writeSafetensors(v->model, f.out, rule) : writeModel(v->model, f.out, rule)) {
    error(llvm::toString(std::move(e)));
    return 1;
  }
  if (f.json)
    std::cout << "{\"file\": \"" << jsonEscape(f.out) << "\", " << r.json().substr(1) << "\n";
  else
    std::cout << r.text() << "wrote " << f.out << "\n";
  return 0;
}

} // namespace

std::function<std::optional<int>()> addTransformCommand(CLI::App &app) {
  auto f = std::make_shared<TransformFlags>();
  auto *cmd =
      app.add_subcommand("transform", "write a rotated or compressed variant of a compiled model, measured against it");
  cmd->add_option("MODEL", f->model, "compiled model (.h5)")->required();
  cmd->add_flag("--rotate", f->rotate,
                "multiply the residual stream by a random orthogonal matrix (outputs unchanged)");
  cmd->add_option("--compress", f->compress,
                  "project the residual stream to K dimensions, or 'auto': the fewest found exact on the inputs");
  cmd->add_option("--seed", f->seed, "seed of the basis and of sampled inputs (default 1)")->check(seedValidator());
  cmd->add_option("--inputs", f->inputs,
                  "measure on every input up to the maximum length when there are at most N, else on N random ones "
                  "(default 2000)")
      ->check(CLI::Range(uint64_t(1), uint64_t(100000000)));
  cmd->add_option("-o,--out", f->out, "the weight file to write")->required();
  cmd->add_option("--format", f->format, "hdf5 (default) or safetensors (docs/weights.md)")
      ->check(CLI::IsMember({"hdf5", "safetensors"}));
  cmd->add_flag("--force", f->force, "overwrite an existing file");
  cmd->add_flag("--json", f->json, "print the measurement as JSON");
  cmd->add_option("--max-params", f->maxParams,
                  "refuse a model with more parameters (default " + std::to_string(kDefaultMaxParams) + ")")
      ->check(CLI::Range(int64_t(1), INT64_MAX));
  return [cmd, f]() -> std::optional<int> {
    if (!cmd->parsed()) return std::nullopt;
    return runTransform(*f);
  };
}

} // namespace raspc::tools
