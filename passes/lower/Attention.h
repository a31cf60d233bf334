// Attention heads: aggregate (W_QK scores with BOS, W_OV copying values, and the MLP
// neuron that cleans BOS after it) and selector width.
//
// Exact: a query scores c for each satisfied group, so a selected key scores
// c * groups and any other at most c less; BOS (position 0) scores c/2 below a selected
// key, so it wins only when nothing is selected. The coldness c (chosen by the caller)
// keeps what leaks to unselected keys (e^-c each) and to BOS (e^-c/2) below float32
// resolution. The BOS query attends to BOS above everything, so BOS stays clean.
#pragma once
#include "ir/Graph.h"
#include "passes/lower/Construction.h"

#include <utility>

namespace raspc::passes {

// One factor of an attention score: pred(key value, query value) over a query and a key
// feature. Several groups add up (an `and` of comparisons over different s-ops).
struct Group {
  craft::Feature q, k;
  std::function<bool(const Scalar &kv, const Scalar &qv)> pred;
};

// An aggregate's head, then (when BOS would hold a value) the MLP block with one neuron
// that takes the default back out at BOS, so later heads see a clean BOS key. `values`
// pairs each direction the head reads with the value it copies (a number for a
// numerical `out`, which is the mean over the selected keys; a value of out, one-hot,
// for a categorical one; None copies nothing). BOS carries `deflt`.
std::vector<craft::Block> aggregateHead(ir::NodeId node, const std::vector<Group> &groups,
                                        const std::vector<std::pair<int, Scalar>> &values, const Scalar &deflt,
                                        const craft::Feature &out, double c);

// selector_width: a head in which BOS scores like a selected key and carries 1, so it
// writes 1/(w+1) to `frac` (whose values are widthFractions). An MLP turns that back
// into w (widthOf), or a map of w reads it directly.
craft::Block selectorWidthHead(ir::NodeId node, const std::vector<Group> &groups, const craft::Feature &frac,
                               double c);
// The values 1/(w+1) for w = maxLen down to 0.
std::vector<Scalar> widthFractions(int maxLen);
// The width w a selector width head's output 1/(w+1) stands for.
Scalar widthOf(const Scalar &frac);

} // namespace raspc::passes
