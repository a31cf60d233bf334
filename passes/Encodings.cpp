// Encodings: how each s-op is stored in the residual stream. Categorical (one
// direction per value) unless annotated numerical; an aggregate of a numerical s-op
// with a numeric default is numerical, since it computes a mean. Conversions where a use needs the other
// encoding are inserted by the lowering.
#include "frontend/Diagnostics.h"
#include "passes/Passes.h"

namespace raspc::passes {

llvm::Error inferEncodings(Analysis &a) {
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    if (n.isSelector()) continue;
    ir::Encoding e = n.encoding;
    // A mean needs a numeric default (a number cannot hold None); without one the
    // values are copied one-hot instead, which keeps None.
    if (n.kind == ir::NodeKind::Aggregate && a.encoding[n.args[1]] == ir::Encoding::Numerical && !isNone(n.value))
      e = ir::Encoding::Numerical;
    a.encoding[id] = e;
  }
  return llvm::Error::success();
}

} // namespace raspc::passes
