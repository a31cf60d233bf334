// A categorical aggregate stores its value one-hot, so it is exact only when each
// query selects one position, or positions holding the same value. Selectors that
// match indices with == select at most one key; for the others, the interpreter runs
// on every short input (and some long random ones) with a check that fails where a
// query would average different values. A failure is a compile error at the
// aggregate, with the input that shows it.
#include "frontend/Diagnostics.h"
#include "frontend/Interpreter.h"
#include "passes/Passes.h"

#include <random>

namespace raspc::passes {

static bool atMostOne(const Analysis &a, ir::NodeId sel) {
  const ir::Node &s = a.g[sel];
  if (s.kind == ir::NodeKind::SelectAnd)
    return atMostOne(a, s.args[0]) || atMostOne(a, s.args[1]);
  return s.kind == ir::NodeKind::Select && s.cmp == ir::Comparison::Eq &&
         a.g[s.args[0]].kind == ir::NodeKind::Indices;
}

llvm::Error checkCategoricalAggregates(const Analysis &a) {
  InterpreterOptions io;
  io.causal = a.opts.causal;
  io.intTokens = allIntTokens(a.opts.vocab);
  io.singleValued.assign(a.g.size(), 0);
  std::vector<ir::NodeId> roots;
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    if (n.kind != ir::NodeKind::Aggregate || a.isNumerical(id)) continue;
    if (a.values[n.args[1]].size() < 2 || atMostOne(a, n.args[0])) continue;
    io.singleValued[id] = 1;
    roots.push_back(id);
  }
  if (roots.empty()) return llvm::Error::success();
  const auto &vocab = a.opts.vocab;
  const int N = a.opts.maxLen;
  // Every input while there are few, then random ones up to the maximum length.
  std::vector<std::vector<std::string>> inputs = allInputs(vocab, N, 256);
  std::mt19937 rng(12345);
  for (int i = 0; i < 32; ++i) {
    std::vector<std::string> s(size_t(N / 2 + 1 + int(rng() % unsigned(N - N / 2))));
    for (auto &t : s) t = vocab[rng() % vocab.size()];
    inputs.push_back(std::move(s));
  }
  Interpreter interp(a.g, io);
  for (auto &in : inputs) {
    llvm::Error err = interp.run(in, roots);
    if (!err) continue;
    llvm::SMLoc loc;
    std::string msg;
    llvm::handleAllErrors(std::move(err), [&](const LocatedError &e) {
      loc = e.loc();
      msg = e.message();
    }, [](const llvm::ErrorInfoBase &) {});
    bool atAggregate = false;
    for (ir::NodeId r : roots) atAggregate = atAggregate || a.g[r].loc == loc;
    if (!atAggregate) continue; // some other input-dependent error (e.g. a division by zero)
    std::string text;
    for (auto &t : in) text += (text.empty() ? "" : " ") + t;
    return locatedError(loc, msg + " (on input \"" + text + "\")");
  }
  return llvm::Error::success();
}

} // namespace raspc::passes
