#include "runtime/Cpu.h"
#include "backend/Hdf5.h"

#include <fmt/format.h>
#include <llvm/ADT/STLExtras.h>
#include <llvm/ADT/StringExtras.h>
#include <llvm/ADT/StringRef.h>
#include <llvm/Support/raw_ostream.h>

#include <cmath>
#include <limits>
#include <unordered_map>

namespace raspc {

char InputError::ID = 0;

void InputError::log(llvm::raw_ostream &os) const { os << msg; }

namespace {

llvm::Error fail(const std::string &msg) {
  return llvm::make_error<llvm::StringError>(msg, llvm::inconvertibleErrorCode());
}

template <class T>
Scalar decodeRow(bool categorical, const std::vector<Scalar> &values, const T *row, int n) {
  if (!categorical) return n > 0 ? snapNumber(double(row[0]), values) : Scalar();
  int best = -1;
  for (int j = 0; j < n; ++j)
    if (best < 0 || row[j] > row[best]) best = j; // first maximum wins
  if (best < 0 || !(double(row[best]) >= 0.5) || size_t(best) >= values.size()) return Scalar();
  return values[size_t(best)];
}

} // namespace

Scalar snapNumber(double x, const std::vector<Scalar> &values) {
  const Scalar *best = nullptr;
  double bestDist = std::numeric_limits<double>::infinity();
  for (const Scalar &v : values) {
    if (!isNumber(v)) continue;
    double d = std::fabs(x - toDouble(v));
    if (d < bestDist) {
      bestDist = d;
      best = &v;
    }
  }
  if (best && bestDist < 1e-3 * std::max(1.0, std::fabs(toDouble(*best)))) return *best;
  return Scalar(x);
}

Scalar decodeOutput(const Model &m, const double *logits, int n) {
  return decodeRow(m.outputEncoding == "categorical", m.outputValues, logits, n);
}

bool matchesInterpreter(const Scalar &got, const Scalar &want) {
  if (isNone(got) || isNone(want)) return isNone(got) && isNone(want);
  if (isNumber(got) && isNumber(want))
    return std::fabs(toDouble(got) - toDouble(want)) <= 1e-6 * std::max(1.0, std::fabs(toDouble(want)));
  return scalarEquals(got, want);
}

bool matchesInterpreter(const std::vector<Scalar> &got, const std::vector<Scalar> &want) {
  if (got.size() != want.size()) return false;
  for (size_t i = 0; i < got.size(); ++i)
    if (!matchesInterpreter(got[i], want[i])) return false;
  return true;
}

std::string nodeLabel(const NodeInfo &n) {
  if (!n.name.empty()) return n.name;
  if (n.kind == "tokens") return n.op.empty() ? "tokens" : n.op; // the view: tokens, tokens_int, ...
  if (n.kind == "indices" || n.kind == "length") return n.kind;
  return fmt::format("{}_{}", n.kind, n.id);
}

std::vector<std::pair<std::string, std::vector<Scalar>>> decodeNodes(const Model &m, const Eigen::MatrixXd &residual) {
  std::vector<std::pair<std::string, std::vector<Scalar>>> out;
  for (const NodeInfo &n : m.nodes) {
    if (n.writes.empty()) continue;
    bool inRange = true;
    for (int d : n.writes) inRange = inRange && d >= 0 && d < residual.cols();
    if (!inRange) continue;
    std::string name = nodeLabel(n);
    // Categorical: writes[i] holds the i-th value other than None (None is "all off").
    std::vector<Scalar> present;
    for (const Scalar &v : n.valueSet)
      if (!isNone(v)) present.push_back(v);
    std::vector<Scalar> values;
    for (Eigen::Index p = 1; p < residual.rows(); ++p) {
      if (n.encoding == "numerical" || (n.encoding != "categorical" && n.writes.size() == 1)) {
        values.push_back(snapNumber(residual(p, n.writes[0]), n.valueSet));
        continue;
      }
      size_t k = std::min(n.writes.size(), present.size());
      std::vector<double> row(k);
      for (size_t i = 0; i < k; ++i) row[i] = residual(p, n.writes[i]);
      values.push_back(decodeRow(true, present, row.data(), int(k)));
    }
    out.emplace_back(std::move(name), std::move(values));
  }
  return out;
}

// ------------------------------------------------------------------------------------

struct CpuExecutor::Impl {
  virtual ~Impl() = default;

  ModelConfig cfg;
  Precision precision = Precision::F32;
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

  virtual void forward(const TraceFn *trace) = 0;
  virtual Scalar decode(int b, int pos) const = 0;
  virtual Eigen::MatrixXd logits(int b) const = 0;

  llvm::Expected<std::vector<int>> encode(const std::vector<std::string> &tokens, int seq) const {
    std::vector<int> out;
    out.reserve(tokens.size() + 1);
    out.push_back(bosId);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string &tok = tokens[i];
      auto it = vocabIds.find(tok);
      if (it == vocabIds.end() && intTokens) {
        // An int token is matched by value ("03" and "+3" are 3), as the program sees it.
        llvm::StringRef digits(tok);
        bool neg = digits.consume_front("-");
        if (!neg) digits.consume_front("+");
        uint64_t u;
        if (!digits.empty() && llvm::all_of(digits, llvm::isDigit) && !digits.getAsInteger(10, u) &&
            u <= uint64_t(INT64_MAX))
          it = vocabIds.find(std::to_string(neg ? -int64_t(u) : int64_t(u)));
      }
      if (it != vocabIds.end()) {
        out.push_back(it->second);
        continue;
      }
      std::string where = fmt::format("sequence {}, position {}", seq, i);
      if (tok == "<bos>" || tok == "<pad>")
        return llvm::make_error<InputError>(
            seq, int(i), tok,
            fmt::format("{}: token '{}' is reserved (the runtime adds BOS and PAD itself)", where, tok));
      std::string known;
      size_t shown = 0;
      for (const std::string &v : vocab) {
        if (v == "<bos>" || v == "<pad>") continue;
        if (shown == 20) {
          known += ", ...";
          break;
        }
        known += (shown++ ? ", " : "") + v;
      }
      return llvm::make_error<InputError>(
          seq, int(i), tok, fmt::format("{}: token '{}' is not in the model's vocabulary {{{}}}", where, tok, known));
    }
    return out;
  }
};

namespace {

template <class T> struct ImplT final : CpuExecutor::Impl {
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

  // Activation buffers; rows grow to the largest nSeq * seqRows seen and are reused.
  Mat X, Q, K, V, Z, Hid, Logits, S;

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

  // Grows a buffer (never shrinks it); callers use its top-left corner.
  static void ensure(Mat &buf, Eigen::Index rows, Eigen::Index cols) {
    if (buf.rows() < rows || buf.cols() < cols) buf.resize(std::max(rows, buf.rows()), std::max(cols, buf.cols()));
  }

  void traceAll(const TraceFn *trace, int layer, const char *sublayer) {
    if (!trace || !*trace) return;
    const int Tn = seqRows;
    const std::string name = sublayer;
    for (int b = 0; b < nSeq; ++b) {
      Eigen::MatrixXd r = X.block(Eigen::Index(b) * Tn, 0, lens[size_t(b)] + 1, cfg.d_model).template cast<double>();
      (*trace)(layer, name, r, b);
    }
  }

  void forward(const TraceFn *trace) override {
    const int Tn = seqRows;
    const Eigen::Index N = Eigen::Index(nSeq) * Tn, D = cfg.d_model, Dh = cfg.d_head;
    ensure(X, N, D);
    auto x = X.topLeftCorner(N, D);
    for (int b = 0; b < nSeq; ++b)
      for (int t = 0; t < Tn; ++t) {
        Eigen::Index r = Eigen::Index(b) * Tn + t;
        x.row(r) = WE.row(ids[size_t(r)]) + Wpos.row(t);
      }
    traceAll(trace, -1, "embed");

    const T scale = Dh > 0 ? T(1) / std::sqrt(T(Dh)) : T(1);
    ensure(S, Tn, Tn);
    for (int l = 0; l < cfg.n_layers; ++l) {
      const Layer &L = layers[size_t(l)];
      if (L.heads > 0) {
        const Eigen::Index HW = Eigen::Index(L.heads) * Dh;
        ensure(Q, N, HW);
        ensure(K, N, HW);
        ensure(V, N, HW);
        ensure(Z, N, HW);
        auto q = Q.topLeftCorner(N, HW), k = K.topLeftCorner(N, HW), v = V.topLeftCorner(N, HW),
             z = Z.topLeftCorner(N, HW);
        q.noalias() = x * L.WQ;
        q.rowwise() += L.bQ;
        k.noalias() = x * L.WK;
        k.rowwise() += L.bK;
        v.noalias() = x * L.WV;
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
        x.noalias() += z * L.WO;
      }
      x.rowwise() += L.bO;
      traceAll(trace, l, "attn");

      if (L.neurons > 0) {
        ensure(Hid, N, L.neurons);
        auto hid = Hid.topLeftCorner(N, L.neurons);
        hid.noalias() = x * L.Win;
        hid.rowwise() += L.bin;
        hid = hid.cwiseMax(T(0));
        x.noalias() += hid * L.Wout;
      }
      x.rowwise() += L.bout;
      traceAll(trace, l, "mlp");
    }
    ensure(Logits, N, cfg.d_vocab_out);
    auto lg = Logits.topLeftCorner(N, cfg.d_vocab_out);
    lg.noalias() = x * WU;
    lg.rowwise() += bU;
  }

  Scalar decode(int b, int pos) const override {
    const T *row = Logits.data() + (Eigen::Index(b) * seqRows + pos) * Logits.cols();
    return decodeRow(categorical, outputValues, row, cfg.d_vocab_out);
  }

  Eigen::MatrixXd logits(int b) const override {
    if (b < 0 || b >= nSeq) return {};
    return Logits.block(Eigen::Index(b) * seqRows, 0, lens[size_t(b)] + 1, cfg.d_vocab_out).template cast<double>();
  }
};

} // namespace

CpuExecutor::CpuExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuExecutor::CpuExecutor(CpuExecutor &&) noexcept = default;
CpuExecutor &CpuExecutor::operator=(CpuExecutor &&) noexcept = default;
CpuExecutor::~CpuExecutor() = default;

llvm::Expected<CpuExecutor> CpuExecutor::create(const Model &m, Precision p) {
  if (auto e = validateModel(m, m.sourceName.empty() ? "model" : m.sourceName)) return e;
  std::unique_ptr<Impl> impl;
  if (p == Precision::F64) {
    auto i = std::make_unique<ImplT<double>>();
    i->cfg = m.cfg;
    i->load(m);
    impl = std::move(i);
  } else {
    auto i = std::make_unique<ImplT<float>>();
    i->cfg = m.cfg;
    i->load(m);
    impl = std::move(i);
  }
  impl->precision = p;
  impl->vocab = m.vocab;
  for (size_t i = 0; i < m.vocab.size(); ++i)
    if (int(i) != m.bosId && int(i) != m.padId) impl->vocabIds.emplace(m.vocab[i], int(i));
  impl->bosId = m.bosId;
  impl->padId = m.padId;
  impl->intTokens = m.intTokens;
  impl->categorical = m.outputEncoding == "categorical";
  impl->outputValues = m.outputValues;
  return CpuExecutor(std::move(impl));
}

llvm::Expected<std::vector<int>> CpuExecutor::encode(const std::vector<std::string> &tokens, int seq) const {
  return impl_->encode(tokens, seq);
}

llvm::Expected<std::vector<std::vector<Scalar>>> CpuExecutor::run(const std::vector<std::vector<std::string>> &batch,
                                                                  const TraceFn *trace) {
  Impl &I = *impl_;
  const int maxLen = I.cfg.n_ctx - 1;
  std::vector<std::vector<int>> encoded;
  size_t longest = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    if (int64_t(batch[b].size()) > maxLen)
      return fail(fmt::format("sequence {} has {} tokens, more than the model's maximum length {}", b,
                              batch[b].size(), maxLen));
    auto ids = I.encode(batch[b], int(b));
    if (!ids) return ids.takeError();
    longest = std::max(longest, batch[b].size());
    encoded.push_back(std::move(*ids));
  }
  I.nSeq = int(batch.size());
  I.seqRows = int(longest) + 1;
  I.lens.assign(batch.size(), 0);
  I.ids.assign(size_t(I.nSeq) * size_t(I.seqRows), I.padId);
  for (int b = 0; b < I.nSeq; ++b) {
    I.lens[size_t(b)] = int(batch[size_t(b)].size());
    std::copy(encoded[size_t(b)].begin(), encoded[size_t(b)].end(), I.ids.begin() + ptrdiff_t(b) * I.seqRows);
  }
  std::vector<std::vector<Scalar>> out(batch.size());
  if (I.nSeq == 0) return out;
  I.forward(trace);
  for (int b = 0; b < I.nSeq; ++b)
    for (int p = 1; p <= I.lens[size_t(b)]; ++p) out[size_t(b)].push_back(I.decode(b, p));
  return out;
}

Eigen::MatrixXd CpuExecutor::logits(int seq) const { return impl_->logits(seq); }
Precision CpuExecutor::precision() const { return impl_->precision; }
int CpuExecutor::maxLength() const { return impl_->cfg.n_ctx - 1; }

} // namespace raspc
