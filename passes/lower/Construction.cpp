#include "passes/lower/Construction.h"

#include <algorithm>

namespace raspc::passes {

using craft::Feature;
using craft::kOne;

size_t options(const Feature &f) { return f.values.size() + (f.canBeNone ? 1 : 0); }

Scalar option(const Feature &f, size_t i) { return i < f.values.size() ? f.values[i] : Scalar{}; }

craft::Weights indicator(const Feature &f, size_t i) {
  if (i < f.values.size()) return {{f.dirs[i], 1.0}};
  craft::Weights w = {{kOne, 1.0}};
  for (int d : f.dirs) w.push_back({d, -1.0});
  return w;
}

void addTo(craft::Weights &into, const craft::Weights &w, double scale) {
  for (auto &[d, x] : w) {
    auto it = std::find_if(into.begin(), into.end(), [&](auto &e) { return e.first == d; });
    if (it == into.end()) into.push_back({d, x * scale});
    else it->second += x * scale;
  }
}

craft::Weights merged(const craft::Weights &w) {
  craft::Weights out;
  addTo(out, w, 1.0);
  out.erase(std::remove_if(out.begin(), out.end(), [](auto &e) { return e.second == 0; }), out.end());
  return out;
}

void emit(craft::Neuron &n, const Feature &out, const Scalar &y, double weight) {
  if (out.numerical) {
    if (isNumber(y)) n.out.push_back({out.dirs[0], weight * toDouble(y)});
    return;
  }
  for (size_t i = 0; i < out.values.size(); ++i)
    if (scalarEquals(out.values[i], y) && out.values[i].index() == y.index()) {
      n.out.push_back({out.dirs[i], weight});
      return;
    }
  for (size_t i = 0; i < out.values.size(); ++i)
    if (scalarEquals(out.values[i], y)) {
      n.out.push_back({out.dirs[i], weight});
      return;
    }
}

} // namespace raspc::passes
