// Size: a model's shape estimated from the value sets, before the lowering builds
// anything, so that a program whose model cannot be built (a vocabulary of 20,000
// tokens, a table over two large s-ops, 70,000 layers) is refused at once with the
// estimate, instead of exhausting memory. The estimate follows the constructions of
// passes/lower/ (one direction per categorical value, a neuron per table combination, a
// head per aggregate, a layer per attention on the longest path), leaving out the
// small helpers (conversions, tuples, BOS cleanups); the exact count is checked again
// after layout, before the tensors are allocated.
#include "backend/Assemble.h"
#include "passes/Passes.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>

namespace raspc::passes {

namespace {

int64_t mulSat(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}
int64_t addSat(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}
int clampInt(int64_t x) { return int(std::min<int64_t>(x, INT_MAX)); }

// Residual directions of an s-op: one per value (None has none), or one number.
int64_t width(const Analysis &a, ir::NodeId id) {
  if (a.g[id].kind == ir::NodeKind::Constant) return 1;
  if (a.isNumerical(id)) return 1;
  int64_t n = 0;
  for (auto &v : a.values[id]) n += !isNone(v);
  return std::max<int64_t>(n, 1);
}

} // namespace

llvm::Error tooManyParameters(int64_t params, int64_t limit) {
  // Exact while small; past a million, two significant digits say enough.
  std::string count = std::to_string(params);
  if (params >= 1'000'000) {
    std::string e = fmt::format("{:.1e}", double(params)); // "1.2e+09"
    size_t x = e.find('e');
    count = e.substr(0, x) + "e" + std::to_string(std::stoi(e.substr(x + 1)));
  }
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "the model would have about " + count + " parameters, more than the limit of " +
                                     std::to_string(limit) + " (raise it with --max-params)");
}

llvm::Error checkModelSize(const Analysis &a) {
  const int64_t N = a.opts.maxLen;
  int64_t D = 2, dHead = 1, dMlp = 1;
  std::vector<int> depth(a.g.size(), 0); // attention sublayers on the longest path
  std::map<int, int64_t> headsAt;
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    for (ir::NodeId x : n.args) depth[id] = std::max(depth[id], depth[x]);
    if (n.isSelector() || n.kind == ir::NodeKind::Constant) continue;
    bool head = n.kind == ir::NodeKind::Aggregate || n.kind == ir::NodeKind::SelectorWidth ||
                n.kind == ir::NodeKind::Length;
    if (head) {
      ++depth[id];
      ++headsAt[depth[id]];
      // The head reads its query directions and copies its value directions.
      const ir::Node &sel = a.g[n.args.empty() ? id : n.args[0]];
      if (n.kind != ir::NodeKind::Length && sel.kind == ir::NodeKind::Select)
        dHead = std::max(dHead, width(a, sel.args[1]));
      if (n.kind == ir::NodeKind::Aggregate && !a.isNumerical(id)) dHead = std::max(dHead, width(a, n.args[1]));
    }
    if (!a.materialized[id]) continue;
    bool widthNode = n.kind == ir::NodeKind::SelectorWidth || n.kind == ir::NodeKind::Length;
    if (widthNode) {
      D = addSat(D, 1); // the head's 1/(w+1)
      // The width itself, when something other than a map reads it.
      bool needed = id == a.output;
      for (ir::NodeId u : a.users[id]) needed = needed || a.g[u].kind != ir::NodeKind::Map;
      if (!needed) continue;
      D = addSat(D, width(a, id));
      dMlp = std::max(dMlp, mulSat(2, N)); // step functions back to w
      continue;
    }
    D = addSat(D, width(a, id));
    if (n.kind != ir::NodeKind::Map) continue;
    // The map's MLP: a neuron per combination of categorical leaves; one input: a
    // neuron per output value; numbers: at least two.
    const auto &leaves = a.leaves[id];
    bool categorical = !leaves.empty();
    for (ir::NodeId l : leaves) categorical = categorical && !a.isNumerical(l);
    int64_t neurons = 2;
    if (categorical && leaves.size() >= 2) {
      neurons = 1;
      for (ir::NodeId l : leaves) neurons = mulSat(neurons, std::max<int64_t>(1, int64_t(a.values[l].size())));
    } else if (categorical && !a.isNumerical(id)) {
      neurons = std::min(width(a, leaves[0]), width(a, id));
    }
    dMlp = std::max(dMlp, neurons);
  }
  int64_t heads = 1;
  for (auto &[d, h] : headsAt) heads = std::max(heads, h);
  ModelConfig c;
  c.n_layers = std::max(1, depth[a.output]);
  c.d_model = clampInt(D);
  c.n_heads = clampInt(heads);
  c.d_head = clampInt(dHead);
  c.d_mlp = clampInt(dMlp);
  c.d_vocab = clampInt(addSat(int64_t(a.opts.vocab.size()), 2));
  c.n_ctx = clampInt(N + 1);
  c.d_vocab_out = clampInt(width(a, a.output));
  int64_t params = parameterCount(c);
  // Past INT_MAX in any dimension the clamped shape undercounts; that is far over any
  // limit anyway.
  if (D > INT_MAX || dMlp > INT_MAX) params = INT64_MAX;
  if (params > a.opts.maxParams) return tooManyParameters(params, a.opts.maxParams);
  return llvm::Error::success();
}

} // namespace raspc::passes
