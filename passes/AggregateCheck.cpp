// A categorical aggregate stores its value one-hot, so it is exact only when each
// query selects one position, or positions holding the same value. Selectors that
// match indices with == select at most one key; for the others, the interpreter runs
// on every short input (and some long random ones) with a check that fails where a
// query would average different values. A failure is a compile error at the
// aggregate, with the input that shows it.
//
// The same runs find programs that fail on an allowed input (a division by zero no
// conditional guards, averaging strings): a model would silently emit None there, so
// that is a compile error too, with the failing input as a witness.
#include "passes/Passes.h"
#include "semantics/Interpreter.h"
#include "semantics/Semantics.h"
#include "support/LocatedError.h"

#include <algorithm>
#include <functional>
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

// Three-valued truth of a selector formula at one (query, key) pair.
enum class Maybe : uint8_t { No, Yes, Unknown };

// Whether some key after its query can be selected: the selector then means something
// else under --causal. S-ops computed from indices, length and constants alone have a
// known value at each position (for each length); any other s-op can hold any value
// of its value set anywhere. Each select is Yes, No or Unknown at a (query, key) pair,
// the and/or/not formula combines them three-valued, and a pair k > q that is not No
// answers yes. `budget` bounds the pairs looked at; past it, answer yes.
static bool canSelectLater(const Analysis &a, ir::NodeId sel, size_t &budget) {
  const ir::Graph &g = a.g;
  std::vector<ir::NodeId> nodes = g.preorder(sel, [](const ir::Node &n) { return n.kind != ir::NodeKind::Select; });
  std::sort(nodes.begin(), nodes.end()); // args first
  auto slot = [&](ir::NodeId x) { return size_t(std::lower_bound(nodes.begin(), nodes.end(), x) - nodes.begin()); };
  auto positional = [&](ir::NodeId x) {
    for (ir::NodeId y : g.preorder(x, [](const ir::Node &) { return true; })) {
      ir::NodeKind k = g[y].kind;
      if (k != ir::NodeKind::Indices && k != ir::NodeKind::Length && k != ir::NodeKind::Constant &&
          k != ir::NodeKind::Map)
        return false;
    }
    return true;
  };
  // Selects with an s-op of unknown position: Yes/No/Unknown over the value sets, once.
  std::vector<ir::NodeId> posRoots;
  std::vector<Maybe> fixed(nodes.size(), Maybe::Unknown);
  std::vector<char> byPosition(nodes.size(), 0);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const ir::Node &n = g[nodes[i]];
    if (n.kind != ir::NodeKind::Select) continue;
    if (positional(n.args[0]) && positional(n.args[1])) {
      byPosition[i] = 1;
      posRoots.insert(posRoots.end(), n.args.begin(), n.args.end());
      continue;
    }
    bool yes = false, no = false;
    for (const Scalar &kv : a.values[n.args[0]])
      for (const Scalar &qv : a.values[n.args[1]]) (selects(n, kv, qv) ? yes : no) = true;
    fixed[i] = yes && no ? Maybe::Unknown : yes ? Maybe::Yes : Maybe::No;
  }
  auto eval = [&](const std::function<Maybe(size_t)> &atom) {
    std::vector<Maybe> v(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i) {
      const ir::Node &n = g[nodes[i]];
      switch (n.kind) {
      case ir::NodeKind::Select: v[i] = atom(i); break;
      case ir::NodeKind::SelectNot: {
        Maybe x = v[slot(n.args[0])];
        v[i] = x == Maybe::Unknown ? x : x == Maybe::Yes ? Maybe::No : Maybe::Yes;
        break;
      }
      default: {
        Maybe x = v[slot(n.args[0])], y = v[slot(n.args[1])];
        Maybe absorb = n.kind == ir::NodeKind::SelectAnd ? Maybe::No : Maybe::Yes;
        v[i] = x == absorb || y == absorb ? absorb : x == Maybe::Unknown || y == Maybe::Unknown ? Maybe::Unknown : x;
      }
      }
    }
    return v.back();
  };
  if (posRoots.empty()) return eval([&](size_t i) { return fixed[i]; }) != Maybe::No && a.opts.maxLen > 1;
  // The interpreter gives the positional s-ops' values for each length (their values
  // do not depend on the tokens; the non-causal meaning, which is what could differ).
  InterpreterOptions io;
  io.intTokens = allIntTokens(a.opts.vocab);
  Interpreter interp(g, io);
  for (size_t n = 2; n <= size_t(a.opts.maxLen); ++n) {
    if (budget < n * n) return true;
    budget -= n * n;
    std::vector<std::string> in(n, a.opts.vocab[0]);
    bool known = true;
    if (auto err = interp.run(in, posRoots)) {
      llvm::consumeError(std::move(err)); // a positional s-op fails at this length: assume anything
      known = false;
    }
    for (size_t q = 0; q < n; ++q)
      for (size_t k = q + 1; k < n; ++k) {
        Maybe m = eval([&](size_t i) {
          if (!byPosition[i]) return fixed[i];
          if (!known) return Maybe::Unknown;
          const ir::Node &s = g[nodes[i]];
          return selects(s, interp.sop(s.args[0])[k], interp.sop(s.args[1])[q]) ? Maybe::Yes : Maybe::No;
        });
        if (m != Maybe::No) return true;
      }
  }
  return false;
}

void warnCausalSelectors(const Analysis &a) {
  if (!a.opts.causal || !a.opts.warn) return;
  size_t budget = size_t(1) << 22;
  std::unordered_set<ir::NodeId> warned;
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    if (n.kind != ir::NodeKind::Aggregate && n.kind != ir::NodeKind::SelectorWidth) continue;
    if (!warned.insert(n.args[0]).second || !canSelectLater(a, n.args[0], budget)) continue;
    a.opts.warn(a.g[n.args[0]].loc, "under --causal this selector cannot see later positions, which it may select "
                                    "(the compiled model computes the causal meaning)");
  }
}

llvm::Error checkCategoricalAggregates(const Analysis &a) {
  // Every run also evaluates the output, to find inputs on which the program fails.
  InterpreterOptions io;
  io.causal = a.opts.causal;
  io.intTokens = allIntTokens(a.opts.vocab);
  io.singleValued.assign(a.g.size(), 0);
  std::vector<ir::NodeId> roots = {a.output};
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    if (n.kind != ir::NodeKind::Aggregate || a.isNumerical(id)) continue;
    if (a.values[n.args[1]].size() < 2 || atMostOne(a, n.args[0])) continue;
    io.singleValued[id] = 1;
    roots.push_back(id);
  }
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
    for (size_t r = 1; r < roots.size(); ++r) atAggregate = atAggregate || a.g[roots[r]].loc == loc;
    std::string text;
    for (auto &t : in) text += (text.empty() ? "" : " ") + t;
    if (atAggregate) return locatedError(loc, msg + " (on input \"" + text + "\")");
    return locatedError(loc, msg + " on the allowed input \"" + text +
                                 "\", where a compiled model would have no value; guard it with a conditional "
                                 "(`x if c else y` computes only the chosen branch) or narrow the vocabulary");
  }
  return llvm::Error::success();
}

} // namespace raspc::passes
