#include "passes/lower/Conversion.h"

#include "passes/lower/CategoricalMlp.h"
#include "passes/lower/NumericalMlp.h"

namespace raspc::passes {

namespace {

std::optional<Scalar> identity(const std::vector<Scalar> &v) { return v[0]; }

} // namespace

void toCategorical(craft::Block &b, const craft::Feature &in, const craft::Feature &out) {
  numericalMlp(b, in, identity, out);
}

void toNumerical(craft::Block &b, const craft::Feature &in, const craft::Feature &out) {
  categoricalMlp(b, {in}, identity, out);
}

} // namespace raspc::passes
