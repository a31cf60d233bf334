// Lowering: the RASP graph becomes a craft program of MLP blocks and attention heads
// over labelled residual directions. This file walks the graph, decides what each
// node needs (features, conversions, the maps read through their leaf) and calls the
// constructions in passes/lower/, one file each.
//
// Every construction is exact for the inputs the value sets allow:
// - MLPs read categorical inputs as one-hot directions (a neuron per combination,
//   relu(x1:a + x2:b - 1)), numerical inputs through step functions whose slopes come
//   from the gaps between the input's values, and affine maps of numbers through two
//   neurons (relu(y) - relu(-y)), so negative outputs are fine.
// - Attention scores are c * [predicate]; BOS, at position 0, scores c/2 below a
//   selected key so it wins only when nothing is selected, and carries the default.
//   The coldness c makes what leaks to other keys smaller than float32 resolution.
// - Every MLP neuron is switched off at BOS (a large negative weight on the BOS
//   direction), and the BOS query attends to itself, so BOS stays clean: it only
//   ever holds `one` and `tokens:<bos>` and is never mistaken for a selected key.
#include "passes/Passes.h"
#include "passes/lower/Attention.h"
#include "passes/lower/CategoricalMlp.h"
#include "passes/lower/Conversion.h"
#include "passes/lower/MixedMlp.h"
#include "passes/lower/NumericalMlp.h"
#include "passes/lower/Tuple.h"
#include "semantics/Semantics.h"
#include "support/LocatedError.h"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <unordered_map>
#include <unordered_set>

namespace raspc::passes {

using craft::Block;
using craft::BlockKind;
using craft::Feature;
using craft::kBos;
using craft::kOne;
using ir::NodeId;
using ir::NodeKind;

namespace {

class Lowering {
public:
  explicit Lowering(const Analysis &a) : a_(a), feat_(a.g.size()) {
    p_.residual.add("one");
    p_.residual.add("tokens:<bos>");
    double n = std::max(1, a.opts.maxLen);
    // Leakage to non-selected keys is e^-c per key and e^-c/2 for BOS; this keeps the
    // total under ~1e-9 of the selected value for any length up to N.
    c_ = 2.0 * std::log(n + 1.0) + 24.0;
  }

  llvm::Expected<craft::Program> run() {
    for (NodeId id : a_.order) {
      if (!a_.materialized[id]) continue;
      if (auto err = lowerNode(id)) return err;
    }
    const ir::Node &out = a_.g[a_.output];
    if (out.kind == NodeKind::Constant)
      return locatedError(out.loc, "the output is a constant; there is nothing to compile");
    p_.output = *feat_[a_.output];
    p_.outputNode = a_.output;
    for (NodeId id : a_.order)
      if (a_.materialized[id] && feat_[id]) p_.features[id] = *feat_[id];
    buildEmbedding();
    return std::move(p_);
  }

private:
  const Analysis &a_;
  craft::Program p_;
  std::vector<std::optional<Feature>> feat_;
  std::map<NodeId, Feature> asCategorical_, asNumerical_;
  std::map<NodeId, Feature> fracs_; // selector width heads' 1/(w+1) directions
  std::vector<double> maxAbs_;      // see maxAbs()
  std::map<std::string, Feature> tuples_;
  std::map<std::string, NodeId> labelOwner_;
  std::unordered_map<NodeId, std::vector<NodeId>> fusedOrder_; // see evalFused
  std::unordered_map<NodeId, std::vector<NodeId>> formulas_;   // see evalSelector
  std::vector<std::pair<NodeId, Feature>> tokenFeatures_, indexFeatures_;
  double c_;

  // ---- features ----
  std::string base(NodeId id) {
    std::string b = nodeLabel(a_.g, id);
    auto it = labelOwner_.find(b);
    if (it != labelOwner_.end() && it->second != id) b += "_" + std::to_string(id);
    labelOwner_.emplace(b, id);
    return b;
  }

  Feature makeFeature(const std::string &label, const std::vector<Scalar> &values, bool numerical) {
    Feature f;
    f.numerical = numerical;
    if (numerical) {
      f.values = values;
      f.dirs = {p_.residual.add(label)};
      double m = 1.0;
      for (auto &v : values)
        if (isNumber(v)) m = std::max(m, std::fabs(toDouble(v)));
      if (maxAbs_.size() <= size_t(f.dirs[0])) maxAbs_.resize(size_t(f.dirs[0]) + 1, 1.0);
      maxAbs_[size_t(f.dirs[0])] = m;
      return f;
    }
    for (auto &v : values) {
      if (isNone(v)) { // None is stored as "no direction set"
        f.canBeNone = true;
        continue;
      }
      f.values.push_back(v);
      f.dirs.push_back(p_.residual.add(label + ":" + formatScalar(v)));
    }
    return f;
  }

  static Feature constant(const Scalar &v, bool numerical) {
    Feature f;
    f.numerical = numerical;
    f.values = {v};
    f.dirs = {kOne};
    return f;
  }

  // The feature of a node in its own encoding (constants included).
  const Feature &featureOf(NodeId id) {
    if (!feat_[id]) {
      const ir::Node &n = a_.g[id];
      feat_[id] = constant(n.value, a_.isNumerical(id));
    }
    return *feat_[id];
  }

  llvm::Expected<Feature> categorical(NodeId id) {
    const Feature &f = featureOf(id);
    if (!f.numerical) return f;
    if (f.isConstant()) return constant(f.values[0], false);
    auto it = asCategorical_.find(id);
    if (it != asCategorical_.end()) return it->second;
    Feature out = makeFeature(base(id) + "#cat", a_.values[id], false);
    Block b = mlpBlock(id, "to categorical");
    toCategorical(b, f, out);
    addMlp(std::move(b));
    return asCategorical_[id] = out;
  }

  llvm::Expected<Feature> numerical(NodeId id) {
    const Feature &f = featureOf(id);
    if (f.numerical) return f;
    for (auto &v : f.values)
      if (!isNumber(v))
        return locatedError(a_.g[id].loc, "this s-op is used as a number (for a mean) but can be " +
                                              formatScalar(v, true));
    if (f.isConstant()) return constant(f.values[0], true);
    auto it = asNumerical_.find(id);
    if (it != asNumerical_.end()) return it->second;
    Feature out = makeFeature(base(id) + "#num", a_.values[id], true);
    if (a_.g[id].kind == NodeKind::Map && !readsFrac(id) && !a_.leaves[id].empty()) {
      // A map computes its number from its own leaves, beside its one-hot MLP: no
      // conversion layer after it.
      const auto &leaves = a_.leaves[id];
      std::vector<Feature> ins;
      for (NodeId l : leaves) ins.push_back(featureOf(l));
      MapFn f = [this, id, leaves](const std::vector<Scalar> &v) { return evalFused(id, leaves, v); };
      if (auto err = mlp(id, "to numerical", ins, f, out, leaves)) return err;
      return asNumerical_[id] = out;
    }
    Block b = mlpBlock(id, "to numerical");
    toNumerical(b, f, out);
    addMlp(std::move(b));
    return asNumerical_[id] = out;
  }

  // ---- nodes ----
  llvm::Error lowerNode(NodeId id) {
    const ir::Node &n = a_.g[id];
    bool num = a_.isNumerical(id);
    switch (n.kind) {
    case NodeKind::Tokens:
    case NodeKind::Indices: {
      if (num)
        for (auto &v : a_.values[id])
          if (!isNumber(v)) return locatedError(n.loc, "numerical tokens need a numeric vocabulary");
      std::string label = n.kind == NodeKind::Indices ? "indices" : ir::tokenTypeName(n.tokenType);
      if (num) label += "#num";
      feat_[id] = makeFeature(label, a_.values[id], num);
      (n.kind == NodeKind::Tokens ? tokenFeatures_ : indexFeatures_).emplace_back(id, *feat_[id]);
      return llvm::Error::success();
    }
    case NodeKind::Map: return lowerMap(id);
    case NodeKind::Aggregate: return lowerAggregate(id);
    case NodeKind::SelectorWidth: {
      auto groups = selectorGroups(n.args[0]);
      if (!groups) return groups.takeError();
      return lowerWidth(id, std::move(*groups));
    }
    case NodeKind::Length: {
      // The width of the selector that selects every key.
      Group all{constant(Scalar(true), false), constant(Scalar(true), false),
                [](const Scalar &, const Scalar &) { return true; }};
      return lowerWidth(id, {all});
    }
    default: return llvm::Error::success();
    }
  }

  // Value of a fused map, given the values of its leaves (nullopt: an error or None).
  // The group's inner maps are found once per map and evaluated in id (topological)
  // order: no recursion (fused chains can be long), and a shared subexpression is
  // computed once (a chain of diamonds would otherwise take exponential time).
  std::optional<Scalar> evalFused(NodeId id, const std::vector<NodeId> &leaves, const std::vector<Scalar> &vals) {
    auto it = fusedOrder_.find(id);
    if (it == fusedOrder_.end()) {
      std::vector<NodeId> inner, stack = {id};
      std::unordered_set<NodeId> seen(leaves.begin(), leaves.end());
      while (!stack.empty()) {
        NodeId x = stack.back();
        stack.pop_back();
        if (a_.g[x].kind == NodeKind::Constant || !seen.insert(x).second) continue;
        inner.push_back(x);
        for (NodeId c : a_.g[x].args) stack.push_back(c);
      }
      std::sort(inner.begin(), inner.end());
      it = fusedOrder_.emplace(id, std::move(inner)).first;
    }
    std::unordered_map<NodeId, std::optional<Scalar>> memo;
    for (size_t i = 0; i < leaves.size(); ++i) memo[leaves[i]] = vals[i];
    for (NodeId x : it->second) {
      const ir::Node &n = a_.g[x];
      Scalar args[3];
      bool ok = true;
      auto arg = [&](size_t i) {
        const ir::Node &c = a_.g[n.args[i]];
        if (c.kind == NodeKind::Constant) args[i] = c.value;
        else if (const auto &v = memo[n.args[i]]) args[i] = *v;
        else ok = false;
      };
      if (n.op == ir::MapOp::IfElse) {
        // Only the chosen branch counts: the other may have failed (a division by
        // zero the condition guards against), as the interpreter discards it.
        arg(1);
        if (ok && !isNone(args[1])) arg(scalarTruthy(args[1]) ? 0 : 2);
      } else {
        for (size_t i = 0; i < n.args.size() && ok; ++i) arg(i);
      }
      std::optional<Scalar> result;
      if (ok) {
        OpResult r = applyOp(n.op, args, n.args.size(), n.table.get());
        if (r.ok) result = std::move(r.value);
      }
      memo[x] = std::move(result);
    }
    return memo[id];
  }

  // A map of one selector width, alone or with categorical s-ops, reads the head's
  // 1/(w+1) directly (with others, through the gated construction of lower/MixedMlp):
  // it runs in the MLP right after the head, where the width itself would be computed,
  // saving a layer. The index of that leaf, or -1.
  int fracLeaf(NodeId map) const {
    const auto &l = a_.leaves[map];
    int at = -1;
    size_t combos = 1;
    for (size_t i = 0; i < l.size(); ++i) {
      if (a_.g[l[i]].kind == NodeKind::SelectorWidth) {
        if (at >= 0) return -1; // two numbers: no direct construction
        at = int(i);
        continue;
      }
      if (a_.isNumerical(l[i]) || a_.canFail[l[i]]) return -1;
      combos *= std::max<size_t>(1, a_.values[l[i]].size());
      if (combos > kMaxMixedCombinations) return -1;
    }
    return at;
  }
  bool readsFrac(NodeId map) const { return fracLeaf(map) >= 0; }

  // A map read through its leaf (Analysis::inHead): heads read the leaf, and apply the
  // map to each of its values in their tables.
  NodeId sourceOf(NodeId part) const { return a_.inHead[part] ? a_.leaves[part][0] : part; }
  std::optional<Scalar> through(NodeId part, const Scalar &v) {
    if (!a_.inHead[part]) return v;
    return evalFused(part, a_.leaves[part], {v});
  }
  // Whether a select atom selects, given its key and query sources' values.
  bool atomSelects(NodeId at, const Scalar &kv, const Scalar &qv) {
    const ir::Node &s = a_.g[at];
    auto k = through(s.args[0], kv), q = through(s.args[1], qv);
    return k && q && selects(s, *k, *q);
  }

  llvm::Error lowerMap(NodeId id) {
    const auto &leaves = a_.leaves[id];
    MapFn f = [this, id, leaves](const std::vector<Scalar> &v) { return evalFused(id, leaves, v); };
    if (int w = fracLeaf(id); w >= 0) {
      Feature out = makeFeature(base(id), a_.values[id], a_.isNumerical(id));
      feat_[id] = out;
      std::vector<Feature> ins;
      for (NodeId l : leaves) ins.push_back(l == leaves[size_t(w)] ? fracs_.at(l) : featureOf(l));
      MapFn g = [f, w](std::vector<Scalar> v) {
        v[size_t(w)] = widthOf(v[size_t(w)]);
        return f(v);
      };
      return mlp(id, "map", ins, g, out);
    }
    std::vector<Feature> ins;
    for (NodeId l : leaves) ins.push_back(featureOf(l));
    Feature out = makeFeature(base(id), a_.values[id], a_.isNumerical(id));
    // Where it failed it holds no value: the maps reading it see that as None, which
    // propagates as the failure would, and is discarded by a conditional alike.
    if (a_.canFail[id] && !out.numerical) out.canBeNone = true;
    feat_[id] = out;
    return mlp(id, "map", ins, f, out, leaves);
  }

  // ---- MLPs ----

  // Adds an MLP block computing `out` = f(ins), built by the first construction in
  // passes/lower/ that fits the inputs' encodings. `leafNodes` (parallel to ins) lets
  // it convert numerical inputs to categorical when no direct construction fits.
  llvm::Error mlp(NodeId node, const std::string &what, std::vector<Feature> ins, const MapFn &f, const Feature &out,
                  const std::vector<NodeId> &leafNodes = {}) {
    // Constant inputs are folded into f.
    std::vector<Feature> live;
    std::vector<NodeId> liveNodes;
    std::vector<int> where; // index in ins of each live input
    for (size_t i = 0; i < ins.size(); ++i)
      if (!ins[i].isConstant()) {
        live.push_back(ins[i]);
        where.push_back(int(i));
        if (!leafNodes.empty()) liveNodes.push_back(leafNodes[i]);
      }
    MapFn g = [&ins, &where, &f](const std::vector<Scalar> &v) {
      std::vector<Scalar> full;
      for (auto &in : ins) full.push_back(in.values[0]);
      for (size_t i = 0; i < where.size(); ++i) full[size_t(where[i])] = v[i];
      return f(full);
    };
    size_t numericalInputs = 0;
    for (auto &in : live) numericalInputs += in.numerical;
    Block b = mlpBlock(node, what);
    if (numericalInputs == 0) {
      categoricalMlp(b, live, g, out);
    } else if (live.size() == 1) {
      numericalMlp(b, live[0], g, out);
    } else if (live.size() == 2 && out.numerical && numericalInputs == 2 && affineMlp(b, live, g, out)) {
      // done
    } else if (live.size() == 2 && numericalInputs == 2 && sumMlp(b, live, g, out)) {
      // done: a function of a +- b
    } else if (numericalInputs == 1 && mixedMlp(b.neurons, live, g, out)) {
      // done: gated per categorical combination (passes/lower/MixedMlp.cpp)
    } else {
      // Make every numerical input categorical, then use a table.
      if (liveNodes.size() != live.size())
        return locatedError(a_.g[node].loc, "cannot compile this combination of numerical s-ops");
      // Numerical value sets can be large (up to 2M values): refuse before converting.
      double pairs = 1;
      for (auto &in : live) pairs *= double(std::max<size_t>(1, in.values.size()));
      if (numericalInputs > 0 && pairs > 100000)
        return locatedError(a_.g[node].loc,
                            "this map reads " + std::to_string(numericalInputs) +
                                " numerical s-ops in a way no direct construction covers (it is not affine, nor a "
                                "function of their sum or difference), and converting them to one-hot would need " +
                                fmt::format("{:.0f}", pairs) +
                                " value combinations; compute it in steps: compare each number with a constant "
                                "first, or write the sum or difference it depends on as numerical(...)");
      for (size_t i = 0; i < live.size(); ++i)
        if (live[i].numerical) {
          auto c = categorical(liveNodes[i]);
          if (!c) return c.takeError();
          live[i] = *c;
        }
      size_t combos = 1;
      for (auto &in : live) combos *= std::max<size_t>(1, in.values.size());
      if (combos > 100000)
        return locatedError(a_.g[node].loc, "this elementwise operation combines s-ops with " +
                                                std::to_string(combos) +
                                                " value combinations; compute it in smaller steps");
      categoricalMlp(b, live, g, out);
    }
    addMlp(std::move(b));
    return llvm::Error::success();
  }

  // An empty MLP block computing `node`, for a construction to fill.
  static Block mlpBlock(NodeId node, const std::string &what) {
    Block b;
    b.kind = BlockKind::Mlp;
    b.node = node;
    b.what = what;
    return b;
  }

  // Places a filled MLP block, its neurons switched off at BOS.
  void addMlp(Block b) {
    finishMlp(b);
    p_.blocks.push_back(std::move(b));
  }

  // Switch every neuron off at BOS: at BOS the residual holds at most 1 in any
  // direction, so a weight of -(1 + sum |w| + |bias|) keeps the neuron at or below -1.
  void finishMlp(Block &b) {
    for (auto &n : b.neurons) {
      double bound = 1.0 + std::fabs(n.bias);
      for (auto &[d, w] : n.in) bound += std::fabs(w) * maxAbs(d);
      n.in.push_back({kBos, -bound});
    }
  }

  // The largest magnitude a direction can hold at BOS: 1 for one-hot and flag
  // directions, the largest |value| for a number (an aggregate's default sits at
  // BOS from its head until the cleanup neuron after it).
  double maxAbs(int dir) const { return size_t(dir) < maxAbs_.size() ? maxAbs_[size_t(dir)] : 1.0; }

  // ---- attention ----

  // Selectors are and/or/not formulas over select atoms, walked with explicit stacks
  // (Graph::preorder) and evaluated in id order: and-chains can be long, and shared.
  static bool inFormula(const ir::Node &n) { return n.kind != NodeKind::Select; }

  // The selector's atoms (select nodes), each once, leftmost first.
  void atoms(NodeId sel, std::vector<NodeId> &out) {
    std::unordered_set<NodeId> seen(out.begin(), out.end());
    for (NodeId x : a_.g.preorder(sel, inFormula))
      if (a_.g[x].kind == NodeKind::Select && seen.insert(x).second) out.push_back(x);
  }

  // The value of a selector formula, given the value of each atom.
  bool evalSelector(NodeId sel, const std::function<bool(NodeId)> &atom) {
    auto it = formulas_.find(sel);
    if (it == formulas_.end()) {
      std::vector<NodeId> nodes = a_.g.preorder(sel, inFormula);
      std::sort(nodes.begin(), nodes.end()); // args first
      it = formulas_.emplace(sel, std::move(nodes)).first;
    }
    const auto &nodes = it->second;
    std::vector<char> val(nodes.size());
    auto at = [&](NodeId x) { return val[size_t(std::lower_bound(nodes.begin(), nodes.end(), x) - nodes.begin())]; };
    for (size_t i = 0; i < nodes.size(); ++i) {
      const ir::Node &n = a_.g[nodes[i]];
      switch (n.kind) {
      case NodeKind::Select: val[i] = atom(nodes[i]); break;
      case NodeKind::SelectAnd: val[i] = at(n.args[0]) && at(n.args[1]); break;
      case NodeKind::SelectOr: val[i] = at(n.args[0]) || at(n.args[1]); break;
      default: val[i] = !at(n.args[0]);
      }
    }
    return val.back();
  }

  // The top-level `and` factors of a selector, each once, leftmost first.
  void andFactors(NodeId sel, std::vector<NodeId> &out) {
    auto isAnd = [](const ir::Node &n) { return n.kind == NodeKind::SelectAnd; };
    for (NodeId x : a_.g.preorder(sel, isAnd))
      if (!isAnd(a_.g[x])) out.push_back(x);
  }

  // A group whose query and key features are tuples of the given s-ops.
  llvm::Expected<Group> tupleGroup(NodeId sel, const std::vector<NodeId> &atomIds) {
    std::vector<NodeId> keys, queries;
    for (NodeId at : atomIds) {
      NodeId k = sourceOf(a_.g[at].args[0]), q = sourceOf(a_.g[at].args[1]);
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
      if (std::find(queries.begin(), queries.end(), q) == queries.end()) queries.push_back(q);
    }
    auto kt = tuple(sel, keys);
    if (!kt) return kt.takeError();
    auto qt = tuple(sel, queries);
    if (!qt) return qt.takeError();
    auto kCombos = kt->second, qCombos = qt->second;
    // The head's W_Q and W_K each hold at least a query row per key direction: refuse
    // before scoring every pair.
    int64_t pairs = int64_t(kCombos.size()) * int64_t(qCombos.size()); // each <= 20000
    if (2 * pairs > a_.opts.maxParams) return tooManyParameters(2 * pairs, a_.opts.maxParams);
    Group g;
    g.k = kt->first;
    g.q = qt->first;
    g.pred = [this, sel, atomIds, keys, queries, kCombos, qCombos](const Scalar &kv, const Scalar &qv) {
      // A 1-tuple that can be None has the None combination last.
      const auto &kc = kCombos[isNone(kv) ? kCombos.size() - 1 : size_t(std::get<int64_t>(kv))];
      const auto &qc = qCombos[isNone(qv) ? qCombos.size() - 1 : size_t(std::get<int64_t>(qv))];
      return evalSelector(sel, [&](NodeId at) {
        const ir::Node &s = a_.g[at];
        size_t ki = size_t(std::find(keys.begin(), keys.end(), sourceOf(s.args[0])) - keys.begin());
        size_t qi = size_t(std::find(queries.begin(), queries.end(), sourceOf(s.args[1])) - queries.begin());
        return atomSelects(at, kc[ki], qc[qi]);
      });
    };
    return g;
  }

  // A categorical feature whose values are the combinations of several s-ops' values
  // (value i stands for combination i, returned alongside; passes/lower/Tuple.h).
  llvm::Expected<std::pair<Feature, Combinations>> tuple(NodeId sel, const std::vector<NodeId> &parts) {
    std::vector<Feature> ins;
    std::string key, label = "tuple(";
    for (NodeId p : parts) {
      auto f = categorical(p);
      if (!f) return f.takeError();
      ins.push_back(*f);
      key += std::to_string(p) + ",";
      label += (label.size() > 6 ? "," : "") + nodeLabel(a_.g, p);
    }
    label += ")";
    auto combos = combinations(ins, a_.g[sel].loc);
    if (!combos) return combos.takeError();
    if (parts.size() == 1) return std::make_pair(singleTuple(ins[0]), std::move(*combos));
    auto it = tuples_.find(key);
    if (it != tuples_.end()) return std::make_pair(it->second, std::move(*combos));
    Feature out = tupleFeature(p_.residual, label, *combos);
    if (auto err = mlp(sel, "tuple", ins, tupleIndex(*combos), out)) return err;
    tuples_[key] = out;
    return std::make_pair(out, std::move(*combos));
  }

  // Splits a selector into groups whose scores add up: an `and` of parts that each
  // compare one key s-op with one query s-op. Anything else compares tuples.
  llvm::Expected<std::vector<Group>> selectorGroups(NodeId sel) {
    std::vector<NodeId> factors;
    andFactors(sel, factors);
    // Factors over the same (keys, queries) pair merge into one group.
    std::vector<std::pair<std::pair<NodeId, NodeId>, std::vector<NodeId>>> byPair;
    bool simple = true;
    for (NodeId f : factors) {
      std::vector<NodeId> ats;
      atoms(f, ats);
      auto sources = [&](NodeId at) { return std::make_pair(sourceOf(a_.g[at].args[0]), sourceOf(a_.g[at].args[1])); };
      std::pair<NodeId, NodeId> pr = sources(ats[0]);
      for (NodeId at : ats)
        if (sources(at) != pr) simple = false;
      if (!simple) break;
      auto it = std::find_if(byPair.begin(), byPair.end(), [&](auto &e) { return e.first == pr; });
      if (it == byPair.end()) byPair.push_back({pr, {f}});
      else it->second.push_back(f);
    }
    std::vector<Group> groups;
    if (!simple) {
      std::vector<NodeId> ats;
      atoms(sel, ats);
      auto g = tupleGroup(sel, ats);
      if (!g) return g.takeError();
      groups.push_back(std::move(*g));
      return groups;
    }
    for (auto &[pr, fs] : byPair) {
      auto kf = categorical(pr.first);
      if (!kf) return kf.takeError();
      auto qf = categorical(pr.second);
      if (!qf) return qf.takeError();
      Group g;
      g.k = *kf;
      g.q = *qf;
      g.pred = [this, fs](const Scalar &kv, const Scalar &qv) {
        for (NodeId f : fs)
          if (!evalSelector(f, [&](NodeId at) { return atomSelects(at, kv, qv); })) return false;
        return true;
      };
      groups.push_back(std::move(g));
    }
    return groups;
  }

  llvm::Error lowerAggregate(NodeId id) {
    const ir::Node &n = a_.g[id];
    auto groups = selectorGroups(n.args[0]);
    if (!groups) return groups.takeError();
    bool num = a_.isNumerical(id);
    Feature out = makeFeature(base(id), a_.values[id], num);
    // What the head copies from each direction it reads: the leaf's, for a map read
    // through it.
    std::vector<std::pair<int, Scalar>> values;
    NodeId v = n.args[1];
    if (num) {
      if (isNone(n.value))
        return locatedError(n.loc, "a numerical aggregate needs a numeric default (a model has no None); "
                                   "write aggregate(sel, values, 0)");
      if (a_.inHead[v]) { // W_OV maps each of the leaf's directions to the map's number
        const Feature &lf = featureOf(sourceOf(v));
        for (size_t i = 0; i < lf.dirs.size(); ++i) {
          auto x = through(v, lf.values[i]);
          if (!x || !isNumber(*x))
            return locatedError(a_.g[v].loc, "this s-op is used as a number (for a mean) but can be " +
                                                 (x ? formatScalar(*x, true) : std::string("None")));
          values.emplace_back(lf.dirs[i], *x);
        }
      } else {
        auto vf = numerical(v);
        if (!vf) return vf.takeError();
        values.emplace_back(vf->dirs[0], vf->isConstant() ? toDouble(vf->values[0]) : 1.0);
      }
    } else {
      auto vf = categorical(sourceOf(v));
      if (!vf) return vf.takeError();
      for (size_t i = 0; i < vf->dirs.size(); ++i)
        if (auto x = through(v, vf->values[i])) values.emplace_back(vf->dirs[i], *x);
    }
    for (Block &b : aggregateHead(id, *groups, values, n.value, out, c_)) p_.blocks.push_back(std::move(b));
    feat_[id] = out;
    return llvm::Error::success();
  }

  // selector_width: a head writes 1/(w+1) (passes/lower/Attention.h); an MLP turns it
  // back into w where anything but the maps reading 1/(w+1) uses it.
  llvm::Error lowerWidth(NodeId id, std::vector<Group> groups) {
    std::string b0 = base(id);
    Feature frac = makeFeature(b0 + "#frac", widthFractions(a_.opts.maxLen), true);
    p_.blocks.push_back(selectorWidthHead(id, groups, frac, c_));
    fracs_[id] = frac;
    // The width itself is needed unless only maps that read the 1/(w+1) use it.
    bool needed = id == a_.output;
    for (NodeId u : a_.order) {
      if (needed) break;
      const ir::Node &un = a_.g[u];
      if (un.kind != NodeKind::Map) {
        needed = std::find(un.args.begin(), un.args.end(), id) != un.args.end();
      } else if (a_.materialized[u] || a_.inHead[u]) { // a leaf it reads other than through the frac
        const auto &l = a_.leaves[u];
        int w = fracLeaf(u);
        for (size_t i = 0; i < l.size() && !needed; ++i) needed = l[i] == id && int(i) != w;
      }
    }
    if (!needed) return llvm::Error::success();
    Feature out = makeFeature(b0, a_.values[id], a_.isNumerical(id));
    feat_[id] = out;
    MapFn inv = [](const std::vector<Scalar> &v) -> std::optional<Scalar> {
      return widthOf(v[0]);
    };
    return mlp(id, "selector width", {frac}, inv, out);
  }

  void buildEmbedding() {
    // Each token's value in each token view: the first value that spells it, equals it
    // as a number, or is the bool it names. Indexed, so a large vocabulary takes
    // linear time, not quadratic.
    struct Index {
      std::unordered_map<std::string, size_t> spelled;
      std::map<double, size_t> number;
      size_t isTrue = SIZE_MAX, isFalse = SIZE_MAX;
    };
    std::vector<Index> index(tokenFeatures_.size());
    for (size_t t = 0; t < tokenFeatures_.size(); ++t) {
      const Feature &f = tokenFeatures_[t].second;
      Index &ix = index[t];
      for (size_t i = 0; i < f.values.size(); ++i) {
        ix.spelled.emplace(formatScalar(f.values[i]), i);
        if (isNumber(f.values[i]) && !std::isnan(toDouble(f.values[i]))) ix.number.emplace(toDouble(f.values[i]), i);
        if (std::holds_alternative<bool>(f.values[i])) {
          size_t &slot = std::get<bool>(f.values[i]) ? ix.isTrue : ix.isFalse;
          slot = std::min(slot, i);
        }
      }
    }
    for (auto &tok : a_.opts.vocab) {
      craft::Weights w = {{kOne, 1.0}};
      char *end = nullptr;
      double d = std::strtod(tok.c_str(), &end);
      bool isNum = !tok.empty() && !*end && !std::isnan(d);
      for (size_t t = 0; t < tokenFeatures_.size(); ++t) {
        const Feature &f = tokenFeatures_[t].second;
        const Index &ix = index[t];
        size_t i = SIZE_MAX;
        if (auto it = ix.spelled.find(tok); it != ix.spelled.end()) i = it->second;
        if (isNum)
          if (auto it = ix.number.find(d); it != ix.number.end()) i = std::min(i, it->second);
        if (tok == "true" || tok == "1") i = std::min(i, ix.isTrue);
        if (tok == "false" || tok == "0") i = std::min(i, ix.isFalse);
        if (i == SIZE_MAX) continue;
        if (f.numerical) w.push_back({f.dirs[0], toDouble(f.values[i])});
        else w.push_back({f.dirs[i], 1.0});
      }
      p_.tokenEmbedding.push_back({tok, w});
    }
    for (int pos = 0; pos < a_.opts.maxLen; ++pos) {
      craft::Weights w;
      for (auto &[id, f] : indexFeatures_) {
        if (f.numerical) w.push_back({f.dirs[0], double(pos)});
        else w.push_back({f.dirs[size_t(pos)], 1.0});
      }
      p_.positionEmbedding.push_back(w);
    }
  }
};

} // namespace

llvm::Expected<craft::Program> lower(const Analysis &a) { return Lowering(a).run(); }

} // namespace raspc::passes
