// Internal to runtime/: what the CPU executor (Cpu.cpp) and the CUDA one
// (cuda/Executor.cpp) share. The driver (Executor.cpp) encodes and pads a batch into
// Impl::ids/lens, calls forward(), and decodes each position with decode().
#pragma once
#include "runtime/Executor.h"

#include <fmt/format.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace raspc {

// Decodes one row of logits: the output value of the largest (first largest) logit when
// it is at least 0.5, else None (categorical); column 0 snapped (numerical).
template <class T>
Scalar decodeRow(bool categorical, const std::vector<Scalar> &values, const T *row, int n) {
  if (!categorical) return n > 0 ? snapNumber(double(row[0]), values) : Scalar();
  int best = -1;
  for (int j = 0; j < n; ++j)
    if (best < 0 || row[j] > row[best]) best = j; // first maximum wins
  if (best < 0 || !(double(row[best]) >= 0.5) || size_t(best) >= values.size()) return Scalar();
  return values[size_t(best)];
}

struct Executor::Impl {
  virtual ~Impl() = default;

  ModelConfig cfg;
  Precision precision = Precision::F32;
  Device device = Device::Cpu;
  int threads = 1; // Executor::setThreads
  std::unordered_map<std::string, int> vocabIds; // user tokens only
  std::vector<std::string> vocab;
  int bosId = 0, padId = 0;
  bool intTokens = false;
  bool categorical = true;
  std::vector<Scalar> outputValues;

  // Shape of the last batch: nSeq sequences of lens[b] tokens plus BOS, padded to seqRows rows.
  int nSeq = 0, seqRows = 0;
  std::vector<int> lens;
  std::vector<int> ids; // nSeq * seqRows

  // Runs the batch in ids/lens, leaving logits for decode() and logits().
  virtual llvm::Error forward(const TraceFn *trace) = 0;
  virtual Scalar decode(int b, int pos) const = 0;
  virtual Eigen::MatrixXd logits(int b) const = 0;

  // Where the first row of the row-major buffer X (leading dimension ld, first `cols`
  // columns) holds an infinity or NaN; only BOS and token rows are looked at (PAD rows
  // are never read). One pass over the rows: cheap next to the products that made them.
  // X may hold only sequences b0 .. b0 + count - 1 (count -1: to the last), b0 first.
  template <class T>
  std::optional<NonFiniteError> findNonFinite(const T *X, Eigen::Index ld, Eigen::Index cols, int layer,
                                              const char *sublayer, int b0 = 0, int count = -1) const {
    const int end = count < 0 ? nSeq : b0 + count;
    for (int b = b0; b < end; ++b)
      for (int p = 0; p <= lens[size_t(b)]; ++p) {
        Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>> row(X + (Eigen::Index(b - b0) * seqRows + p) * ld, cols);
        if (!row.allFinite()) return NonFiniteError(layer, sublayer, b, p - 1);
      }
    return std::nullopt;
  }

  // The ids of one sequence, BOS first (Executor::encode).
  llvm::Expected<std::vector<int>> encode(const std::vector<std::string> &tokens, int seq) const;
};

// The weights of a compiled model in the working precision T, row-major, with the heads
// and MLP neurons that add nothing dropped (the forward pass is then smaller and still
// exact): what each device's forward pass uploads or uses.
template <class T> struct RaspWeights {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;

  struct Layer {
    int heads = 0;          // heads kept (those that can write to the residual)
    Mat WQ, WK, WV;         // [d_model, heads * d_head]
    RowVec bQ, bK, bV;      // [heads * d_head]
    Mat WO;                 // [heads * d_head, d_model]
    RowVec bO;              // [d_model]
    int neurons = 0;        // MLP neurons kept
    Mat Win;                // [d_model, neurons]
    RowVec bin;             // [neurons]
    Mat Wout;               // [neurons, d_model]
    RowVec bout;            // [d_model]
  };

  Mat WE, Wpos, WU;
  RowVec bU;
  std::vector<Layer> layers;

  static const Tensor &get(const Model &m, const std::string &name) { return m.tensors.at(name); }
  static Mat matrix(const Tensor &t) {
    Mat r(t.shape[0], t.shape[1]);
    for (int64_t i = 0; i < t.shape[0]; ++i)
      for (int64_t j = 0; j < t.shape[1]; ++j) r(i, j) = T(t.at(i, j));
    return r;
  }
  static RowVec vec(const Tensor &t, int64_t offset, int64_t n) {
    RowVec r(n);
    for (int64_t i = 0; i < n; ++i) r(i) = T(t.data[size_t(offset + i)]);
    return r;
  }

  void load(const Model &m) {
    const ModelConfig &cfg = m.cfg;
    const int D = cfg.d_model, H = cfg.n_heads, Dh = cfg.d_head, M = cfg.d_mlp;
    WE = matrix(get(m, "embed.W_E"));
    Wpos = matrix(get(m, "pos_embed.W_pos"));
    WU = matrix(get(m, "unembed.W_U"));
    bU = vec(get(m, "unembed.b_U"), 0, cfg.d_vocab_out);
    for (int l = 0; l < cfg.n_layers; ++l) {
      Layer L;
      std::string a = fmt::format("blocks.{}.attn.", l), p = fmt::format("blocks.{}.mlp.", l);
      const Tensor &wq = get(m, a + "W_Q"), &wk = get(m, a + "W_K"), &wv = get(m, a + "W_V"),
                   &wo = get(m, a + "W_O"), &bq = get(m, a + "b_Q"), &bk = get(m, a + "b_K"),
                   &bv = get(m, a + "b_V");
      // A head whose W_O is zero, or whose values are zero, adds exactly nothing.
      std::vector<int> keep;
      for (int h = 0; h < H && Dh > 0; ++h) {
        bool oZero = true, vZero = true;
        for (int i = 0; i < Dh; ++i)
          for (int j = 0; j < D; ++j) oZero = oZero && wo.at(h, i, j) == 0.0f;
        for (int i = 0; i < D; ++i)
          for (int j = 0; j < Dh; ++j) vZero = vZero && wv.at(h, i, j) == 0.0f;
        for (int j = 0; j < Dh; ++j) vZero = vZero && bv.at(h, j) == 0.0f;
        if (!oZero && !vZero) keep.push_back(h);
      }
      L.heads = int(keep.size());
      const int HW = L.heads * Dh;
      L.WQ.setZero(D, HW);
      L.WK.setZero(D, HW);
      L.WV.setZero(D, HW);
      L.WO.setZero(HW, D);
      L.bQ.setZero(HW);
      L.bK.setZero(HW);
      L.bV.setZero(HW);
      for (int k = 0; k < L.heads; ++k) {
        int h = keep[size_t(k)];
        for (int i = 0; i < D; ++i)
          for (int j = 0; j < Dh; ++j) {
            L.WQ(i, k * Dh + j) = T(wq.at(h, i, j));
            L.WK(i, k * Dh + j) = T(wk.at(h, i, j));
            L.WV(i, k * Dh + j) = T(wv.at(h, i, j));
          }
        for (int i = 0; i < Dh; ++i)
          for (int j = 0; j < D; ++j) L.WO(k * Dh + i, j) = T(wo.at(h, i, j));
        for (int j = 0; j < Dh; ++j) {
          L.bQ(k * Dh + j) = T(bq.at(h, j));
          L.bK(k * Dh + j) = T(bk.at(h, j));
          L.bV(k * Dh + j) = T(bv.at(h, j));
        }
      }
      L.bO = vec(get(m, a + "b_O"), 0, D);

      // An MLP neuron adds nothing when its output row is zero, or when its input
      // column is zero and its bias is not positive (ReLU keeps it at 0).
      const Tensor &win = get(m, p + "W_in"), &bin = get(m, p + "b_in"), &wout = get(m, p + "W_out");
      std::vector<int> neurons;
      for (int n = 0; n < M; ++n) {
        bool outZero = true, inZero = bin.data[size_t(n)] <= 0.0f;
        for (int j = 0; j < D && outZero; ++j) outZero = wout.at(n, j) == 0.0f;
        for (int i = 0; i < D && inZero; ++i) inZero = win.at(i, n) == 0.0f;
        if (!outZero && !inZero) neurons.push_back(n);
      }
      L.neurons = int(neurons.size());
      L.Win.setZero(D, L.neurons);
      L.bin.setZero(L.neurons);
      L.Wout.setZero(L.neurons, D);
      for (int k = 0; k < L.neurons; ++k) {
        int n = neurons[size_t(k)];
        for (int i = 0; i < D; ++i) L.Win(i, k) = T(win.at(i, n));
        L.bin(k) = T(bin.data[size_t(n)]);
        for (int j = 0; j < D; ++j) L.Wout(k, j) = T(wout.at(n, j));
      }
      L.bout = vec(get(m, p + "b_out"), 0, D);
      layers.push_back(std::move(L));
    }
  }
};

// Host logits [nSeq * seqRows, d_vocab_out] and their decoding, for every device.
template <class T> struct HostLogitsImpl : Executor::Impl {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat Logits; // rows: sequence b's rows start at b * seqRows; may have spare rows

  Scalar decode(int b, int pos) const override {
    const T *row = Logits.data() + (Eigen::Index(b) * seqRows + pos) * Logits.cols();
    return decodeRow(categorical, outputValues, row, cfg.d_vocab_out);
  }

  Eigen::MatrixXd logits(int b) const override {
    if (b < 0 || b >= nSeq) return {};
    return Logits.block(Eigen::Index(b) * seqRows, 0, lens[size_t(b)] + 1, cfg.d_vocab_out).template cast<double>();
  }

  // Calls `trace` once per sequence with its rows (BOS and tokens, no PAD) of the
  // residual stream X (row-major, ld = d_model, sequence b from row b * seqRows).
  void traceRows(const TraceFn *trace, int layer, const char *sublayer, const T *X) const {
    if (!trace || !*trace) return;
    const std::string name = sublayer;
    const Eigen::Index D = cfg.d_model;
    for (int b = 0; b < nSeq; ++b) {
      Eigen::Map<const Mat> rows(X + Eigen::Index(b) * seqRows * D, lens[size_t(b)] + 1, D);
      Eigen::MatrixXd r = rows.template cast<double>();
      (*trace)(layer, name, r, b);
    }
  }
};

// The forward passes: Cpu.cpp (float or double) and cuda/Executor.cpp (float; fails
// with the reason when no GPU can be used). Both load everything but the vocabulary
// and output fields, which Executor::create fills.
std::unique_ptr<Executor::Impl> makeCpuImpl(const Model &m, Precision p);
llvm::Expected<std::unique_ptr<Executor::Impl>> makeCudaImpl(const Model &m);

} // namespace raspc
