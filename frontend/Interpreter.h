// The reference interpreter: computes the value of s-ops and selectors of an
// ir::Graph on one input sequence, exactly as RASP defines them. Compiled models are
// checked against it.
#pragma once
#include "frontend/Diagnostics.h"
#include "ir/Graph.h"

#include <llvm/ADT/ArrayRef.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace raspc {

// A selector's value: rows are query positions, columns key positions.
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
};

class Interpreter {
public:
  explicit Interpreter(const ir::Graph &g, InterpreterOptions opts = {}) : g_(g), opts_(opts) {}

  // Evaluates `roots` and everything they depend on. Runtime errors (averaging
  // strings, index out of range, a token that is not an int for tokens_int, ...)
  // come back as LocatedErrors at the offending node's source location.
  llvm::Error run(llvm::ArrayRef<std::string> tokens, llvm::ArrayRef<ir::NodeId> roots);

  const std::vector<Scalar> &sop(ir::NodeId id) const { return sops_[id]; }
  const SelectorValue &selector(ir::NodeId id) const { return sels_[id]; }

private:
  llvm::Error evalNode(ir::NodeId id, llvm::ArrayRef<std::string> tokens, bool intTokens);
  const ir::Graph &g_;
  InterpreterOptions opts_;
  std::vector<std::vector<Scalar>> sops_;
  std::vector<SelectorValue> sels_;
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
