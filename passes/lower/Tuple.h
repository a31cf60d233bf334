// Tuple features: one categorical feature whose values are the combinations of several
// s-ops' values, for a selector that compares tuples (an `or` of comparisons over
// different s-ops). Its MLP is a categorical table (CategoricalMlp.h) from the parts'
// one-hot directions to the combination's direction, exact like every table.
#pragma once
#include "passes/lower/Construction.h"

#include <llvm/Support/Error.h>
#include <llvm/Support/SMLoc.h>

#include <string>

namespace raspc::passes {

using Combinations = std::vector<std::vector<Scalar>>;

// Every combination of the parts' options (None last), the first part varying
// fastest. A located error at `loc` past 20,000 combinations.
llvm::Expected<Combinations> combinations(const std::vector<craft::Feature> &parts, llvm::SMLoc loc);

// The tuple of one part is the part itself, its value i standing for combination i.
craft::Feature singleTuple(craft::Feature part);

// A new feature with a direction per combination, "label:(a,b)", its value i
// standing for combination i.
craft::Feature tupleFeature(craft::Residual &residual, const std::string &label, const Combinations &combos);

// What the tuple's MLP computes from the parts' values: the index of their combination.
MapFn tupleIndex(Combinations combos);

} // namespace raspc::passes
