#include "passes/lower/NumericalMlp.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace raspc::passes {

using craft::Feature;
using craft::kOne;
using craft::Neuron;

namespace {

// Distinct values of a +- b a sum MLP reads (each only places a step where f changes).
constexpr size_t kMaxSumValues = 2'000'000;

// A number x = sum of `lin` (one input direction, or a +- b) with the given values
// v0 < v1 < ...: step functions at the midpoints, slope 4 / gap so that every value
// is a quarter gap from a transition.
void stepMlp(craft::Block &b, const craft::Weights &lin, const std::vector<Scalar> &values, const MapFn &f,
             const Feature &out) {
  std::vector<double> xs;
  for (auto &v : values)
    if (isNumber(v)) xs.push_back(toDouble(v));
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  if (xs.empty()) return;
  auto y = [&](size_t j) { return f({Scalar(xs[j])}); };
  bool hasInt = false; // (once: the values can be many)
  for (auto &v : values) hasInt = hasInt || std::holds_alternative<int64_t>(v) || std::holds_alternative<bool>(v);
  auto yAsInt = [&](size_t j) {
    // Inputs that are whole numbers are looked up as ints, so that e.g. a lookup
    // table indexed by the value still works.
    double x = xs[j];
    if (std::floor(x) == x && std::fabs(x) < 9e15 && hasInt) return f({Scalar(int64_t(x))});
    return y(j);
  };
  // Base value: a neuron that is 1 everywhere (but BOS).
  Neuron one;
  one.in = {{kOne, 1.0}};
  if (auto y0 = yAsInt(0)) emit(one, out, *y0, 1.0);
  if (!one.out.empty()) b.neurons.push_back(one);
  for (size_t j = 1; j < xs.size(); ++j) {
    double gap = xs[j] - xs[j - 1], t = (xs[j] + xs[j - 1]) / 2, L = 4.0 / gap;
    Neuron hi, lo; // step = hi - lo: 0 below t - 1/(2L), 1 above t + 1/(2L)
    for (auto &[d, w] : lin) hi.in.push_back({d, L * w});
    hi.bias = -L * t + 0.5;
    lo.in = hi.in;
    lo.bias = -L * t - 0.5;
    auto cur = yAsInt(j), prev = yAsInt(j - 1);
    if (cur) emit(hi, out, *cur, 1.0);
    if (prev) emit(hi, out, *prev, -1.0);
    // Only where the output changes (a comparison with a constant: one step).
    hi.out = merged(hi.out);
    if (hi.out.empty()) continue;
    lo.out = hi.out;
    for (auto &[d, w] : lo.out) w = -w;
    b.neurons.push_back(hi);
    b.neurons.push_back(lo);
  }
}

} // namespace

void numericalMlp(craft::Block &b, const Feature &in, const MapFn &f, const Feature &out) {
  if (out.numerical && affineMlp(b, {in}, f, out)) return;
  stepMlp(b, {{in.dirs[0], 1.0}}, in.values, f, out);
}

bool affineMlp(craft::Block &b, const std::vector<Feature> &ins, const MapFn &f, const Feature &out) {
  // Fit on a base point and one step per input, then check everything.
  std::vector<Scalar> base;
  for (auto &in : ins) base.push_back(in.values[0]);
  auto y0 = f(base);
  if (!y0 || !isNumber(*y0)) return false;
  std::vector<double> alpha(ins.size(), 0.0);
  for (size_t i = 0; i < ins.size(); ++i) {
    if (ins[i].values.size() < 2) continue;
    auto p = base;
    p[i] = ins[i].values[1];
    auto y = f(p);
    if (!y || !isNumber(*y)) return false;
    alpha[i] = (toDouble(*y) - toDouble(*y0)) / (toDouble(ins[i].values[1]) - toDouble(ins[i].values[0]));
  }
  double gamma = toDouble(*y0);
  for (size_t i = 0; i < ins.size(); ++i) gamma -= alpha[i] * toDouble(ins[i].values[0]);
  std::vector<size_t> idx(ins.size(), 0);
  for (;;) {
    std::vector<Scalar> vals;
    double lin = gamma;
    for (size_t i = 0; i < ins.size(); ++i) {
      vals.push_back(ins[i].values[idx[i]]);
      lin += alpha[i] * toDouble(vals.back());
    }
    auto y = f(vals);
    if (!y || !isNumber(*y) || std::fabs(toDouble(*y) - lin) > 1e-9 * std::max(1.0, std::fabs(lin))) return false;
    size_t i = 0;
    for (; i < idx.size(); ++i) {
      if (++idx[i] < ins[i].values.size()) break;
      idx[i] = 0;
    }
    if (i == idx.size()) break;
  }
  Neuron pos, neg;
  for (size_t i = 0; i < ins.size(); ++i)
    if (alpha[i] != 0) {
      pos.in.push_back({ins[i].dirs[0], alpha[i]});
      neg.in.push_back({ins[i].dirs[0], -alpha[i]});
    }
  pos.bias = gamma;
  neg.bias = -gamma;
  pos.out = {{out.dirs[0], 1.0}};
  neg.out = {{out.dirs[0], -1.0}};
  b.neurons.push_back(pos);
  b.neurons.push_back(neg);
  return true;
}

bool sumMlp(craft::Block &b, const std::vector<Feature> &ins, const MapFn &f, const Feature &out) {
  // z values within 1e-9 are one value (a fraction reached two ways); found by
  // binary search, so that a million values take seconds, not hours.
  using ByZ = std::map<double, std::optional<Scalar>>;
  auto near = [](const ByZ &m, double z) {
    auto it = m.lower_bound(z - 1e-9);
    return it != m.end() && it->first <= z + 1e-9 ? it : m.end();
  };
  for (double sign : {1.0, -1.0}) {
    ByZ byZ;
    bool ok = true;
    for (auto &x : ins[0].values) {
      for (auto &y : ins[1].values) {
        double z = toDouble(x) + sign * toDouble(y);
        auto v = f({x, y});
        auto it = near(byZ, z);
        if (it == byZ.end()) byZ.emplace(z, v);
        else if (it->second.has_value() != v.has_value() ||
                 (v && !(scalarEquals(*it->second, *v) && it->second->index() == v->index())))
          ok = false; // 2 and 2.0 are different outputs
        if (!ok) break;
      }
      if (!ok || byZ.size() > kMaxSumValues) break;
    }
    if (!ok || byZ.size() > kMaxSumValues) continue;
    Feature z;
    z.numerical = true;
    for (auto &e : byZ) z.values.push_back(e.first);
    MapFn fz = [byZ = std::move(byZ), near](const std::vector<Scalar> &v) -> std::optional<Scalar> {
      auto it = near(byZ, toDouble(v[0]));
      return it == byZ.end() ? std::nullopt : it->second;
    };
    stepMlp(b, {{ins[0].dirs[0], 1.0}, {ins[1].dirs[0], sign}}, z.values, fz, out);
    return true;
  }
  return false;
}

} // namespace raspc::passes
