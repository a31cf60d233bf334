// Compiled RASP models on the GPU: the weights the CPU executor would use (float32,
// pruned, row-major) handed to cuda::RaspForward; logits come back to the host and are
// decoded there, so both devices share everything but the forward pass.
#include "runtime/ExecutorImpl.h"
#include "runtime/cuda/Cuda.h"

namespace raspc {

namespace {

struct CudaImpl final : HostLogitsImpl<float> {
  std::unique_ptr<cuda::RaspForward> gpu;

  llvm::Error forward(const TraceFn *trace) override {
    const Eigen::Index N = Eigen::Index(nSeq) * seqRows;
    if (Logits.rows() < N || Logits.cols() != cfg.d_vocab_out) Logits.resize(N, cfg.d_vocab_out);
    cuda::RaspTraceFn hook = [&](int layer, const char *sublayer, const float *X) {
      traceRows(trace, layer, sublayer, X);
    };
    std::string error;
    if (!gpu->forward(ids.data(), lens.data(), nSeq, seqRows, Logits.data(), trace ? &hook : nullptr, &error))
      return llvm::make_error<llvm::StringError>("cuda: " + error, llvm::inconvertibleErrorCode());
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
