#include "backend/Assemble.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cmath>
#include <fmt/format.h>
#include <map>
#include <set>

namespace raspc {

std::vector<int> directionColumns(const craft::Program &p, const std::vector<int> &order) {
  std::vector<int> col(p.residual.size(), -1);
  for (size_t i = 0; i < order.size(); ++i) col[size_t(order[i])] = int(i);
  return col;
}

ModelConfig modelConfig(const craft::Program &p, const std::vector<int> &order, size_t vocabSize, int maxLen,
                        bool causal) {
  int layers = 1, heads = 1, dHead = 1, dMlp = 1;
  std::map<int, int> headsIn, neuronsIn;
  for (auto &b : p.blocks) {
    layers = std::max(layers, b.sublayer / 2 + 1);
    if (b.kind == craft::BlockKind::Attention) {
      heads = std::max(heads, ++headsIn[b.sublayer]);
      std::vector<int> qrows, vrows;
      for (auto &e : b.qk) qrows.push_back(e.row);
      for (auto &e : b.ov) vrows.push_back(e.row);
      for (auto *v : {&qrows, &vrows}) {
        std::sort(v->begin(), v->end());
        v->erase(std::unique(v->begin(), v->end()), v->end());
        dHead = std::max(dHead, int(v->size()));
      }
    } else {
      neuronsIn[b.sublayer] += int(b.neurons.size());
      dMlp = std::max(dMlp, neuronsIn[b.sublayer]);
    }
  }
  ModelConfig c;
  c.n_layers = layers;
  c.d_model = int(order.size());
  c.n_heads = heads;
  c.d_head = dHead;
  c.d_mlp = dMlp;
  c.d_vocab = int(vocabSize) + 2;
  c.n_ctx = maxLen + 1;
  c.causal = causal;
  c.d_vocab_out = p.output.numerical ? 1 : std::max<int>(1, int(p.output.dirs.size()));
  return c;
}

int64_t parameterCount(const ModelConfig &c) {
  // Saturating arithmetic: a shape from a huge program must give a huge count, not UB.
  auto mul = [](int64_t a, int64_t b) {
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
  };
  auto add = [](int64_t a, int64_t b) {
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
  };
  const int64_t D = c.d_model, H = c.n_heads, dh = c.d_head, m = c.d_mlp, out = c.d_vocab_out;
  // embed.W_E, pos_embed.W_pos, unembed.W_U and b_U.
  int64_t n = add(mul(D, add(add(c.d_vocab, c.n_ctx), out)), out);
  // Per layer: W_Q, W_K, W_V, W_O; b_Q, b_K, b_V; b_O; W_in, W_out; b_in; b_out.
  int64_t layer = add(add(add(mul(mul(4, H), mul(D, dh)), mul(mul(3, H), dh)), mul(mul(2, D), m)), add(m, mul(2, D)));
  return add(n, mul(c.n_layers, layer));
}

Model assembleModel(const craft::Program &p, const std::vector<int> &order, const std::vector<std::string> &vocab,
                    int maxLen, bool causal) {
  Model m;
  std::vector<int> col = directionColumns(p, order);
  m.cfg = modelConfig(p, order, vocab.size(), maxLen, causal);
  const ModelConfig &c = m.cfg;
  const int layers = c.n_layers, heads = c.n_heads, dHead = c.d_head, dMlp = c.d_mlp;
  const int64_t D = c.d_model;

  m.vocab = vocab;
  m.vocab.push_back("<bos>");
  m.vocab.push_back("<pad>");
  m.bosId = int(vocab.size());
  m.padId = int(vocab.size()) + 1;
  for (int d : order) m.residualLabels.push_back(p.residual.label(d));

  Tensor WE({c.d_vocab, D}), Wpos({c.n_ctx, D});
  for (size_t t = 0; t < p.tokenEmbedding.size(); ++t)
    for (auto &[d, w] : p.tokenEmbedding[t].second)
      if (col[size_t(d)] >= 0) WE.at(int64_t(t), col[size_t(d)]) += float(w);
  WE.at(m.bosId, col[craft::kOne]) = 1.0f;
  WE.at(m.bosId, col[craft::kBos]) = 1.0f;
  for (size_t pos = 0; pos < p.positionEmbedding.size(); ++pos)
    for (auto &[d, w] : p.positionEmbedding[pos])
      if (col[size_t(d)] >= 0) Wpos.at(int64_t(pos) + 1, col[size_t(d)]) += float(w);
  m.tensors["embed.W_E"] = std::move(WE);
  m.tensors["pos_embed.W_pos"] = std::move(Wpos);

  const double qScale = std::sqrt(double(dHead)); // TransformerLens divides scores by sqrt(d_head)
  for (int l = 0; l < layers; ++l) {
    Tensor WQ({heads, D, dHead}), WK({heads, D, dHead}), WV({heads, D, dHead}), WO({heads, dHead, D});
    Tensor bQ({heads, dHead}), bK({heads, dHead}), bV({heads, dHead}), bO({D});
    Tensor Win({D, dMlp}), bin({dMlp}), Wout({dMlp, D}), bout({D});
    for (auto &b : p.blocks) {
      if (b.sublayer / 2 != l) continue;
      if (b.kind == craft::BlockKind::Attention) {
        int h = b.index;
        std::vector<int> qrows, vrows;
        for (auto &e : b.qk)
          if (std::find(qrows.begin(), qrows.end(), e.row) == qrows.end()) qrows.push_back(e.row);
        for (auto &e : b.ov)
          if (std::find(vrows.begin(), vrows.end(), e.row) == vrows.end()) vrows.push_back(e.row);
        for (size_t i = 0; i < qrows.size(); ++i)
          if (col[size_t(qrows[i])] >= 0) WQ.at(h, col[size_t(qrows[i])], int64_t(i)) = float(qScale);
        for (auto &e : b.qk) {
          int64_t i = std::find(qrows.begin(), qrows.end(), e.row) - qrows.begin();
          if (col[size_t(e.col)] >= 0) WK.at(h, col[size_t(e.col)], i) += float(e.w);
        }
        for (size_t i = 0; i < vrows.size(); ++i)
          if (col[size_t(vrows[i])] >= 0) WV.at(h, col[size_t(vrows[i])], int64_t(i)) = 1.0f;
        for (auto &e : b.ov) {
          int64_t i = std::find(vrows.begin(), vrows.end(), e.row) - vrows.begin();
          if (col[size_t(e.col)] >= 0) WO.at(h, i, col[size_t(e.col)]) += float(e.w);
        }
      } else {
        int64_t u = b.index;
        for (auto &n : b.neurons) {
          for (auto &[d, w] : n.in)
            if (col[size_t(d)] >= 0) Win.at(col[size_t(d)], u) += float(w);
          bin.at(u) = float(n.bias);
          for (auto &[d, w] : n.out)
            if (col[size_t(d)] >= 0) Wout.at(u, col[size_t(d)]) += float(w);
          ++u;
        }
      }
    }
    std::string pre = fmt::format("blocks.{}.", l);
    m.tensors[pre + "attn.W_Q"] = std::move(WQ);
    m.tensors[pre + "attn.W_K"] = std::move(WK);
    m.tensors[pre + "attn.W_V"] = std::move(WV);
    m.tensors[pre + "attn.W_O"] = std::move(WO);
    m.tensors[pre + "attn.b_Q"] = std::move(bQ);
    m.tensors[pre + "attn.b_K"] = std::move(bK);
    m.tensors[pre + "attn.b_V"] = std::move(bV);
    m.tensors[pre + "attn.b_O"] = std::move(bO);
    m.tensors[pre + "mlp.W_in"] = std::move(Win);
    m.tensors[pre + "mlp.b_in"] = std::move(bin);
    m.tensors[pre + "mlp.W_out"] = std::move(Wout);
    m.tensors[pre + "mlp.b_out"] = std::move(bout);
  }

  Tensor WU({D, c.d_vocab_out}), bU({c.d_vocab_out});
  if (p.output.numerical) {
    WU.at(col[size_t(p.output.dirs[0])], 0) = 1.0f;
    m.outputEncoding = "numerical";
  } else {
    for (size_t i = 0; i < p.output.dirs.size(); ++i) WU.at(col[size_t(p.output.dirs[i])], int64_t(i)) = 1.0f;
    m.outputEncoding = "categorical";
  }
  m.outputValues = p.output.values;
  m.tensors["unembed.W_U"] = std::move(WU);
  m.tensors["unembed.b_U"] = std::move(bU);
  return m;
}

int usedHeads(const Model &m) {
  std::set<std::pair<int, int>> heads;
  for (const NodeInfo &n : m.nodes) {
    for (int h : n.heads) heads.insert({n.layer, h});
    for (const HelperBlock &b : n.helpers)
      for (int h : b.heads) heads.insert({b.layer, h});
  }
  return int(heads.size());
}

} // namespace raspc
