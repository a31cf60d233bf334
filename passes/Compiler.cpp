// The pass pipeline, and the ground truth that ties every RASP node to its place in
// the weights.
#include "passes/Compiler.h"

#include "backend/Assemble.h"
#include "passes/Passes.h"
#include "semantics/Interpreter.h"
#include "support/LocatedError.h"

#include <algorithm>

namespace raspc {

using namespace passes;

static void groundTruth(Model &m, const Analysis &a, const craft::Program &p, const std::vector<int> &order,
                        const llvm::SourceMgr &sm) {
  std::vector<int> col = directionColumns(p, order);
  auto cols = [&](const std::vector<int> &dirs) {
    std::vector<int> out;
    for (int d : dirs)
      if (col[size_t(d)] >= 0) out.push_back(col[size_t(d)]);
    return out;
  };
  for (ir::NodeId id : a.order) {
    const ir::Node &n = a.g[id];
    NodeInfo info;
    info.id = int(id);
    info.name = n.name;
    info.kind = ir::kindName(n.kind);
    if (n.kind == ir::NodeKind::Map)
      info.op = n.op == ir::MapOp::Func ? n.table->fn->label() : ir::opName(n.op); // a host function by its label
    if (n.kind == ir::NodeKind::Select) // a predicate by its function's label
      info.op = n.cmp == ir::Comparison::Fn ? n.table->fn->label() : ir::cmpName(n.cmp);
    if (n.kind == ir::NodeKind::Tokens) info.op = ir::tokenTypeName(n.tokenType);
    if (n.kind == ir::NodeKind::Constant) info.op = formatScalar(n.value, true);
    if (!n.isSelector()) {
      info.encoding = a.isNumerical(id) ? "numerical" : "categorical";
      info.valueSet = a.values[id];
    }
    if (n.loc.isValid() && sm.FindBufferContainingLoc(n.loc)) info.location = describeLoc(sm, n.loc);
    for (ir::NodeId x : n.args) info.args.push_back(int(x));
    if (n.kind == ir::NodeKind::Tokens || n.kind == ir::NodeKind::Indices) info.sublayer = "embed";
    else if (n.kind == ir::NodeKind::Map && !a.materialized[id]) info.sublayer = "fused";
    for (auto &b : p.blocks) {
      if (b.node != id) continue;
      // Conversions, tuples and BOS cleanups serve the node but do not compute it.
      bool main = b.what == "map" || b.what == "aggregate" || b.what == "numerical aggregate" ||
                  b.what == "selector width";
      if (!main) {
        HelperBlock h;
        h.role = b.what;
        h.layer = b.sublayer / 2;
        h.sublayer = b.kind == craft::BlockKind::Attention ? "attn" : "mlp";
        if (b.kind == craft::BlockKind::Attention) h.heads.push_back(b.index);
        else {
          h.mlpBegin = b.index;
          h.mlpEnd = b.index + int(b.neurons.size());
        }
        h.reads = cols(b.reads());
        h.writes = cols(b.writes());
        info.helpers.push_back(std::move(h));
        continue;
      }
      info.layer = b.sublayer / 2;
      bool attn = b.kind == craft::BlockKind::Attention;
      info.sublayer = attn ? "attn" : "mlp";
      if (attn) info.heads.push_back(b.index);
      else {
        info.mlpBegin = b.index;
        info.mlpEnd = b.index + int(b.neurons.size());
      }
      auto r = cols(b.reads());
      info.reads.insert(info.reads.end(), r.begin(), r.end());
    }
    std::sort(info.reads.begin(), info.reads.end());
    info.reads.erase(std::unique(info.reads.begin(), info.reads.end()), info.reads.end());
    auto f = p.features.find(id);
    if (f != p.features.end()) info.writes = cols(f->second.dirs);
    m.nodes.push_back(std::move(info));
  }
}

llvm::Expected<Model> compileProgram(const ir::Graph &g, ir::NodeId output, const CompileOptions &opts,
                                     const llvm::SourceMgr &sm, CompileStats *stats) {
  if (opts.vocab.empty()) return llvm::createStringError(llvm::inconvertibleErrorCode(), "the vocabulary is empty");
  if (opts.maxParams < 1)
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "the parameter limit must be at least 1");
  if (opts.maxLen < 1)
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "the maximum length must be at least 1");
  Analysis a(g, opts, output);
  // Encodings, value sets and the categorical aggregate check, decided together.
  if (auto err = inferEncodings(a)) return err;
  // A categorical output that is None everywhere has no value for the unembedding to
  // write: say so at the output rather than fail on an empty output vocabulary later.
  if (!a.isNumerical(output) && std::all_of(a.values[output].begin(), a.values[output].end(),
                                            [](const Scalar &v) { return isNone(v); }))
    return llvm::make_error<LocatedError>(
        g[output].loc, "the output" + (g[output].name.empty() ? "" : " '" + g[output].name + "'") +
                           " is None on every input: a model would have no output value to compute");
  if (auto err = fuseMaps(a)) return err;
  if (auto err = checkModelSize(a)) return err;
  auto program = lower(a);
  if (!program) return program.takeError();
  allocateLayers(*program);
  std::vector<int> order = layoutResidual(*program);
  // The exact count, before any tensor is allocated: what raspc writes, raspc reads.
  int64_t params = parameterCount(modelConfig(*program, order, opts.vocab.size(), opts.maxLen, opts.causal));
  if (params > opts.maxParams) return tooManyParameters(params, opts.maxParams);
  Model m = assembleModel(*program, order, opts.vocab, opts.maxLen, opts.causal);
  groundTruth(m, a, *program, order, sm);
  m.outputName = opts.outputName;
  m.source = opts.source;
  m.sourceName = opts.sourceName;
  m.intTokens = allIntTokens(opts.vocab);
  if (stats) {
    stats->layers = m.cfg.n_layers;
    stats->residual = m.cfg.d_model;
    stats->mlpWidth = m.cfg.d_mlp;
    stats->heads = usedHeads(m);
    stats->headsPerLayer = m.cfg.n_heads;
    stats->parameters = 0;
    for (auto &[name, t] : m.tensors) stats->parameters += int64_t(t.numel());
  }
  return m;
}

} // namespace raspc
