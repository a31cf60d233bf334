#include "suite/Exact.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>

namespace raspc {

std::string ExactResult::json() const {
  return fmt::format("{{\"inputs\": {}, \"equal\": {}, \"exhaustive\": {}, \"mismatches\": {}, \"rejected\": {}}}",
                     inputs, equal(), exhaustive ? "true" : "false", mismatches, rejected);
}

std::string ExactResult::describeMismatch() const {
  if (!firstMismatch) return "";
  const ExactMismatch &m = *firstMismatch;
  std::string in;
  for (auto &t : m.input) in += (in.empty() ? "" : " ") + t;
  std::string s = "mismatch on input \"" + in + "\"\n  interpreter: " + formatSequence(m.want, false) +
                  "\n  model:       " + formatSequence(m.got, false) + "\n";
  if (!m.firstDifference.empty()) s += m.firstDifference + "\n";
  return s;
}

namespace {

// The first s-op whose decoded value differs from the interpreter's on `input`, in
// model order: where a wrong output starts.
std::string firstDifference(Program &p, const Model &model, Interpreter &interp, Executor &exec,
                            const std::vector<std::string> &input) {
  std::string first;
  TraceFn fn = [&](int layer, const std::string &sub, const Eigen::MatrixXd &res, int) {
    if (!first.empty()) return;
    for (auto &[name, vals] : decodeNodes(model, res)) {
      for (auto &info : model.nodes) {
        if (nodeLabel(info) != name || info.writes.empty()) continue;
        bool placed = info.layer < layer || (info.layer == layer && (sub == "mlp" || info.sublayer == "attn"));
        if (!placed && info.sublayer != "embed") continue;
        if (auto err = interp.run(input, {ir::NodeId(info.id)})) {
          llvm::consumeError(std::move(err));
          continue;
        }
        if (!matchesInterpreter(vals, interp.sop(ir::NodeId(info.id))))
          first = fmt::format("  first difference: '{}' ({}, layer {} {}) at {}: interpreter {}, model {}", name,
                              info.kind, info.layer, info.sublayer, info.location.empty() ? "?" : info.location,
                              formatSequence(interp.sop(ir::NodeId(info.id)), false), formatSequence(vals, false));
      }
    }
  };
  std::vector<std::vector<std::string>> one = {input};
  if (auto out = exec.run(one, &fn); !out) llvm::consumeError(out.takeError());
  return first;
}

} // namespace

llvm::Expected<ExactResult> checkExact(Program &p, const Model &model, ir::NodeId output,
                                       const ProgramOptions &opts, Executor &exec, const ExactOptions &eo) {
  ExactResult r;
  const auto &vocab = *opts.vocab;
  const int N = *opts.maxLen;
  // Every input of every length up to N when there are at most a million.
  uint64_t total = 0;
  {
    uint64_t count = 1;
    for (int len = 1; len <= N && r.exhaustive; ++len) {
      if (count > 1'000'000 / std::max<size_t>(1, vocab.size())) r.exhaustive = false;
      count *= vocab.size();
      total += count;
      if (total > 1'000'000) r.exhaustive = false;
    }
  }
  if (!r.exhaustive) total = uint64_t(eo.samples);
  std::mt19937_64 rng(eo.seed);
  std::vector<size_t> digits;
  int len = 1;
  auto next = [&](std::vector<std::string> &seq) {
    if (!r.exhaustive) {
      std::uniform_int_distribution<int> L(1, N);
      std::uniform_int_distribution<size_t> T(0, vocab.size() - 1);
      seq.resize(size_t(L(rng)));
      for (auto &t : seq) t = vocab[T(rng)];
      return;
    }
    if (digits.size() != size_t(len)) digits.assign(size_t(len), 0);
    seq.resize(size_t(len));
    for (int i = 0; i < len; ++i) seq[size_t(i)] = vocab[digits[size_t(i)]];
    size_t i = 0;
    for (; i < digits.size(); ++i) {
      if (++digits[i] < vocab.size()) break;
      digits[i] = 0;
    }
    if (i == digits.size()) {
      ++len;
      digits.clear();
    }
  };
  Interpreter interp(p.graph(), p.interpreterOptions(opts));
  const size_t kBatch = 256;
  std::vector<std::vector<std::string>> batch;
  auto t0 = std::chrono::steady_clock::now();
  while (r.inputs < total) {
    batch.clear();
    while (batch.size() < kBatch && r.inputs + batch.size() < total) {
      std::vector<std::string> seq;
      next(seq);
      batch.push_back(std::move(seq));
    }
    auto outs = exec.run(batch);
    if (!outs) return outs.takeError();
    for (size_t b = 0; b < batch.size(); ++b) {
      if (auto err = interp.run(batch[b], {output})) {
        std::string msg;
        llvm::handleAllErrors(
            std::move(err), [&](const LocatedError &e) { msg = describeLoc(p.sourceMgr(), e.loc()) + ": " + e.message(); },
            [&](const llvm::ErrorInfoBase &e) { msg = e.message(); });
        if (r.rejected++ == 0) {
          for (auto &t : batch[b]) r.rejectedInput += (r.rejectedInput.empty() ? "" : " ") + t;
          r.rejectedError = msg;
        }
        continue;
      }
      const auto &want = interp.sop(output);
      if (matchesInterpreter((*outs)[b], want)) continue;
      if (++r.mismatches > 1) continue;
      r.firstMismatch = ExactMismatch{batch[b], want, (*outs)[b], ""};
      r.firstMismatch->firstDifference = firstDifference(p, model, interp, exec, batch[b]);
    }
    r.inputs += batch.size();
    if (eo.progress) eo.progress(r.inputs, total);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

} // namespace raspc
