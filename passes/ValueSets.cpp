// Value sets: the exact finite set of values each s-op can take for the vocabulary
// and maximum length. One pass in topological order, so a shared subexpression is
// visited once. Maps apply their operation to every combination of input values
// (combinations that fail, like a division by zero, are left out); a numerical
// aggregate can produce the mean of any multiset of 1..N of its input's values.
#include "passes/Passes.h"
#include "semantics/Interpreter.h"
#include "semantics/Semantics.h"
#include "support/LocatedError.h"

#include <cmath>
#include <cstdlib>
#include <set>

namespace raspc::passes {

static constexpr size_t kMaxValues = 20000;
// A numerical s-op is one direction whatever its value set: its values only place the
// steps of the MLPs that read it (where their output changes), so it may take many
// more (a difference of two fractions at N=64: 1.6 million).
static constexpr size_t kMaxNumericalValues = 2'000'000;
// Argument combinations a map's value set may enumerate (about a second).
static constexpr size_t kMaxMapCombinations = 4'000'000;

static llvm::Error tooMany(const ir::Node &n, size_t count, size_t limit = kMaxValues) {
  return locatedError(n.loc, "this s-op can take more than " + std::to_string(limit) +
                                 " values (" + std::to_string(count) +
                                 " or more); a compiled model needs a small value set: reduce the vocabulary or "
                                 "the maximum length, or simplify the computation");
}

static llvm::Expected<std::vector<Scalar>> tokenValues(const Analysis &a, const ir::Node &n) {
  ir::TokenType t = n.tokenType;
  if (t == ir::TokenType::Auto) t = allIntTokens(a.opts.vocab) ? ir::TokenType::Int : ir::TokenType::Str;
  std::vector<Scalar> out;
  for (auto &v : a.opts.vocab) {
    auto x = parseToken(v, t);
    if (!x)
      return locatedError(n.loc, "vocabulary item '" + v + "' is not " + typeWord(t) + " (" +
                                     ir::tokenTypeName(n.tokenType) + ")");
    out.push_back(std::move(*x));
  }
  return sortedUnique(std::move(out));
}

// All means of multisets of size 1..N drawn from `vals` (numbers only).
static llvm::Expected<std::vector<Scalar>> meanValues(const ir::Node &n, const std::vector<Scalar> &vals, int N) {
  std::vector<double> xs;
  for (auto &v : vals)
    if (isNumber(v)) xs.push_back(toDouble(v));
  std::set<double> sums = {0.0}, means;
  for (int k = 1; k <= N; ++k) {
    std::set<double> next;
    for (double s : sums)
      for (double x : xs) next.insert(s + x);
    if (next.size() > kMaxValues) return tooMany(n, next.size());
    sums = std::move(next);
    for (double s : sums) {
      double m = s / k;
      // Keep sums of integers exact: 2/3 must be one value, however it was reached.
      means.insert(m);
    }
    if (means.size() > kMaxValues) return tooMany(n, means.size());
  }
  std::vector<Scalar> out;
  for (double m : means) {
    bool dup = !out.empty() && std::fabs(toDouble(out.back()) - m) <= 1e-12 * std::max(1.0, std::fabs(m));
    if (!dup) out.push_back(m);
    // One value reached two ways (1.0 and 0.9999999999999999): keep the whole number,
    // which is what the interpreter's sums give, so that maps like `x == 1` are
    // evaluated at the value the model holds.
    else if (std::round(m) == m && std::round(toDouble(out.back())) != toDouble(out.back())) out.back() = m;
  }
  return out;
}

llvm::Error inferValueSets(Analysis &a) {
  const int N = a.opts.maxLen;
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    std::vector<Scalar> out;
    switch (n.kind) {
    case ir::NodeKind::Tokens: {
      auto v = tokenValues(a, n);
      if (!v) return v.takeError();
      out = std::move(*v);
      break;
    }
    case ir::NodeKind::Indices:
      for (int i = 0; i < N; ++i) out.push_back(int64_t(i));
      break;
    case ir::NodeKind::Length:
      for (int i = 1; i <= N; ++i) out.push_back(int64_t(i));
      break;
    case ir::NodeKind::SelectorWidth:
      for (int i = 0; i <= N; ++i) out.push_back(int64_t(i));
      break;
    case ir::NodeKind::Constant: out.push_back(n.value); break;
    case ir::NodeKind::Map: {
      if (n.op == ir::MapOp::IfElse) {
        // Each condition value takes the values of the branch it chooses, and only
        // those: the other branch may fail there (or never have a value at all).
        for (ir::NodeId x : n.args) a.canFail[id] = a.canFail[id] || a.canFail[x];
        for (const Scalar &c : a.values[n.args[1]]) {
          if (isNone(c)) out.push_back(Scalar{});
          else {
            const auto &branch = a.values[n.args[scalarTruthy(c) ? 0 : 2]];
            out.insert(out.end(), branch.begin(), branch.end());
          }
        }
        out = sortedUnique(std::move(out));
        break;
      }
      // Every combination of argument values.
      std::vector<const std::vector<Scalar> *> args;
      size_t combos = 1;
      for (ir::NodeId x : n.args) {
        args.push_back(&a.values[x]);
        combos *= std::max<size_t>(1, a.values[x].size());
        if (combos > kMaxMapCombinations)
          return tooMany(n, combos, a.isNumerical(id) ? kMaxNumericalValues : kMaxValues);
      }
      for (ir::NodeId x : n.args) a.canFail[id] = a.canFail[id] || a.canFail[x];
      std::vector<size_t> idx(args.size(), 0);
      Scalar buf[3];
      for (size_t c = 0; c < combos; ++c) {
        bool empty = false;
        for (size_t i = 0; i < args.size(); ++i) {
          if (args[i]->empty()) { empty = true; break; }
          buf[i] = (*args[i])[idx[i]];
        }
        if (!empty) {
          OpResult r = applyOp(n.op, buf, args.size(), n.table.get());
          if (r.ok) out.push_back(std::move(r.value));
          else if (r.hostFailure) return locatedError(n.loc, r.error);
          else a.canFail[id] = 1;
        }
        for (size_t i = 0; i < idx.size(); ++i) {
          if (++idx[i] < std::max<size_t>(1, args[i]->size())) break;
          idx[i] = 0;
        }
      }
      out = sortedUnique(std::move(out));
      if (size_t limit = a.isNumerical(id) ? kMaxNumericalValues : kMaxValues; out.size() > limit)
        return tooMany(n, out.size(), limit);
      break;
    }
    case ir::NodeKind::Aggregate: {
      const auto &vals = a.values[n.args[1]];
      if (a.isNumerical(id)) {
        auto m = meanValues(n, vals, N);
        if (!m) return m.takeError();
        out = std::move(*m);
      } else {
        out = vals;
      }
      out.push_back(n.value); // the default (None when omitted)
      out = sortedUnique(std::move(out));
      break;
    }
    default: continue; // selectors have no value set
    }
    if (a.isNumerical(id)) {
      // A numerical s-op is one number per position: None cannot be stored.
      std::vector<Scalar> nums;
      for (auto &v : out) {
        if (isNone(v)) {
          if (n.kind == ir::NodeKind::Aggregate) continue; // the lowering asks for a numeric default
          return locatedError(n.loc, "this s-op is numerical but can be None (from an input that can be None); "
                                     "a number cannot hold None: keep it categorical, or give the aggregate "
                                     "it comes from a default");
        }
        if (!isNumber(v))
          return locatedError(n.loc, "this s-op is numerical but can take the non-numeric value " +
                                         formatScalar(v, true) + "; keep it categorical");
        // One number per value: 2 and 2.0 are one point on the line.
        if (nums.empty() || !scalarEquals(nums.back(), v)) nums.push_back(v);
      }
      out = std::move(nums);
    }
    a.values[id] = std::move(out);
  }
  return llvm::Error::success();
}

} // namespace raspc::passes
