// The meaning of one elementwise operation on scalars. The host evaluator uses it to
// fold host values and the reference interpreter to compute s-ops, so both agree.
#pragma once
#include "ir/Graph.h"
#include "ir/Scalar.h"

#include <string>

namespace raspc {

struct OpResult {
  bool ok = true;
  Scalar value;
  std::string error; // set when !ok: what went wrong, without a location
  // A host function (MapOp::Func) failed. The value-set pass skips argument
  // combinations on which a built-in operation fails (they may never occur), but a
  // failing host function is the user's bug, reported wherever it is first called.
  bool hostFailure = false;
};

// Applies `op` to args (1 for unary ops, In and Lookup; 2 for binary; 3 for IfElse as
// {then, cond, else}; the host function's arity for Func). None in any argument gives
// None.
OpResult applyOp(ir::MapOp op, const Scalar *args, size_t nargs, const ir::Table *table = nullptr);

bool scalarTruthy(const Scalar &s);

// The key under which a dictionary (a Lookup table, a host dict) files `s`: as in
// Python, 1, 1.0 and True are one key.
std::string dictKey(const Scalar &s);

// Whether a select with comparison `c` picks `key` for `query`: keys[k] c queries[q].
// None compares as not selected; a type error (ordering a string against a number) is
// also not selected, and its text goes to `error` when given.
bool selects(ir::Comparison c, const Scalar &key, const Scalar &query, std::string *error = nullptr);
// The same for a select node: its comparison, or its predicate function (Comparison::Fn),
// whose failure is not selected either, with its text in `error`.
bool selects(const ir::Node &select, const Scalar &key, const Scalar &query, std::string *error = nullptr);

} // namespace raspc
