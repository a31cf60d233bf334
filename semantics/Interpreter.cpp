#include "semantics/Interpreter.h"

#include "semantics/Semantics.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

namespace raspc {

using ir::NodeId;
using ir::NodeKind;

bool isIntToken(const std::string &t) {
  size_t i = (!t.empty() && (t[0] == '-' || t[0] == '+')) ? 1 : 0;
  if (i >= t.size() || t.size() - i > 18) return false;
  for (; i < t.size(); ++i)
    if (t[i] < '0' || t[i] > '9') return false;
  return true;
}

std::vector<std::vector<std::string>> allInputs(const std::vector<std::string> &vocab, int maxLen, size_t limit) {
  std::vector<std::vector<std::string>> out, level = {{}};
  for (int len = 1; len <= maxLen && !vocab.empty(); ++len) {
    if (level.size() * vocab.size() > limit - std::min(limit, out.size())) break;
    std::vector<std::vector<std::string>> next;
    for (auto &s : level)
      for (auto &t : vocab) {
        next.push_back(s);
        next.back().push_back(t);
      }
    level = std::move(next);
    out.insert(out.end(), level.begin(), level.end());
  }
  return out;
}

bool allIntTokens(llvm::ArrayRef<std::string> tokens) {
  return !tokens.empty() && std::all_of(tokens.begin(), tokens.end(), isIntToken);
}

std::optional<Scalar> parseToken(const std::string &s, ir::TokenType type) {
  switch (type) {
  case ir::TokenType::Int:
    if (!isIntToken(s)) return std::nullopt;
    return Scalar(int64_t(std::strtoll(s.c_str(), nullptr, 10)));
  case ir::TokenType::Float: {
    char *end = nullptr;
    errno = 0;
    double d = std::strtod(s.c_str(), &end);
    if (s.empty() || *end || errno) return std::nullopt;
    return Scalar(d);
  }
  case ir::TokenType::Bool: {
    // A bool spelled out, else the token's truth as the original's bool(token) gives it:
    // a number is true when non-zero, any other (non-empty) string is true.
    if (s == "True" || s == "true") return Scalar(true);
    if (s == "False" || s == "false") return Scalar(false);
    char *end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && !*end) return Scalar(d != 0);
    return Scalar(!s.empty());
  }
  default: return Scalar(s);
  }
}

const char *typeWord(ir::TokenType type) {
  switch (type) {
  case ir::TokenType::Int: return "an integer";
  case ir::TokenType::Float: return "a number";
  case ir::TokenType::Bool: return "a bool";
  default: return "a string";
  }
}

SelectorRows::SelectorRows(const ir::Graph &g, NodeId sel, bool causal,
                           const std::map<NodeId, SelectorValue> *overrides)
    : g_(g), causal_(causal), overrides_(overrides && !overrides->empty() ? overrides : nullptr) {
  // The selectors `sel` is built from; an overridden one is a leaf.
  auto isOverridden = [&](NodeId id) { return overrides_ && overrides_->count(id); };
  if (!overrides_) {
    order_ = g.preorder(sel, [](const ir::Node &n) { return n.kind != NodeKind::Select; });
  } else {
    std::vector<NodeId> stack = {sel};
    std::unordered_set<NodeId> seen;
    while (!stack.empty()) {
      NodeId id = stack.back();
      stack.pop_back();
      if (!seen.insert(id).second) continue;
      order_.push_back(id);
      if (g[id].kind != NodeKind::Select && !isOverridden(id))
        for (NodeId a : g[id].args) stack.push_back(a);
    }
  }
  // Args have smaller ids: sorted ids are a topological order.
  std::sort(order_.begin(), order_.end());
  argSlots_.resize(order_.size());
  for (size_t i = 0; i < order_.size(); ++i) {
    const ir::Node &n = g[order_[i]];
    if (n.kind == NodeKind::Select || isOverridden(order_[i])) continue;
    for (size_t a = 0; a < n.args.size(); ++a)
      argSlots_[i][a] = size_t(std::lower_bound(order_.begin(), order_.end(), n.args[a]) - order_.begin());
  }
  rows_.resize(order_.size());
}

const std::vector<uint8_t> &SelectorRows::row(size_t q, size_t n, const std::vector<std::vector<Scalar>> &sops) {
  // Under the causal meaning keys after the query are never selected.
  size_t visible = causal_ ? std::min(n, q + 1) : n;
  for (size_t i = 0; i < order_.size(); ++i) {
    const ir::Node &node = g_[order_[i]];
    std::vector<uint8_t> &r = rows_[i];
    r.assign(n, 0);
    if (overrides_) {
      auto it = overrides_->find(order_[i]);
      if (it != overrides_->end()) {
        // Sizes were checked by Interpreter::run.
        for (size_t k = 0; k < visible && k < it->second.n; ++k) r[k] = it->second.at(q, k);
        continue;
      }
    }
    switch (node.kind) {
    case NodeKind::Select: {
      // Type errors were reported when the select itself was evaluated.
      const auto &keys = sops[node.args[0]];
      const Scalar &qv = sops[node.args[1]][q];
      for (size_t k = 0; k < visible; ++k) r[k] = selects(node, keys[k], qv);
      break;
    }
    case NodeKind::SelectNot: {
      const auto &a = rows_[argSlots_[i][0]];
      for (size_t k = 0; k < visible; ++k) r[k] = !a[k];
      break;
    }
    default: {
      const auto &a = rows_[argSlots_[i][0]], &b = rows_[argSlots_[i][1]];
      bool isAnd = node.kind == NodeKind::SelectAnd;
      for (size_t k = 0; k < n; ++k) r[k] = isAnd ? (a[k] && b[k]) : (a[k] || b[k]);
    }
    }
  }
  return rows_.back();
}

SelectorValue Interpreter::selector(NodeId id) const {
  SelectorValue s{n_, std::vector<uint8_t>(n_ * n_)};
  SelectorRows rows(g_, id, opts_.causal, &opts_.selectorOverrides);
  for (size_t q = 0; q < n_; ++q) {
    const auto &r = rows.row(q, n_, sops_);
    std::copy(r.begin(), r.end(), s.m.begin() + ptrdiff_t(q * n_));
  }
  return s;
}

llvm::Error Interpreter::run(llvm::ArrayRef<std::string> tokens, llvm::ArrayRef<NodeId> roots) {
  sops_.assign(g_.size(), {});
  fails_.assign(g_.size(), {});
  failures_.clear();
  n_ = tokens.size();
  bool intTokens = opts_.intTokens ? *opts_.intTokens : allIntTokens(tokens);
  for (auto &[id, v] : opts_.sopOverrides)
    if (id >= g_.size() || g_[id].isSelector() || v.size() != n_)
      return llvm::make_error<llvm::StringError>(
          fmt::format("override of node {}: {}", id,
                      id >= g_.size() || g_[id].isSelector() ? "not an s-op of the graph"
                                                             : fmt::format("{} values for an input of length {}", v.size(), n_)),
          llvm::inconvertibleErrorCode());
  for (auto &[id, v] : opts_.selectorOverrides)
    if (id >= g_.size() || !g_[id].isSelector() || v.n != n_ || v.m.size() != n_ * n_)
      return llvm::make_error<llvm::StringError>(
          fmt::format("override of node {}: {}", id,
                      id >= g_.size() || !g_[id].isSelector() ? "not a selector of the graph"
                                                              : fmt::format("a {0} x {0} matrix for an input of length {1}", v.n, n_)),
          llvm::inconvertibleErrorCode());
  for (auto &[id, v] : opts_.attendOverrides)
    if (id >= g_.size() || (g_[id].kind != NodeKind::Aggregate && g_[id].kind != NodeKind::SelectorWidth) ||
        v.n != n_ || v.m.size() != n_ * n_)
      return llvm::make_error<llvm::StringError>(
          fmt::format("override of node {}: {}", id,
                      id >= g_.size() || (g_[id].kind != NodeKind::Aggregate && g_[id].kind != NodeKind::SelectorWidth)
                          ? "not an aggregate or selector width of the graph"
                          : fmt::format("a {0} x {0} matrix for an input of length {1}", v.n, n_)),
          llvm::inconvertibleErrorCode());
  for (NodeId id : g_.reachable(std::vector<NodeId>(roots.begin(), roots.end())))
    if (auto err = evalNode(id, tokens, intTokens)) return err;
  for (NodeId r : roots)
    if (auto err = checkFailures(r)) return err;
  return llvm::Error::success();
}

std::optional<std::map<NodeId, SelectorValue>> Interpreter::attendOverrides(NodeId id) const {
  auto it = opts_.attendOverrides.find(id);
  if (it == opts_.attendOverrides.end()) return std::nullopt;
  // The reader's selector, as a leaf holding the given matrix.
  return std::map<NodeId, SelectorValue>{{g_[id].args[0], it->second}};
}

llvm::Error Interpreter::checkFailures(NodeId id) const {
  for (int32_t f : fails_[id])
    if (f >= 0) return locatedError(failures_[size_t(f)].loc, failures_[size_t(f)].message);
  return llvm::Error::success();
}

// What a comparison's type error depends on: None never fails, numbers compare with
// numbers and strings with strings.
static int typeClass(const Scalar &v) { return isNone(v) ? 0 : isNumber(v) ? 1 : 2; }

llvm::Error Interpreter::evalNode(NodeId id, llvm::ArrayRef<std::string> tokens, bool intTokens) {
  const ir::Node &node = g_[id];
  const size_t n = tokens.size();
  if (auto it = opts_.sopOverrides.find(id); it != opts_.sopOverrides.end()) {
    sops_[id] = it->second; // an intervention: no failures, whatever computed it before
    return llvm::Error::success();
  }
  if (opts_.selectorOverrides.count(id)) return llvm::Error::success(); // nothing to type-check
  auto fail = [&](const std::string &msg) { return locatedError(node.loc, msg); };
  std::vector<Scalar> out(node.isSelector() ? 0 : n);
  switch (node.kind) {
  case NodeKind::Tokens: {
    ir::TokenType t = node.tokenType;
    if (t == ir::TokenType::Auto) t = intTokens ? ir::TokenType::Int : ir::TokenType::Str;
    for (size_t i = 0; i < n; ++i) {
      auto v = parseToken(tokens[i], t);
      if (!v)
        return fail(fmt::format("input token '{}' at position {} is not {} ({})", tokens[i], i, typeWord(t),
                                ir::tokenTypeName(node.tokenType)));
      out[i] = std::move(*v);
    }
    break;
  }
  case NodeKind::Indices:
    for (size_t i = 0; i < n; ++i) out[i] = int64_t(i);
    break;
  case NodeKind::Length:
    // Under the causal meaning a position sees only the prefix up to itself.
    for (size_t i = 0; i < n; ++i) out[i] = int64_t(opts_.causal ? i + 1 : n);
    break;
  case NodeKind::Constant:
    for (size_t i = 0; i < n; ++i) out[i] = node.value;
    break;
  case NodeKind::Map: {
    Scalar args[3];
    size_t k = node.args.size();
    std::vector<int32_t> failed;
    auto failedAt = [&](NodeId x, size_t i) { return fails_[x].empty() ? -1 : fails_[x][i]; };
    for (size_t i = 0; i < n; ++i) {
      // A failed input fails the result, except a branch the condition does not choose.
      int32_t f = -1;
      if (node.op == ir::MapOp::IfElse) {
        f = failedAt(node.args[1], i);
        const Scalar &c = sops_[node.args[1]][i];
        if (f < 0 && !isNone(c)) f = failedAt(node.args[scalarTruthy(c) ? 0 : 2], i);
      } else {
        for (size_t a = 0; a < k && f < 0; ++a) f = failedAt(node.args[a], i);
      }
      if (f < 0) {
        for (size_t a = 0; a < k; ++a) args[a] = sops_[node.args[a]][i];
        OpResult r = applyOp(node.op, args, k, node.table.get());
        if (r.ok) {
          out[i] = std::move(r.value);
          continue;
        }
        f = int32_t(failures_.size());
        failures_.push_back({node.loc, fmt::format("{} (at position {})", r.error, i)});
      }
      failed.resize(n, -1);
      failed[i] = f;
    }
    fails_[id] = std::move(failed);
    break;
  }
  case NodeKind::Select: {
    // Nothing is stored (aggregates compute their rows); only the first type error,
    // in (query, key) order, is looked for. Whether a comparison fails depends only on
    // the operands' type classes, so the first key of each class stands for all: O(n).
    for (NodeId x : node.args)
      if (auto err = checkFailures(x)) return err;
    const auto &keys = sops_[node.args[0]], &queries = sops_[node.args[1]];
    if (node.cmp == ir::Comparison::Fn) { // a predicate can fail on any values: every pair
      for (size_t q = 0; q < n; ++q)
        for (size_t k = 0; k < n && !(opts_.causal && k > q); ++k) {
          std::string error;
          selects(node, keys[k], queries[q], &error);
          if (!error.empty()) return fail(fmt::format("{} (key position {}, query position {})", error, k, q));
        }
      return llvm::Error::success();
    }
    size_t first[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    for (size_t k = n; k-- > 0;) first[typeClass(keys[k])] = k;
    for (size_t q = 0; q < n; ++q) {
      size_t bad = SIZE_MAX;
      for (size_t k : first)
        if (k != SIZE_MAX && !(opts_.causal && k > q)) {
          std::string error;
          selects(node, keys[k], queries[q], &error);
          if (!error.empty()) bad = std::min(bad, k);
        }
      if (bad == SIZE_MAX) continue;
      std::string error;
      selects(node, keys[bad], queries[q], &error);
      return fail(fmt::format("{} (key position {}, query position {})", error, bad, q));
    }
    return llvm::Error::success();
  }
  case NodeKind::SelectAnd:
  case NodeKind::SelectOr:
  case NodeKind::SelectNot: return llvm::Error::success(); // computed row by row where used
  case NodeKind::Aggregate: {
    if (auto err = checkFailures(node.args[1])) return err;
    auto rowsOverrides = attendOverrides(id);
    SelectorRows rows(g_, node.args[0], opts_.causal, rowsOverrides ? &*rowsOverrides : &opts_.selectorOverrides);
    const auto &vals = sops_[node.args[1]];
    for (size_t q = 0; q < n; ++q) {
      const auto &row = rows.row(q, n, sops_);
      size_t count = 0, first = 0;
      double sum = 0;
      bool sawNone = false;
      for (size_t k = 0; k < n; ++k) {
        if (!row[k]) continue;
        if (count++ == 0) first = k;
        const Scalar &v = vals[k];
        if (isNone(v)) sawNone = true;
        else if (isNumber(v)) sum += toDouble(v);
      }
      if (count == 0) out[q] = node.value;
      else if (count == 1) out[q] = vals[first];
      else if (id < opts_.singleValued.size() && opts_.singleValued[id]) {
        for (size_t k = 0; k < n; ++k)
          if (row[k] && !(scalarEquals(vals[k], vals[first]) && vals[k].index() == vals[first].index()))
            return fail(fmt::format("this aggregate can average different values (query position {} selects {} "
                                    "and {}), which a categorical s-op cannot hold; make the selector pick one "
                                    "position (or positions with equal values), or average numbers with "
                                    "numerical(aggregate(...))",
                                    q, formatScalar(vals[first], true), formatScalar(vals[k], true)));
        out[q] = vals[first];
      }
      else if (sawNone) out[q] = Scalar{};
      else {
        for (size_t k = 0; k < n; ++k)
          if (row[k] && !isNumber(vals[k]))
            return fail(fmt::format("aggregate averages {} selected values at query position {}, but '{}' (key "
                                    "position {}) is a {}; only numbers can be averaged",
                                    count, q, formatScalar(vals[k]), k, scalarTypeName(vals[k])));
        out[q] = sum / double(count);
      }
    }
    break;
  }
  case NodeKind::SelectorWidth: {
    auto rowsOverrides = attendOverrides(id);
    SelectorRows rows(g_, node.args[0], opts_.causal, rowsOverrides ? &*rowsOverrides : &opts_.selectorOverrides);
    for (size_t q = 0; q < n; ++q) {
      const auto &row = rows.row(q, n, sops_);
      int64_t w = 0;
      for (size_t k = 0; k < n; ++k) w += row[k];
      out[q] = w;
    }
    break;
  }
  }
  sops_[id] = std::move(out);
  return llvm::Error::success();
}

} // namespace raspc
