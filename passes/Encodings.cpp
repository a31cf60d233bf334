// Encodings: how each s-op is stored in the residual stream, decided together with
// the value sets (each depends on the other: a mean has more values than what it
// averages).
//
// - Categorical (one direction per value) unless annotated numerical or inferred.
// - An aggregate is numerical when annotated, when it averages a numerical s-op with
//   a numeric default, or when it really averages different whole numbers: the categorical
//   aggregate check (run on inputs) finds such an aggregate, which is then made
//   numerical and the value sets recomputed. An aggregate that averages but cannot be
//   numerical (its values are not all numbers, or its default is None) keeps the
//   check's error, with what to write.
// - A map whose only users average it numerically is itself numerical: its MLP writes
//   the number directly, instead of one-hot directions and a conversion layer.
// Conversions where a use needs the other encoding are inserted by the lowering.
#include "passes/Passes.h"
#include "support/LocatedError.h"

#include <cmath>

namespace raspc::passes {

namespace {

void assignEncodings(Analysis &a, const std::vector<char> &averages) {
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    if (n.isSelector()) continue;
    ir::Encoding e = n.encoding;
    // A mean needs a numeric default (a number cannot hold None); without one the
    // values are copied one-hot instead, which keeps None.
    if (n.kind == ir::NodeKind::Aggregate && !isNone(n.value) &&
        (a.encoding[n.args[1]] == ir::Encoding::Numerical || averages[id]))
      e = ir::Encoding::Numerical;
    a.encoding[id] = e;
  }
}

// Whether an aggregate's mean is inferred numerical: its values are whole numbers, so
// every mean is sum / count computed exactly as the interpreter computes it (a mean of
// means could round differently, and a later comparison of it would disagree; those
// keep the annotation numerical(...)).
bool canAverage(const Analysis &a, ir::NodeId id) {
  const ir::Node &n = a.g[id];
  if (n.kind != ir::NodeKind::Aggregate || a.isNumerical(id)) return false;
  for (auto &v : a.values[n.args[1]])
    if (!isNumber(v) || std::round(toDouble(v)) != toDouble(v)) return false;
  // A selector comparing the mean itself would compare it one-hot over all its values
  // (and random programs found such comparisons disagreeing with the interpreter):
  // those keep the check's error, and the annotation.
  for (ir::NodeId u : a.users[id])
    if (a.g[u].kind == ir::NodeKind::Select) return false;
  return true;
}

// Maps read only as the values of numerical aggregates become numerical (see top).
void numericalMaps(Analysis &a) {
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    if (n.kind != ir::NodeKind::Map || a.isNumerical(id) || id == a.output || a.users[id].empty()) continue;
    bool onlyMeans = true;
    for (ir::NodeId u : a.users[id]) {
      const ir::Node &un = a.g[u];
      onlyMeans = onlyMeans && un.kind == ir::NodeKind::Aggregate && a.isNumerical(u) && un.args[0] != id;
    }
    if (!onlyMeans) continue;
    bool numbers = true;
    for (auto &v : a.values[id]) numbers = numbers && isNumber(v) && !std::holds_alternative<bool>(v);
    if (numbers) a.encoding[id] = ir::Encoding::Numerical;
  }
}

} // namespace

static llvm::Error settle(Analysis &a, bool &valuesKnown);

llvm::Error inferEncodings(Analysis &a) {
  bool valuesKnown = false;
  llvm::Error err = settle(a, valuesKnown);
  if (valuesKnown) warnCausalSelectors(a); // once, on the final value sets
  return err;
}

// Value sets and the check, until no aggregate changes encoding.
static llvm::Error settle(Analysis &a, bool &valuesKnown) {
  std::vector<char> averages(a.g.size(), 0);
  for (;;) {
    assignEncodings(a, averages);
    valuesKnown = false;
    if (auto err = inferValueSets(a)) return err;
    valuesKnown = true;
    llvm::Error err = checkCategoricalAggregates(a);
    if (!err) break;
    // The check names the aggregate by its location (a function called twice shares
    // one): every aggregate written there that could average becomes numerical.
    llvm::SMLoc loc;
    std::string witness; // "query position 0 selects 0 and 1, on input "a a""
    err = llvm::handleErrors(std::move(err), [&](std::unique_ptr<LocatedError> e) -> llvm::Error {
      loc = e->loc();
      std::string m = e->message();
      size_t q = m.find("(query position"), qe = m.find(')', q), in = m.rfind("(on input");
      if (q != std::string::npos && qe != std::string::npos && in != std::string::npos && m.back() == ')')
        witness = " (" + m.substr(q + 1, qe - q - 1) + ", " + m.substr(in + 1, m.size() - in - 2) + ")";
      return llvm::Error(std::move(e));
    });
    bool changed = false;
    for (ir::NodeId id : a.order)
      if (a.g[id].loc == loc && canAverage(a, id) && !averages[id]) {
        if (isNone(a.g[id].value)) {
          llvm::consumeError(std::move(err));
          return locatedError(loc, "this aggregate averages different numbers" + witness +
                                       ", so it is numerical, and a numerical aggregate needs a numeric default "
                                       "(a model has no None): write aggregate(sel, values, 0)");
        }
        averages[id] = 1;
        changed = true;
      }
    if (!changed) return err;
    llvm::consumeError(std::move(err));
  }
  numericalMaps(a);
  return llvm::Error::success();
}

} // namespace raspc::passes
