// Residual layout: `one` and `tokens:<bos>` first, then token and index directions,
// then each block's outputs in the order the blocks run. Directions that are neither
// set nor part of a node's value (conversion or tuple values never produced) are
// dropped.
#include "passes/Passes.h"

#include <algorithm>

namespace raspc::passes {

std::vector<int> layoutResidual(const craft::Program &p) {
  std::vector<char> used(p.residual.size(), 0);
  used[craft::kOne] = used[craft::kBos] = 1;
  for (auto &[tok, w] : p.tokenEmbedding)
    for (auto &[d, x] : w) used[size_t(d)] = 1;
  for (auto &w : p.positionEmbedding)
    for (auto &[d, x] : w) used[size_t(d)] = 1;
  for (auto &b : p.blocks)
    for (int d : b.writes()) used[size_t(d)] = 1;
  // A node's directions stay together even where no block writes a value (the value
  // set is a superset): the ground truth pairs each direction with a value.
  for (auto &[id, f] : p.features)
    for (int d : f.dirs) used[size_t(d)] = 1;
  // Order: embedding directions by id, then by the sublayer that writes them.
  std::vector<int> firstWrite(p.residual.size(), -1);
  for (auto &b : p.blocks)
    for (int d : b.writes())
      if (firstWrite[size_t(d)] < 0) firstWrite[size_t(d)] = b.sublayer;
  std::vector<int> order;
  for (size_t d = 0; d < p.residual.size(); ++d)
    if (used[d]) order.push_back(int(d));
  std::stable_sort(order.begin(), order.end(),
                   [&](int x, int y) { return firstWrite[size_t(x)] < firstWrite[size_t(y)]; });
  return order;
}

} // namespace raspc::passes
