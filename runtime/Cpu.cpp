// The forward pass of compiled models on the CPU: Eigen, row-major, float or double.
// A batch runs in chunks of sequences, each in one thread's buffers: matrices that grow
// to the largest chunk and are used by their top-left corner, sequences stacked as rows
// (b * seqRows + position).
#include "runtime/ExecutorImpl.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace raspc {

namespace {

template <class T> struct CpuImpl final : HostLogitsImpl<T> {
  using Base = HostLogitsImpl<T>;
  using typename Base::Mat;
  using Base::cfg, Base::nSeq, Base::seqRows, Base::lens, Base::ids, Base::traceRows;
  using RowVec = typename RaspWeights<T>::RowVec;

  // A weight as the products read it: its non-zero rows and columns only. A compiled
  // model's sublayer reads a few s-ops of a wide residual and writes fewer (sort at
  // N = 64: a selector width's MLP has 258 neurons and writes 2 of 206 directions), so
  // most of each matrix is zero.
  struct Weight {
    Mat W;                                // [rows.size(), cols.size()]
    std::vector<Eigen::Index> rows, cols; // the input columns W's rows read, the output columns its columns write
    bool allRows = false, allCols = false;
    void set(const Mat &full) {
      rows.clear();
      cols.clear();
      for (Eigen::Index i = 0; i < full.rows(); ++i)
        if (!full.row(i).isZero(0)) rows.push_back(i);
      for (Eigen::Index j = 0; j < full.cols(); ++j)
        if (!full.col(j).isZero(0)) cols.push_back(j);
      allRows = Eigen::Index(rows.size()) == full.rows();
      allCols = Eigen::Index(cols.size()) == full.cols();
      W.resize(Eigen::Index(rows.size()), Eigen::Index(cols.size()));
      for (size_t i = 0; i < rows.size(); ++i)
        for (size_t j = 0; j < cols.size(); ++j) W(Eigen::Index(i), Eigen::Index(j)) = full(rows[i], cols[j]);
    }
  };

  // A layer as this forward pass runs it. d_head is the widest head's: each head keeps
  // only the query/key dimensions where both can be non-zero and the value dimensions
  // that W_O reads (sort at N = 64: 2 of 68 for its width heads), so the products and
  // the scores are as small as the heads. Q, K and V are one product of the residual.
  struct Layer {
    int heads = 0;
    std::vector<Eigen::Index> qk, ov; // head h: columns qk[h] .. qk[h + 1] of Q and K, ov[h] .. of V
    Eigen::Index QK = 0, OV = 0;      // Q's width (= K's), V's width
    Weight Wqkv;                      // [d_model, 2 QK + OV]: Q, then K, then V
    RowVec bqkv;
    Weight WO; // [OV, d_model]
    RowVec bO;
    int neurons = 0;
    Weight Win, Wout;
    RowVec bin, bout;
  };
  Mat WE, Wpos;
  Weight WU;
  RowVec bU;
  std::vector<Layer> layers;

  void load(const Model &m) {
    RaspWeights<T> w;
    w.load(m);
    WE = std::move(w.WE);
    Wpos = std::move(w.Wpos);
    WU.set(w.WU);
    bU = std::move(w.bU);
    const Eigen::Index Dh = cfg.d_head;
    for (auto &L : w.layers) {
      Layer C;
      C.heads = L.heads;
      std::vector<Eigen::Index> qkCols, ovCols; // kept columns of L.WQ/WK and of L.WV
      C.qk.push_back(0);
      C.ov.push_back(0);
      for (int h = 0; h < L.heads; ++h) {
        for (Eigen::Index j = h * Dh; j < (h + 1) * Dh; ++j) {
          const bool q = L.bQ(j) != T(0) || !L.WQ.col(j).isZero(0), k = L.bK(j) != T(0) || !L.WK.col(j).isZero(0);
          const bool v = L.bV(j) != T(0) || !L.WV.col(j).isZero(0), o = !L.WO.row(j).isZero(0);
          if (q && k) qkCols.push_back(j);
          if (v && o) ovCols.push_back(j);
        }
        C.qk.push_back(Eigen::Index(qkCols.size()));
        C.ov.push_back(Eigen::Index(ovCols.size()));
      }
      C.QK = Eigen::Index(qkCols.size());
      C.OV = Eigen::Index(ovCols.size());
      const Eigen::Index D = cfg.d_model;
      Mat qkv(D, 2 * C.QK + C.OV), wo(C.OV, D);
      C.bqkv.resize(2 * C.QK + C.OV);
      for (Eigen::Index c = 0; c < C.QK; ++c) {
        qkv.col(c) = L.WQ.col(qkCols[size_t(c)]);
        qkv.col(C.QK + c) = L.WK.col(qkCols[size_t(c)]);
        C.bqkv(c) = L.bQ(qkCols[size_t(c)]);
        C.bqkv(C.QK + c) = L.bK(qkCols[size_t(c)]);
      }
      for (Eigen::Index c = 0; c < C.OV; ++c) {
        qkv.col(2 * C.QK + c) = L.WV.col(ovCols[size_t(c)]);
        C.bqkv(2 * C.QK + c) = L.bV(ovCols[size_t(c)]);
        wo.row(c) = L.WO.row(ovCols[size_t(c)]);
      }
      C.Wqkv.set(qkv);
      C.WO.set(wo);
      C.bO = std::move(L.bO);
      C.neurons = L.neurons;
      C.Win.set(L.Win);
      C.Wout.set(L.Wout);
      C.bin = std::move(L.bin);
      C.bout = std::move(L.bout);
      layers.push_back(std::move(C));
    }
  }

  // Sequences run in chunks of about kChunkRows rows through every layer, each chunk in
  // the activation buffers of one worker, so that they stay in the core's cache whatever
  // the batch (the buffers of a whole batch of 256 at N = 64 are 17 MB each: batch 256
  // ran at half the rate of batch 1). Chunks are also the unit of threading: a worker
  // takes the next chunk when it is done, so a worker that the machine holds back delays
  // only the chunk it has, and there is one join per batch, not one per product.
  static constexpr int kChunkRows = 256;
  struct Work {
    Mat X, QKV, Z, Hid, S, Tmp; // rows grow to the largest chunk seen and are reused
    std::vector<Eigen::Index> nz;
    RowVec row;
  };
  std::vector<Work> work;

  // Grows a buffer (never shrinks it); callers use its top-left corner.
  static void ensure(Mat &buf, Eigen::Index rows, Eigen::Index cols) {
    if (buf.rows() < rows || buf.cols() < cols) buf.resize(std::max(rows, buf.rows()), std::max(cols, buf.cols()));
  }

  // out (+)= a * W. A compiled model's activations are mostly zeros: the residual holds a
  // one-hot direction per s-op, and few MLP neurons fire for a given position. Below a
  // density where it wins, each row of out is the sum of the rows of W that the row's
  // non-zeros pick, four rows at a time (row-major W: contiguous, vectorised); else
  // Eigen's dense product of the columns of a that W reads. Which one is decided per
  // product from the activations themselves, so it holds for any model and any input.
  template <class A, class O> static void product(const A &a, const Weight &w, O &&out, bool accumulate, Work &ws) {
    const Eigen::Index rows = a.rows(), nr = Eigen::Index(w.rows.size()), nc = Eigen::Index(w.cols.size());
    if (!accumulate) out.setZero();
    if (nr == 0 || nc == 0) return;
    // The density of up to 64 evenly spaced rows decides (a full count would cost a pass).
    const Eigen::Index step = std::max<Eigen::Index>(1, rows / 64);
    Eigen::Index count = 0, seen = 0;
    for (Eigen::Index r = 0; r < rows; r += step, ++seen)
      for (Eigen::Index i : w.rows) count += a(r, i) != T(0);
    if (double(count) > kSparseDensity * double(seen) * double(nr)) {
      ensure(ws.Tmp, rows, nc);
      auto t = ws.Tmp.topLeftCorner(rows, nc);
      if (w.allRows) t.noalias() = a * w.W;
      else t.noalias() = a(Eigen::all, w.rows) * w.W;
      if (w.allCols) out += t;
      else out(Eigen::all, w.cols) += t;
      return;
    }
    ws.nz.resize(size_t(nr));
    ws.row.resize(nc);
    for (Eigen::Index r = 0; r < rows; ++r) {
      const T *ar = &a(r, 0);
      Eigen::Index n = 0;
      for (Eigen::Index j = 0; j < nr; ++j) {
        ws.nz[size_t(n)] = j;
        n += ar[w.rows[size_t(j)]] != T(0);
      }
      if (n == 0) continue;
      T *o = w.allCols ? &out(r, 0) : ws.row.data();
      if (!w.allCols) std::fill(o, o + nc, T(0));
      Eigen::Index k = 0;
      for (; k + 4 <= n; k += 4) {
        const Eigen::Index j0 = ws.nz[size_t(k)], j1 = ws.nz[size_t(k + 1)], j2 = ws.nz[size_t(k + 2)],
                           j3 = ws.nz[size_t(k + 3)];
        const T v0 = ar[w.rows[size_t(j0)]], v1 = ar[w.rows[size_t(j1)]], v2 = ar[w.rows[size_t(j2)]],
                v3 = ar[w.rows[size_t(j3)]];
        const T *w0 = &w.W(j0, 0), *w1 = &w.W(j1, 0), *w2 = &w.W(j2, 0), *w3 = &w.W(j3, 0);
        for (Eigen::Index c = 0; c < nc; ++c) o[c] += v0 * w0[c] + v1 * w1[c] + v2 * w2[c] + v3 * w3[c];
      }
      for (; k < n; ++k) {
        const Eigen::Index j = ws.nz[size_t(k)];
        const T v = ar[w.rows[size_t(j)]], *wr = &w.W(j, 0);
        for (Eigen::Index c = 0; c < nc; ++c) o[c] += v * wr[c];
      }
      if (!w.allCols)
        for (Eigen::Index c = 0; c < nc; ++c) out(r, w.cols[size_t(c)]) += o[c];
    }
  }
  static constexpr double kSparseDensity = 0.2;

  // Where a chunk stopped: the first non-finite value of its first failing stage
  // (0 the embedding, 2l + 1 layer l's attention, 2l + 2 its MLP, then the unembedding).
  struct Failure {
    int stage;
    NonFiniteError at;
  };

  // Whether the first `cols` columns of the first `rows` rows of X are all finite: one
  // vectorised sum (x * 0 is 0 for a finite x, NaN for an infinity or NaN). PAD rows
  // count too, so a false leads to the exact search, which skips them.
  static bool allFinite(const Mat &X, Eigen::Index rows, Eigen::Index cols) {
    return !std::isnan((X.topLeftCorner(rows, cols).array() * T(0)).sum());
  }

  // Runs sequences b0 .. b0 + count - 1 through every layer in `ws`, writing their logits.
  std::optional<Failure> forwardChunk(Work &ws, int b0, int count, const TraceFn *trace) {
    const int Tn = seqRows;
    const Eigen::Index N = Eigen::Index(count) * Tn, D = cfg.d_model;
    const Eigen::Index r0 = Eigen::Index(b0) * Tn; // the chunk's first row in ids and Logits
    int stage = 0;
    auto check = [&](const Mat &X, Eigen::Index cols, int layer, const char *sublayer) -> std::optional<Failure> {
      if (!allFinite(X, N, cols))
        if (auto bad = this->findNonFinite(X.data(), X.cols(), cols, layer, sublayer, b0, count))
          return Failure{stage, *bad};
      ++stage;
      return std::nullopt;
    };
    ensure(ws.X, N, D);
    auto x = ws.X.topLeftCorner(N, D);
    for (Eigen::Index r = 0; r < N; ++r) x.row(r) = WE.row(ids[size_t(r0 + r)]) + Wpos.row(r % Tn);
    if (auto f = check(ws.X, D, -1, "embed")) return f;
    traceRows(trace, -1, "embed", ws.X.data());

    // Scaled as the file's d_head says, whatever the dimensions a head keeps.
    const T scale = cfg.d_head > 0 ? T(1) / std::sqrt(T(cfg.d_head)) : T(1);
    ensure(ws.S, Tn, Tn);
    for (int l = 0; l < cfg.n_layers; ++l) {
      const Layer &L = layers[size_t(l)];
      if (L.heads > 0) {
        const Eigen::Index W3 = 2 * L.QK + L.OV;
        ensure(ws.QKV, N, W3);
        ensure(ws.Z, N, L.OV);
        auto qkv = ws.QKV.topLeftCorner(N, W3);
        auto z = ws.Z.topLeftCorner(N, L.OV);
        product(x, L.Wqkv, qkv, false, ws);
        qkv.rowwise() += L.bqkv;
        auto s = ws.S.topLeftCorner(Tn, Tn);
        for (int b = 0; b < count; ++b) {
          const Eigen::Index s0 = Eigen::Index(b) * Tn;
          const int len = lens[size_t(b0 + b)] + 1; // keys at or after len are PAD
          for (int h = 0; h < L.heads; ++h) {
            const Eigen::Index q0 = L.qk[size_t(h)], dq = L.qk[size_t(h) + 1] - q0;
            const Eigen::Index v0 = L.ov[size_t(h)], dv = L.ov[size_t(h) + 1] - v0;
            if (dv == 0) continue; // writes nothing
            if (dq == 0) s.setZero(); // equal scores: the mean of the visible keys
            else s.noalias() = qkv.block(s0, q0, Tn, dq) * qkv.block(s0, L.QK + q0, Tn, dq).transpose();
            for (int i = 0; i < Tn; ++i) {
              const int visible = cfg.causal ? std::min(len, i + 1) : len;
              auto row = s.row(i).head(visible).array();
              row = ((row - row.maxCoeff()) * scale).exp();
              row /= row.sum();
              s.row(i).tail(Tn - visible).setZero();
            }
            z.block(s0, v0, Tn, dv).noalias() = s * qkv.block(s0, 2 * L.QK + v0, Tn, dv);
          }
        }
        product(z, L.WO, x, true, ws);
      }
      x.rowwise() += L.bO;
      if (auto f = check(ws.X, D, l, "attn")) return f;
      traceRows(trace, l, "attn", ws.X.data());

      if (L.neurons > 0) {
        ensure(ws.Hid, N, L.neurons);
        auto hid = ws.Hid.topLeftCorner(N, L.neurons);
        product(x, L.Win, hid, false, ws);
        hid.rowwise() += L.bin;
        hid = hid.cwiseMax(T(0));
        product(hid, L.Wout, x, true, ws);
      }
      x.rowwise() += L.bout;
      if (auto f = check(ws.X, D, l, "mlp")) return f;
      traceRows(trace, l, "mlp", ws.X.data());
    }
    auto lg = this->Logits.block(r0, 0, N, cfg.d_vocab_out);
    product(x, WU, lg, false, ws);
    lg.rowwise() += bU;
    auto bad = this->findNonFinite(this->Logits.data() + r0 * this->Logits.cols(), this->Logits.cols(),
                                   cfg.d_vocab_out, cfg.n_layers, "unembed", b0, count);
    if (bad) return Failure{stage, *bad};
    return std::nullopt;
  }

  llvm::Error forward(const TraceFn *trace) override {
    // Eigen's dense products run on the calling thread: the chunks are the parallel work.
    if (Eigen::nbThreads() != 1) Eigen::setNbThreads(1);
    // A trace sees each stage for every sequence before the next stage: one chunk.
    const int per = trace && *trace ? std::max(1, nSeq) : std::max(1, kChunkRows / std::max(1, seqRows));
    const int chunks = (nSeq + per - 1) / per;
    int workers = 1;
#if defined(_OPENMP)
    workers = this->threads > 0 ? this->threads : omp_get_num_procs();
#endif
    workers = std::max(1, std::min(workers, chunks));
    if (int(work.size()) < workers) work.resize(size_t(workers));
    ensure(this->Logits, Eigen::Index(nSeq) * seqRows, cfg.d_vocab_out);
    std::vector<std::optional<Failure>> failed(static_cast<size_t>(chunks));
#if defined(_OPENMP)
#pragma omp parallel for num_threads(workers) if (workers > 1) schedule(dynamic, 1)
#endif
    for (int c = 0; c < chunks; ++c) {
      int worker = 0;
#if defined(_OPENMP)
      worker = omp_get_thread_num();
#endif
      failed[size_t(c)] = forwardChunk(work[size_t(worker)], c * per, std::min(per, nSeq - c * per), trace);
    }
    // What a whole-batch pass reports: the earliest stage, then the first sequence.
    const Failure *first = nullptr;
    for (const auto &f : failed)
      if (f && (!first || f->stage < first->stage)) first = &*f;
    if (first) return llvm::make_error<NonFiniteError>(first->at);
    return llvm::Error::success();
  }
};

} // namespace

std::unique_ptr<Executor::Impl> makeCpuImpl(const Model &m, Precision p) {
  auto make = [&](auto impl) -> std::unique_ptr<Executor::Impl> {
    impl->cfg = m.cfg;
    impl->load(m);
    return impl;
  };
  if (p == Precision::F64) return make(std::make_unique<CpuImpl<double>>());
  return make(std::make_unique<CpuImpl<float>>());
}

} // namespace raspc
