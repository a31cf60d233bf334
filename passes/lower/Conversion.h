// Conversions: an s-op's value, unchanged, in the other encoding, for a use that needs
// it (a numerical s-op compared in a select, a categorical one averaged).
#pragma once
#include "passes/lower/Construction.h"

namespace raspc::passes {

// A number to one-hot: numericalMlp's steps at the midpoints between its values, one
// step per value after the first, each exact as every step is.
void toCategorical(craft::Block &b, const craft::Feature &in, const craft::Feature &out);

// One-hot to a number: categoricalMlp's relu(y) - relu(-y) over the one-hot directions,
// two neurons, exact as the input is 1 on one direction only.
void toNumerical(craft::Block &b, const craft::Feature &in, const craft::Feature &out);

} // namespace raspc::passes
