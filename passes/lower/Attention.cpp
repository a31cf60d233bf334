#include "passes/lower/Attention.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace raspc::passes {

using craft::Block;
using craft::BlockKind;
using craft::Feature;
using craft::kBos;
using craft::kOne;
using craft::Neuron;

namespace {

// Query-key scores: c per satisfied group; BOS scores `bosScore`; the BOS query
// attends to BOS above everything else.
void scores(Block &b, const std::vector<Group> &groups, double bosScore, double c) {
  std::map<std::pair<int, int>, double> w;
  std::vector<int> qrows;
  for (auto &g : groups)
    for (size_t i = 0; i < options(g.q); ++i)
      for (size_t j = 0; j < options(g.k); ++j) {
        if (!g.pred(option(g.k, j), option(g.q, i))) continue;
        for (auto &[qd, qw] : indicator(g.q, i))
          for (auto &[kd, kw] : indicator(g.k, j)) w[{qd, kd}] += c * qw * kw;
      }
  for (auto &[rc, x] : w) qrows.push_back(rc.first);
  qrows.push_back(kOne);
  std::sort(qrows.begin(), qrows.end());
  qrows.erase(std::unique(qrows.begin(), qrows.end()), qrows.end());
  // BOS key (one + bos): score(q, BOS) = bosScore for every query.
  for (int r : qrows) {
    double viaOne = w.count({r, kOne}) ? w[{r, kOne}] : 0.0;
    w[{r, kBos}] = (r == kOne ? bosScore : 0.0) - viaOne;
  }
  double maxScore = c * double(groups.size());
  w[{kBos, kBos}] = maxScore + c - bosScore; // BOS query: itself by a margin of c
  for (auto &[rc, x] : w)
    if (x != 0) b.qk.push_back({rc.first, rc.second, x});
}

} // namespace

std::vector<Block> aggregateHead(ir::NodeId node, const std::vector<Group> &groups,
                                 const std::vector<std::pair<int, Scalar>> &values, const Scalar &deflt,
                                 const Feature &out, double c) {
  Block b;
  b.kind = BlockKind::Attention;
  b.node = node;
  b.what = out.numerical ? "numerical aggregate" : "aggregate";
  std::map<std::pair<int, int>, double> ov;
  if (out.numerical) {
    for (auto &[d, x] : values) ov[{d, out.dirs[0]}] += toDouble(x);
    double viaOne = ov.count({kOne, out.dirs[0]}) ? ov[{kOne, out.dirs[0]}] : 0.0;
    ov[{kBos, out.dirs[0]}] = toDouble(deflt) - viaOne;
  } else {
    for (auto &[d, x] : values) {
      if (isNone(x)) continue;
      Neuron probe;
      emit(probe, out, x, 1.0);
      for (auto &[o, w] : probe.out) ov[{d, o}] += w;
    }
    // BOS carries the default, and cancels what its `one` direction would copy.
    std::map<int, double> bos;
    for (auto &[rc, x] : ov)
      if (rc.first == kOne) bos[rc.second] -= x;
    if (!isNone(deflt)) {
      Neuron probe;
      emit(probe, out, deflt, 1.0);
      for (auto &[d, w] : probe.out) bos[d] += w;
    }
    for (auto &[d, x] : bos) ov[{kBos, d}] = x;
  }
  for (auto &[rc, x] : ov)
    if (x != 0) b.ov.push_back({rc.first, rc.second, x});
  scores(b, groups, c * (double(groups.size()) - 0.5), c);
  // The BOS query attends to BOS, so the head writes the default at BOS too. A
  // neuron that fires only at BOS, in the MLP right after the head (it reads the
  // head's outputs, with weight 0, to be placed there), takes it back out.
  Block clean;
  clean.kind = BlockKind::Mlp;
  clean.node = node;
  clean.what = "BOS cleanup";
  Neuron n0;
  n0.in = {{kBos, 1.0}};
  std::map<int, double> atBos;
  for (auto &e : b.ov)
    if (e.row == kOne || e.row == kBos) atBos[e.col] += e.w;
  for (auto &[d, x] : atBos) {
    n0.in.push_back({d, 0.0});
    if (x != 0) n0.out.push_back({d, -x});
  }
  std::vector<Block> blocks;
  blocks.push_back(std::move(b));
  if (!n0.out.empty()) {
    clean.neurons.push_back(n0);
    blocks.push_back(std::move(clean));
  }
  return blocks;
}

Block selectorWidthHead(ir::NodeId node, const std::vector<Group> &groups, const Feature &frac, double c) {
  Block head;
  head.kind = BlockKind::Attention;
  head.node = node;
  head.what = "selector width";
  head.ov.push_back({kBos, frac.dirs[0], 1.0});
  scores(head, groups, c * double(groups.size()), c);
  return head;
}

std::vector<Scalar> widthFractions(int maxLen) {
  std::vector<Scalar> fracs;
  for (int w = maxLen; w >= 0; --w) fracs.push_back(1.0 / double(w + 1));
  return fracs;
}

Scalar widthOf(const Scalar &frac) { return int64_t(std::llround(1.0 / toDouble(frac) - 1.0)); }

} // namespace raspc::passes
