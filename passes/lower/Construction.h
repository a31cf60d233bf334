// What every construction shares with the lowering that calls it (passes/Lower.cpp),
// as Tracr's craft/chamber does: a construction gets its input and output features,
// already placed in the residual, and the map to compute, and adds MLP neurons (to a
// Block the caller finishes and places) or returns attention heads. The caller owns
// the walk over the graph, residual allocation and the order of blocks.
#pragma once
#include "ir/Craft.h"
#include "ir/Scalar.h"

#include <functional>
#include <optional>
#include <vector>

namespace raspc::passes {

// The map a block computes, on one value per input (nullopt: an error or None, which
// the output holds as no direction set).
using MapFn = std::function<std::optional<Scalar>(const std::vector<Scalar> &)>;

// The values a categorical feature can take, None last when it can be None, and the
// residual weights whose sum is 1 exactly when the feature holds option i.
size_t options(const craft::Feature &f);
Scalar option(const craft::Feature &f, size_t i);
craft::Weights indicator(const craft::Feature &f, size_t i);

// into += scale * w, entries on one direction summed.
void addTo(craft::Weights &into, const craft::Weights &w, double scale);
// The entries on one direction summed; zeros dropped.
craft::Weights merged(const craft::Weights &w);

// Adds weight * y to neuron n's output: y's direction (categorical: the value of the
// same type first, as 2 and 2.0 may be different directions; None has none), or the
// number on out's direction (numerical).
void emit(craft::Neuron &n, const craft::Feature &out, const Scalar &y, double weight);

} // namespace raspc::passes
