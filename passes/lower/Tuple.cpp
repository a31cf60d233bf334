#include "passes/lower/Tuple.h"

#include "support/LocatedError.h"

#include <algorithm>

namespace raspc::passes {

using craft::Feature;

llvm::Expected<Combinations> combinations(const std::vector<Feature> &parts, llvm::SMLoc loc) {
  size_t total = 1;
  for (auto &f : parts) total *= std::max<size_t>(1, options(f));
  if (total > 20000)
    return locatedError(loc, "this selector compares tuples of s-ops with " + std::to_string(total) +
                                 " value combinations; simplify it (e.g. compare one s-op per side)");
  Combinations combos;
  std::vector<size_t> idx(parts.size(), 0);
  for (;;) {
    std::vector<Scalar> c;
    for (size_t i = 0; i < parts.size(); ++i) c.push_back(option(parts[i], idx[i]));
    combos.push_back(c);
    size_t i = 0;
    for (; i < idx.size(); ++i) {
      if (++idx[i] < options(parts[i])) break;
      idx[i] = 0;
    }
    if (i == idx.size()) break;
  }
  return combos;
}

Feature singleTuple(Feature part) {
  std::vector<Scalar> ids;
  for (size_t i = 0; i < part.values.size(); ++i) ids.push_back(int64_t(i));
  part.values = ids;
  return part;
}

Feature tupleFeature(craft::Residual &residual, const std::string &label, const Combinations &combos) {
  Feature out;
  for (size_t i = 0; i < combos.size(); ++i) {
    std::string v = "(";
    for (size_t j = 0; j < combos[i].size(); ++j) v += (j ? "," : "") + formatScalar(combos[i][j]);
    out.values.push_back(int64_t(i));
    out.dirs.push_back(residual.add(label + ":" + v + ")"));
  }
  return out;
}

MapFn tupleIndex(Combinations combos) {
  return [cmb = std::move(combos)](const std::vector<Scalar> &v) -> std::optional<Scalar> {
    for (size_t i = 0; i < cmb.size(); ++i) {
      bool eq = true;
      for (size_t j = 0; j < v.size() && eq; ++j)
        eq = scalarEquals(cmb[i][j], v[j]) && cmb[i][j].index() == v[j].index();
      if (eq) return Scalar(int64_t(i));
    }
    return std::nullopt;
  };
}

} // namespace raspc::passes
