// The forward pass of compiled models on the CPU: Eigen, row-major, float or double.
// Buffers are matrices that grow to the largest batch and are used by their top-left
// corner; sequences are stacked as rows (b * seqRows + position).
#include "runtime/ExecutorImpl.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace raspc {

namespace {

template <class T> struct CpuImpl final : HostLogitsImpl<T> {
  using Base = HostLogitsImpl<T>;
  using typename Base::Mat;
  using Base::cfg, Base::nSeq, Base::seqRows, Base::lens, Base::ids, Base::Logits, Base::traceRows;

  RaspWeights<T> w;
  // Activation buffers; rows grow to the largest nSeq * seqRows seen and are reused.
  Mat X, Q, K, V, Z, Hid, S;

  // Grows a buffer (never shrinks it); callers use its top-left corner.
  static void ensure(Mat &buf, Eigen::Index rows, Eigen::Index cols) {
    if (buf.rows() < rows || buf.cols() < cols) buf.resize(std::max(rows, buf.rows()), std::max(cols, buf.cols()));
  }

  // out (+)= a * W. A compiled model's activations are mostly zeros: the residual holds a
  // one-hot direction per s-op, and few MLP neurons fire for a given position. Below a
  // density where it wins, each row of out is the sum of the rows of W that the row's
  // non-zeros pick (row-major W: contiguous, vectorised); else Eigen's dense product.
  // Which one is decided per product from the activations themselves, so it holds for
  // any model and any input.
  template <class A, class O> void product(const A &a, const Mat &W, O &&out, bool accumulate) {
    const Eigen::Index rows = a.rows(), inner = a.cols();
    const auto wTop = W.topRows(inner);
    // The density of up to 64 evenly spaced rows decides (a full count would cost a pass).
    const Eigen::Index step = std::max<Eigen::Index>(1, rows / 64);
    Eigen::Index nnz = 0, seen = 0;
    for (Eigen::Index r = 0; r < rows; r += step, ++seen)
      for (Eigen::Index i = 0; i < inner; ++i) nnz += a(r, i) != T(0);
    if (double(nnz) > kSparseDensity * double(seen) * double(inner)) {
      if (accumulate) out.noalias() += a * wTop;
      else out.noalias() = a * wTop;
      return;
    }
    if (!accumulate) out.setZero();
#if defined(_OPENMP)
#pragma omp parallel for num_threads(this->threads) if (this->threads > 1) schedule(static)
#endif
    for (Eigen::Index r = 0; r < rows; ++r)
      for (Eigen::Index i = 0; i < inner; ++i)
        if (const T v = a(r, i); v != T(0)) out.row(r).noalias() += v * wTop.row(i);
  }
  static constexpr double kSparseDensity = 0.2;

  llvm::Error forward(const TraceFn *trace) override {
    // Eigen's thread count is process-wide: set it for this executor's products. Only
    // when it differs, so that executors of one count on several threads (the suite's
    // workers) only read it: concurrent writes of it are a data race.
    if (Eigen::nbThreads() != this->threads) Eigen::setNbThreads(this->threads);
    const int Tn = seqRows;
    const Eigen::Index N = Eigen::Index(nSeq) * Tn, D = cfg.d_model, Dh = cfg.d_head;
    ensure(X, N, D);
    auto x = X.topLeftCorner(N, D);
    for (int b = 0; b < nSeq; ++b)
      for (int t = 0; t < Tn; ++t) {
        Eigen::Index r = Eigen::Index(b) * Tn + t;
        x.row(r) = w.WE.row(ids[size_t(r)]) + w.Wpos.row(t);
      }
    if (auto e = this->checkFinite(X.data(), X.cols(), D, -1, "embed")) return e;
    traceRows(trace, -1, "embed", X.data());

    const T scale = Dh > 0 ? T(1) / std::sqrt(T(Dh)) : T(1);
    ensure(S, Tn, Tn);
    for (int l = 0; l < cfg.n_layers; ++l) {
      const auto &L = w.layers[size_t(l)];
      if (L.heads > 0) {
        const Eigen::Index HW = Eigen::Index(L.heads) * Dh;
        ensure(Q, N, HW);
        ensure(K, N, HW);
        ensure(V, N, HW);
        ensure(Z, N, HW);
        auto q = Q.topLeftCorner(N, HW), k = K.topLeftCorner(N, HW), v = V.topLeftCorner(N, HW),
             z = Z.topLeftCorner(N, HW);
        product(x, L.WQ, q, false);
        q.rowwise() += L.bQ;
        product(x, L.WK, k, false);
        k.rowwise() += L.bK;
        product(x, L.WV, v, false);
        v.rowwise() += L.bV;
        auto s = S.topLeftCorner(Tn, Tn);
        for (int b = 0; b < nSeq; ++b) {
          const Eigen::Index r0 = Eigen::Index(b) * Tn;
          const int len = lens[size_t(b)] + 1; // keys at or after len are PAD
          for (int h = 0; h < L.heads; ++h) {
            const Eigen::Index c0 = Eigen::Index(h) * Dh;
            s.noalias() = q.block(r0, c0, Tn, Dh) * k.block(r0, c0, Tn, Dh).transpose();
            for (int i = 0; i < Tn; ++i) {
              const int visible = cfg.causal ? std::min(len, i + 1) : len;
              T mx = -std::numeric_limits<T>::infinity();
              for (int j = 0; j < visible; ++j) mx = std::max(mx, s(i, j) * scale);
              T sum = 0;
              for (int j = 0; j < visible; ++j) {
                T e = std::exp(s(i, j) * scale - mx);
                s(i, j) = e;
                sum += e;
              }
              for (int j = 0; j < visible; ++j) s(i, j) /= sum;
              for (int j = visible; j < Tn; ++j) s(i, j) = 0;
            }
            z.block(r0, c0, Tn, Dh).noalias() = s * v.block(r0, c0, Tn, Dh);
          }
        }
        product(z, L.WO, x, true);
      }
      x.rowwise() += L.bO;
      if (auto e = this->checkFinite(X.data(), X.cols(), D, l, "attn")) return e;
      traceRows(trace, l, "attn", X.data());

      if (L.neurons > 0) {
        ensure(Hid, N, L.neurons);
        auto hid = Hid.topLeftCorner(N, L.neurons);
        product(x, L.Win, hid, false);
        hid.rowwise() += L.bin;
        hid = hid.cwiseMax(T(0));
        product(hid, L.Wout, x, true);
      }
      x.rowwise() += L.bout;
      if (auto e = this->checkFinite(X.data(), X.cols(), D, l, "mlp")) return e;
      traceRows(trace, l, "mlp", X.data());
    }
    ensure(Logits, N, cfg.d_vocab_out);
    auto lg = Logits.topLeftCorner(N, cfg.d_vocab_out);
    product(x, w.WU, lg, false);
    lg.rowwise() += w.bU;
    return this->checkFinite(Logits.data(), Logits.cols(), cfg.d_vocab_out, cfg.n_layers, "unembed");
  }
};

} // namespace

std::unique_ptr<Executor::Impl> makeCpuImpl(const Model &m, Precision p) {
  auto make = [&](auto impl) -> std::unique_ptr<Executor::Impl> {
    impl->cfg = m.cfg;
    impl->w.load(m);
    return impl;
  };
  if (p == Precision::F64) return make(std::make_unique<CpuImpl<double>>());
  return make(std::make_unique<CpuImpl<float>>());
}

} // namespace raspc
