#include "runtime/Circuit.h"

#include "backend/Hdf5.h" // validateModel

#include "runtime/Executor.h"
#include "runtime/ExecutorImpl.h" // decodeRow

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <set>

namespace raspc {

namespace {

using Mat = Eigen::MatrixXd;

// Directions (d_model indices) with a nonzero entry: rows of a [d_model, x] slice.
// Above `tol` in absolute value: 0 for one-hot weights (any nonzero counts).
std::vector<int> nonzeroRows(const Mat &w, double tol = 0) {
  std::vector<int> out;
  for (Eigen::Index i = 0; i < w.rows(); ++i)
    if (w.cols() > 0 && w.row(i).cwiseAbs().maxCoeff() > tol) out.push_back(int(i));
  return out;
}
std::vector<int> nonzeroCols(const Mat &w, double tol = 0) {
  std::vector<int> out;
  for (Eigen::Index j = 0; j < w.cols(); ++j)
    if (w.rows() > 0 && w.col(j).cwiseAbs().maxCoeff() > tol) out.push_back(int(j));
  return out;
}
bool intersects(const std::vector<int> &a, const std::vector<int> &b) {
  for (int x : a)
    if (std::binary_search(b.begin(), b.end(), x)) return true;
  return false;
}

// Head h of a [n_heads, rows, cols] tensor.
Mat headSlice(const Tensor &t, int h) {
  Mat r(t.shape[1], t.shape[2]);
  for (int64_t i = 0; i < t.shape[1]; ++i)
    for (int64_t j = 0; j < t.shape[2]; ++j) r(i, j) = double(t.at(h, i, j));
  return r;
}
Mat matrix(const Tensor &t) {
  Mat r(t.shape[0], t.shape[1]);
  for (int64_t i = 0; i < t.shape[0]; ++i)
    for (int64_t j = 0; j < t.shape[1]; ++j) r(i, j) = double(t.at(i, j));
  return r;
}
Eigen::RowVectorXd vec(const Tensor &t, int64_t offset, int64_t n) {
  Eigen::RowVectorXd r(n);
  for (int64_t i = 0; i < n; ++i) r(i) = double(t.data[size_t(offset + i)]);
  return r;
}

std::string blocks(int l, const char *rest) { return fmt::format("blocks.{}.{}", l, rest); }

ComponentRef headRef(int l, int h) { return {blocks(l, "attn.hook_result"), h, -1, -1}; }

ComponentRef refOf(const Site &s, int nLayers) {
  switch (s.kind) {
  case Site::Embed: return {"blocks.0.hook_resid_pre", -1, -1, -1};
  case Site::Head: return headRef(s.layer, s.head);
  case Site::Mlp:
    if (s.begin >= 0) return {blocks(s.layer, "mlp.hook_post"), -1, s.begin, s.end};
    return {blocks(s.layer, "hook_mlp_out"), -1, -1, -1};
  case Site::Output: return {blocks(nLayers - 1, "hook_resid_post"), -1, -1, -1};
  }
  return {};
}

std::string refJson(const ComponentRef &r) {
  return fmt::format("{{\"hook\": \"{}\", \"index\": {}}}", r.hook, indexJson(r));
}

std::string edgeJson(const CircuitEdge &e) {
  return fmt::format("{{\"parent\": \"{}\", \"parent_index\": {}, \"child\": \"{}\", \"child_index\": {}}}",
                     e.parentRef.hook, indexJson(e.parentRef), e.childRef.hook, indexJson(e.childRef));
}

template <class T, class F> std::string joinJson(const std::vector<T> &xs, F f) {
  std::string s = "[";
  for (size_t i = 0; i < xs.size(); ++i) s += (i ? ", " : "") + f(xs[i]);
  return s + "]";
}

std::string tokensJson(const std::vector<std::string> &t) {
  return joinJson(t, [](const std::string &x) { return "\"" + jsonEscape(x) + "\""; });
}
std::string valuesJson(const std::vector<Scalar> &v) {
  return joinJson(v, [](const Scalar &x) { return jsonScalar(x); });
}
std::string exampleJson(const PairExample &e) {
  return fmt::format("\"a\": {}, \"b\": {}, \"output\": {}", tokensJson(e.a), tokensJson(e.b), valuesJson(e.output));
}

bool isSelectorKind(const std::string &k) { return k.rfind("select", 0) == 0 && k != "selector_width"; }

} // namespace

std::string indexJson(const ComponentRef &r) {
  if (r.begin >= 0) return fmt::format("[null, null, [{}, {}]]", r.begin, r.end);
  if (r.head < 0) return "null";
  if (r.hook.size() >= 12 && r.hook.compare(r.hook.size() - 12, 12, "hook_pattern") == 0)
    return fmt::format("[null, {}]", r.head);
  return fmt::format("[null, null, {}]", r.head);
}

// ---- circuitOf ------------------------------------------------------------------------

Circuit circuitOf(const Model &m) {
  const ModelConfig &cfg = m.cfg;
  Circuit c;
  c.nLayers = cfg.n_layers;
  // What each site writes and reads, from the weights.
  struct Io {
    Site site;
    std::vector<int> writes, q, k, v, reads; // reads: the union (MLP: W_in; output: W_U)
  };
  std::vector<Io> parents, children;
  // Directions are residual labels: with a basis B (a rotated variant), a writer's
  // weights W map to labels as W B^T and a reader's as B W; float32 storage leaves
  // rounding there, hence a tolerance relative to the weights.
  const bool basis = hasResidualBasis(m);
  const Mat B = basis ? matrix(m.residualBasis) : Mat();
  auto tolFor = [&](const Mat &w) { return basis ? 1e-4 * std::max(1.0, w.cwiseAbs().maxCoeff()) : 0.0; };
  auto writesOf = [&](const Mat &w) { return basis ? nonzeroCols(w * B.transpose(), tolFor(w)) : nonzeroCols(w); };
  auto readsOf = [&](const Mat &w) { return basis ? nonzeroRows(B * w, tolFor(w)) : nonzeroRows(w); };
  {
    Mat emb(cfg.d_vocab + cfg.n_ctx, cfg.d_model);
    emb << matrix(m.tensors.at("embed.W_E")), matrix(m.tensors.at("pos_embed.W_pos"));
    parents.push_back({Site{Site::Embed}, writesOf(emb), {}, {}, {}, {}});
  }
  for (int l = 0; l < cfg.n_layers; ++l) {
    const std::string a = blocks(l, "attn.");
    for (int h = 0; h < cfg.n_heads; ++h) {
      Io io{Site{Site::Head, l, h}, writesOf(headSlice(m.tensors.at(a + "W_O"), h)),
            readsOf(headSlice(m.tensors.at(a + "W_Q"), h)), readsOf(headSlice(m.tensors.at(a + "W_K"), h)),
            readsOf(headSlice(m.tensors.at(a + "W_V"), h)), {}};
      if (io.writes.empty()) continue; // a head that adds nothing is no component
      std::set<int> u(io.q.begin(), io.q.end());
      u.insert(io.k.begin(), io.k.end());
      u.insert(io.v.begin(), io.v.end());
      io.reads.assign(u.begin(), u.end());
      parents.push_back(io);
      children.push_back(io);
    }
    const std::string p = blocks(l, "mlp.");
    Io io{Site{Site::Mlp, l}, writesOf(matrix(m.tensors.at(p + "W_out"))), {}, {}, {},
          readsOf(matrix(m.tensors.at(p + "W_in")))};
    if (!io.writes.empty()) {
      parents.push_back(io);
      children.push_back(io);
    }
  }
  children.push_back({Site{Site::Output}, {}, {}, {}, {}, readsOf(matrix(m.tensors.at("unembed.W_U")))});

  for (const Io &p : parents) {
    if (p.site.kind == Site::Embed) continue;
    CircuitComponent comp{p.site, refOf(p.site, c.nLayers), {}};
    c.components.push_back(comp);
  }
  for (const Io &p : parents)
    for (const Io &ch : children) {
      if (p.site.order() >= ch.site.order()) continue;
      ComponentRef pr = refOf(p.site, c.nLayers);
      if (intersects(p.writes, ch.reads)) {
        CircuitEdge e{p.site, ch.site, 0, pr, refOf(ch.site, c.nLayers)};
        c.headEdges.push_back(e);
      }
      if (ch.site.kind == Site::Head) {
        const std::pair<char, const std::vector<int> *> inputs[] = {{'q', &ch.q}, {'k', &ch.k}, {'v', &ch.v}};
        for (auto [in, reads] : inputs)
          if (intersects(p.writes, *reads)) {
            ComponentRef cr{blocks(ch.site.layer, in == 'q' ? "hook_q_input" : in == 'k' ? "hook_k_input" : "hook_v_input"),
                            ch.site.head, -1, -1};
            c.qkvEdges.push_back({p.site, ch.site, in, pr, cr});
          }
      } else if (intersects(p.writes, ch.reads)) {
        ComponentRef cr = ch.site.kind == Site::Mlp ? ComponentRef{blocks(ch.site.layer, "hook_mlp_in"), -1, -1, -1}
                                                    : refOf(ch.site, c.nLayers);
        c.qkvEdges.push_back({p.site, ch.site, 0, pr, cr});
      }
    }

  // Nodes: their sites, cones and where their values can be read.
  std::map<int, size_t> byId;
  for (size_t i = 0; i < m.nodes.size(); ++i) byId[m.nodes[i].id] = i;
  auto blockSites = [](int layer, const std::vector<int> &heads, int begin, int end) {
    std::vector<Site> out;
    for (int h : heads) out.push_back(Site{Site::Head, layer, h});
    if (begin >= 0 && end > begin) out.push_back(Site{Site::Mlp, layer, -1, begin, end});
    return out;
  };
  // Every site that computes or serves a node: its own and all its helpers.
  auto allSites = [&](const NodeInfo &n) {
    std::vector<Site> out = n.layer >= 0 ? blockSites(n.layer, n.heads, n.mlpBegin, n.mlpEnd) : std::vector<Site>{};
    for (const HelperBlock &h : n.helpers) {
      auto s = blockSites(h.layer, h.heads, h.mlpBegin, h.mlpEnd);
      out.insert(out.end(), s.begin(), s.end());
    }
    return out;
  };
  auto sameSite = [](const Site &a, const Site &b) {
    return a.kind == b.kind && a.layer == b.layer && a.head == b.head && a.begin == b.begin && a.end == b.end;
  };
  auto addSite = [&](std::vector<Site> &v, const Site &s) {
    for (const Site &x : v)
      if (sameSite(x, s)) return;
    v.push_back(s);
  };
  // The helper blocks (of any node: one tuple MLP can serve two selectors, recorded on
  // one of them) that write any of `dirs`; roleTuple: tuple builders only.
  auto helpersWriting = [&](const std::vector<int> &dirs, bool tupleOnly) {
    std::vector<int> sorted = dirs;
    std::sort(sorted.begin(), sorted.end());
    std::vector<Site> out;
    for (const NodeInfo &x : m.nodes)
      for (const HelperBlock &h : x.helpers) {
        if (tupleOnly && h.role != "tuple") continue;
        std::vector<int> hw = h.writes;
        std::sort(hw.begin(), hw.end());
        if (intersects(hw, sorted))
          for (const Site &s : blockSites(h.layer, h.heads, h.mlpBegin, h.mlpEnd)) out.push_back(s);
      }
    return out;
  };
  for (const NodeInfo &n : m.nodes) {
    CircuitNode cn;
    cn.id = n.id;
    cn.name = n.name;
    cn.kind = n.kind;
    const bool selector = isSelectorKind(n.kind);
    if (n.layer >= 0)
      for (const Site &s : blockSites(n.layer, n.heads, n.mlpBegin, n.mlpEnd)) addSite(cn.sites, s);
    std::vector<int> writes = n.writes;
    std::sort(writes.begin(), writes.end());
    for (const HelperBlock &h : n.helpers) {
      std::vector<int> hw = h.writes;
      std::sort(hw.begin(), hw.end());
      // A helper that writes the node's own directions (BOS cleanup) is part of its value;
      // a selector's tuple MLP is part of the selector.
      if (selector || intersects(hw, writes))
        for (const Site &s : blockSites(h.layer, h.heads, h.mlpBegin, h.mlpEnd)) addSite(cn.sites, s);
    }
    // Where its value is complete: after the latest of its sites.
    cn.readLayer = -1;
    for (const Site &s : cn.sites)
      if (2 * s.layer + (s.kind == Site::Mlp) > 2 * cn.readLayer + cn.readAfterMlp) {
        cn.readLayer = s.layer;
        cn.readAfterMlp = s.kind == Site::Mlp;
      }
    // A selector's tuple MLP: the one building what its readers' heads compare.
    if (selector)
      for (const NodeInfo &r : m.nodes)
        if ((r.kind == "aggregate" || r.kind == "selector_width") && !r.args.empty() && r.args[0] == n.id)
          for (const Site &s : helpersWriting(r.reads, true)) addSite(cn.sites, s);
    if (selector)
      for (const NodeInfo &r : m.nodes)
        if ((r.kind == "aggregate" || r.kind == "selector_width") && !r.args.empty() && r.args[0] == n.id)
          if (!r.heads.empty()) {
            cn.patternReaders.push_back(r.id);
            for (int h : r.heads) addSite(cn.patternHeads, Site{Site::Head, r.layer, h});
          }
    // The cone: the embedding and every site of the node and of what it is computed from.
    addSite(cn.coneSites, Site{Site::Embed});
    std::vector<int> stack = {n.id};
    std::set<int> seen;
    while (!stack.empty()) {
      int id = stack.back();
      stack.pop_back();
      auto it = byId.find(id);
      if (!seen.insert(id).second || it == byId.end()) continue;
      const NodeInfo &x = m.nodes[it->second];
      for (const Site &s : allSites(x)) addSite(cn.coneSites, s);
      // What its components read may be written by a helper recorded on another node.
      for (const Site &s : helpersWriting(x.reads, false)) addSite(cn.coneSites, s);
      if (isSelectorKind(x.kind))
        for (const NodeInfo &r : m.nodes)
          if ((r.kind == "aggregate" || r.kind == "selector_width") && !r.args.empty() && r.args[0] == x.id)
            for (const Site &s : helpersWriting(r.reads, true)) addSite(cn.coneSites, s);
      // A selector's heads belong to its readers; an aggregate's cone holds them as its own.
      for (int a : x.args) stack.push_back(a);
    }
    // Why no intervention applies.
    if (n.kind == "tokens" || n.kind == "indices") cn.skipReason = "an input: the embedding computes it";
    else if (n.kind == "constant") cn.skipReason = "a constant: no component computes it";
    else if (n.sublayer == "fused") cn.skipReason = "a map folded into the MLP or the heads that read it: no component of its own";
    else if (selector && cn.patternHeads.empty())
      cn.skipReason = "a selector inside a composite selector: no head attends with it alone";
    else if (!selector && cn.sites.empty()) cn.skipReason = "not materialised: no component computes it";

    for (const Site &s : cn.sites) cn.components.push_back(refOf(s, c.nLayers));
    for (const Site &s : cn.patternHeads)
      cn.components.push_back({blocks(s.layer, "attn.hook_pattern"), s.head, -1, -1});
    for (const Site &s : cn.coneSites) cn.cone.push_back(refOf(s, c.nLayers));
    c.nodes.push_back(std::move(cn));
  }
  // Which nodes each component holds.
  for (CircuitComponent &comp : c.components)
    for (const NodeInfo &n : m.nodes)
      for (const Site &s : allSites(n))
        if (s.layer == comp.site.layer && s.kind == comp.site.kind &&
            (s.kind == Site::Mlp || s.head == comp.site.head)) {
          if (comp.nodeIds.empty() || comp.nodeIds.back() != n.id) comp.nodeIds.push_back(n.id);
        }
  return c;
}

std::string circuitJson(const Circuit &c) {
  std::string s = fmt::format("{{\"format\": \"raspc-circuit-1\", \"n_layers\": {},\n \"components\": [", c.nLayers);
  for (size_t i = 0; i < c.components.size(); ++i) {
    const auto &x = c.components[i];
    s += fmt::format("{}\n  {{\"hook\": \"{}\", \"index\": {}, \"layer\": {}, \"node_ids\": [{}]}}", i ? "," : "",
                     x.ref.hook, indexJson(x.ref), x.site.layer, fmt::join(x.nodeIds, ", "));
  }
  s += "],\n \"nodes\": [";
  for (size_t i = 0; i < c.nodes.size(); ++i) {
    const auto &n = c.nodes[i];
    s += fmt::format("{}\n  {{\"id\": {}, \"name\": \"{}\", \"kind\": \"{}\", \"components\": {}, \"cone\": {}}}",
                     i ? "," : "", n.id, jsonEscape(n.name), n.kind, joinJson(n.components, refJson),
                     joinJson(n.cone, refJson));
  }
  s += "],\n \"edges\": {\"heads\": [";
  for (size_t i = 0; i < c.headEdges.size(); ++i) s += (i ? ",\n  " : "\n  ") + edgeJson(c.headEdges[i]);
  s += "],\n  \"qkv\": [";
  for (size_t i = 0; i < c.qkvEdges.size(); ++i) s += (i ? ",\n  " : "\n  ") + edgeJson(c.qkvEdges[i]);
  return s + "]}}\n";
}

// ---- The component forward pass ------------------------------------------------------

Eigen::MatrixXd ForwardResult::outputOf(const Site &s) const {
  switch (s.kind) {
  case Site::Embed: return embed;
  case Site::Head: return heads[size_t(s.layer)][size_t(s.head)];
  case Site::Mlp: return mlp[size_t(s.layer)];
  case Site::Output: break;
  }
  return {};
}

llvm::Expected<ComponentForward> ComponentForward::create(const Model &m) {
  if (auto e = validateModel(m, m.sourceName.empty() ? "model" : m.sourceName)) return e;
  const ModelConfig &cfg = m.cfg;
  ComponentForward f;
  f.m_ = &m;
  f.WE_ = matrix(m.tensors.at("embed.W_E"));
  f.Wpos_ = matrix(m.tensors.at("pos_embed.W_pos"));
  f.WU_ = matrix(m.tensors.at("unembed.W_U"));
  f.bU_ = vec(m.tensors.at("unembed.b_U"), 0, cfg.d_vocab_out);
  for (int l = 0; l < cfg.n_layers; ++l) {
    Layer L;
    const std::string a = blocks(l, "attn."), p = blocks(l, "mlp.");
    for (int h = 0; h < cfg.n_heads; ++h) {
      L.WQ.push_back(headSlice(m.tensors.at(a + "W_Q"), h));
      L.WK.push_back(headSlice(m.tensors.at(a + "W_K"), h));
      L.WV.push_back(headSlice(m.tensors.at(a + "W_V"), h));
      L.WO.push_back(headSlice(m.tensors.at(a + "W_O"), h));
      L.bQ.push_back(vec(m.tensors.at(a + "b_Q"), int64_t(h) * cfg.d_head, cfg.d_head));
      L.bK.push_back(vec(m.tensors.at(a + "b_K"), int64_t(h) * cfg.d_head, cfg.d_head));
      L.bV.push_back(vec(m.tensors.at(a + "b_V"), int64_t(h) * cfg.d_head, cfg.d_head));
    }
    L.bO = vec(m.tensors.at(a + "b_O"), 0, cfg.d_model);
    L.Win = matrix(m.tensors.at(p + "W_in"));
    L.Wout = matrix(m.tensors.at(p + "W_out"));
    L.bin = vec(m.tensors.at(p + "b_in"), 0, cfg.d_mlp);
    L.bout = vec(m.tensors.at(p + "b_out"), 0, cfg.d_model);
    f.layers_.push_back(std::move(L));
  }
  return f;
}

ForwardResult ComponentForward::run(const std::vector<int> &ids, const Patch *patch) const {
  const ModelConfig &cfg = m_->cfg;
  const Eigen::Index T = Eigen::Index(ids.size()), D = cfg.d_model;
  static const Patch kNone;
  const Patch &P = patch ? *patch : kNone;
  auto delta = [&](Site::Kind kind, int layer, int head, char input, Mat &x) {
    for (const auto &d : P.deltas)
      if (d.child.kind == kind && (kind == Site::Output || d.child.layer == layer) &&
          (kind != Site::Head || (d.child.head == head && (d.input == 0 || d.input == input))))
        x += d.value;
  };
  ForwardResult R;
  R.embed.resize(T, D);
  for (Eigen::Index t = 0; t < T; ++t) R.embed.row(t) = WE_.row(ids[size_t(t)]) + Wpos_.row(t);
  for (const auto &r : P.replace)
    if (r.site.kind == Site::Embed) R.embed = r.value;
  Mat x = R.embed;
  const double scale = cfg.d_head > 0 ? 1.0 / std::sqrt(double(cfg.d_head)) : 1.0;
  R.heads.resize(size_t(cfg.n_layers));
  R.patterns.resize(size_t(cfg.n_layers));
  for (int l = 0; l < cfg.n_layers; ++l) {
    const Layer &L = layers_[size_t(l)];
    Mat next = x;
    for (int h = 0; h < cfg.n_heads; ++h) {
      Mat xq = x, xk = x, xv = x;
      delta(Site::Head, l, h, 'q', xq);
      delta(Site::Head, l, h, 'k', xk);
      delta(Site::Head, l, h, 'v', xv);
      Mat q = (xq * L.WQ[size_t(h)]).rowwise() + L.bQ[size_t(h)];
      Mat k = (xk * L.WK[size_t(h)]).rowwise() + L.bK[size_t(h)];
      Mat v = (xv * L.WV[size_t(h)]).rowwise() + L.bV[size_t(h)];
      Mat s = (q * k.transpose()) * scale;
      for (Eigen::Index i = 0; i < T; ++i) {
        const Eigen::Index visible = cfg.causal ? i + 1 : T;
        const double mx = s.row(i).head(visible).maxCoeff();
        double sum = 0;
        for (Eigen::Index j = 0; j < visible; ++j) sum += (s(i, j) = std::exp(s(i, j) - mx));
        s.row(i).head(visible) /= sum;
        s.row(i).tail(T - visible).setZero();
      }
      for (const auto &p : P.patterns)
        if (p.layer == l && p.head == h) s = p.value;
      Mat out = (s * v) * L.WO[size_t(h)];
      for (const auto &r : P.replace)
        if (r.site.kind == Site::Head && r.site.layer == l && r.site.head == h) out = r.value;
      next += out;
      R.heads[size_t(l)].push_back(std::move(out));
      R.patterns[size_t(l)].push_back(std::move(s));
    }
    next.rowwise() += L.bO;
    x = std::move(next);
    R.residAttn.push_back(x);
    Mat in = x;
    delta(Site::Mlp, l, -1, 0, in);
    Mat hid = ((in * L.Win).rowwise() + L.bin).cwiseMax(0.0);
    for (const auto &r : P.replace)
      if (r.site.kind == Site::Mlp && r.site.layer == l) {
        const Eigen::Index b = r.site.begin >= 0 ? r.site.begin : 0, e = r.site.begin >= 0 ? r.site.end : hid.cols();
        hid.middleCols(b, e - b) = r.value.middleCols(b, e - b);
      }
    Mat out = (hid * L.Wout).rowwise() + L.bout;
    x += out;
    R.neurons.push_back(std::move(hid));
    R.mlp.push_back(std::move(out));
    R.residMlp.push_back(x);
  }
  Mat fin = x;
  delta(Site::Output, -1, -1, 0, fin);
  R.logits = (fin * WU_).rowwise() + bU_;
  const bool categorical = m_->outputEncoding == "categorical";
  for (Eigen::Index t = 1; t < T; ++t) {
    Eigen::RowVectorXd row = R.logits.row(t);
    R.output.push_back(decodeRow(categorical, m_->outputValues, row.data(), int(row.size())));
  }
  return R;
}

std::vector<Scalar> ComponentForward::decodeNode(const NodeInfo &n, const Eigen::MatrixXd &residual) const {
  // decodeNodes over the whole model (so that whatever it knows of the model's residual,
  // e.g. a basis, applies): its entries are the nodes with directions, in order.
  auto all = decodeNodes(*m_, residual);
  size_t k = 0;
  for (const NodeInfo &x : m_->nodes) {
    if (&x == &n || x.id == n.id) break;
    if (!x.writes.empty()) ++k;
  }
  if (k < all.size() && all[k].first == nodeLabel(n)) return all[k].second;
  for (auto &[name, values] : all) // a node left out before it: find it by its label
    if (name == nodeLabel(n)) return values;
  return {};
}

// ---- The checks ----------------------------------------------------------------------

namespace {

struct PairRun {
  std::vector<std::string> a, b;
  std::vector<int> idsA, idsB;
  ForwardResult fa, fb;
  std::vector<Scalar> wantA;                 // the interpreter's output on a
  std::map<int, std::vector<Scalar>> sopsA, sopsB; // every s-op node's value
  std::map<int, SelectorValue> selA, selB;   // every selector's matrix on a and on b
};

} // namespace

llvm::Expected<CircuitReport> checkCircuit(const ir::Graph &g, ir::NodeId output, const InterpreterOptions &ioIn,
                                           const Model &m, const Circuit &c, const CircuitCheckOptions &opts) {
  auto t0 = std::chrono::steady_clock::now();
  auto fwd = ComponentForward::create(m);
  if (!fwd) return fwd.takeError();
  auto exec = Executor::create(m, Precision::F64);
  if (!exec) return exec.takeError();
  CircuitReport rep;
  rep.pairsPerNode = opts.pairs;
  rep.seed = opts.seed;

  std::vector<std::string> vocab;
  for (size_t i = 0; i < m.vocab.size(); ++i)
    if (int(i) != m.bosId && int(i) != m.padId) vocab.push_back(m.vocab[i]);
  const int maxLen = m.cfg.n_ctx - 1;
  std::map<int, const NodeInfo *> infoById;
  for (const NodeInfo &n : m.nodes) infoById[n.id] = &n;
  // A categorical aggregate holds one value one-hot: under an intervention that makes it
  // average different values the model has no answer to match, so the interpreter
  // rejects the pair (as the compiler's check does for the program's own inputs).
  InterpreterOptions io = ioIn;
  io.singleValued.resize(g.size(), 0);
  for (const NodeInfo &n : m.nodes)
    if (n.kind == "aggregate" && n.encoding == "categorical" && n.id >= 0 && size_t(n.id) < g.size())
      io.singleValued[size_t(n.id)] = 1;

  // The pairs, with their clean runs and the interpreter's values on both inputs.
  std::mt19937_64 rng(opts.seed);
  std::vector<PairRun> pairs;
  int rejected = 0;
  std::vector<ir::NodeId> roots = {output};
  for (const NodeInfo &n : m.nodes)
    if (n.id >= 0 && size_t(n.id) < g.size()) roots.push_back(ir::NodeId(n.id));
  const uint64_t totalWork =
      uint64_t(opts.pairs) * (c.nodes.size() + c.components.size() + c.headEdges.size() + c.qkvEdges.size() + 1);
  uint64_t work = 0;
  auto tick = [&] {
    ++work;
    if (opts.progress && (work % 64 == 0 || work == totalWork)) opts.progress(work, totalWork);
  };
  for (int i = 0; i < opts.pairs && !vocab.empty() && maxLen > 0; ++i) {
    tick();
    PairRun p;
    std::uniform_int_distribution<int> L(1, maxLen);
    std::uniform_int_distribution<size_t> Tok(0, vocab.size() - 1);
    size_t len = size_t(L(rng));
    for (size_t k = 0; k < len; ++k) p.a.push_back(vocab[Tok(rng)]);
    for (size_t k = 0; k < len; ++k) p.b.push_back(vocab[Tok(rng)]);
    auto ia = exec->encode(p.a), ib = exec->encode(p.b);
    if (!ia || !ib) {
      llvm::consumeError(ia.takeError());
      llvm::consumeError(ib.takeError());
      ++rejected;
      continue;
    }
    p.idsA = *ia;
    p.idsB = *ib;
    Interpreter interp(g, io);
    bool ok = true;
    for (int side = 0; side < 2 && ok; ++side) {
      if (auto err = interp.run(side ? p.b : p.a, roots)) {
        llvm::consumeError(std::move(err));
        ok = false;
        break;
      }
      for (const NodeInfo &n : m.nodes) {
        if (n.id < 0 || size_t(n.id) >= g.size()) continue;
        if (g[ir::NodeId(n.id)].isSelector()) {
          (side ? p.selB : p.selA)[n.id] = interp.selector(ir::NodeId(n.id));
        } else {
          (side ? p.sopsB : p.sopsA)[n.id] = interp.sop(ir::NodeId(n.id));
        }
      }
      if (!side) p.wantA = interp.sop(output);
    }
    if (!ok) {
      ++rejected;
      continue;
    }
    p.fa = fwd->run(p.idsA);
    p.fb = fwd->run(p.idsB);
    pairs.push_back(std::move(p));
  }

  auto changed = [](const std::vector<Scalar> &got, const std::vector<Scalar> &clean) {
    return !matchesInterpreter(got, clean);
  };
  auto neuronsOf = [&](const PairRun &p, int layer) -> const Mat & { return p.fb.neurons[size_t(layer)]; };

  // --- Nodes: interchange (or pattern interchange) and cone ablation.
  for (const CircuitNode &cn : c.nodes) {
    NodeCheck nc;
    nc.id = cn.id;
    nc.name = cn.name;
    const bool selector = isSelectorKind(cn.kind);
    if (!cn.skipReason.empty() || cn.id < 0 || size_t(cn.id) >= g.size()) {
      nc.check = "skipped";
      nc.reason = cn.skipReason.empty() ? "not a node of the program's graph" : cn.skipReason;
      rep.nodes.push_back(std::move(nc));
      work += uint64_t(opts.pairs);
      continue;
    }
    nc.check = selector ? "pattern" : "interchange";
    const NodeInfo &info = *infoById.at(cn.id);
    // A value with no residual directions of its own (a selector width that the next MLP
    // reads from its head's output) cannot be decoded: no cone ablation then.
    const bool decodable = selector || !info.writes.empty();
    if (!decodable)
      nc.coneReason = "its value has no residual directions of its own: the next MLP reads its head's output";
    // Whether a neuron of `layer` lies in the cone: ranges of the cone's MLP sites.
    auto inCone = [&](const Site &s) {
      for (const Site &x : cn.coneSites)
        if (x.kind == s.kind && x.layer == s.layer && x.head == s.head) return true;
      return false;
    };
    for (const PairRun &p : pairs) {
      tick();
      // Interchange.
      Patch patch;
      InterpreterOptions o = io;
      if (selector) {
        for (const Site &s : cn.patternHeads)
          patch.patterns.push_back({s.layer, s.head, p.fb.patterns[size_t(s.layer)][size_t(s.head)]});
        // Only the readers whose heads are patched attend with b's matrix; a composite
        // built from the selector keeps computing it on a, as its heads do.
        for (int reader : cn.patternReaders) o.attendOverrides[ir::NodeId(reader)] = p.selB.at(cn.id);
      } else {
        for (const Site &s : cn.sites)
          patch.replace.push_back({s, s.kind == Site::Head ? p.fb.heads[size_t(s.layer)][size_t(s.head)]
                                                           : neuronsOf(p, s.layer)});
        o.sopOverrides[ir::NodeId(cn.id)] = p.sopsB.at(cn.id);
      }
      Interpreter interp(g, o);
      if (auto err = interp.run(p.a, {output})) {
        llvm::consumeError(std::move(err));
        ++nc.skippedPairs;
        continue;
      }
      ForwardResult r = fwd->run(p.idsA, &patch);
      const auto &want = interp.sop(output);
      ++nc.pairs;
      // Whether the intervention changes anything: the node's value on b differs from a's.
      if (selector ? p.selB.at(cn.id).m != p.selA.at(cn.id).m : !matchesInterpreter(p.sopsB.at(cn.id), p.sopsA.at(cn.id)))
        ++nc.differs;
      if (matchesInterpreter(r.output, want)) {
        ++nc.agree;
        if (int(nc.examples.size()) < opts.examples) nc.examples.push_back({p.a, p.b, r.output});
      } else if (!nc.failure) {
        nc.failure = PairExample{p.a, p.b, r.output};
        nc.failureWant = want;
      }
      // Cone ablation: every component outside the cone from b.
      Patch abl;
      if (!inCone(Site{Site::Embed})) abl.replace.push_back({Site{Site::Embed}, p.fb.embed});
      for (const CircuitComponent &comp : c.components) {
        if (comp.site.kind == Site::Head) {
          if (!inCone(comp.site)) abl.replace.push_back({comp.site, p.fb.heads[size_t(comp.site.layer)][size_t(comp.site.head)]});
          continue;
        }
        // MLP neurons outside the cone's ranges of this layer.
        const int l = comp.site.layer, M = m.cfg.d_mlp;
        std::vector<char> keep(size_t(M), 0);
        for (const Site &x : cn.coneSites)
          if (x.kind == Site::Mlp && x.layer == l)
            for (int j = std::max(0, x.begin); j < std::min(M, x.end); ++j) keep[size_t(j)] = 1;
        for (int j = 0; j < M;) {
          if (keep[size_t(j)]) {
            ++j;
            continue;
          }
          int e = j;
          while (e < M && !keep[size_t(e)]) ++e;
          abl.replace.push_back({Site{Site::Mlp, l, -1, j, e}, p.fb.neurons[size_t(l)]});
          j = e;
        }
      }
      if (!decodable) continue;
      ForwardResult ra = fwd->run(p.idsA, &abl);
      ++nc.conePairs;
      bool same;
      std::vector<Scalar> got;
      if (selector) {
        // The heads that attend with it keep their patterns on a.
        same = true;
        for (const Site &s : cn.patternHeads)
          same = same && (ra.patterns[size_t(s.layer)][size_t(s.head)] - p.fa.patterns[size_t(s.layer)][size_t(s.head)])
                                 .cwiseAbs()
                                 .maxCoeff() < 1e-6;
      } else {
        const Mat &res = cn.readAfterMlp ? ra.residMlp[size_t(cn.readLayer)] : ra.residAttn[size_t(cn.readLayer)];
        got = fwd->decodeNode(info, res);
        same = matchesInterpreter(got, p.sopsA.at(cn.id));
      }
      if (same) ++nc.coneUnchanged;
      else if (!nc.coneFailure) {
        nc.coneFailure = PairExample{p.a, p.b, ra.output};
        nc.coneGot = got;
        if (!selector) nc.coneWant = p.sopsA.at(cn.id);
      }
    }
    if (!nc.passed()) rep.passed = false;
    rep.nodes.push_back(std::move(nc));
  }

  // --- Components: resample-ablating one changes the output on some pair.
  rep.componentsTotal = int(c.components.size());
  for (const CircuitComponent &comp : c.components) {
    bool found = false;
    for (const PairRun &p : pairs) {
      tick();
      if (found) continue;
      Patch patch;
      patch.replace.push_back({comp.site, comp.site.kind == Site::Head
                                              ? p.fb.heads[size_t(comp.site.layer)][size_t(comp.site.head)]
                                              : p.fb.neurons[size_t(comp.site.layer)]});
      ForwardResult r = fwd->run(p.idsA, &patch);
      if (changed(r.output, p.fa.output)) {
        found = true;
        rep.componentWitness.push_back({comp, PairExample{p.a, p.b, r.output}});
      }
    }
    if (found) ++rep.componentsNecessary;
    else rep.componentsUnnecessary.push_back(comp);
  }

  // --- Edges: the child reads resid_a + out_P(b) - out_P(a).
  auto checkEdges = [&](const std::vector<CircuitEdge> &edges, EdgeCheck &ec) {
    ec.total = int(edges.size());
    for (const CircuitEdge &e : edges) {
      bool found = false;
      for (const PairRun &p : pairs) {
        tick();
        if (found) continue;
        Patch patch;
        patch.deltas.push_back({e.child, e.input, p.fb.outputOf(e.parent) - p.fa.outputOf(e.parent)});
        ForwardResult r = fwd->run(p.idsA, &patch);
        if (changed(r.output, p.fa.output)) {
          found = true;
          ec.witness.push_back({e, PairExample{p.a, p.b, r.output}});
        }
      }
      if (found) ++ec.necessary;
      else ec.unnecessary.push_back(e);
    }
  };
  checkEdges(c.headEdges, rep.heads);
  checkEdges(c.qkvEdges, rep.qkv);
  if (opts.progress) opts.progress(totalWork, totalWork);
  rep.skippedPairs = rejected;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

std::string circuitReportJson(const CircuitReport &r) {
  std::string s = fmt::format("{{\"pairs_per_node\": {}, \"seed\": {}, \"passed\": {}, \"skipped_pairs\": {}, \"nodes\": [",
                              r.pairsPerNode, r.seed, r.passed ? "true" : "false", r.skippedPairs);
  for (size_t i = 0; i < r.nodes.size(); ++i) {
    const NodeCheck &n = r.nodes[i];
    s += fmt::format("{}\n  {{\"id\": {}, \"name\": \"{}\", \"check\": \"{}\"", i ? "," : "", n.id, jsonEscape(n.name),
                     n.check);
    if (n.check == "skipped") {
      s += fmt::format(", \"reason\": \"{}\"}}", jsonEscape(n.reason));
      continue;
    }
    s += fmt::format(", \"pairs\": {}, \"agree\": {}, \"differs\": {}, \"skipped_pairs\": {}, \"passed\": {}, "
                     "\"cone_ablation\": {{\"pairs\": {}, \"unchanged\": {}{}}}, \"examples\": {}",
                     n.pairs, n.agree, n.differs, n.skippedPairs, n.passed() ? "true" : "false", n.conePairs, n.coneUnchanged,
                     n.coneReason.empty() ? "" : fmt::format(", \"skipped\": \"{}\"", jsonEscape(n.coneReason)),
                     joinJson(n.examples, [](const PairExample &e) { return "{" + exampleJson(e) + "}"; }));
    if (n.failure)
      s += fmt::format(", \"failure\": {{{}, \"interpreter\": {}}}", exampleJson(*n.failure), valuesJson(n.failureWant));
    if (n.coneFailure)
      s += fmt::format(", \"cone_failure\": {{{}, \"value\": {}, \"interpreter\": {}}}", exampleJson(*n.coneFailure),
                       valuesJson(n.coneGot), valuesJson(n.coneWant));
    s += "}";
  }
  s += fmt::format("],\n \"components\": {{\"total\": {}, \"necessary\": {}, \"unnecessary\": {}, \"witness\": {}}}",
                   r.componentsTotal, r.componentsNecessary,
                   joinJson(r.componentsUnnecessary, [](const CircuitComponent &x) { return refJson(x.ref); }),
                   joinJson(r.componentWitness, [](const auto &w) {
                     return fmt::format("{{\"component\": {}, {}}}", refJson(w.first.ref), exampleJson(w.second));
                   }));
  auto edges = [](const EdgeCheck &e) {
    return fmt::format("{{\"total\": {}, \"necessary\": {}, \"unnecessary\": {}, \"witness\": {}}}", e.total,
                       e.necessary, joinJson(e.unnecessary, edgeJson), joinJson(e.witness, [](const auto &w) {
                         return fmt::format("{{\"edge\": {}, {}}}", edgeJson(w.first), exampleJson(w.second));
                       }));
  };
  // No time in it: the same model gives the same bytes (suite rebuilds compare them).
  s += fmt::format(",\n \"edges\": {{\"heads\": {},\n  \"qkv\": {}}}}}", edges(r.heads), edges(r.qkv));
  return s;
}

} // namespace raspc
