// The reference interpreter: computes the value of s-ops and selectors of an
// ir::Graph on one input sequence, exactly as RASP defines them. Compiled models are
// checked against it.
#pragma once
#include "ir/Graph.h"
#include "support/LocatedError.h"

#include <llvm/ADT/ArrayRef.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace raspc {

// A selector's value: rows are query positions, columns key positions. Only built on
// request (Interpreter::selector), for printing: aggregates read one row at a time.
struct SelectorValue {
  size_t n = 0;
  std::vector<uint8_t> m;
  bool at(size_t q, size_t k) const { return m[q * n + k] != 0; }
};

struct InterpreterOptions {
  // Causal meaning: every selector sees only keys at or before the query.
  bool causal = false;
  // Type of the plain `tokens` s-op: ints or strings. Unset: ints when every input
  // token is an integer.
  std::optional<bool> intTokens;
  // Aggregates (by node id, non-zero = checked) that must never average different
  // values: the compiler stores their values one-hot, so a mean has no meaning there.
  std::vector<char> singleValued;
  // Interventions: nodes whose value is taken as given instead of computed, with
  // everything downstream recomputed from it (an interchange intervention runs input a
  // with a node's value from input b). An s-op's values per position, a selector's
  // n x n matrix (SelectorValue; causal masking still applies). The sizes must match
  // the input's length, else run() fails naming the node.
  std::map<ir::NodeId, std::vector<Scalar>> sopOverrides;
  std::map<ir::NodeId, SelectorValue> selectorOverrides;
  // By aggregate or selector width: the matrix it attends with instead of its selector's
  // value, which stays as computed for every other reader (a head's attention pattern
  // patched, where selectorOverrides patches the selector everywhere it is used).
  std::map<ir::NodeId, SelectorValue> attendOverrides;
};

// Computes a selector one query row at a time, so that aggregates and selector widths
// need O(n) memory per selector node, never an n x n matrix.
class SelectorRows {
public:
  // `overrides` (may be null) replaces the rows of the selectors it names, inner ones of
  // a composite selector included (InterpreterOptions::selectorOverrides).
  SelectorRows(const ir::Graph &g, ir::NodeId sel, bool causal,
               const std::map<ir::NodeId, SelectorValue> *overrides = nullptr);
  // The row of query q (keys 0..n-1) from the s-op values in `sops`.
  const std::vector<uint8_t> &row(size_t q, size_t n, const std::vector<std::vector<Scalar>> &sops);

private:
  const ir::Graph &g_;
  bool causal_;
  const std::map<ir::NodeId, SelectorValue> *overrides_;
  std::vector<ir::NodeId> order_;           // the selector's sub-DAG of selectors, topological
  std::vector<std::array<size_t, 2>> argSlots_; // parallel to order_: buffers of the selector args
  std::vector<std::vector<uint8_t>> rows_;  // one buffer per node of order_
};

class Interpreter {
public:
  explicit Interpreter(const ir::Graph &g, InterpreterOptions opts = {}) : g_(g), opts_(opts) {}

  // Evaluates `roots` and everything they depend on. Runtime errors (averaging
  // strings, index out of range, a token that is not an int for tokens_int, ...)
  // come back as LocatedErrors at the offending node's source location.
  //
  // An elementwise operation that fails at a position (a division by zero) leaves a
  // failure there, not an error: it propagates through later elementwise operations
  // like None, and a conditional whose condition picks the other branch discards it,
  // as Python evaluates only the chosen branch. It becomes the error (at the failing
  // operation, with its position) only when something else reads it: a select, an
  // aggregate, or a root.
  llvm::Error run(llvm::ArrayRef<std::string> tokens, llvm::ArrayRef<ir::NodeId> roots);

  const std::vector<Scalar> &sop(ir::NodeId id) const { return sops_[id]; }
  // A selector's full matrix (n x n: for printing small inputs only).
  SelectorValue selector(ir::NodeId id) const;
  // The length of the last input run.
  size_t length() const { return n_; }

private:
  llvm::Error evalNode(ir::NodeId id, llvm::ArrayRef<std::string> tokens, bool intTokens);
  // The selector overrides for the rows aggregate / selector width `id` attends with,
  // when InterpreterOptions::attendOverrides names it.
  std::optional<std::map<ir::NodeId, SelectorValue>> attendOverrides(ir::NodeId id) const;
  // The error for the first failed position of s-op `id`, if it has one.
  llvm::Error checkFailures(ir::NodeId id) const;
  const ir::Graph &g_;
  InterpreterOptions opts_;
  std::vector<std::vector<Scalar>> sops_;
  // Per s-op: empty when no position failed, else per position -1 or the index in
  // failures_ of the failure it holds (several positions can share one).
  std::vector<std::vector<int32_t>> fails_;
  struct Failure {
    llvm::SMLoc loc;
    std::string message;
  };
  std::vector<Failure> failures_;
  size_t n_ = 0;
};

// Whether a token spells an integer ("12", "-3").
bool isIntToken(const std::string &t);
// Whether there are tokens and every one spells an integer: then `tokens` holds ints.
bool allIntTokens(llvm::ArrayRef<std::string> tokens);
// A token read as the given view (Auto reads as a string); nullopt when it does not
// spell a value of that type. `typeWord` names the type for messages ("an integer").
std::optional<Scalar> parseToken(const std::string &t, ir::TokenType type);
const char *typeWord(ir::TokenType type);

// Every input over `vocab` of length 1, 2, ... up to `maxLen`, shortest first, stopping
// before the length whose inputs would bring the total over `limit`.
std::vector<std::vector<std::string>> allInputs(const std::vector<std::string> &vocab, int maxLen,
                                                size_t limit = SIZE_MAX);

} // namespace raspc
