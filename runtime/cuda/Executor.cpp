// Compiled RASP models on the GPU: the weights the CPU executor would use (float32,
// pruned, row-major) handed to cuda::RaspForward; logits come back to the host and are
// decoded there, so both devices share everything but the forward pass.
#include "runtime/ExecutorImpl.h"
#include "runtime/cuda/Cuda.h"

#include <optional>

namespace raspc {

namespace {

struct CudaImpl final : HostLogitsImpl<float> {
  std::unique_ptr<cuda::RaspForward> gpu;

  llvm::Error forward(const TraceFn *trace) override {
    const Eigen::Index N = Eigen::Index(nSeq) * seqRows;
    if (Logits.rows() < N || Logits.cols() != cfg.d_vocab_out) Logits.resize(N, cfg.d_vocab_out);
    // The first sublayer whose residual stream holds an infinity or NaN, seen when the
    // stream is copied back (tracing, or the search below); the trace stops there.
    std::optional<NonFiniteError> firstBad;
    cuda::RaspTraceFn hook = [&](int layer, const char *sublayer, const float *X) {
      if (!firstBad) firstBad = findNonFinite(X, cfg.d_model, cfg.d_model, layer, sublayer);
      if (!firstBad) traceRows(trace, layer, sublayer, X);
    };
    auto pass = [&](bool copyBack) -> llvm::Error {
      std::string error;
      if (!gpu->forward(ids.data(), lens.data(), nSeq, seqRows, Logits.data(), copyBack ? &hook : nullptr, &error))
        return llvm::make_error<llvm::StringError>("cuda: " + error, llvm::inconvertibleErrorCode());
      return llvm::Error::success();
    };
    if (auto e = pass(trace != nullptr)) return e;
    if (!firstBad) firstBad = findNonFinite(Logits.data(), Logits.cols(), cfg.d_vocab_out, cfg.n_layers, "unembed");
    if (firstBad && !trace) {
      // Only the logits are checked on the normal path (no copies); when they are not
      // finite, run again copying the residual stream back to name the sublayer.
      firstBad.reset();
      if (auto e = pass(true)) return e;
      if (!firstBad) firstBad = findNonFinite(Logits.data(), Logits.cols(), cfg.d_vocab_out, cfg.n_layers, "unembed");
    }
    if (firstBad) return llvm::make_error<NonFiniteError>(*firstBad);
    return llvm::Error::success();
  }
};

} // namespace

llvm::Expected<std::unique_ptr<Executor::Impl>> makeCudaImpl(const Model &m) {
  if (auto e = deviceError(Device::Cuda))
    return cannotRunOnCuda(llvm::toString(std::move(e)));
  RaspWeights<float> w;
  w.load(m);
  cuda::RaspWeights cw;
  cw.dModel = m.cfg.d_model;
  cw.dHead = m.cfg.d_head;
  cw.nCtx = m.cfg.n_ctx;
  cw.dVocab = m.cfg.d_vocab;
  cw.dVocabOut = m.cfg.d_vocab_out;
  cw.causal = m.cfg.causal;
  cw.WE = w.WE.data();
  cw.Wpos = w.Wpos.data();
  cw.WU = w.WU.data();
  cw.bU = w.bU.data();
  for (const auto &L : w.layers)
    cw.layers.push_back({L.heads, L.neurons, L.WQ.data(), L.WK.data(), L.WV.data(), L.bQ.data(), L.bK.data(),
                         L.bV.data(), L.WO.data(), L.bO.data(), L.Win.data(), L.bin.data(), L.Wout.data(),
                         L.bout.data()});
  std::string error;
  auto impl = std::make_unique<CudaImpl>();
  impl->cfg = m.cfg;
  impl->gpu = cuda::RaspForward::create(cw, &error);
  if (!impl->gpu)
    return cannotRunOnCuda(error);
  return std::unique_ptr<Executor::Impl>(std::move(impl));
}

} // namespace raspc
