// Elementwise fusion: a connected group of maps becomes one MLP. A map is
// materialized (gets residual directions) when something other than a map reads it
// or it is the output; every other map is folded into the maps that use it. A
// materialized map's MLP reads its "leaves": the materialized s-ops its group starts
// from. The lowering can build an MLP over two leaves of any encoding, or over more
// categorical leaves when their value combinations are few; otherwise the map's own
// map arguments are materialized first (one more MLP layer, but no blow-up). A map of
// one categorical s-op that only heads read is not materialized either: the heads read
// that s-op and apply the map in their W_QK / W_OV tables.
#include "passes/Passes.h"

#include <algorithm>

namespace raspc::passes {

// A table over three or more categorical s-ops has a neuron per value combination;
// past this many, computing the arguments first (one more layer) is cheaper.
static constexpr size_t kMaxCombinations = 512;

static bool fits(const Analysis &a, const std::vector<ir::NodeId> &leaves) {
  if (leaves.size() <= 2) return true;
  size_t combos = 1;
  for (ir::NodeId l : leaves) {
    if (a.isNumerical(l)) return false;
    combos *= std::max<size_t>(1, a.values[l].size());
    if (combos > kMaxCombinations) return false;
  }
  return true;
}

llvm::Error fuseMaps(Analysis &a) {
  std::vector<int> depth(a.g.size(), 0); // attention sublayers on the longest path below
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    for (ir::NodeId x : n.args) depth[id] = std::max(depth[id], depth[x]);
    if (n.kind == ir::NodeKind::Aggregate || n.kind == ir::NodeKind::SelectorWidth || n.kind == ir::NodeKind::Length)
      ++depth[id];
    if (n.isSelector() || n.kind == ir::NodeKind::Constant) continue;
    if (n.kind != ir::NodeKind::Map) {
      a.materialized[id] = 1;
      continue;
    }
    bool needed = id == a.output;
    for (ir::NodeId u : a.users[id]) needed = needed || a.g[u].kind != ir::NodeKind::Map;
    auto leavesOf = [&](ir::NodeId m) {
      std::vector<ir::NodeId> out;
      for (ir::NodeId x : a.g[m].args) {
        const ir::Node &c = a.g[x];
        if (c.kind == ir::NodeKind::Constant) continue;
        if (a.materialized[x] || c.kind != ir::NodeKind::Map) out.push_back(x);
        else out.insert(out.end(), a.leaves[x].begin(), a.leaves[x].end());
      }
      std::sort(out.begin(), out.end());
      out.erase(std::unique(out.begin(), out.end()), out.end());
      return out;
    };
    std::vector<ir::NodeId> leaves = leavesOf(id);
    if (!fits(a, leaves)) {
      // Materialize map arguments, those ready earliest (fewest attention layers
      // below) first, until the rest fits: a late argument stays fused, so it costs
      // no extra layer after its attention.
      std::vector<ir::NodeId> maps;
      for (ir::NodeId x : n.args)
        if (a.g[x].kind == ir::NodeKind::Map && !a.materialized[x]) maps.push_back(x);
      std::stable_sort(maps.begin(), maps.end(), [&](ir::NodeId p, ir::NodeId q) { return depth[p] < depth[q]; });
      for (ir::NodeId x : maps) {
        a.materialized[x] = 1;
        leaves = leavesOf(id);
        if (fits(a, leaves)) break;
      }
      // Still too wide (e.g. three numerical inputs): the lowering reports it.
    }
    // A map of one categorical leaf needs no directions for the heads that read it:
    // they read the leaf (Lower's `through`), so the map costs no MLP layer before them.
    const ir::NodeId leaf = leaves.size() == 1 ? leaves[0] : 0;
    bool throughLeaf = leaves.size() == 1 && !a.isNumerical(leaf) && !a.canFail[id] && !a.canFail[leaf] &&
                       a.g[leaf].kind != ir::NodeKind::SelectorWidth &&
                       std::none_of(a.values[leaf].begin(), a.values[leaf].end(), isNone);
    if (throughLeaf && needed && id != a.output) {
      a.inHead[id] = 1;
      needed = false;
    }
    a.leaves[id] = std::move(leaves);
    if (needed) a.materialized[id] = 1;
  }
  return llvm::Error::success();
}

} // namespace raspc::passes
