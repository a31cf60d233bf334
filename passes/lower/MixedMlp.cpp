// Mixed numerical x categorical maps (a mean times an index, a mean compared with a
// number, "F" if mean > 0 else ...): see MixedMlp.h.
//
// A gate g = sum of the combination's indicators - (k - 1) is 1 when the categorical
// inputs hold c and at most 0 otherwise. A neuron for c computes relu(inner(x) +
// M * (g - 1)) with M above |inner(x)| for every x in the value set, so it is
// relu(inner(x)) under c and 0 elsewhere: exact, like the ungated constructions.
#include "passes/lower/MixedMlp.h"

#include <algorithm>
#include <cmath>

namespace raspc::passes {

using craft::Feature;
using craft::Neuron;
using craft::Weights;

namespace {

// Weights whose sum is 1 exactly when f holds option i (None: no direction set).
void addIndicator(Weights &w, const Feature &f, size_t i, double scale) {
  auto add = [&](int d, double x) {
    auto it = std::find_if(w.begin(), w.end(), [&](auto &e) { return e.first == d; });
    if (it == w.end()) w.push_back({d, x});
    else it->second += x;
  };
  if (i < f.values.size()) return add(f.dirs[i], scale);
  add(craft::kOne, scale);
  for (int d : f.dirs) add(d, -scale);
}

// Adds weight * y to the output: y's direction (categorical; None has none), or the
// number (numerical). Entries on one direction are merged.
void emitValue(Weights &w, const Feature &out, const std::optional<Scalar> &y, double weight) {
  if (!y) return;
  int dir = -1;
  double x = weight;
  if (out.numerical) {
    if (!isNumber(*y)) return;
    dir = out.dirs[0];
    x = weight * toDouble(*y);
  } else {
    // The value of the same type first (2 and 2.0 may be different directions).
    for (size_t i = 0; i < out.values.size() && dir < 0; ++i)
      if (scalarEquals(out.values[i], *y) && out.values[i].index() == y->index()) dir = out.dirs[i];
    for (size_t i = 0; i < out.values.size() && dir < 0; ++i)
      if (scalarEquals(out.values[i], *y)) dir = out.dirs[i];
    if (dir < 0) return;
  }
  auto it = std::find_if(w.begin(), w.end(), [&](auto &e) { return e.first == dir; });
  if (it == w.end()) w.push_back({dir, x});
  else it->second += x;
}

void dropZeros(Weights &w) {
  w.erase(std::remove_if(w.begin(), w.end(), [](auto &e) { return e.second == 0; }), w.end());
}

} // namespace

bool mixedMlp(std::vector<Neuron> &neurons, const std::vector<Feature> &ins, const MapFn &f, const Feature &out) {
  size_t xi = ins.size();
  for (size_t i = 0; i < ins.size(); ++i)
    if (ins[i].numerical) {
      if (xi != ins.size()) return false; // two numbers: not this construction
      xi = i;
    }
  if (xi == ins.size()) return false;
  std::vector<size_t> cats;
  size_t combos = 1;
  for (size_t i = 0; i < ins.size(); ++i)
    if (i != xi) {
      cats.push_back(i);
      combos *= std::max<size_t>(1, options(ins[i]));
      if (combos > kMaxMixedCombinations) return false;
    }
  // x's values in increasing order, as the s-op holds them (an int stays an int).
  std::vector<Scalar> xs;
  for (auto &v : ins[xi].values)
    if (isNumber(v)) xs.push_back(v);
  std::sort(xs.begin(), xs.end(), [](auto &p, auto &q) { return toDouble(p) < toDouble(q); });
  xs.erase(std::unique(xs.begin(), xs.end(), [](auto &p, auto &q) { return toDouble(p) == toDouble(q); }),
           xs.end());
  if (xs.empty()) return false;
  double maxX = 0;
  for (auto &v : xs) maxX = std::max(maxX, std::fabs(toDouble(v)));
  const int xDir = ins[xi].dirs[0];
  const double k = double(cats.size());

  std::vector<size_t> idx(cats.size(), 0);
  std::vector<Scalar> args(ins.size());
  for (;;) {
    Weights gate; // sum of indicators; the neuron's bias adds -(k - 1) - 1 per unit of M
    for (size_t c = 0; c < cats.size(); ++c) {
      addIndicator(gate, ins[cats[c]], idx[c], 1.0);
      args[cats[c]] = option(ins[cats[c]], idx[c]);
    }
    auto gated = [&](Neuron &n, double m) {
      for (auto &[d, w] : gate) n.in.push_back({d, m * w});
      n.bias -= m * k;
    };
    std::vector<std::optional<Scalar>> ys;
    for (auto &x : xs) {
      args[xi] = x;
      ys.push_back(f(args));
    }
    // Affine in x (numerical output): relu(y) - relu(-y), two neurons.
    bool affine = out.numerical;
    double alpha = 0, beta = 0;
    for (auto &y : ys) affine = affine && y && isNumber(*y);
    if (affine) {
      double x0 = toDouble(xs[0]), y0 = toDouble(*ys[0]);
      if (xs.size() > 1) alpha = (toDouble(*ys[1]) - y0) / (toDouble(xs[1]) - x0);
      beta = y0 - alpha * x0;
      for (size_t j = 0; j < xs.size() && affine; ++j) {
        double lin = alpha * toDouble(xs[j]) + beta;
        affine = std::fabs(toDouble(*ys[j]) - lin) <= 1e-9 * std::max(1.0, std::fabs(lin));
      }
    }
    if (affine) {
      if (alpha != 0 || beta != 0) {
        double m = std::fabs(alpha) * maxX + std::fabs(beta) + 1.0;
        for (double s : {1.0, -1.0}) {
          Neuron n;
          if (alpha != 0) n.in.push_back({xDir, s * alpha});
          n.bias = s * beta;
          gated(n, m);
          n.out = {{out.dirs[0], s}};
          neurons.push_back(std::move(n));
        }
      }
    } else {
      // The value at the smallest x: relu(g) is 1 under c, else 0.
      Neuron base;
      gated(base, 1.0);
      base.bias += 1.0;
      emitValue(base.out, out, ys[0], 1.0);
      dropZeros(base.out);
      if (!base.out.empty()) neurons.push_back(std::move(base));
      // A step at the midpoint of each gap where f changes, slope 4 / gap so that
      // every value is a quarter gap from the transition: hi - lo is 0 below, 1 above.
      for (size_t j = 1; j < xs.size(); ++j) {
        Weights delta;
        emitValue(delta, out, ys[j], 1.0);
        emitValue(delta, out, ys[j - 1], -1.0);
        dropZeros(delta);
        if (delta.empty()) continue;
        double lo = toDouble(xs[j - 1]), hi = toDouble(xs[j]);
        double t = (lo + hi) / 2, L = 4.0 / (hi - lo), m = L * (maxX + std::fabs(t)) + 1.0;
        Neuron up, down;
        up.in = {{xDir, L}};
        up.bias = -L * t + 0.5;
        gated(up, m);
        up.out = delta;
        down.in = {{xDir, L}};
        down.bias = -L * t - 0.5;
        gated(down, m);
        down.out = delta;
        for (auto &[d, w] : down.out) w = -w;
        neurons.push_back(std::move(up));
        neurons.push_back(std::move(down));
      }
    }
    size_t i = 0;
    for (; i < idx.size(); ++i) {
      if (++idx[i] < options(ins[cats[i]])) break;
      idx[i] = 0;
    }
    if (i == idx.size()) break;
  }
  return true;
}

} // namespace raspc::passes
