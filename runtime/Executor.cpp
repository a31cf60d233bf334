#include "runtime/ExecutorImpl.h"
#include "backend/Hdf5.h"

#include <fmt/format.h>
#include <llvm/ADT/STLExtras.h>
#include <llvm/ADT/StringExtras.h>
#include <llvm/ADT/StringRef.h>
#include <llvm/Support/raw_ostream.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

namespace raspc {

char InputError::ID = 0;

InputError::InputError(int seq, int pos, std::string token, std::string detail)
    : seq(seq), pos(pos), token(std::move(token)), detail(std::move(detail)),
      msg(fmt::format("sequence {}, position {}: {}", seq, pos, this->detail)) {}

void InputError::log(llvm::raw_ostream &os) const { os << msg; }

char NonFiniteError::ID = 0;

std::string NonFiniteError::where() const {
  if (sublayer == "embed") return "the embedding";
  if (sublayer == "unembed") return "the unembedding";
  return fmt::format("layer {} {}", layer, sublayer);
}

std::string NonFiniteError::position() const { return pos < 0 ? "BOS" : fmt::format("position {}", pos); }

void NonFiniteError::log(llvm::raw_ostream &os) const {
  os << where() << " produced a non-finite value at sequence " << seq << ", " << position();
}

namespace {

llvm::Error fail(const std::string &msg) {
  return llvm::make_error<llvm::StringError>(msg, llvm::inconvertibleErrorCode());
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

Eigen::MatrixXd labelSpace(const Model &m, const Eigen::MatrixXd &residual) {
  if (!hasResidualBasis(m)) return residual;
  const Tensor &b = m.residualBasis;
  if (residual.cols() != b.shape[1]) return Eigen::MatrixXd(residual.rows(), 0);
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMajor> B(b.data.data(), b.shape[0], b.shape[1]);
  return residual * B.cast<double>().transpose();
}

std::vector<std::pair<std::string, std::vector<Scalar>>> decodeNodes(const Model &m, const Eigen::MatrixXd &stream) {
  std::vector<std::pair<std::string, std::vector<Scalar>>> out;
  // The ground truth's directions index labels: read them through the basis.
  const Eigen::MatrixXd residual = labelSpace(m, stream);
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

std::vector<Eigen::MatrixXd> attentionPatterns(const Model &m, int layer, const Eigen::MatrixXd &residual) {
  const ModelConfig &c = m.cfg;
  std::vector<Eigen::MatrixXd> out;
  if (layer < 0 || layer >= c.n_layers || residual.cols() != c.d_model) return out;
  const std::string a = fmt::format("blocks.{}.attn.", layer);
  const Tensor &wq = m.tensors.at(a + "W_Q"), &wk = m.tensors.at(a + "W_K"), &bq = m.tensors.at(a + "b_Q"),
               &bk = m.tensors.at(a + "b_K");
  const Eigen::Index T = residual.rows(), D = c.d_model, Dh = c.d_head;
  const double scale = Dh > 0 ? 1.0 / std::sqrt(double(Dh)) : 1.0;
  for (int h = 0; h < c.n_heads; ++h) {
    Eigen::MatrixXd WQ(D, Dh), WK(D, Dh);
    Eigen::RowVectorXd BQ(Dh), BK(Dh);
    for (Eigen::Index i = 0; i < D; ++i)
      for (Eigen::Index j = 0; j < Dh; ++j) {
        WQ(i, j) = wq.at(h, i, j);
        WK(i, j) = wk.at(h, i, j);
      }
    for (Eigen::Index j = 0; j < Dh; ++j) {
      BQ(j) = bq.at(h, j);
      BK(j) = bk.at(h, j);
    }
    Eigen::MatrixXd q = (residual * WQ).rowwise() + BQ, k = (residual * WK).rowwise() + BK;
    Eigen::MatrixXd s = (q * k.transpose()) * scale;
    for (Eigen::Index i = 0; i < T; ++i) {
      const Eigen::Index visible = c.causal ? i + 1 : T; // the mask of the forward pass
      const double mx = s.row(i).head(visible).maxCoeff();
      double sum = 0;
      for (Eigen::Index j = 0; j < visible; ++j) sum += (s(i, j) = std::exp(s(i, j) - mx));
      s.row(i).head(visible) /= sum;
      s.row(i).tail(T - visible).setZero();
    }
    out.push_back(std::move(s));
  }
  return out;
}

// ------------------------------------------------------------------------------------

llvm::Expected<std::vector<int>> Executor::Impl::encode(const std::vector<std::string> &tokens, int seq) const {
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
    if (tok == "<bos>" || tok == "<pad>")
      return llvm::make_error<InputError>(
          seq, int(i), tok, fmt::format("token '{}' is reserved (the runtime adds BOS and PAD itself)", tok));
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
        seq, int(i), tok, fmt::format("token '{}' is not in the model's vocabulary {{{}}}", tok, known));
  }
  return out;
}

Executor::Executor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Executor::Executor(Executor &&) noexcept = default;
Executor &Executor::operator=(Executor &&) noexcept = default;
Executor::~Executor() = default;

llvm::Expected<Executor> Executor::create(const Model &m, Precision p, Device d) {
  if (auto e = validateModel(m, m.sourceName.empty() ? "model" : m.sourceName)) return e;
  std::unique_ptr<Impl> impl;
  if (d == Device::Cuda) {
    if (p != Precision::F32) return fail("the CUDA executor runs float32 only");
    auto gpu = makeCudaImpl(m);
    if (!gpu) return gpu.takeError();
    impl = std::move(*gpu);
  } else {
    impl = makeCpuImpl(m, p);
  }
  impl->device = d;
  impl->precision = p;
  impl->vocab = m.vocab;
  for (size_t i = 0; i < m.vocab.size(); ++i)
    if (int(i) != m.bosId && int(i) != m.padId) impl->vocabIds.emplace(m.vocab[i], int(i));
  impl->bosId = m.bosId;
  impl->padId = m.padId;
  impl->intTokens = m.intTokens;
  impl->categorical = m.outputEncoding == "categorical";
  impl->outputValues = m.outputValues;
  return Executor(std::move(impl));
}

llvm::Expected<std::vector<int>> Executor::encode(const std::vector<std::string> &tokens, int seq) const {
  return impl_->encode(tokens, seq);
}

llvm::Expected<std::vector<std::vector<Scalar>>> Executor::run(const std::vector<std::vector<std::string>> &batch,
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
  if (auto e = I.forward(trace)) return e;
  for (int b = 0; b < I.nSeq; ++b)
    for (int p = 1; p <= I.lens[size_t(b)]; ++p) out[size_t(b)].push_back(I.decode(b, p));
  return out;
}

Eigen::MatrixXd Executor::logits(int seq) const { return impl_->logits(seq); }
Precision Executor::precision() const { return impl_->precision; }
Device Executor::device() const { return impl_->device; }
int Executor::maxLength() const { return impl_->cfg.n_ctx - 1; }
void Executor::setThreads(int n) { impl_->threads = std::max(0, n); }
int Executor::threads() const { return impl_->threads; }

} // namespace raspc
