// raspc crate run | synth: CRATE models on the CPU (docs/crate.md).
#include "backend/Hdf5.h"
#include "runtime/Crate.h"
#include "tools/Commands.h"
#include "tools/Plot.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Path.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <numeric>

namespace raspc::tools {

namespace {

struct CrateFlags {
  // run
  std::string model;
  std::optional<std::string> input, logitsOut;
  bool json = false, metrics = false;
  std::string device = "cpu";
  int top = 5;
  double eps = 0.5;
  // synth
  CrateSynthOptions synth;
  std::string synthOut;
  bool synthJson = false, force = false;
  // run and synth: the metrics as an SVG plot (--force also covers it)
  std::optional<std::string> plot;
};

void printMetrics(const std::vector<CrateLayerMetrics> &ms, bool json) {
  if (json) {
    for (const CrateLayerMetrics &m : ms)
      std::cout << fmt::format("{{\"layer\": {}, \"R\": {}, \"Rc\": {}, \"sparsity\": {}}}\n", m.layer, m.R, m.Rc,
                               m.sparsity);
    return;
  }
  std::cout << fmt::format("{:<6} {:>12} {:>12} {:>9}\n", "layer", "R(Z)", "Rc(Z;U)", "sparsity");
  for (const CrateLayerMetrics &m : ms)
    std::cout << fmt::format("{:<6} {:>12.4f} {:>12.4f} {:>9.4f}\n", m.layer, m.R, m.Rc, m.sparsity);
}

// The layers of a synthesised model run on its stored tokens, with the per-layer metrics.
llvm::Expected<std::vector<CrateLayerMetrics>> synthMetrics(CrateExecutor &exec, const CrateModel &model, double eps) {
  const Tensor &t = model.synthTokens;
  Eigen::MatrixXf X(t.shape[0], t.shape[1]);
  for (int64_t i = 0; i < t.shape[0]; ++i)
    for (int64_t j = 0; j < t.shape[1]; ++j) X(i, j) = t.data[size_t(i * t.shape[1] + j)];
  std::vector<CrateLayerMetrics> ms;
  if (auto out = exec.runLayers(X, 1, int(X.rows()), &ms, eps); !out) return out.takeError();
  return ms;
}

int fail(llvm::Error e) {
  std::cerr << "raspc: error: " << llvm::toString(std::move(e)) << "\n";
  return 1;
}

// Writes the plot of `ms` to --plot (atomically) and says so on stderr, except with --json.
int writePlot(const CrateFlags &f, const files::OutputRule &rule, const std::vector<CrateLayerMetrics> &ms,
              const std::string &title, bool json) {
  if (auto e = files::writeFileAtomically(*f.plot, metricsSvg(ms, title), rule)) return fail(std::move(e));
  if (!json) std::cerr << "wrote " << *f.plot << "\n";
  return 0;
}

int runCrate(const CrateFlags &f) {
  files::OutputRule rule{f.force, {f.model}};
  if (f.input) rule.inputs.push_back(*f.input);
  if (int rc = checkOutputs({{"--logits", f.logitsOut}, {"--plot", f.plot}}, rule)) return rc;
  Device dev = *parseDevice(f.device);
  if (auto e = deviceError(dev)) {
    std::cerr << "raspc: error: --device " << f.device << ": " << llvm::toString(std::move(e)) << "\n";
    return 1;
  }
  auto model = readCrateModel(f.model);
  if (!model) return fail(model.takeError());
  auto exec = CrateExecutor::create(*model, f.model, dev);
  if (!exec) return fail(exec.takeError());
  const CrateConfig &c = model->cfg;
  if (!f.input) {
    // A synthesised model: the layers on its stored tokens, with the metrics.
    if (model->synthTokens.shape.empty()) {
      std::cerr << "raspc crate run: give --input IMAGES.h5 (" << f.model << " has no synthesised tokens)\n";
      return 2;
    }
    auto ms = synthMetrics(*exec, *model, f.eps);
    if (!ms) return fail(ms.takeError());
    printMetrics(*ms, f.json);
    std::string title = fmt::format("{}: per-layer metrics on its synthesised tokens (eps {})", f.model, f.eps);
    return f.plot ? writePlot(f, rule, *ms, title, f.json) : 0;
  }
  auto images = readCrateImages(*f.input, c);
  if (!images) return fail(images.takeError());
  std::vector<CrateLayerMetrics> ms;
  auto ran = exec->run(images->data.data(), images->batch, f.metrics || f.plot ? &ms : nullptr, f.eps);
  if (!ran) return fail(ran.takeError());
  const Eigen::MatrixXf &logits = *ran;
  int k = std::min(f.top, c.num_classes);
  for (int b = 0; b < images->batch; ++b) {
    std::vector<int> order(size_t(c.num_classes));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return logits(b, x) > logits(b, y); });
    std::string line = f.json ? fmt::format("{{\"image\": {}, \"top\": [", b) : fmt::format("image {}:", b);
    for (int i = 0; i < k; ++i) {
      int cls = order[size_t(i)];
      line += f.json ? fmt::format("{}[{}, {}]", i ? ", " : "", cls, logits(b, cls))
                     : fmt::format(" {} ({:.4f})", cls, logits(b, cls));
    }
    std::cout << line << (f.json ? "]}\n" : "\n");
  }
  if (f.metrics) printMetrics(ms, f.json);
  if (f.logitsOut) {
    Tensor t({int64_t(logits.rows()), int64_t(logits.cols())});
    for (int64_t b = 0; b < t.shape[0]; ++b)
      for (int64_t j = 0; j < t.shape[1]; ++j) t.at(b, j) = logits(b, j);
    if (auto e = writeTensorFile(*f.logitsOut, "logits", t, rule)) return fail(std::move(e));
  }
  if (f.plot)
    return writePlot(f, rule, ms,
                     fmt::format("{}: per-layer metrics on {}, {} image{} (eps {})", f.model, *f.input, images->batch,
                                 images->batch == 1 ? "" : "s", f.eps),
                     f.json);
  return 0;
}

int runSynth(const CrateFlags &f) {
  files::OutputRule rule{f.force, {}};
  if (int rc = checkOutputs({{"-o", f.synthOut}, {"--plot", f.plot}}, rule)) return rc;
  auto model = synthCrateModel(f.synth);
  if (!model) return fail(model.takeError());
  // Run before writing: a model whose layers fail (non-finite values) leaves no file.
  auto exec = CrateExecutor::create(*model, f.synthOut);
  if (!exec) return fail(exec.takeError());
  auto metrics = synthMetrics(*exec, *model, f.eps);
  if (!metrics) return fail(metrics.takeError());
  if (auto e = writeCrateModel(*model, f.synthOut, rule)) return fail(std::move(e));
  const std::vector<CrateLayerMetrics> &ms = *metrics;
  const CrateSynthOptions &o = f.synth;
  if (!f.synthJson)
    std::cout << fmt::format("wrote {}: dim {}, {} heads of width {}, depth {}, {} tokens, seed {}\n", f.synthOut,
                             o.dim, o.heads, o.dim / o.heads, o.depth, o.tokens, o.seed);
  printMetrics(ms, f.synthJson);
  if (f.plot)
    return writePlot(f, rule, ms,
                     fmt::format("{}: per-layer metrics on its synthesised tokens (dim {}, {} heads, depth {}, {} "
                                 "tokens, seed {}; eps {})",
                                 f.synthOut, o.dim, o.heads, o.depth, o.tokens, o.seed, f.eps),
                     f.synthJson);
  return 0;
}

} // namespace

CLI::Validator seedValidator() {
  return CLI::Validator(
      [](std::string &v) -> std::string {
        bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
        return digits ? "" : "'" + v + "' is not a non-negative integer";
      },
      "UINT");
}

std::function<std::optional<int>()> addCrateCommands(CLI::App &app) {
  auto f = std::make_shared<CrateFlags>();
  // --plot writes SVG: a name that says otherwise (plot.png) is refused.
  CLI::Validator svgName(
      [](std::string &name) -> std::string {
        std::string ext = llvm::sys::path::extension(name).lower();
        return ext == ".svg" ? "" : "the plot is SVG: give a file name ending in .svg";
      },
      "FILE.svg");
  auto *crate = app.add_subcommand("crate", "CRATE white-box transformers: run a model, or synthesise one");
  crate->require_subcommand(1);

  auto *run = crate->add_subcommand("run", "run a CRATE model on a batch of images (CPU or CUDA GPU)");
  run->add_option("MODEL", f->model, "CRATE model (.h5)")->required();
  run->add_option("--input", f->input, "HDF5 file with dataset 'images' [B, C, H, W] float32");
  run->add_flag("--json", f->json, "print {\"image\": i, \"top\": [[class, logit], ...]} (one object per line)");
  run->add_flag("--metrics", f->metrics, "print per layer R(Z), Rc(Z;U) and the sparsity after ISTA");
  run->add_option("--top", f->top, "classes shown per image (default 5)")->check(CLI::Range(1, 1 << 20));
  run->add_option("--eps", f->eps, "the distortion eps of the coding rates (default 0.5)")
      ->check(CLI::Range(1e-6, 1e6));
  run->add_option("--logits", f->logitsOut, "write the logits to this HDF5 file (dataset 'logits' [B, classes])");
  run->add_option("--plot", f->plot, "write R(Z), Rc(Z;U) and the sparsity per layer as an SVG plot to this file")
      ->check(svgName);
  run->add_flag("--force", f->force, "overwrite existing --logits and --plot files");
  run->add_option("--device", f->device, "cpu (default) or cuda")->check(CLI::IsMember({"cpu", "cuda"}));

  auto *synth = crate->add_subcommand("synth", "build CRATE layers from random subspaces, run them on sampled tokens");
  CrateSynthOptions &o = f->synth;
  synth->add_option("--dim", o.dim, "token dimension d (default 32)")->check(CLI::Range(1, 4096));
  synth->add_option("--heads", o.heads, "subspaces K, each of width d/K (default 4)")->check(CLI::Range(1, 4096));
  synth->add_option("--depth", o.depth, "layers (default 4)")->check(CLI::Range(1, 1024));
  synth->add_option("--tokens", o.tokens, "sampled tokens N (default 128)")->check(CLI::Range(1, 1 << 20));
  synth->add_option("--seed", o.seed, "random seed (default 1)")->check(seedValidator());
  synth->add_option("--noise", o.noise, "noise per coordinate, standard deviation (default 0.1)");
  synth->add_option("--step", o.step, "MSSA step: to_out.0.weight = step * U (default 1)");
  synth->add_option("--eta", o.eta, "ISTA step size (default 0.1)");
  synth->add_option("--lambda", o.lambda, "ISTA sparsity weight (default 0.1)");
  synth->add_option("--dictionary", o.dictionary, "identity (default) or orthogonal");
  synth->add_option("--basis", o.basis, "coordinates (default: subspaces spanned by coordinate axes) or random");
  synth->add_option("-o,--out", f->synthOut, "the model file to write")->required();
  synth->add_option("--eps", f->eps, "the distortion eps of the coding rates (default 0.5)")
      ->check(CLI::Range(1e-6, 1e6));
  synth->add_flag("--force", f->force, "overwrite existing files (the model and the --plot file)");
  synth->add_flag("--json", f->synthJson, "print the metrics as JSON, one object per layer");
  synth->add_option("--plot", f->plot, "write R(Z), Rc(Z;U) and the sparsity per layer as an SVG plot to this file")
      ->check(svgName);

  return [f, crate, run, synth]() -> std::optional<int> {
    if (!crate->parsed()) return std::nullopt;
    if (run->parsed()) return runCrate(*f);
    if (synth->parsed()) return runSynth(*f);
    return 2;
  };
}

} // namespace raspc::tools
