#include "passes/lower/CategoricalMlp.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

namespace raspc::passes {

using craft::Feature;
using craft::kOne;
using craft::Neuron;

namespace {

// relu(y) - relu(-y) for y the weighted sum `in` of residual directions: two neurons
// that write y, negative values included, into out's number.
void signedPair(craft::Block &b, const craft::Weights &in, const Feature &out) {
  Neuron pos, neg;
  pos.in = in;
  for (auto &[d, w] : in) neg.in.push_back({d, -w});
  pos.out = {{out.dirs[0], 1.0}};
  neg.out = {{out.dirs[0], -1.0}};
  b.neurons.push_back(std::move(pos));
  b.neurons.push_back(std::move(neg));
}

// y(c) = y(0) + sum over inputs i of (y with only input i moved to c's option) - y(0), on
// every combination c: then two neurons compute it. False (adding nothing) otherwise.
bool separableMlp(craft::Block &b, const std::vector<Feature> &ins, const std::vector<std::optional<Scalar>> &ys,
                  const std::vector<size_t> &sizes, const std::vector<size_t> &stride, const Feature &out) {
  for (auto &y : ys)
    if (!y || !isNumber(*y)) return false;
  const size_t k = ins.size();
  const double base = toDouble(*ys[0]);
  std::vector<std::vector<double>> term(k);
  for (size_t i = 0; i < k; ++i)
    for (size_t a = 0; a < sizes[i]; ++a) term[i].push_back(toDouble(*ys[a * stride[i]]) - base);
  for (size_t c = 0; c < ys.size(); ++c) {
    double sum = base;
    for (size_t i = 0; i < k; ++i) sum += term[i][c / stride[i] % sizes[i]];
    double y = toDouble(*ys[c]);
    if (std::fabs(sum - y) > 1e-9 * std::max(1.0, std::fabs(y))) return false;
  }
  craft::Weights y;
  if (base != 0) y.push_back({kOne, base});
  for (size_t i = 0; i < k; ++i)
    for (size_t a = 0; a < sizes[i]; ++a)
      if (term[i][a] != 0) addTo(y, indicator(ins[i], a), term[i][a]);
  if (!y.empty()) signedPair(b, y, out); // else zero everywhere: nothing to write
  return true;
}

} // namespace

void categoricalMlp(craft::Block &b, const std::vector<Feature> &ins, const MapFn &f, const Feature &out) {
  if (ins.empty()) {
    auto y = f({});
    if (y) {
      Neuron n;
      n.in = {{kOne, 1.0}};
      emit(n, out, *y, 1.0);
      if (!n.out.empty()) b.neurons.push_back(n);
    }
    return;
  }
  if (ins.size() == 1 && out.numerical) {
    // Linear in the one-hot input: relu(y) - relu(-y) covers negative outputs.
    craft::Weights sum;
    for (size_t i = 0; i < options(ins[0]); ++i) {
      auto y = f({option(ins[0], i)});
      if (y && isNumber(*y) && toDouble(*y) != 0) addTo(sum, indicator(ins[0], i), toDouble(*y));
    }
    if (!sum.empty()) signedPair(b, sum, out);
    return;
  }
  if (ins.size() == 1) {
    // One neuron per output value, reading every input value that maps to it.
    std::vector<Neuron> per(out.values.size());
    for (size_t i = 0; i < options(ins[0]); ++i) {
      auto y = f({option(ins[0], i)});
      if (!y) continue;
      Neuron probe;
      emit(probe, out, *y, 1.0);
      if (probe.out.empty()) continue;
      size_t k = size_t(std::find(out.dirs.begin(), out.dirs.end(), probe.out[0].first) - out.dirs.begin());
      addTo(per[k].in, indicator(ins[0], i), 1.0);
      per[k].out = probe.out;
    }
    for (auto &n : per)
      if (!n.in.empty()) b.neurons.push_back(std::move(n));
    return;
  }
  // Several inputs: a neuron per combination, relu(x1:a + ... + xk:z - (k-1)). Values
  // of one input that f never tells apart (the same output whatever the others hold)
  // share a class, whose indicator is the sum of theirs (still 0 or 1): a neuron per
  // combination of classes. `(tokens > 1) and (indices < 3)` is 4 neurons, not
  // |tokens| x |indices|.
  const size_t k = ins.size();
  std::vector<size_t> sizes(k), stride(k, 1);
  size_t total = 1;
  for (size_t i = 0; i < k; ++i) {
    sizes[i] = options(ins[i]);
    stride[i] = total;
    total *= sizes[i];
  }
  std::vector<std::optional<Scalar>> ys(total);
  std::vector<std::string> keys(total);
  std::vector<Scalar> vals(k);
  for (size_t c = 0; c < total; ++c) {
    for (size_t i = 0; i < k; ++i) vals[i] = option(ins[i], c / stride[i] % sizes[i]);
    ys[c] = f(vals);
    keys[c] = ys[c] ? std::to_string(ys[c]->index()) + scalarKey(*ys[c]) : "-";
  }
  // A number that is a sum of one term per input (2*t - i, a LinearSequenceMap of two
  // one-hot s-ops) is linear in the one-hot inputs: relu(y) - relu(-y), two neurons.
  if (out.numerical && separableMlp(b, ins, ys, sizes, stride, out)) return;
  std::vector<std::vector<std::vector<size_t>>> classes(k); // input -> classes -> options
  for (size_t i = 0; i < k; ++i) {
    std::map<std::string, size_t> bySignature;
    for (size_t a = 0; a < sizes[i]; ++a) {
      std::string sig; // f over every combination of the other inputs, with input i at a
      for (size_t c = 0; c < total; ++c)
        if (c / stride[i] % sizes[i] == a) sig += keys[c] + '\x1f';
      auto [it, fresh] = bySignature.emplace(sig, classes[i].size());
      if (fresh) classes[i].emplace_back();
      classes[i][it->second].push_back(a);
    }
  }
  std::vector<size_t> idx(k, 0);
  for (;;) {
    Neuron n;
    size_t c = 0;
    for (size_t i = 0; i < k; ++i) {
      for (size_t a : classes[i][idx[i]]) addTo(n.in, indicator(ins[i], a), 1.0);
      c += classes[i][idx[i]][0] * stride[i];
    }
    n.bias = -double(k - 1);
    if (ys[c]) {
      emit(n, out, *ys[c], 1.0);
      if (!n.out.empty()) b.neurons.push_back(std::move(n));
    }
    size_t i = 0;
    for (; i < k; ++i) {
      if (++idx[i] < classes[i].size()) break;
      idx[i] = 0;
    }
    if (i == k) break;
  }
}

} // namespace raspc::passes
