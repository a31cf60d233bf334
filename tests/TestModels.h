// Small hand-made compiled models for the backend and runtime tests, with weights
// worked out by hand, and a temporary directory helper.
#pragma once
#include "backend/Hdf5.h"
#include "backend/Model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace raspc::test {

// A directory under /tmp removed (with its contents) on destruction.
class TempDir {
public:
  TempDir() {
    std::random_device rd;
    std::mt19937_64 gen(rd());
    for (int i = 0; i < 100; ++i) {
      path_ = std::filesystem::temp_directory_path() / ("raspc-test-" + std::to_string(gen()));
      if (std::filesystem::create_directory(path_)) return;
    }
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string &name) const { return (path_ / name).string(); }

private:
  std::filesystem::path path_;
};

// A model with every tensor of `cfg` present and zero.
inline Model zeroModel(const ModelConfig &cfg) {
  Model m;
  m.cfg = cfg;
  for (auto &[name, shape] : expectedTensors(cfg)) m.tensors.emplace(name, Tensor(shape));
  return m;
}

inline NodeInfo node(int id, std::string name, std::string kind, std::string op, std::string encoding,
                     std::vector<Scalar> values, int layer, std::string sublayer, std::vector<int> heads,
                     std::vector<int> reads, std::vector<int> writes, std::vector<int> args) {
  NodeInfo n;
  n.id = id;
  n.name = std::move(name);
  n.kind = std::move(kind);
  n.op = std::move(op);
  n.encoding = std::move(encoding);
  n.valueSet = std::move(values);
  n.layer = layer;
  n.sublayer = std::move(sublayer);
  n.heads = std::move(heads);
  n.reads = std::move(reads);
  n.writes = std::move(writes);
  n.args = std::move(args);
  return n;
}

inline std::vector<int> range(int begin, int end) {
  std::vector<int> v;
  for (int i = begin; i < end; ++i) v.push_back(i);
  return v;
}

// prev = aggregate(select(indices, indices, k == q - 1), tokens): each position holds
// the token before it (None at the first position, whose predecessor is BOS).
//
// Vocabulary <bos>=0, 1, 2, 3, <pad>=4 (int tokens); maximum length 5 (n_ctx 6).
// Residual: 0 one, 1 tokens:<bos>, 2-4 tokens:1..3, 5-10 indices:0..5, 11-13 prev:1..3.
// One head with d_head = 6: q_i = c e_i (c = 100 sqrt(6)), k_j = e_{j+1}, so the
// score of key j for query i is 100 when j = i - 1 and 0 otherwise; v_j is the one-hot
// token of j (zero at BOS) and W_O writes it to prev:*. W_U reads prev:* (d_mlp = 0).
inline Model prevTokenModel(bool causal = false) {
  ModelConfig c;
  c.n_layers = 1;
  c.d_model = 14;
  c.n_heads = 1;
  c.d_head = 6;
  c.d_mlp = 0;
  c.d_vocab = 5;
  c.d_vocab_out = 3;
  c.n_ctx = 6;
  c.causal = causal;
  Model m = zeroModel(c);
  m.vocab = {"<bos>", "1", "2", "3", "<pad>"};
  m.bosId = 0;
  m.padId = 4;
  m.intTokens = true;
  m.residualLabels = {"one", "tokens:<bos>", "tokens:1", "tokens:2", "tokens:3"};
  for (int i = 0; i < 6; ++i) m.residualLabels.push_back("indices:" + std::to_string(i));
  for (int t = 1; t <= 3; ++t) m.residualLabels.push_back("prev:" + std::to_string(t));

  Tensor &WE = m.tensors["embed.W_E"];
  WE.at(0, 0) = 1; // BOS: one + tokens:<bos>
  WE.at(0, 1) = 1;
  for (int t = 0; t < 3; ++t) {
    WE.at(1 + t, 0) = 1;
    WE.at(1 + t, 2 + t) = 1;
  }
  Tensor &Wpos = m.tensors["pos_embed.W_pos"];
  for (int i = 0; i < 6; ++i) Wpos.at(i, 5 + i) = 1;

  const float cq = float(100.0 * std::sqrt(6.0));
  Tensor &WQ = m.tensors["blocks.0.attn.W_Q"], &WK = m.tensors["blocks.0.attn.W_K"];
  Tensor &WV = m.tensors["blocks.0.attn.W_V"], &WO = m.tensors["blocks.0.attn.W_O"];
  for (int i = 0; i < 6; ++i) WQ.at(0, 5 + i, i) = cq;
  for (int j = 0; j + 1 < 6; ++j) WK.at(0, 5 + j, j + 1) = 1;
  for (int t = 0; t < 3; ++t) {
    WV.at(0, 2 + t, t) = 1;
    WO.at(0, t, 11 + t) = 1;
  }
  Tensor &WU = m.tensors["unembed.W_U"];
  for (int t = 0; t < 3; ++t) WU.at(11 + t, t) = 1;

  m.outputName = "prev";
  m.outputEncoding = "categorical";
  m.outputValues = {int64_t(1), int64_t(2), int64_t(3)};
  m.sourceName = "prev.rasp";
  m.source = "prev = aggregate(select(indices, indices, lambda k, q: k == q - 1), tokens);\n";
  std::vector<Scalar> toks = {int64_t(1), int64_t(2), int64_t(3)}, idx;
  for (int i = 0; i < 6; ++i) idx.push_back(int64_t(i));
  m.nodes.push_back(node(0, "tokens", "tokens", "", "categorical", toks, -1, "embed", {}, {}, range(2, 5), {}));
  m.nodes.push_back(node(1, "indices", "indices", "", "categorical", idx, -1, "embed", {}, {}, range(5, 11), {}));
  m.nodes.push_back(node(2, "", "select", "==", "", {}, 0, "attn", {0}, range(5, 11), {}, {1, 1}));
  NodeInfo prev = node(3, "prev", "aggregate", "", "categorical", toks, 0, "attn", {0}, range(2, 11), range(11, 14),
                       {2, 0});
  prev.location = "prev.rasp:1:8";
  m.nodes.push_back(prev);
  return m;
}

// out = map(f, prev) on top of prevTokenModel, with f(1) = "x", f(2) = "y", f(3) = "x":
// two layers; layer 0 has the previous-token head plus a zero head, and an MLP with
// hidden unit t = ReLU(prev:t) writing out:f(t) (plus a zero neuron); layer 1 is all
// zero. Residual: prevTokenModel's 14 directions, then 14 out:x, 15 out:y.
inline Model mapModel() {
  Model p = prevTokenModel(false);
  ModelConfig c = p.cfg;
  c.n_layers = 2;
  c.d_model = 16;
  c.n_heads = 2;
  c.d_mlp = 4;
  c.d_vocab_out = 2;
  Model m = zeroModel(c);
  m.vocab = p.vocab;
  m.bosId = p.bosId;
  m.padId = p.padId;
  m.intTokens = true;
  m.residualLabels = p.residualLabels;
  m.residualLabels.push_back("out:x");
  m.residualLabels.push_back("out:y");
  // Copy the 14-wide weights of the previous-token model into head 0 of layer 0.
  auto copy2 = [&](const std::string &name) {
    const Tensor &s = p.tensors.at(name);
    Tensor &d = m.tensors.at(name);
    for (int64_t i = 0; i < s.shape[0]; ++i)
      for (int64_t j = 0; j < s.shape[1]; ++j) d.at(i, j) = s.at(i, j);
  };
  copy2("embed.W_E");
  copy2("pos_embed.W_pos");
  for (const char *w : {"W_Q", "W_K", "W_V"}) {
    const Tensor &s = p.tensors.at(std::string("blocks.0.attn.") + w);
    Tensor &d = m.tensors.at(std::string("blocks.0.attn.") + w);
    for (int64_t i = 0; i < 14; ++i)
      for (int64_t j = 0; j < 6; ++j) d.at(0, i, j) = s.at(0, i, j);
  }
  {
    const Tensor &s = p.tensors.at("blocks.0.attn.W_O");
    Tensor &d = m.tensors.at("blocks.0.attn.W_O");
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t j = 0; j < 14; ++j) d.at(0, i, j) = s.at(0, i, j);
  }
  Tensor &Win = m.tensors["blocks.0.mlp.W_in"], &Wout = m.tensors["blocks.0.mlp.W_out"];
  const int f[3] = {0, 1, 0}; // f(1) = x, f(2) = y, f(3) = x
  for (int t = 0; t < 3; ++t) {
    Win.at(11 + t, t) = 1;
    Wout.at(t, 14 + f[t]) = 1;
  }
  Tensor &WU = m.tensors["unembed.W_U"];
  WU.at(14, 0) = 1;
  WU.at(15, 1) = 1;

  m.outputName = "out";
  m.outputEncoding = "categorical";
  m.outputValues = {std::string("x"), std::string("y")};
  m.sourceName = "map.rasp";
  m.source = p.source + "out = map(lambda x: \"y\" if x == 2 else \"x\", prev);\n";
  m.nodes = p.nodes;
  NodeInfo out = node(4, "out", "map", "", "categorical", m.outputValues, 0, "mlp", {}, range(11, 14), {14, 15}, {3});
  out.mlpBegin = 0;
  out.mlpEnd = 3;
  out.location = "map.rasp:2:7";
  m.nodes.push_back(out);
  return m;
}

// frac = numerical aggregate(select(tokens, tokens, true), tokens == "a"): the fraction
// of visible positions (BOS included) holding "a". Non-causal: #a / (length + 1) at
// every position; causal: the prefix fraction. The softmax is uniform (W_Q = W_K = 0).
// Vocabulary <pad>=0, <bos>=1, a, b (string tokens); maximum length 4 (n_ctx 5).
// Residual: 0 tokens:a, 1 tokens:b, 2 frac, 3 tokens:<bos>. W_V reads tokens:a, W_O
// writes frac, W_U reads frac. Output values: every k/n for 1 <= n <= 5, 0 <= k <= n.
inline Model meanModel(bool causal = false) {
  ModelConfig c;
  c.n_layers = 1;
  c.d_model = 4;
  c.n_heads = 1;
  c.d_head = 1;
  c.d_mlp = 1;
  c.d_vocab = 4;
  c.d_vocab_out = 1;
  c.n_ctx = 5;
  c.causal = causal;
  Model m = zeroModel(c);
  m.vocab = {"<pad>", "<bos>", "a", "b"};
  m.padId = 0;
  m.bosId = 1;
  m.intTokens = false;
  m.residualLabels = {"tokens:a", "tokens:b", "frac", "tokens:<bos>"};
  Tensor &WE = m.tensors["embed.W_E"];
  WE.at(1, 3) = 1;
  WE.at(2, 0) = 1;
  WE.at(3, 1) = 1;
  m.tensors["blocks.0.attn.W_V"].at(0, 0, 0) = 1;
  m.tensors["blocks.0.attn.W_O"].at(0, 0, 2) = 1;
  m.tensors["unembed.W_U"].at(2, 0) = 1;
  m.outputName = "frac";
  m.outputEncoding = "numerical";
  std::vector<double> fr;
  for (int n = 1; n <= 5; ++n)
    for (int k = 0; k <= n; ++k) fr.push_back(double(k) / double(n));
  std::sort(fr.begin(), fr.end());
  fr.erase(std::unique(fr.begin(), fr.end()), fr.end());
  m.outputValues.push_back(int64_t(0));
  for (double d : fr)
    if (d != 0) m.outputValues.push_back(d);
  m.sourceName = "frac.rasp";
  m.source = "frac = numerical(aggregate(select(tokens, tokens, ==), tokens == \"a\"));\n";
  m.nodes.push_back(node(0, "tokens", "tokens", "", "categorical", {std::string("a"), std::string("b")}, -1, "embed",
                         {}, {}, {0, 1}, {}));
  m.nodes.push_back(node(1, "frac", "aggregate", "", "numerical", m.outputValues, 0, "attn", {0}, {0}, {2}, {0}));
  return m;
}

} // namespace raspc::test
