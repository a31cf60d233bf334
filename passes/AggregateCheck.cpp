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
#include <unordered_set>

namespace raspc::passes {

// Interpreter work (see `cost` below) the whole check may take: about a second.
static constexpr size_t kCheckBudget = size_t(1) << 25;

// Whether some `and` factor of the selector matches indices with ==. An explicit
// stack: and-chains can be long.
static bool atMostOne(const Analysis &a, ir::NodeId sel) {
  std::vector<ir::NodeId> stack = {sel};
  std::unordered_set<ir::NodeId> seen;
  while (!stack.empty()) {
    ir::NodeId x = stack.back();
    stack.pop_back();
    if (!seen.insert(x).second) continue;
    const ir::Node &s = a.g[x];
    if (s.kind == ir::NodeKind::SelectAnd) stack.insert(stack.end(), s.args.begin(), s.args.end());
    else if (s.kind == ir::NodeKind::Select && s.cmp == ir::Comparison::Eq &&
             a.g[s.args[0]].kind == ir::NodeKind::Indices)
      return true;
  }
  return false;
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
  // The interpreter's work on an input of length L: L per s-op, L^2 per node that
  // reads a selector row by row (and per select, which checks its operands). A
  // budget, not N, bounds the whole check, so that a large --max-len cannot hang it.
  size_t perToken = 0, perPair = 0;
  for (ir::NodeId id : a.g.reachable(roots)) {
    ir::NodeKind k = a.g[id].kind;
    ++perToken;
    if (k == ir::NodeKind::Aggregate || k == ir::NodeKind::SelectorWidth || a.g[id].isSelector()) ++perPair;
  }
  auto cost = [&](size_t len) { return len * perToken + len * len * perPair; };
  size_t budget = kCheckBudget;
  // Every input while there are few (an exact check for short inputs), then random
  // ones up to the maximum length, or as long as the budget allows.
  std::vector<std::vector<std::string>> inputs;
  for (auto &in : allInputs(vocab, N, 256)) {
    if (cost(in.size()) > budget) break;
    budget -= cost(in.size());
    inputs.push_back(std::move(in));
  }
  constexpr int kRandom = 32;
  size_t longest = size_t(N);
  while (longest > 0 && cost(longest) > budget / kRandom) longest = longest * 3 / 4;
  std::mt19937 rng(12345);
  for (int i = 0; i < kRandom && longest > 0; ++i) {
    size_t lo = longest / 2 + 1;
    std::vector<std::string> s(lo + rng() % (longest - lo + 1));
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
