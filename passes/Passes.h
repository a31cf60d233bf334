// The compiler's passes and the facts they hand each other. Internal to passes/.
#pragma once
#include "ir/Craft.h"
#include "ir/Graph.h"
#include "passes/Compiler.h"

#include <llvm/Support/Error.h>

#include <vector>

namespace raspc::passes {

// Facts about the nodes reachable from the output, indexed by node id.
struct Analysis {
  const ir::Graph &g;
  const CompileOptions &opts;
  ir::NodeId output;
  std::vector<ir::NodeId> order;               // reachable nodes, topological order
  std::vector<char> reachable;
  std::vector<std::vector<ir::NodeId>> users;  // reachable users of each node
  std::vector<std::vector<Scalar>> values;     // value set of each s-op (sorted)
  std::vector<ir::Encoding> encoding;          // encoding of each s-op
  std::vector<char> materialized;              // s-op has its own residual directions
  std::vector<std::vector<ir::NodeId>> leaves; // fused maps: the materialized inputs
  // Maps of one categorical leaf that heads read through that leaf: a select's keys or
  // queries become a W_QK table over the leaf's values, an aggregate's values a W_OV
  // from the leaf's directions. Such a map costs no MLP unless it is the output.
  std::vector<char> inHead;
  // Maps that can fail for some argument values (a division by zero), directly or
  // through an argument: a conditional may discard the failure, so their features
  // keep an "absent" option (read like None) for the maps that use them.
  std::vector<char> canFail;

  Analysis(const ir::Graph &g, const CompileOptions &opts, ir::NodeId output);
  bool isNumerical(ir::NodeId id) const { return encoding[id] == ir::Encoding::Numerical; }
};

// Encodings: categorical unless annotated; an aggregate of a numerical s-op, or one
// that averages different numbers, is numerical (it computes a mean). Runs
// inferValueSets and checkCategoricalAggregates until the encodings settle.
llvm::Error inferEncodings(Analysis &a);
// ValueSets: the exact finite set of values of every s-op, in one pass over the graph.
llvm::Error inferValueSets(Analysis &a);
// AggregateCheck: a categorical aggregate must never average different values, and
// the program must not fail on an allowed input (each with a witness input).
llvm::Error checkCategoricalAggregates(const Analysis &a);
// Under --causal, warns (opts.warn) at each selector that can select a later key. Run
// once, after the encodings settle (inferEncodings calls it).
void warnCausalSelectors(const Analysis &a);
// Fusion: decides which maps get residual directions; the others are folded into
// the MLP of the map that uses them.
llvm::Error fuseMaps(Analysis &a);
// Size: estimates the model's parameters from the value sets, before anything is
// built, and refuses a model over opts.maxParams.
llvm::Error checkModelSize(const Analysis &a);
// The error for a model of about `params` parameters, over `limit`.
llvm::Error tooManyParameters(int64_t params, int64_t limit);
// Lower: the craft program (features, MLP blocks, attention heads).
llvm::Expected<craft::Program> lower(const Analysis &a);
// Allocate: the sublayer of every block, as early as its inputs allow; packs blocks
// of one sublayer side by side as heads / MLP neurons.
void allocateLayers(craft::Program &p);
// Layout: the order of residual directions; drops directions nothing uses.
std::vector<int> layoutResidual(const craft::Program &p);

// Helpers shared by the passes.
std::string nodeLabel(const ir::Graph &g, ir::NodeId id); // name, or "<kind>_<id>"
std::vector<Scalar> sortedUnique(std::vector<Scalar> v);

} // namespace raspc::passes
