// MLPs over categorical (one-hot) inputs: the output for every combination of the
// inputs' values, looked up in a table.
#pragma once
#include "passes/lower/Construction.h"

namespace raspc::passes {

// out = f(ins), every input categorical, added to b's neurons:
// - no input: one neuron on `one` writing the constant f();
// - one input, numerical out: relu(y) - relu(-y) over the one-hot input, two neurons
//   (negative outputs included);
// - one input, categorical out: a neuron per output value, reading every input value
//   that maps to it;
// - k inputs, numerical out that is a sum of one term per input: two neurons, as for
//   one input;
// - k inputs: a neuron per combination, relu(x1:a + ... + xk:z - (k-1)), where the
//   values of an input that f never tells apart count as one (their indicators summed).
// Exact: a one-hot input is 1 on exactly one option's indicator, so each neuron is 1 for
// its own value or combination and at most 0 for every other.
void categoricalMlp(craft::Block &b, const std::vector<craft::Feature> &ins, const MapFn &f,
                    const craft::Feature &out);

} // namespace raspc::passes
