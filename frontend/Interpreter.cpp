#include "frontend/Interpreter.h"

#include "frontend/Semantics.h"

#include <fmt/format.h>

#include <algorithm>

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
  case ir::TokenType::Bool:
    if (s == "True" || s == "true" || s == "1") return Scalar(true);
    if (s == "False" || s == "false" || s == "0") return Scalar(false);
    return std::nullopt;
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

llvm::Error Interpreter::run(llvm::ArrayRef<std::string> tokens, llvm::ArrayRef<NodeId> roots) {
  sops_.assign(g_.size(), {});
  sels_.assign(g_.size(), {});
  bool intTokens = opts_.intTokens ? *opts_.intTokens : allIntTokens(tokens);
  for (NodeId id : g_.reachable(std::vector<NodeId>(roots.begin(), roots.end())))
    if (auto err = evalNode(id, tokens, intTokens)) return err;
  return llvm::Error::success();
}

llvm::Error Interpreter::evalNode(NodeId id, llvm::ArrayRef<std::string> tokens, bool intTokens) {
  const ir::Node &node = g_[id];
  const size_t n = tokens.size();
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
    for (size_t i = 0; i < n; ++i) {
      for (size_t a = 0; a < k; ++a) args[a] = sops_[node.args[a]][i];
      OpResult r = applyOp(node.op, args, k, node.table.get());
      if (!r.ok) return fail(fmt::format("{} (at position {})", r.error, i));
      out[i] = std::move(r.value);
    }
    break;
  }
  case NodeKind::Select: {
    SelectorValue s{n, std::vector<uint8_t>(n * n)};
    const auto &keys = sops_[node.args[0]], &queries = sops_[node.args[1]];
    std::string error;
    for (size_t q = 0; q < n; ++q)
      for (size_t k = 0; k < n; ++k) {
        if (opts_.causal && k > q) continue;
        s.m[q * n + k] = selects(node.cmp, keys[k], queries[q], &error);
        if (!error.empty())
          return fail(fmt::format("{} (key position {}, query position {})", error, k, q));
      }
    sels_[id] = std::move(s);
    return llvm::Error::success();
  }
  case NodeKind::SelectAnd:
  case NodeKind::SelectOr:
  case NodeKind::SelectNot: {
    SelectorValue s{n, std::vector<uint8_t>(n * n)};
    const auto &a = sels_[node.args[0]];
    for (size_t q = 0; q < n; ++q)
      for (size_t k = 0; k < n; ++k) {
        size_t i = q * n + k;
        if (node.kind == NodeKind::SelectNot) s.m[i] = !(opts_.causal && k > q) && !a.m[i];
        else if (node.kind == NodeKind::SelectAnd) s.m[i] = a.m[i] && sels_[node.args[1]].m[i];
        else s.m[i] = a.m[i] || sels_[node.args[1]].m[i];
      }
    sels_[id] = std::move(s);
    return llvm::Error::success();
  }
  case NodeKind::Aggregate: {
    const SelectorValue &s = sels_[node.args[0]];
    const auto &vals = sops_[node.args[1]];
    for (size_t q = 0; q < n; ++q) {
      size_t count = 0, first = 0;
      double sum = 0;
      bool sawNone = false;
      for (size_t k = 0; k < n; ++k) {
        if (!s.at(q, k)) continue;
        if (count++ == 0) first = k;
        const Scalar &v = vals[k];
        if (isNone(v)) sawNone = true;
        else if (isNumber(v)) sum += toDouble(v);
      }
      if (count == 0) out[q] = node.value;
      else if (count == 1) out[q] = vals[first];
      else if (id < opts_.singleValued.size() && opts_.singleValued[id]) {
        for (size_t k = 0; k < n; ++k)
          if (s.at(q, k) && !(scalarEquals(vals[k], vals[first]) && vals[k].index() == vals[first].index()))
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
          if (s.at(q, k) && !isNumber(vals[k]))
            return fail(fmt::format("aggregate averages {} selected values at query position {}, but '{}' (key "
                                    "position {}) is a {}; only numbers can be averaged",
                                    count, q, formatScalar(vals[k]), k, scalarTypeName(vals[k])));
        out[q] = sum / double(count);
      }
    }
    break;
  }
  case NodeKind::SelectorWidth: {
    const SelectorValue &s = sels_[node.args[0]];
    for (size_t q = 0; q < n; ++q) {
      int64_t w = 0;
      for (size_t k = 0; k < n; ++k) w += s.at(q, k);
      out[q] = w;
    }
    break;
  }
  }
  sops_[id] = std::move(out);
  return llvm::Error::success();
}

} // namespace raspc
