#include "ir/Graph.h"

#include <fmt/format.h>

#include <atomic>
#include <unordered_set>

#include <algorithm>

namespace raspc::ir {

const char *kindName(NodeKind k) {
  switch (k) {
  case NodeKind::Tokens: return "tokens";
  case NodeKind::Indices: return "indices";
  case NodeKind::Length: return "length";
  case NodeKind::Constant: return "constant";
  case NodeKind::Map: return "map";
  case NodeKind::Select: return "select";
  case NodeKind::SelectAnd: return "select_and";
  case NodeKind::SelectOr: return "select_or";
  case NodeKind::SelectNot: return "select_not";
  case NodeKind::Aggregate: return "aggregate";
  case NodeKind::SelectorWidth: return "selector_width";
  }
  return "?";
}

const char *opName(MapOp op) {
  switch (op) {
  case MapOp::None: return "?";
  case MapOp::Neg: return "-";
  case MapOp::Pos: return "+";
  case MapOp::Not: return "not";
  case MapOp::Round: return "round";
  case MapOp::Indicator: return "indicator";
  case MapOp::Add: return "+";
  case MapOp::Sub: return "-";
  case MapOp::Mul: return "*";
  case MapOp::Div: return "/";
  case MapOp::Mod: return "%";
  case MapOp::Pow: return "^";
  case MapOp::Eq: return "==";
  case MapOp::Ne: return "!=";
  case MapOp::Lt: return "<";
  case MapOp::Le: return "<=";
  case MapOp::Gt: return ">";
  case MapOp::Ge: return ">=";
  case MapOp::And: return "and";
  case MapOp::Or: return "or";
  case MapOp::IfElse: return "if-else";
  case MapOp::In: return "in";
  case MapOp::Lookup: return "lookup";
  case MapOp::Func: return "func";
  }
  return "?";
}

const char *cmpName(Comparison c) {
  switch (c) {
  case Comparison::Eq: return "==";
  case Comparison::Lt: return "<";
  case Comparison::Gt: return ">";
  case Comparison::Ge: return ">=";
  case Comparison::Le: return "<=";
  case Comparison::Ne: return "!=";
  case Comparison::True: return "true";
  case Comparison::False: return "false";
  case Comparison::Fn: return "fn";
  }
  return "?";
}

const char *tokenTypeName(TokenType t) {
  switch (t) {
  case TokenType::Auto: return "tokens";
  case TokenType::Int: return "tokens_int";
  case TokenType::Str: return "tokens_str";
  case TokenType::Float: return "tokens_float";
  case TokenType::Bool: return "tokens_bool";
  }
  return "tokens";
}

HostFunction::HostFunction(std::string label, size_t arity, Fn fn)
    : label_(std::move(label)), arity_(arity), fn_(std::move(fn)) {
  static std::atomic<uint64_t> next{0};
  id_ = next++;
}

bool HostFunction::call(const Scalar *args, size_t n, Scalar &out, std::string &error) const {
  std::string key;
  for (size_t i = 0; i < n; ++i) key += scalarKey(args[i]) + ",";
  auto it = memo_.find(key);
  if (it == memo_.end()) {
    Result r{false, {}, {}};
    r.ok = fn_(args, n, r.value, r.error);
    it = memo_.emplace(std::move(key), std::move(r)).first;
  }
  if (!it->second.ok) {
    error = it->second.error;
    return false;
  }
  out = it->second.value;
  return true;
}

std::string Table::key() const {
  if (fn) return fmt::format("F{}", fn->id());
  std::string k = isList ? "L[" : "D[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (!isList) k += scalarKey(keys[i]) + ":";
    k += scalarKey(values[i]) + ",";
  }
  return k + "]";
}

NodeId Graph::intern(Node n) {
  std::string key = fmt::format("{}|{}|{}|{}|{}|{}|", int(n.kind), int(n.op), int(n.cmp),
                                int(n.encoding), int(n.tokenType), scalarKey(n.value));
  for (NodeId a : n.args) key += fmt::format("{},", a);
  if (n.table) key += n.table->key();
  auto it = index_.find(key);
  if (it != index_.end()) {
    if (!n.name.empty()) nameNode(it->second, n.name);
    return it->second;
  }
  NodeId id = static_cast<NodeId>(nodes_.size());
  nodes_.push_back(std::move(n));
  index_.emplace(std::move(key), id);
  return id;
}

void Graph::nameNode(NodeId id, const std::string &name) {
  if (nodes_[id].name.empty()) nodes_[id].name = name;
}

void Graph::locateNode(NodeId id, llvm::SMLoc loc) {
  if (!nodes_[id].loc.isValid()) nodes_[id].loc = loc;
}

std::vector<NodeId> Graph::reachable(const std::vector<NodeId> &roots) const {
  std::vector<char> seen(nodes_.size(), 0);
  for (NodeId r : roots) seen[r] = 1;
  // Children have smaller ids, so one backward sweep marks everything reachable.
  for (size_t i = nodes_.size(); i-- > 0;)
    if (seen[i])
      for (NodeId a : nodes_[i].args) seen[a] = 1;
  std::vector<NodeId> out;
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (seen[i]) out.push_back(static_cast<NodeId>(i));
  return out;
}

std::vector<NodeId> Graph::preorder(NodeId root, const std::function<bool(const Node &)> &descend) const {
  std::vector<NodeId> out, stack = {root};
  std::unordered_set<NodeId> seen;
  while (!stack.empty()) {
    NodeId x = stack.back();
    stack.pop_back();
    if (!seen.insert(x).second) continue;
    out.push_back(x);
    if (descend(nodes_[x])) stack.insert(stack.end(), nodes_[x].args.rbegin(), nodes_[x].args.rend());
  }
  return out;
}

// A map's operation; a host function by its label.
static std::string funcLabel(const Node &n) {
  if (n.op == MapOp::Func && n.table && n.table->fn && !n.table->fn->label().empty()) return n.table->fn->label();
  return opName(n.op);
}

// "select ==", or a predicate's function: "select shifted".
static std::string selectLabel(const Node &n) {
  bool fn = n.cmp == Comparison::Fn && n.table && n.table->fn;
  return fmt::format("select {}", fn ? n.table->fn->label() : cmpName(n.cmp));
}

std::string Graph::label(NodeId id) const {
  const Node &n = nodes_[id];
  if (!n.name.empty()) return n.name;
  switch (n.kind) {
  case NodeKind::Tokens: return tokenTypeName(n.tokenType);
  case NodeKind::Constant: return formatScalar(n.value, true);
  case NodeKind::Map: return funcLabel(n);
  case NodeKind::Select: return selectLabel(n);
  default: return kindName(n.kind);
  }
}

static std::string dotEscape(const std::string &s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string Graph::toDot(const std::vector<NodeId> &roots) const {
  std::string out = "digraph rasp {\n  rankdir=BT;\n  node [fontname=\"Helvetica\"];\n";
  for (NodeId id : reachable(roots)) {
    const Node &n = nodes_[id];
    std::string what;
    switch (n.kind) {
    case NodeKind::Map: what = funcLabel(n); break;
    case NodeKind::Select: what = selectLabel(n); break;
    case NodeKind::Constant: what = formatScalar(n.value, true); break;
    case NodeKind::Tokens: what = tokenTypeName(n.tokenType); break;
    default: what = kindName(n.kind);
    }
    std::string text = n.name.empty() ? dotEscape(what) : dotEscape(n.name) + "\\n" + dotEscape(what);
    if (n.encoding == Encoding::Numerical) text += "\\n(numerical)";
    const char *shape = n.isSelector() ? "diamond"
                        : (n.kind == NodeKind::Tokens || n.kind == NodeKind::Indices ||
                           n.kind == NodeKind::Length)
                            ? "box"
                            : "ellipse";
    out += fmt::format("  n{} [label=\"{}\", shape={}{}];\n", id,
                       text, shape,
                       std::find(roots.begin(), roots.end(), id) != roots.end()
                           ? ", style=bold"
                           : "");
    for (size_t i = 0; i < n.args.size(); ++i)
      out += fmt::format("  n{} -> n{}{};\n", n.args[i], id,
                         n.args.size() > 1 ? fmt::format(" [label=\"{}\"]", i) : "");
  }
  return out + "}\n";
}

} // namespace raspc::ir
