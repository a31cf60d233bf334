// Layer allocation: every block runs in the earliest sublayer of its kind after all
// the blocks whose directions it reads (attention in even sublayers, MLPs in odd
// ones). This is the longest path through the block graph, so no program uses more
// layers than its dependencies force; blocks that land in the same sublayer become
// parallel heads or side-by-side MLP neurons.
#include "passes/Passes.h"

#include <algorithm>

namespace raspc::passes {

void allocateLayers(craft::Program &p) {
  // First sublayer that may read a direction. A BOS cleanup changes its directions
  // only at BOS, where every MLP neuron is off: MLPs may read them beside it, and
  // only heads (which read BOS as a key) wait for it.
  std::vector<int> ready(p.residual.size(), 0), readyMlp(p.residual.size(), 0);
  std::vector<int> headsIn, neuronsIn; // per sublayer: heads / neurons placed so far
  for (auto &b : p.blocks) {
    int s = 0;
    bool attn = b.kind == craft::BlockKind::Attention;
    for (int d : b.reads()) s = std::max(s, (attn ? ready : readyMlp)[size_t(d)]);
    if ((s % 2 == 0) != attn) ++s;
    b.sublayer = s;
    auto &count = attn ? headsIn : neuronsIn;
    if (count.size() <= size_t(s)) count.resize(size_t(s) + 1, 0);
    b.index = count[size_t(s)];
    count[size_t(s)] += attn ? 1 : int(b.neurons.size());
    for (int d : b.writes()) {
      ready[size_t(d)] = std::max(ready[size_t(d)], s + 1);
      if (b.what != "BOS cleanup") readyMlp[size_t(d)] = std::max(readyMlp[size_t(d)], s + 1);
    }
  }
}

} // namespace raspc::passes
