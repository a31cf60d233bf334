// MLPs over one numerical input and categorical ones (a mean times an index, a mean
// compared per position).
#pragma once
#include "passes/lower/Construction.h"

namespace raspc::passes {

// Categorical combinations past this are left to the caller's table construction.
constexpr size_t kMaxMixedCombinations = 4096;

// out = f(ins) where exactly one input is numerical and the others categorical: for
// each combination c of the categorical values, f(., c) is built only where it
// changes (two neurons when it is affine in x and out is numerical, else a step per
// change), each neuron gated by c's one-hot directions. Neurons grow with the
// categorical combinations times the changes of f, not with all value pairs. Returns
// false (adding nothing) when there are too many combinations.
bool mixedMlp(std::vector<craft::Neuron> &neurons, const std::vector<craft::Feature> &ins, const MapFn &f,
              const craft::Feature &out);

} // namespace raspc::passes
