#include "passes/Passes.h"

#include <algorithm>

namespace raspc::passes {

Analysis::Analysis(const ir::Graph &g, const CompileOptions &opts, ir::NodeId output)
    : g(g), opts(opts), output(output), reachable(g.size(), 0), users(g.size()), values(g.size()),
      encoding(g.size(), ir::Encoding::Categorical), materialized(g.size(), 0), leaves(g.size()),
      inHead(g.size(), 0), canFail(g.size(), 0) {
  order = g.reachable({output});
  for (ir::NodeId id : order) {
    reachable[id] = 1;
    for (ir::NodeId a : g[id].args) users[a].push_back(id);
  }
}

std::string nodeLabel(const ir::Graph &g, ir::NodeId id) {
  const ir::Node &n = g[id];
  if (!n.name.empty()) return n.name;
  if (n.kind == ir::NodeKind::Tokens) return "tokens";
  if (n.kind == ir::NodeKind::Indices) return "indices";
  if (n.kind == ir::NodeKind::Length) return "length";
  return std::string(ir::kindName(n.kind)) + "_" + std::to_string(id);
}

std::vector<Scalar> sortedUnique(std::vector<Scalar> v) {
  std::stable_sort(v.begin(), v.end(), scalarLess);
  std::vector<Scalar> out;
  // Equal values (1, 1.0, True) are adjacent after sorting, by type. They stay
  // distinct: the interpreter prints 2 and 2.0 differently, so a categorical s-op
  // needs a direction for each (a numerical one merges them, see ValueSets).
  for (auto &x : v)
    if (out.empty() || !scalarEquals(out.back(), x) || out.back().index() != x.index()) out.push_back(std::move(x));
  return out;
}

} // namespace raspc::passes
