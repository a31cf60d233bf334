// The RASP computation graph: s-ops and selectors as a DAG of hash-consed nodes.
//
// Nodes are appended in creation order and only ever reference earlier nodes, so the
// vector order is a topological order: every pass can walk it front to back with no
// recursion and visit each shared subexpression once.
#pragma once
#include "ir/Scalar.h"

#include <llvm/Support/SMLoc.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace raspc::ir {

using NodeId = uint32_t;

enum class NodeKind : uint8_t {
  Tokens,        // the input sequence (typed by Node::tokenType)
  Indices,       // 0, 1, ..., n-1
  Length,        // n at every position
  Constant,      // Node::value at every position
  Map,           // elementwise function of args (Node::op)
  Select,        // selector: M[q][k] = args[0][k] cmp args[1][q] (Fn: table->fn(key, query))
  SelectAnd,     // elementwise and of two selectors
  SelectOr,      // elementwise or of two selectors
  SelectNot,     // elementwise not of one selector
  Aggregate,     // args = {selector, sop}; Node::value is the default
  SelectorWidth, // args = {selector}
};

// Elementwise operations of Map nodes.
enum class MapOp : uint8_t {
  None,
  Neg, Pos, Not, Round, Indicator,        // unary
  Add, Sub, Mul, Div, Mod, Pow,           // arithmetic
  Eq, Ne, Lt, Le, Gt, Ge,                 // comparisons
  And, Or,                                // logic
  IfElse,                                 // args = {then, cond, else}
  In,                                     // args[0] in Node::table (keys)
  Lookup,                                 // Node::table[args[0]]
  Func,                                   // Node::table->fn(args...): a host function
};

// True selects every key, False none (Tracr's Comparison.TRUE / FALSE). Fn calls the
// select's host function (Node::table->fn) on (key, query): any predicate, as Tracr's
// Select takes one.
enum class Comparison : uint8_t { Eq, Lt, Gt, Ge, Le, Ne, True, False, Fn };
enum class Encoding : uint8_t { Categorical, Numerical };
enum class TokenType : uint8_t { Auto, Int, Str, Float, Bool };

// A map given as a function of the host (a Python callable, from the Python package):
// the value-set pass, the interpreter and the lowering call it through applyOp like any
// other operation, so it needs no case of its own anywhere. Each one is its own identity
// (two functions never hash-cons together). Calls are memoized per argument tuple: the
// passes ask for the same tuples again and again, and a Python call is slow. Called only
// on the thread that compiles or interprets (never from a worker thread).
class HostFunction {
public:
  // Computes fn(args[0..n)) into `out`, or returns false with `error` set (what failed,
  // without a location).
  using Fn = std::function<bool(const Scalar *args, size_t n, Scalar &out, std::string &error)>;
  HostFunction(std::string label, size_t arity, Fn fn);
  bool call(const Scalar *args, size_t n, Scalar &out, std::string &error) const;
  const std::string &label() const { return label_; }
  size_t arity() const { return arity_; }
  uint64_t id() const { return id_; }

private:
  std::string label_;
  size_t arity_;
  Fn fn_;
  uint64_t id_;
  struct Result {
    bool ok;
    Scalar value;
    std::string error;
  };
  mutable std::unordered_map<std::string, Result> memo_;
};

// A host list or dict captured by `sop in list` and `list[sop]` / `dict[sop]`, or the
// host function of a Func map.
struct Table {
  bool isList = true; // list: keys are 0..n-1 (negative indices allowed); dict: explicit keys
  std::vector<Scalar> keys;
  std::vector<Scalar> values;
  std::shared_ptr<const HostFunction> fn; // MapOp::Func
  std::string key() const;
};

struct Node {
  NodeKind kind = NodeKind::Constant;
  MapOp op = MapOp::None;
  Comparison cmp = Comparison::Eq;
  Encoding encoding = Encoding::Categorical;
  TokenType tokenType = TokenType::Auto;
  std::vector<NodeId> args;
  Scalar value;                        // Constant value, Aggregate default
  std::shared_ptr<const Table> table;  // In / Lookup / Func maps, Fn selects
  // Not part of the node's identity:
  llvm::SMLoc loc;                     // where the expression was written
  std::string name;                    // first name it was assigned to, or empty

  bool isSelector() const {
    return kind == NodeKind::Select || kind == NodeKind::SelectAnd ||
           kind == NodeKind::SelectOr || kind == NodeKind::SelectNot;
  }
};

const char *kindName(NodeKind k);
const char *opName(MapOp op);     // "+", "not", "round", ...
const char *cmpName(Comparison c); // "==", "<", ...
const char *tokenTypeName(TokenType t);

class Graph {
public:
  // Returns the id of the node equal to `n` (same kind, op, args, value, encoding),
  // creating it if it is new. A new node keeps n.loc; a name is kept if none was set.
  NodeId intern(Node n);
  const Node &operator[](NodeId id) const { return nodes_[id]; }
  size_t size() const { return nodes_.size(); }
  // Record that `id` was assigned to `name` (the first name wins).
  void nameNode(NodeId id, const std::string &name);
  // Sets where a node was written, when it has no location yet (graphs built from
  // Python get theirs when they are first compiled or evaluated).
  void locateNode(NodeId id, llvm::SMLoc loc);

  // Nodes reachable from `roots`, as a sorted (topological) list.
  std::vector<NodeId> reachable(const std::vector<NodeId> &roots) const;
  // The nodes under `root`, each once, in preorder with arguments left to right, going
  // into the arguments of the nodes for which `descend` holds. An explicit stack, not
  // recursion: and/or chains of selectors can be long.
  std::vector<NodeId> preorder(NodeId root, const std::function<bool(const Node &)> &descend) const;
  // A short human label: the name if any, else the operation.
  std::string label(NodeId id) const;
  // Graphviz DOT of the nodes reachable from roots.
  std::string toDot(const std::vector<NodeId> &roots) const;

  static constexpr size_t kMaxNodes = 1'000'000;

private:
  std::vector<Node> nodes_;
  std::unordered_map<std::string, NodeId> index_;
};

} // namespace raspc::ir
