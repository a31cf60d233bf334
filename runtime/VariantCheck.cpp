// Variants measured against their original (runtime/VariantCheck.h).
#include "runtime/VariantCheck.h"
#include "backend/Variants.h"
#include "runtime/Executor.h"

#include <Eigen/Eigenvalues>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <random>

namespace raspc {

namespace {

constexpr size_t kBatch = 256;

// The original's decoded outputs and logits on the inputs, computed once for every
// width a search measures.
struct Reference {
  const std::vector<std::vector<std::string>> *inputs = nullptr;
  std::vector<std::vector<Scalar>> outputs;
  std::vector<Eigen::MatrixXd> logits; // rows 1 .. len of each input
};

// Runs `m` on `inputs` in batches; `each(i, output, logits)` sees input i's decoded
// output and its logits without BOS, `after(done)` each finished batch.
llvm::Error runInBatches(const Model &m, const std::vector<std::vector<std::string>> &inputs,
                         const std::function<void(size_t, std::vector<Scalar> &, Eigen::MatrixXd)> &each,
                         const std::function<void(size_t)> &after = {}) {
  auto exec = Executor::create(m);
  if (!exec) return exec.takeError();
  for (size_t at = 0; at < inputs.size(); at += kBatch) {
    std::vector<std::vector<std::string>> batch(inputs.begin() + ptrdiff_t(at),
                                                inputs.begin() + ptrdiff_t(std::min(inputs.size(), at + kBatch)));
    auto out = exec->run(batch);
    if (!out) return out.takeError();
    for (size_t b = 0; b < batch.size(); ++b) {
      Eigen::MatrixXd l = exec->logits(int(b));
      each(at + b, (*out)[b], l.bottomRows(l.rows() - 1));
    }
    if (after) after(at + batch.size());
  }
  return llvm::Error::success();
}

llvm::Expected<Reference> reference(const Model &original, const std::vector<std::vector<std::string>> &inputs) {
  Reference r;
  r.inputs = &inputs;
  if (auto e = runInBatches(original, inputs, [&](size_t, std::vector<Scalar> &out, Eigen::MatrixXd logits) {
        r.outputs.push_back(std::move(out));
        r.logits.push_back(std::move(logits));
      }))
    return e;
  return r;
}

llvm::Expected<VariantMeasurement> measure(const Reference &ref, const Model &variant, const VariantOptions &opts) {
  const auto &inputs = *ref.inputs;
  VariantMeasurement m;
  m.dModel = variant.cfg.d_model;
  auto each = [&](size_t i, std::vector<Scalar> &out, Eigen::MatrixXd logits) {
    if (matchesInterpreter(out, ref.outputs[i])) ++m.exactInputs;
    if (ref.logits[i].size() > 0)
      m.maxLogitError = std::max(m.maxLogitError, (logits - ref.logits[i]).cwiseAbs().maxCoeff());
  };
  auto after = [&](size_t done) {
    m.inputs = done;
    if (opts.progress) opts.progress(done, inputs.size(), m.dModel);
  };
  if (auto e = runInBatches(variant, inputs, each, after)) return e;
  m.accuracy = m.inputs ? double(m.exactInputs) / double(m.inputs) : 1.0;
  return m;
}

VariantReport baseReport(const Model &m, const char *kind, const VariantOptions &opts, bool exhaustive) {
  VariantReport r;
  r.kind = kind;
  r.fromDModel = m.cfg.d_model;
  r.labels = int(residualLabelCount(m));
  r.seed = opts.seed;
  r.exhaustive = exhaustive;
  return r;
}

std::string measurementJson(const VariantMeasurement &m) {
  return fmt::format("{{\"d_model\": {}, \"inputs\": {}, \"exact_inputs\": {}, \"accuracy\": {}, "
                     "\"max_logit_error\": {}}}",
                     m.dModel, m.inputs, m.exactInputs, jsonScalar(Scalar(m.accuracy)),
                     jsonScalar(Scalar(m.maxLogitError)));
}

std::string percent(double a) { return fmt::format("{:.2f}%", 100 * a); }

} // namespace

std::vector<std::vector<std::string>> variantInputs(const Model &m, uint64_t maxInputs, uint64_t seed,
                                                    bool &exhaustive) {
  std::vector<std::string> tokens;
  for (size_t i = 0; i < m.vocab.size(); ++i)
    if (int(i) != m.bosId && int(i) != m.padId) tokens.push_back(m.vocab[i]);
  const int N = m.cfg.n_ctx - 1;
  std::vector<std::vector<std::string>> out;
  if (tokens.empty() || N < 1) {
    exhaustive = true;
    return out;
  }
  // Every input when there are at most maxInputs (counted without overflow).
  uint64_t total = 0, count = 1;
  exhaustive = true;
  for (int len = 1; len <= N && exhaustive; ++len) {
    if (count > maxInputs) { // count * |tokens| cannot overflow below this
      exhaustive = false;
      break;
    }
    count *= tokens.size();
    total += count;
    if (total > maxInputs) exhaustive = false;
  }
  if (exhaustive) {
    for (int len = 1; len <= N; ++len) {
      std::vector<size_t> digits(size_t(len), 0);
      while (true) {
        std::vector<std::string> seq(static_cast<size_t>(len));
        for (int i = 0; i < len; ++i) seq[size_t(i)] = tokens[digits[size_t(i)]];
        out.push_back(std::move(seq));
        size_t i = 0;
        for (; i < digits.size(); ++i) {
          if (++digits[i] < tokens.size()) break;
          digits[i] = 0;
        }
        if (i == digits.size()) break;
      }
    }
    return out;
  }
  // As `raspc verify` samples: a length, then the tokens.
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> L(1, N);
  std::uniform_int_distribution<size_t> T(0, tokens.size() - 1);
  for (uint64_t s = 0; s < maxInputs; ++s) {
    std::vector<std::string> seq(size_t(L(rng)));
    for (auto &t : seq) t = tokens[T(rng)];
    out.push_back(std::move(seq));
  }
  return out;
}

llvm::Expected<VariantMeasurement> measureVariant(const Model &original, const Model &variant,
                                                  const std::vector<std::vector<std::string>> &inputs,
                                                  const VariantOptions &opts) {
  auto ref = reference(original, inputs);
  if (!ref) return ref.takeError();
  return measure(*ref, variant, opts);
}

llvm::Expected<Variant> makeRotated(const Model &m, const VariantOptions &opts) {
  bool exhaustive = false;
  auto inputs = variantInputs(m, opts.maxInputs, opts.seed, exhaustive);
  auto rotated = rotateModel(m, opts.seed);
  if (!rotated) return rotated.takeError();
  auto result = measureVariant(m, *rotated, inputs, opts);
  if (!result) return result.takeError();
  Variant v{std::move(*rotated), baseReport(m, "rotated", opts, exhaustive)};
  v.report.result = *result;
  return v;
}

llvm::Expected<ResidualAxes> residualAxes(const Model &m, const std::vector<std::vector<std::string>> &inputs) {
  auto exec = Executor::create(m);
  if (!exec) return exec.takeError();
  const Eigen::Index d = m.cfg.d_model;
  Eigen::MatrixXd moment = Eigen::MatrixXd::Zero(d, d);
  TraceFn fn = [&](int, const std::string &, const Eigen::MatrixXd &res, int) { moment += res.transpose() * res; };
  for (size_t at = 0; at < inputs.size(); at += kBatch) {
    std::vector<std::vector<std::string>> batch(inputs.begin() + ptrdiff_t(at),
                                                inputs.begin() + ptrdiff_t(std::min(inputs.size(), at + kBatch)));
    auto out = exec->run(batch, &fn);
    if (!out) return out.takeError();
  }
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(moment);
  if (eig.info() != Eigen::Success)
    return llvm::make_error<llvm::StringError>("the residual states' eigendecomposition did not converge",
                                               llvm::inconvertibleErrorCode());
  ResidualAxes a;
  a.d = int(d);
  a.columns.resize(size_t(d * d));
  // Eigen orders eigenvalues ascending: the axes are its columns, last first.
  for (Eigen::Index j = 0; j < d; ++j) {
    const Eigen::Index from = d - 1 - j;
    a.moments.push_back(std::max(0.0, eig.eigenvalues()(from)));
    for (Eigen::Index i = 0; i < d; ++i) a.columns[size_t(i * d + j)] = eig.eigenvectors()(i, from);
  }
  const double largest = a.moments.empty() ? 0.0 : a.moments[0];
  for (double x : a.moments) a.span += x > 1e-9 * largest;
  return a;
}

llvm::Expected<Model> compressModel(const Model &m, const ResidualAxes &axes, int k, uint64_t seed) {
  if (axes.d != m.cfg.d_model || k < 1 || k > axes.d)
    return llvm::make_error<llvm::StringError>(
        fmt::format("cannot compress a residual of {} dimensions to {}", m.cfg.d_model, k),
        llvm::inconvertibleErrorCode());
  return transformResidual(m, subspaceMap(axes.columns, axes.d, axes.d, k, seed));
}

namespace {

// The inputs a compression is fitted on and those it is measured on: the same when
// they are every input, else samples of two seeds.
struct CompressionInputs {
  std::vector<std::vector<std::string>> fit, measure;
  bool exhaustive = false;
};

CompressionInputs compressionInputs(const Model &m, const VariantOptions &opts) {
  CompressionInputs c;
  c.measure = variantInputs(m, opts.maxInputs, opts.seed, c.exhaustive);
  if (c.exhaustive) {
    c.fit = c.measure;
  } else {
    bool unused;
    c.fit = variantInputs(m, opts.maxInputs, opts.seed ^ 0x9e3779b97f4a7c15ULL, unused);
  }
  return c;
}

} // namespace

llvm::Expected<Variant> makeCompressed(const Model &m, int k, const VariantOptions &opts) {
  if (k < 1 || k >= m.cfg.d_model)
    return llvm::make_error<llvm::StringError>(
        fmt::format("cannot compress a residual of {} dimensions to {}", m.cfg.d_model, k),
        llvm::inconvertibleErrorCode());
  CompressionInputs in = compressionInputs(m, opts);
  auto axes = residualAxes(m, in.fit);
  if (!axes) return axes.takeError();
  auto compressed = compressModel(m, *axes, k, opts.seed);
  if (!compressed) return compressed.takeError();
  auto result = measureVariant(m, *compressed, in.measure, opts);
  if (!result) return result.takeError();
  Variant v{std::move(*compressed), baseReport(m, "compressed", opts, in.exhaustive)};
  v.report.result = *result;
  v.report.span = axes->span;
  v.report.fitInputs = in.fit.size();
  return v;
}

llvm::Expected<Variant> searchCompression(const Model &m, const VariantOptions &opts) {
  const int d = m.cfg.d_model;
  if (d < 2)
    return llvm::make_error<llvm::StringError>(
        fmt::format("cannot compress a residual of {} dimension{}", d, d == 1 ? "" : "s"),
        llvm::inconvertibleErrorCode());
  CompressionInputs in = compressionInputs(m, opts);
  auto axes = residualAxes(m, in.fit);
  if (!axes) return axes.takeError();
  auto ref = reference(m, in.measure);
  if (!ref) return ref.takeError();
  VariantReport report = baseReport(m, "compressed", opts, in.exhaustive);
  report.searched = true;
  report.span = axes->span;
  report.fitInputs = in.fit.size();
  std::map<int, std::pair<Model, VariantMeasurement>> done;
  auto at = [&](int k) -> llvm::Expected<const VariantMeasurement *> {
    auto it = done.find(k);
    if (it != done.end()) return &it->second.second;
    auto variant = compressModel(m, *axes, k, opts.seed);
    if (!variant) return variant.takeError();
    auto r = measure(*ref, *variant, opts);
    if (!r) return r.takeError();
    report.tried.push_back(*r);
    auto ins = done.emplace(k, std::make_pair(std::move(*variant), *r)).first;
    return &ins->second.second;
  };
  // Invariant: hi is exact; every width below lo is taken not to be. The span is the
  // likely answer, so it is tried first.
  int k = d - 1;
  auto top = at(d - 1);
  if (!top) return top.takeError();
  if ((*top)->exact()) {
    int lo = 1, hi = d - 1;
    if (axes->span >= 1 && axes->span < hi) {
      auto s = at(axes->span);
      if (!s) return s.takeError();
      if ((*s)->exact())
        hi = axes->span;
      else
        lo = axes->span + 1;
    }
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      auto r = at(mid);
      if (!r) return r.takeError();
      if ((*r)->exact())
        hi = mid;
      else
        lo = mid + 1;
    }
    k = hi;
    if (k > 1) {
      auto below = at(k - 1);
      if (!below) return below.takeError();
      report.nextSmaller = **below;
    }
  }
  auto &chosen = done.at(k);
  report.result = chosen.second;
  return Variant{std::move(chosen.first), std::move(report)};
}

std::string VariantReport::json() const {
  std::string s = fmt::format(
      "{{\"kind\": \"{}\", \"from_d_model\": {}, \"d_model\": {}, \"labels\": {}, \"inputs\": {}, \"exhaustive\": {}, "
      "\"exact_inputs\": {}, \"accuracy\": {}, \"exact\": {}, \"max_logit_error\": {}, \"seed\": {}",
      kind, fromDModel, result.dModel, labels, result.inputs, exhaustive ? "true" : "false", result.exactInputs,
      jsonScalar(Scalar(result.accuracy)), result.exact() ? "true" : "false", jsonScalar(Scalar(result.maxLogitError)),
      seed);
  if (kind == "compressed") s += fmt::format(", \"span\": {}, \"fit_inputs\": {}", span, fitInputs);
  if (searched) {
    s += ", \"search\": {\"tried\": [";
    for (size_t i = 0; i < tried.size(); ++i) s += (i ? ", " : "") + measurementJson(tried[i]);
    s += "], \"next_smaller\": " + (nextSmaller ? measurementJson(*nextSmaller) : std::string("null")) + "}";
  }
  return s + "}";
}

std::string VariantReport::text() const {
  const std::string which = exhaustive ? fmt::format("all {} inputs", result.inputs)
                                       : fmt::format("{} random inputs (seed {})", result.inputs, seed);
  std::string s = fmt::format("{}: d_model {} -> {} ({} residual labels, basis seed {})\n", kind, fromDModel,
                              result.dModel, labels, seed);
  if (kind == "compressed")
    s += fmt::format("the residual states span {} dimensions (axes from {})\n", span,
                     exhaustive ? "the same inputs" : fmt::format("{} other random inputs", fitInputs));
  if (result.exact())
    s += fmt::format("exact on {} (outputs equal the original's; largest logit difference {:.3g})\n", which,
                     result.maxLogitError);
  else
    s += fmt::format("NOT exact: {} of {} agree with the original (accuracy {}; largest logit difference {:.3g})\n",
                     result.exactInputs, which, percent(result.accuracy), result.maxLogitError);
  if (searched) {
    if (nextSmaller)
      s += fmt::format("smallest exact width found: {}; at {}: {} of {} inputs agree (accuracy {})\n", result.dModel,
                       nextSmaller->dModel, nextSmaller->exactInputs, nextSmaller->inputs,
                       percent(nextSmaller->accuracy));
    else if (result.exact())
      s += fmt::format("smallest exact width found: {}\n", result.dModel);
    else
      s += fmt::format("no width below {} is exact on these inputs\n", fromDModel);
    std::string widths;
    for (const VariantMeasurement &t : tried)
      widths += fmt::format("{}{} ({})", widths.empty() ? "" : ", ", t.dModel, percent(t.accuracy));
    s += "widths tried: " + widths + "\n";
  }
  return s;
}

} // namespace raspc
