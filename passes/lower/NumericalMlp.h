// MLPs over numerical inputs (one residual direction holding the number): step
// functions, affine maps, and maps of a sum or difference of two numbers.
//
// Exact because the value sets are finite: a step placed at the midpoint between two
// consecutive values x0 < x1, with slope 4 / (x1 - x0), is 0 at x0 and below and 1 at
// x1 and above (every value sits a quarter gap from the transition), and an affine map
// checked on every combination of values is computed as relu(y) - relu(-y).
#pragma once
#include "passes/lower/Construction.h"

namespace raspc::passes {

// out = f(in) of one number, added to b's neurons: an affine map when out is numerical
// and f fits one (two neurons); otherwise a base neuron for f at the smallest value
// and a step of two neurons at each midpoint where f changes. A comparison with a
// constant (x > 0, x == 0) changes at one midpoint only: one base neuron and one step,
// whatever the number of values (Tracr's discretising MLP).
void numericalMlp(craft::Block &b, const craft::Feature &in, const MapFn &f, const craft::Feature &out);

// Numerical out = alpha . x + gamma over numerical inputs, fitted on a base point and
// one step per input, then checked on every combination: two neurons. False (adding
// nothing) when f is not affine on the value sets.
bool affineMlp(craft::Block &b, const std::vector<craft::Feature> &ins, const MapFn &f,
               const craft::Feature &out);

// f(a, b) of two numbers that depends only on z = a + s*b (s = +1 or -1), like the sum
// of two counts: numericalMlp's step functions read z directly, one MLP. False (adding
// nothing) when f is no such function, or z takes too many values.
bool sumMlp(craft::Block &b, const std::vector<craft::Feature> &ins, const MapFn &f, const craft::Feature &out);

} // namespace raspc::passes
