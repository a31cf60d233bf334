#include "runtime/Crate.h"
#include "backend/Hdf5.h"
#include "backend/Hdf5Util.h"
#include "runtime/cuda/Cuda.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <set>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace raspc {

namespace {

using h5::fail;

constexpr int64_t kMaxSize = int64_t(1) << 20;   // any configured size
constexpr int64_t kMaxParams = int64_t(1) << 30; // 4 GiB of float32 in all
constexpr double kLnEps = 1e-5;                  // nn.LayerNorm's default

std::string layerKey(int l, const char *rest) { return fmt::format("transformer.layers.{}.{}", l, rest); }

llvm::Error validateConfig(const CrateConfig &c, const std::string &what) {
  struct Range {
    const char *name;
    int64_t v, lo, hi;
  } ranges[] = {
      {"image_size", c.image_size, 1, kMaxSize}, {"patch_size", c.patch_size, 1, kMaxSize},
      {"channels", c.channels, 1, kMaxSize},     {"dim", c.dim, 1, kMaxSize},
      {"depth", c.depth, 1, 1 << 12},            {"heads", c.heads, 1, kMaxSize},
      {"num_classes", c.num_classes, 1, kMaxSize},
  };
  for (auto &r : ranges)
    if (r.v < r.lo || r.v > r.hi)
      return fail(what, fmt::format("config {} is {}, expected a value in [{}, {}]", r.name, r.v, r.lo, r.hi));
  if (c.dim % c.heads != 0)
    return fail(what, fmt::format("config dim = {} is not divisible by heads = {}", c.dim, c.heads));
  if (c.image_size % c.patch_size != 0)
    return fail(what, fmt::format("config image_size = {} is not divisible by patch_size = {}", c.image_size,
                                  c.patch_size));
  // Bounded before the sizes are multiplied anywhere else (tensor shapes, buffers).
  if (c.tokens() > kMaxCrateTokens)
    return fail(what, fmt::format("config image_size {} / patch_size {} gives {} patches, more than the {} raspc runs",
                                  c.image_size, c.patch_size, c.numPatches(), kMaxCrateTokens - 1));
  if (c.patchDim() > kMaxCrateTokens)
    return fail(what, fmt::format("config channels {} * patch_size {}^2 gives {} values per patch, more than the {} "
                                  "raspc runs",
                                  c.channels, c.patch_size, c.patchDim(), kMaxCrateTokens));
  if (c.pool != "cls" && c.pool != "mean")
    return fail(what, "config pool is '" + c.pool + "', expected 'cls' or 'mean'");
  if (!std::isfinite(c.eta) || c.eta < 0) return fail(what, fmt::format("config eta is {}, expected >= 0", c.eta));
  if (!std::isfinite(c.lambda) || c.lambda < 0)
    return fail(what, fmt::format("config lambda is {}, expected >= 0", c.lambda));
  // numPatches() is an int: bound the patch grid before any shape is computed from it.
  int64_t side = c.image_size / c.patch_size;
  if (side * side >= kMaxSize)
    return fail(what, fmt::format("config image_size / patch_size = {} gives {} patches, more than the {} raspc reads",
                                  side, side * side, kMaxSize - 1));
  double params = 0;
  for (auto &[name, shape] : crateTensorShapes(c)) {
    double n = 1;
    for (int64_t d : shape) n *= double(d);
    params += n;
  }
  if (params > double(kMaxParams))
    return fail(what, fmt::format("the configuration asks for {:.0f} parameters, more than the {} raspc reads", params,
                                  kMaxParams));
  return llvm::Error::success();
}

llvm::Error validateSynth(const CrateModel &m, const std::string &what) {
  if (m.synthTokens.shape.empty() && m.synthLabels.empty()) return llvm::Error::success();
  const Tensor &t = m.synthTokens;
  if (t.shape.size() != 2 || t.shape[1] != m.cfg.dim || t.shape[0] < 1)
    return fail(what, fmt::format("dataset 'synth/tokens' has shape {}, expected [N, {}]", formatShape(t.shape),
                                  m.cfg.dim));
  if (t.data.size() != t.numel()) return fail(what, "dataset 'synth/tokens' has the wrong number of values");
  if (auto e = h5::checkFinite(what, "synth/tokens", t)) return e;
  if (int64_t(m.synthLabels.size()) != t.shape[0])
    return fail(what, fmt::format("dataset 'synth/labels' has {} entries, expected {}", m.synthLabels.size(),
                                  t.shape[0]));
  for (int k : m.synthLabels)
    if (k < 0 || k >= m.cfg.heads)
      return fail(what, fmt::format("dataset 'synth/labels' holds {}, expected a head in [0, {})", k, m.cfg.heads));
  return llvm::Error::success();
}

// The threads of the CRATE forward pass: one per core (OpenMP's default), and which
// one runs the caller.
int maxThreads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}
int threadNumber() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// How many T x T attention matrices a pass holds at once: one per thread when the heads
// are spread over the threads, unless that costs more than 64 MiB (long sequences, as
// `crate synth` makes): then the heads run one after another, each on every thread.
int scoreCopies(double T) {
  const int threads = maxThreads();
  return 4.0 * T * T * threads <= 64.0 * (1 << 20) ? threads : 1;
}

// Row-wise LayerNorm (biased variance, eps 1e-5), statistics in double. The matrices are
// column-major: every row's statistics are accumulated at once, a column at a time
// (contiguous, vectorised).
void layerNorm(const Eigen::MatrixXf &in, Eigen::MatrixXf &out, const Eigen::RowVectorXf &w,
               const Eigen::RowVectorXf &b) {
  const Eigen::Index rows = in.rows(), n = in.cols();
  Eigen::ArrayXd mean = Eigen::ArrayXd::Zero(rows), var = Eigen::ArrayXd::Zero(rows);
  for (Eigen::Index c = 0; c < n; ++c) mean += in.col(c).array().cast<double>();
  mean /= double(n);
  for (Eigen::Index c = 0; c < n; ++c) var += (in.col(c).array().cast<double>() - mean).square();
  var /= double(n);
  const Eigen::ArrayXf inv = (var + kLnEps).rsqrt().cast<float>(), m = mean.cast<float>();
  out.resize(rows, n);
  for (Eigen::Index c = 0; c < n; ++c) out.col(c).array() = (in.col(c).array() - m) * inv * w(c) + b(c);
}

// log det of a symmetric positive definite matrix.
double logdetSpd(const Eigen::MatrixXd &m) {
  Eigen::LLT<Eigen::MatrixXd> llt(m);
  const Eigen::MatrixXd &L = llt.matrixL();
  double s = 0;
  for (Eigen::Index i = 0; i < L.rows(); ++i) s += std::log(L(i, i));
  return 2 * s;
}

Eigen::MatrixXf toMatrix(const Tensor &t, int64_t rows, int64_t cols) {
  Eigen::MatrixXf m(rows, cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) m(i, j) = t.data[size_t(i * cols + j)];
  return m;
}

Eigen::RowVectorXf toRow(const Tensor &t) {
  Eigen::RowVectorXf v(Eigen::Index(t.data.size()));
  for (size_t i = 0; i < t.data.size(); ++i) v(Eigen::Index(i)) = t.data[i];
  return v;
}

Tensor fromMatrix(const Eigen::MatrixXd &m) {
  Tensor t({int64_t(m.rows()), int64_t(m.cols())});
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) t.data[size_t(i * m.cols() + j)] = float(m(i, j));
  return t;
}

Tensor filled(std::vector<int64_t> shape, float v) {
  Tensor t(std::move(shape));
  std::fill(t.data.begin(), t.data.end(), v);
  return t;
}

// A random orthogonal matrix (QR of a Gaussian matrix, signs fixed by R's diagonal).
Eigen::MatrixXd randomOrthogonal(int n, std::mt19937_64 &rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Eigen::MatrixXd g(n, n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) g(i, j) = normal(rng);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(n, n);
  Eigen::MatrixXd r = qr.matrixQR();
  for (int j = 0; j < n; ++j)
    if (r(j, j) < 0) q.col(j) *= -1;
  return q;
}

} // namespace

// ------------------------------------------------------------------------------------
// Memory estimates

std::string formatBytes(double bytes) {
  if (bytes >= double(uint64_t(1) << 30)) return fmt::format("{:.1f} GiB", bytes / double(uint64_t(1) << 30));
  return fmt::format("{:.1f} MiB", bytes / double(uint64_t(1) << 20));
}

double crateActivationBytes(const CrateConfig &c, int64_t groups, int64_t tokensPerGroup, bool metrics) {
  // In double: the products of untrusted sizes must not overflow.
  const double rows = double(groups) * double(tokensPerGroup), d = double(c.dim), T = double(tokensPerGroup);
  // X, Z, W, O and the caller's input and output: 6 row buffers of floats, the patches
  // and their embeddings, the attention matrices held at once.
  double bytes = 4.0 * (6.0 * rows * d + 2.0 * double(groups) * double(c.numPatches()) * (double(c.patchDim()) + d) +
                        double(scoreCopies(T)) * T * T);
  // The metrics: each group's Z in double, U in double, the d x d (or T x T) Gram matrix.
  if (metrics) bytes += 8.0 * (2.0 * T * d + 2.0 * d * d + std::min(T, d) * std::min(T, d));
  return bytes;
}

double crateSynthBytes(const CrateSynthOptions &o) {
  const double d = std::max(o.dim, 1), L = std::max(o.depth, 1), N = std::max(o.tokens, 1);
  // The model (qkv, to_out and the dictionary per layer, float32), the executor's four
  // d x d copies per layer, the double matrices of the construction, the tokens.
  double bytes = 4.0 * 3.0 * L * d * d + 4.0 * 4.0 * L * d * d + 8.0 * 6.0 * d * d + 12.0 * N * d;
  CrateConfig c;
  c.image_size = c.patch_size = 1;
  c.channels = c.dim = o.dim;
  return bytes + crateActivationBytes(c, 1, o.tokens, true);
}

// ------------------------------------------------------------------------------------
// Layout

std::vector<std::pair<std::string, std::vector<int64_t>>> crateTensorShapes(const CrateConfig &c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> v;
  int64_t D = c.dim, P = c.patchDim();
  v.push_back({"to_patch_embedding.1.weight", {P}});
  v.push_back({"to_patch_embedding.1.bias", {P}});
  v.push_back({"to_patch_embedding.2.weight", {D, P}});
  v.push_back({"to_patch_embedding.2.bias", {D}});
  v.push_back({"to_patch_embedding.3.weight", {D}});
  v.push_back({"to_patch_embedding.3.bias", {D}});
  v.push_back({"pos_embedding", {1, int64_t(c.tokens()), D}});
  v.push_back({"cls_token", {1, 1, D}});
  for (int l = 0; l < c.depth; ++l) {
    v.push_back({layerKey(l, "0.norm.weight"), {D}});
    v.push_back({layerKey(l, "0.norm.bias"), {D}});
    v.push_back({layerKey(l, "0.fn.qkv.weight"), {D, D}});
    v.push_back({layerKey(l, "0.fn.to_out.0.weight"), {D, D}});
    v.push_back({layerKey(l, "0.fn.to_out.0.bias"), {D}});
    v.push_back({layerKey(l, "1.norm.weight"), {D}});
    v.push_back({layerKey(l, "1.norm.bias"), {D}});
    v.push_back({layerKey(l, "1.fn.weight"), {D, D}});
  }
  v.push_back({"mlp_head.0.weight", {D}});
  v.push_back({"mlp_head.0.bias", {D}});
  v.push_back({"mlp_head.1.weight", {int64_t(c.num_classes), D}});
  v.push_back({"mlp_head.1.bias", {int64_t(c.num_classes)}});
  return v;
}

llvm::Error validateCrateModel(const CrateModel &m, const std::string &what) {
  if (auto e = validateConfig(m.cfg, what)) return e;
  if (auto e = h5::checkTensors(what, m.tensors, crateTensorShapes(m.cfg))) return e;
  return validateSynth(m, what);
}

llvm::Error writeCrateModel(const CrateModel &m, const std::string &path, const files::OutputRule &rule) {
  h5::quiet();
  if (auto e = validateCrateModel(m, path)) return e;
  return h5::writeAtomically(path, rule, [&](hid_t fid) -> llvm::Error {
    for (auto &[name, shape] : crateTensorShapes(m.cfg))
      if (auto e = h5::writeTensor(fid, path, name, m.tensors.at(name))) return e;
    h5::Handle g = h5::createGroup(fid, "metadata");
    if (!g.ok()) return fail(path, "cannot create group 'metadata'");
    const CrateConfig &c = m.cfg;
    if (auto e = h5::writeStringAttr(g.get(), path, "metadata", "format", "crate")) return e;
    std::pair<const char *, int64_t> ints[] = {
        {"format_version", CrateModel::kFormatVersion},
        {"image_size", c.image_size},
        {"patch_size", c.patch_size},
        {"channels", c.channels},
        {"dim", c.dim},
        {"depth", c.depth},
        {"heads", c.heads},
        {"num_classes", c.num_classes},
    };
    for (auto &[name, v] : ints)
      if (auto e = h5::writeIntAttr(g.get(), path, "metadata", name, v)) return e;
    if (auto e = h5::writeDoubleAttr(g.get(), path, "metadata", "eta", c.eta)) return e;
    if (auto e = h5::writeDoubleAttr(g.get(), path, "metadata", "lambda", c.lambda)) return e;
    if (auto e = h5::writeStringAttr(g.get(), path, "metadata", "pool", c.pool)) return e;
    if (!m.synthTokens.shape.empty()) {
      h5::Handle s = h5::createGroup(fid, "synth");
      if (!s.ok()) return fail(path, "cannot create group 'synth'");
      if (auto e = h5::writeTensor(s.get(), path, "tokens", m.synthTokens)) return e;
      Tensor labels({int64_t(m.synthLabels.size())});
      for (size_t i = 0; i < m.synthLabels.size(); ++i) labels.data[i] = float(m.synthLabels[i]);
      if (auto e = h5::writeTensor(s.get(), path, "labels", labels)) return e;
    }
    return llvm::Error::success();
  });
}

namespace {

llvm::Expected<CrateModel> readCrateModelFrom(const h5::File &f, const std::string &path) {
  hid_t fid = f.get();
  if (!h5::exists(fid, "metadata")) return fail(path, "missing group 'metadata'");
  if (h5::objectType(fid, "metadata") != H5I_GROUP) return fail(path, "'metadata' is not a group");
  h5::Handle g = h5::group(H5Gopen2(fid, "metadata", H5P_DEFAULT));
  if (!g.ok()) return fail(path, "cannot open group 'metadata'");
  hid_t gid = g.get();

  std::string format;
  if (auto e = h5::readStringAttr(gid, path, "metadata", "format", format)) return e;
  if (format != "crate")
    return fail(path, "attribute 'metadata/format' is '" + format + "', expected 'crate' (not a CRATE model)");
  int64_t version;
  if (auto e = h5::readIntAttr(gid, path, "metadata", "format_version", version, INT32_MIN, INT32_MAX))
    return e;
  if (version != CrateModel::kFormatVersion)
    return fail(path, fmt::format("unsupported format_version {} (this raspc reads version {})", version,
                                  CrateModel::kFormatVersion));
  CrateModel m;
  CrateConfig &c = m.cfg;
  std::pair<const char *, int *> ints[] = {
      {"image_size", &c.image_size}, {"patch_size", &c.patch_size}, {"channels", &c.channels},
      {"dim", &c.dim},               {"depth", &c.depth},           {"heads", &c.heads},
      {"num_classes", &c.num_classes},
  };
  for (auto &[name, dst] : ints) {
    int64_t v;
    if (auto e = h5::readIntAttr(gid, path, "metadata", name, v, 1, kMaxSize)) return e;
    *dst = int(v);
  }
  if (auto e = h5::readDoubleAttr(gid, path, "metadata", "eta", c.eta)) return e;
  if (auto e = h5::readDoubleAttr(gid, path, "metadata", "lambda", c.lambda)) return e;
  if (auto e = h5::readStringAttr(gid, path, "metadata", "pool", c.pool)) return e;
  if (auto e = validateConfig(c, path)) return e;

  for (auto &[name, shape] : crateTensorShapes(c)) {
    Tensor t;
    if (auto e = h5::readTensor(fid, path, name, t, shape)) return e;
    if (auto e = h5::checkFinite(path, name, t)) return e;
    m.tensors.emplace(name, std::move(t));
  }
  if (h5::exists(fid, "synth")) {
    if (h5::objectType(fid, "synth") != H5I_GROUP) return fail(path, "'synth' is not a group");
    if (auto e = h5::readTensor(fid, path, "synth/tokens", m.synthTokens, std::nullopt, "dataset", 2))
      return e;
    Tensor labels;
    if (auto e = h5::readTensor(fid, path, "synth/labels", labels, std::nullopt, "dataset", 1))
      return e;
    for (float x : labels.data) {
      if (!(x >= 0 && x < float(c.heads) && x == std::floor(x)))
        return fail(path, fmt::format("dataset 'synth/labels' holds {}, expected a head in [0, {})", x, c.heads));
      m.synthLabels.push_back(int(x));
    }
  }
  if (auto e = validateCrateModel(m, path)) return e;
  return m;
}

llvm::Expected<CrateImages> readCrateImagesFrom(const h5::File &f, const std::string &path, const CrateConfig &c) {
  Tensor t;
  // The declared shape is checked against the model and the limits before anything is
  // allocated (a file of a few KB may declare any shape).
  auto checkShape = [&](const std::vector<int64_t> &shape) -> llvm::Error {
    if (shape[0] < 1 || shape[1] != c.channels || shape[2] != c.image_size || shape[3] != c.image_size)
      return fail(path, fmt::format("dataset 'images' has shape {}, expected [B, {}, {}, {}] with B >= 1 (the model's "
                                    "channels and image size)",
                                    formatShape(shape), c.channels, c.image_size, c.image_size));
    uint64_t perImage = uint64_t(c.channels) * uint64_t(c.image_size) * uint64_t(c.image_size);
    if (shape[0] > kMaxImageBatch || uint64_t(shape[0]) > uint64_t(kMaxImageValues) / perImage)
      return fail(path, fmt::format("dataset 'images' holds {} images, more than the {} raspc reads at once (at most "
                                    "{} images and {} values)",
                                    shape[0], std::min<uint64_t>(kMaxImageBatch, uint64_t(kMaxImageValues) / perImage),
                                    kMaxImageBatch, kMaxImageValues));
    return llvm::Error::success();
  };
  if (auto e = h5::readTensor(f.get(), path, "images", t, std::nullopt, "dataset", 4, checkShape)) return e;
  for (size_t i = 0; i < t.data.size(); ++i)
    if (!std::isfinite(t.data[i]))
      return fail(path, fmt::format("dataset 'images' has a non-finite value ({}) at {}",
                                    std::isnan(t.data[i]) ? "nan" : t.data[i] > 0 ? "inf" : "-inf",
                                    h5::elementIndex(t.shape, i)));
  CrateImages im;
  im.batch = int(t.shape[0]);
  im.data = std::move(t.data);
  return im;
}

} // namespace

llvm::Expected<CrateModel> readCrateModel(const std::string &path) {
  auto f = h5::openForReading(path);
  if (!f) return f.takeError();
  return readCrateModelFrom(*f, path);
}

llvm::Expected<CrateModel> readCrateModelFromImage(std::string bytes, const std::string &name) {
  auto f = h5::openImage(std::move(bytes), name);
  if (!f) return f.takeError();
  return readCrateModelFrom(*f, name);
}

llvm::Expected<CrateImages> readCrateImages(const std::string &path, const CrateConfig &c) {
  auto f = h5::openForReading(path);
  if (!f) return f.takeError();
  return readCrateImagesFrom(*f, path, c);
}

llvm::Expected<CrateImages> readCrateImagesFromImage(std::string bytes, const std::string &name,
                                                     const CrateConfig &c) {
  auto f = h5::openImage(std::move(bytes), name);
  if (!f) return f.takeError();
  return readCrateImagesFrom(*f, name, c);
}

llvm::Error writeCrateImages(const std::string &path, const std::vector<float> &data, int batch, int channels,
                             int size, const files::OutputRule &rule) {
  Tensor t({batch, channels, size, size});
  if (t.numel() != data.size())
    return fail(path, fmt::format("{} values for images of shape {}", data.size(), formatShape(t.shape)));
  t.data = data;
  return writeTensorFile(path, "images", t, rule);
}

llvm::Error writeTensorFile(const std::string &path, const std::string &name, const Tensor &t,
                            const files::OutputRule &rule) {
  return h5::writeAtomically(path, rule, [&](hid_t fid) { return h5::writeTensor(fid, path, name, t); });
}

CrateModel randomCrateModel(const CrateConfig &c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  CrateModel m;
  m.cfg = c;
  for (auto &[name, shape] : crateTensorShapes(c)) {
    Tensor t(shape);
    bool norm = name.find("norm") != std::string::npos || name.rfind("to_patch_embedding.1", 0) == 0 ||
                name.rfind("to_patch_embedding.3", 0) == 0 || name.rfind("mlp_head.0", 0) == 0;
    bool isWeight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    if (norm) {
      for (float &x : t.data) x = (isWeight ? 1.0f : 0.0f) + 0.1f * normal(rng);
    } else if (name == "pos_embedding" || name == "cls_token") {
      for (float &x : t.data) x = normal(rng);
    } else {
      // PyTorch's default Linear init: U(-1/sqrt(in), 1/sqrt(in)); `in` is the last dim
      // of the weight (biases use the weight's).
      int64_t in = name.rfind("to_patch_embedding.2", 0) == 0 ? c.patchDim() : c.dim;
      std::uniform_real_distribution<float> u(-1.0f / std::sqrt(float(in)), 1.0f / std::sqrt(float(in)));
      for (float &x : t.data) x = u(rng);
    }
    m.tensors.emplace(name, std::move(t));
  }
  return m;
}

// ------------------------------------------------------------------------------------
// White-box quantities

double codingRate(const Eigen::MatrixXd &Z, double eps) {
  const double n = double(Z.rows()), d = double(Z.cols());
  // logdet(I_N + a Z Z^T) over tokens equals logdet(I_d + a Z^T Z) (Sylvester); the
  // smaller one is computed.
  double a = d / (n * eps * eps);
  Eigen::MatrixXd m = Z.rows() < Z.cols() ? Eigen::MatrixXd(Z * Z.transpose()) : Eigen::MatrixXd(Z.transpose() * Z);
  m *= a;
  m.diagonal().array() += 1.0;
  return 0.5 * logdetSpd(m);
}

double compressionRate(const Eigen::MatrixXd &Z, const Eigen::MatrixXd &U, int heads, double eps) {
  const Eigen::Index p = U.cols() / heads;
  const double alpha = double(p) / (double(Z.rows()) * eps * eps);
  double s = 0;
  for (int k = 0; k < heads; ++k) {
    Eigen::MatrixXd A = Z * U.middleCols(k * p, p); // N x p: (U_k^T Z)^T in BRIEF's notation
    Eigen::MatrixXd m = alpha * (A.transpose() * A);
    m.diagonal().array() += 1.0;
    s += 0.5 * logdetSpd(m);
  }
  return s;
}

Eigen::MatrixXd compressionGradient(const Eigen::MatrixXd &Z, const Eigen::MatrixXd &U, int heads, double eps) {
  const Eigen::Index p = U.cols() / heads;
  const double alpha = double(p) / (double(Z.rows()) * eps * eps);
  Eigen::MatrixXd g = Eigen::MatrixXd::Zero(Z.rows(), Z.cols());
  for (int k = 0; k < heads; ++k) {
    Eigen::MatrixXd Uk = U.middleCols(k * p, p);
    Eigen::MatrixXd A = Z * Uk;
    Eigen::MatrixXd m = alpha * (A.transpose() * A);
    m.diagonal().array() += 1.0;
    // alpha (I + alpha A A^T)^-1 A U_k^T = alpha A (I + alpha A^T A)^-1 U_k^T
    g += alpha * A * m.llt().solve(Uk.transpose());
  }
  return g;
}

double lassoObjective(const Eigen::MatrixXd &X, const Eigen::MatrixXd &Z, const Eigen::MatrixXd &D, double lambda) {
  return lambda * X.cwiseAbs().sum() + 0.5 * (Z - X * D.transpose()).squaredNorm();
}

Eigen::MatrixXd istaStep(const Eigen::MatrixXd &X, const Eigen::MatrixXd &Z, const Eigen::MatrixXd &D, double eta,
                         double lambda) {
  Eigen::MatrixXd grad2 = Z * D;                 // F.linear(z, D.t())
  Eigen::MatrixXd grad1 = (X * D.transpose()) * D; // F.linear(F.linear(x, D), D.t())
  return (X + eta * (grad2 - grad1)).array().unaryExpr([&](double v) { return std::max(v - eta * lambda, 0.0); });
}

// ------------------------------------------------------------------------------------
// Executor

struct CrateExecutor::Impl {
  struct Layer {
    Eigen::RowVectorXf ln1w, ln1b, ln2w, ln2b, bo;
    Eigen::MatrixXf U;   // qkv.weight^T: W = LN1(X) U
    Eigen::MatrixXf WoT; // to_out.0.weight^T
    Eigen::MatrixXf M; // I + eta (D - D^T D), D = 1.fn.weight
  };
  CrateConfig cfg;
  Eigen::RowVectorXf pe1w, pe1b, pe2b, pe3w, pe3b, headLnW, headLnB, headB;
  Eigen::MatrixXf pe2T, headT; // transposed Linear weights
  Eigen::MatrixXf pos;         // [tokens, dim]
  Eigen::RowVectorXf cls;
  std::vector<Layer> layers;

  // Buffers, reused across calls.
  Eigen::MatrixXf patches, patchesN, emb, embN, pooled, pooledN;
  // The layers' buffers: the whole batch's, or one chunk's per thread.
  struct Work {
    Eigen::MatrixXf X, Z, W, O;
    std::vector<Eigen::MatrixXf> S; // attention scores, one per thread
  };
  Work whole;
  std::vector<Work> work;
  // A batch of several images runs in chunks of about kChunkRows rows (one image at
  // 224 px), one thread per chunk through every layer: each chunk stays in its core's
  // cache and the threads meet once per batch. A single image, or metrics, run as one
  // chunk whose heads are spread over the threads and whose products use them all.
  static constexpr int kChunkRows = 256;

  // The first non-finite value (or non-finite coding rate) of a chunk: its stage (2l
  // layer l's MSSA, 2l + 1 its ISTA) and the message.
  struct Failure {
    int stage;
    std::string message;
  };
  std::optional<Failure> stack(Work &ws, int g0, int groups, int T, bool images, std::vector<CrateLayerMetrics> *metrics,
                               double eps, bool spreadHeads);

  Device device = Device::Cpu;
  std::unique_ptr<cuda::CrateForward> gpu; // Device::Cuda: the weights live there
  std::string what;                        // the model's name in errors

  // "WHAT: layer 2 mssa produced a non-finite value at image 0, token 3" for the first
  // row of X (groups of T rows) that holds an infinity or NaN; success when none does.
  // Weights and images are finite (validated), so this means values too large for
  // float32: an error, never NaN in the output.
  llvm::Error checkFinite(const float *X, Eigen::Index rows, Eigen::Index cols, int T, bool images,
                          const std::string &where) const {
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(X, rows, cols);
    return firstNonFinite(m, T, images, where);
  }
  // g0: the number of m's first group in the batch.
  template <class M>
  llvm::Error firstNonFinite(const M &m, int T, bool images, const std::string &where, int g0 = 0) const {
    if (m.allFinite()) return llvm::Error::success();
    for (Eigen::Index r = 0; r < m.rows(); ++r) {
      if (m.row(r).allFinite()) continue;
      const Eigen::Index g = g0 + (T > 0 ? r / T : 0), t = T > 0 ? r % T : r;
      std::string at = images ? fmt::format("image {}, token {}", g, t) : fmt::format("sequence {}, token {}", g, t);
      if (T <= 0) at = fmt::format("image {}", r); // logits: one row per image
      return llvm::make_error<llvm::StringError>(
          fmt::format("{}: {} produced a non-finite value at {}", what, where, at), llvm::inconvertibleErrorCode());
    }
    return llvm::Error::success();
  }
  llvm::Error checkMetrics(const CrateLayerMetrics &lm) const {
    if (std::isfinite(lm.R) && std::isfinite(lm.Rc)) return llvm::Error::success();
    return llvm::make_error<llvm::StringError>(
        fmt::format("{}: layer {}: the coding rates are not finite (R(Z) {}, Rc(Z;U) {})", what, lm.layer, lm.R, lm.Rc),
        llvm::inconvertibleErrorCode());
  }
  llvm::Error checkMemory(int64_t groups, int64_t T, bool metrics) const {
    double need = crateActivationBytes(cfg, groups, T, metrics);
    if (need <= kCrateMemoryLimit) return llvm::Error::success();
    return llvm::make_error<llvm::StringError>(
        fmt::format("{}: running {} sequence{} of {} tokens needs about {} of memory, more than the {} raspc "
                    "allows; run fewer images at a time",
                    what, groups, groups == 1 ? "" : "s", T, formatBytes(need), formatBytes(kCrateMemoryLimit)),
        llvm::inconvertibleErrorCode());
  }

  // The GPU's per-layer copies of Z = LN1(X) and of the layer output, as metrics.
  llvm::Expected<Eigen::MatrixXf> onGpu(const float *input, int groups, int tokens, bool images,
                                        std::vector<CrateLayerMetrics> *metrics, double eps) {
    const int T = images ? int(cfg.tokens()) : tokens;
    // The first layer whose output is not finite, seen when outputs are copied back
    // (metrics, or the search below); the metrics stop there.
    llvm::Error bad = llvm::Error::success();
    bool found = false;
    cuda::CrateLayerFn hook = [&](int l, const float *Z, const float *Xout, int rows) {
      if (found) return;
      if (llvm::Error e = checkFinite(Xout, rows, cfg.dim, T, images, fmt::format("layer {}", l))) {
        llvm::consumeError(std::move(bad));
        bad = std::move(e);
        found = true;
        return;
      }
      if (!metrics) return;
      using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      CrateLayerMetrics lm;
      lm.layer = l;
      Eigen::MatrixXf z = Eigen::Map<const RowMajor>(Z, rows, cfg.dim);
      addRates(lm, z, layers[size_t(l)].U.cast<double>(), groups, T, eps);
      lm.sparsity = sparsity(Eigen::Map<const Eigen::ArrayXf>(Xout, Eigen::Index(rows) * cfg.dim));
      if (llvm::Error e = checkMetrics(lm)) {
        llvm::consumeError(std::move(bad));
        bad = std::move(e);
        found = true;
        return;
      }
      metrics->push_back(lm);
    };
    const int outCols = images ? cfg.num_classes : cfg.dim, outRows = images ? groups : groups * tokens;
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(outRows, outCols);
    auto pass = [&](bool copyBack) -> llvm::Error {
      if (metrics) metrics->clear();
      std::string error;
      bool ok = images ? gpu->run(input, groups, out.data(), copyBack ? &hook : nullptr, &error)
                       : gpu->runLayers(input, groups, tokens, out.data(), copyBack ? &hook : nullptr, &error);
      if (!ok) return llvm::make_error<llvm::StringError>("cuda: " + error, llvm::inconvertibleErrorCode());
      return llvm::Error::success();
    };
    if (auto e = pass(metrics != nullptr)) {
      llvm::consumeError(std::move(bad));
      return e;
    }
    if (found) return bad;
    const std::string outName = images ? "the head" : fmt::format("layer {}", cfg.depth - 1);
    if (llvm::Error e = firstNonFinite(out, images ? 0 : tokens, images, outName)) {
      if (metrics) return e; // the layers were checked: the head overflowed
      // Only the output is checked on the normal path (no copies); when it is not
      // finite, run again copying each layer's output back to name the layer.
      llvm::consumeError(std::move(e));
      if (auto e2 = pass(true)) {
        llvm::consumeError(std::move(bad));
        return e2;
      }
      if (found) return bad;
      if (llvm::Error e3 = firstNonFinite(out, images ? 0 : tokens, images, outName)) {
        llvm::consumeError(std::move(bad));
        return e3;
      }
    }
    llvm::consumeError(std::move(bad));
    return Eigen::MatrixXf(out);
  }

  // R and R^c of Z = LN1(X) (rows: `groups` sequences of `tokens`), averaged over groups.
  void addRates(CrateLayerMetrics &lm, const Eigen::MatrixXf &Z, const Eigen::MatrixXd &U, int groups, int tokens,
                double eps) const {
    for (int g = 0; g < groups; ++g) {
      Eigen::MatrixXd Zg = Z.middleRows(Eigen::Index(g) * tokens, tokens).cast<double>();
      lm.R += codingRate(Zg, eps) / groups;
      lm.Rc += compressionRate(Zg, U, cfg.heads, eps) / groups;
    }
  }
  template <class A> static double sparsity(const A &x) { return double((x == 0.0f).count()) / double(x.size()); }
};

CrateExecutor::CrateExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CrateExecutor::CrateExecutor(CrateExecutor &&) noexcept = default;
CrateExecutor &CrateExecutor::operator=(CrateExecutor &&) noexcept = default;
CrateExecutor::~CrateExecutor() = default;

const CrateConfig &CrateExecutor::config() const { return impl_->cfg; }

llvm::Expected<CrateExecutor> CrateExecutor::create(const CrateModel &m, const std::string &what, Device d) {
  if (auto e = validateCrateModel(m, what)) return e;
  if (auto e = deviceError(d))
    return cannotRunOnCuda(llvm::toString(std::move(e)));
  auto impl = std::make_unique<Impl>();
  impl->device = d;
  impl->what = what;
  const CrateConfig &c = m.cfg;
  impl->cfg = c;
  auto T = [&](const std::string &name) -> const Tensor & { return m.tensors.at(name); };
  auto row = [&](const std::string &name) { return toRow(T(name)); };
  // On the GPU the host keeps only each layer's U, which the metrics read.
  const bool cpu = d == Device::Cpu;
  if (cpu) {
    impl->pe1w = row("to_patch_embedding.1.weight");
    impl->pe1b = row("to_patch_embedding.1.bias");
    impl->pe2T = toMatrix(T("to_patch_embedding.2.weight"), c.dim, c.patchDim()).transpose();
    impl->pe2b = row("to_patch_embedding.2.bias");
    impl->pe3w = row("to_patch_embedding.3.weight");
    impl->pe3b = row("to_patch_embedding.3.bias");
    impl->pos = toMatrix(T("pos_embedding"), c.tokens(), c.dim);
    impl->cls = row("cls_token");
    impl->headLnW = row("mlp_head.0.weight");
    impl->headLnB = row("mlp_head.0.bias");
    impl->headT = toMatrix(T("mlp_head.1.weight"), c.num_classes, c.dim).transpose();
    impl->headB = row("mlp_head.1.bias");
  }
  for (int l = 0; l < c.depth; ++l) {
    Impl::Layer L;
    L.U = toMatrix(T(layerKey(l, "0.fn.qkv.weight")), c.dim, c.dim).transpose();
    if (cpu) {
      L.ln1w = row(layerKey(l, "0.norm.weight"));
      L.ln1b = row(layerKey(l, "0.norm.bias"));
      L.WoT = toMatrix(T(layerKey(l, "0.fn.to_out.0.weight")), c.dim, c.dim).transpose();
      L.bo = row(layerKey(l, "0.fn.to_out.0.bias"));
      L.ln2w = row(layerKey(l, "1.norm.weight"));
      L.ln2b = row(layerKey(l, "1.norm.bias"));
      // ISTA is linear in z before its ReLU: z + eta (z D - z D^T D) = z M, one product
      // where PyTorch's module makes three (the same up to float rounding).
      const Eigen::MatrixXf D = toMatrix(T(layerKey(l, "1.fn.weight")), c.dim, c.dim);
      L.M = Eigen::MatrixXf::Identity(c.dim, c.dim) + float(c.eta) * (D - D.transpose() * D);
    }
    impl->layers.push_back(std::move(L));
  }
  if (!cpu) {
    // The file's tensors as they are (PyTorch layout); the GPU keeps its own copy.
    auto P = [&](const std::string &name) { return T(name).data.data(); };
    cuda::CrateWeights w;
    w.imageSize = c.image_size;
    w.patchSize = c.patch_size;
    w.channels = c.channels;
    w.dim = c.dim;
    w.heads = c.heads;
    w.classes = c.num_classes;
    w.eta = float(c.eta);
    w.lambda = float(c.lambda);
    w.meanPool = c.pool == "mean";
    w.peLn1w = P("to_patch_embedding.1.weight");
    w.peLn1b = P("to_patch_embedding.1.bias");
    w.peW = P("to_patch_embedding.2.weight");
    w.peB = P("to_patch_embedding.2.bias");
    w.peLn2w = P("to_patch_embedding.3.weight");
    w.peLn2b = P("to_patch_embedding.3.bias");
    w.pos = P("pos_embedding");
    w.cls = P("cls_token");
    for (int l = 0; l < c.depth; ++l)
      w.layers.push_back({P(layerKey(l, "0.norm.weight")), P(layerKey(l, "0.norm.bias")),
                          P(layerKey(l, "0.fn.qkv.weight")), P(layerKey(l, "0.fn.to_out.0.weight")),
                          P(layerKey(l, "0.fn.to_out.0.bias")), P(layerKey(l, "1.norm.weight")),
                          P(layerKey(l, "1.norm.bias")), P(layerKey(l, "1.fn.weight"))});
    w.headLnW = P("mlp_head.0.weight");
    w.headLnB = P("mlp_head.0.bias");
    w.headW = P("mlp_head.1.weight");
    w.headB = P("mlp_head.1.bias");
    std::string error;
    impl->gpu = cuda::CrateForward::create(w, &error);
    if (!impl->gpu)
      return cannotRunOnCuda(error);
  }
  return CrateExecutor(std::move(impl));
}

Device CrateExecutor::device() const { return impl_->device; }

llvm::Expected<Eigen::MatrixXf> CrateExecutor::runLayers(const Eigen::MatrixXf &input, int groups,
                                                         int tokensPerGroup, std::vector<CrateLayerMetrics> *metrics,
                                                         double eps) {
  if (auto e = impl_->checkMemory(groups, tokensPerGroup, metrics != nullptr)) return e;
  return layers(input, groups, tokensPerGroup, metrics, eps, false);
}

llvm::Expected<Eigen::MatrixXf> CrateExecutor::layers(const Eigen::MatrixXf &input, int groups, int tokensPerGroup,
                                                      std::vector<CrateLayerMetrics> *metrics, double eps,
                                                      bool images) {
  Impl &I = *impl_;
  if (I.gpu) {
    const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rows = input;
    return I.onGpu(rows.data(), groups, tokensPerGroup, false, metrics, eps);
  }
  // Eigen's thread count is process-wide, and a compiled model's forward pass sets it to
  // 1 for its small products: CRATE's large ones use every core.
  const int threads = maxThreads();
  if (Eigen::nbThreads() != threads) Eigen::setNbThreads(0);
  const int T = tokensPerGroup, per = std::max(1, Impl::kChunkRows / std::max(1, T));
  const int chunks = (groups + per - 1) / per;
  if (metrics) metrics->clear();
  if (metrics || threads == 1 || chunks == 1) {
    I.whole.X = input;
    if (auto f = I.stack(I.whole, 0, groups, T, images, metrics, eps, true))
      return llvm::make_error<llvm::StringError>(f->message, llvm::inconvertibleErrorCode());
    return I.whole.X;
  }
  const int workers = std::min(threads, chunks);
  if (int(I.work.size()) < workers) I.work.resize(size_t(workers));
  Eigen::MatrixXf out(input.rows(), input.cols());
  std::vector<std::optional<Impl::Failure>> failed(static_cast<size_t>(chunks));
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) num_threads(workers)
#endif
  for (int ch = 0; ch < chunks; ++ch) {
    Impl::Work &ws = I.work[size_t(threadNumber())];
    const int g0 = ch * per, n = std::min(per, groups - g0);
    const Eigen::Index r0 = Eigen::Index(g0) * T, rows = Eigen::Index(n) * T;
    ws.X = input.middleRows(r0, rows);
    failed[size_t(ch)] = I.stack(ws, g0, n, T, images, nullptr, eps, false);
    if (!failed[size_t(ch)]) out.middleRows(r0, rows) = ws.X;
  }
  // What one pass over the whole batch reports: the earliest stage, then the first image.
  const Impl::Failure *first = nullptr;
  for (const auto &f : failed)
    if (f && (!first || f->stage < first->stage)) first = &*f;
  if (first) return llvm::make_error<llvm::StringError>(first->message, llvm::inconvertibleErrorCode());
  return out;
}

std::optional<CrateExecutor::Impl::Failure> CrateExecutor::Impl::stack(Work &ws, int g0, int groups, int T,
                                                                       bool images,
                                                                       std::vector<CrateLayerMetrics> *metrics,
                                                                       double eps, bool spreadHeads) {
  const CrateConfig &c = cfg;
  const int p = c.headDim();
  const float scale = 1.0f / std::sqrt(float(p));
  const float etaLambda = float(c.eta * c.lambda);
  auto fail = [](int stage, llvm::Error e) { return Failure{stage, llvm::toString(std::move(e))}; };
  for (size_t l = 0; l < layers.size(); ++l) {
    const Layer &L = layers[l];
    const int stage = 2 * int(l);
    // MSSA: W = LN1(X) U; per head softmax(W_k W_k^T / sqrt(p)) W_k; X += concat Wo^T + b_o.
    layerNorm(ws.X, ws.Z, L.ln1w, L.ln1b);
    CrateLayerMetrics lm;
    lm.layer = int(l);
    if (metrics) {
      addRates(lm, ws.Z, L.U.cast<double>(), groups, T, eps);
      if (auto e = checkMetrics(lm)) return fail(stage, std::move(e));
    }
    ws.W.noalias() = ws.Z * L.U;
    ws.O.resize(ws.W.rows(), ws.W.cols());
    // One task per (sequence, head), spread over the cores when asked; each product
    // inside runs on its task's thread. S = W_k W_k^T is symmetric: its lower half is
    // computed, and its row softmax is the transpose of its column softmax, which reads
    // contiguous columns here (column-major).
    const int tasks = groups * c.heads;
    ws.S.resize(size_t(spreadHeads ? scoreCopies(T) : 1));
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (spreadHeads && tasks > 1 && ws.S.size() > 1)
#endif
    for (int task = 0; task < tasks; ++task) {
      const int g = task / c.heads, k = task % c.heads;
      Eigen::MatrixXf &S = ws.S[spreadHeads ? size_t(threadNumber()) : 0];
      auto Wk = ws.W.block(Eigen::Index(g) * T, Eigen::Index(k) * p, T, p);
      S.setZero(T, T);
      S.selfadjointView<Eigen::Lower>().rankUpdate(Wk);
      S.triangularView<Eigen::StrictlyUpper>() = S.transpose();
      for (Eigen::Index j = 0; j < S.cols(); ++j) {
        auto col = S.col(j).array();
        col = ((col - col.maxCoeff()) * scale).exp();
        col /= col.sum();
      }
      ws.O.block(Eigen::Index(g) * T, Eigen::Index(k) * p, T, p).noalias() = S.transpose() * Wk;
    }
    ws.X.noalias() += ws.O * L.WoT;
    ws.X.rowwise() += L.bo;
    if (auto e = firstNonFinite(ws.X, T, images, fmt::format("layer {} mssa", l), g0)) return fail(stage, std::move(e));
    // ISTA (PyTorch form): x1 = z D^T, grad_1 = x1 D, grad_2 = z D,
    // X = relu(z + eta (grad_2 - grad_1) - eta lambda) = relu(z M - eta lambda).
    layerNorm(ws.X, ws.Z, L.ln2w, L.ln2b);
    ws.X.noalias() = ws.Z * L.M;
    ws.X = (ws.X.array() - etaLambda).max(0.0f);
    if (auto e = firstNonFinite(ws.X, T, images, fmt::format("layer {} ista", l), g0))
      return fail(stage + 1, std::move(e));
    if (metrics) {
      lm.sparsity = sparsity(ws.X.array());
      metrics->push_back(lm);
    }
  }
  return std::nullopt;
}

llvm::Expected<Eigen::MatrixXf> CrateExecutor::run(const float *images, int batch,
                                                   std::vector<CrateLayerMetrics> *metrics, double eps) {
  Impl &I = *impl_;
  if (auto e = I.checkMemory(batch, I.cfg.tokens(), metrics != nullptr)) return e;
  if (I.gpu) return I.onGpu(images, batch, 0, true, metrics, eps);
  const CrateConfig &c = I.cfg;
  const int P = c.patch_size, C = c.channels, S = c.image_size, side = S / P, np = int(c.numPatches());
  const int T = int(c.tokens());
  // b c (h p1) (w p2) -> b (h w) (p1 p2 c)
  I.patches.resize(Eigen::Index(batch) * np, c.patchDim());
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < side; ++h)
      for (int w = 0; w < side; ++w) {
        Eigen::Index r = Eigen::Index(b) * np + h * side + w;
        for (int p1 = 0; p1 < P; ++p1)
          for (int p2 = 0; p2 < P; ++p2)
            for (int ch = 0; ch < C; ++ch)
              I.patches(r, (p1 * P + p2) * C + ch) =
                  images[((size_t(b) * C + ch) * S + size_t(h * P + p1)) * S + size_t(w * P + p2)];
      }
  layerNorm(I.patches, I.patchesN, I.pe1w, I.pe1b);
  I.emb.noalias() = I.patchesN * I.pe2T;
  I.emb.rowwise() += I.pe2b;
  layerNorm(I.emb, I.embN, I.pe3w, I.pe3b);
  Eigen::MatrixXf X(Eigen::Index(batch) * T, c.dim);
  for (int b = 0; b < batch; ++b) {
    X.row(Eigen::Index(b) * T) = I.cls + I.pos.row(0);
    X.middleRows(Eigen::Index(b) * T + 1, np) = I.embN.middleRows(Eigen::Index(b) * np, np) + I.pos.bottomRows(np);
  }
  if (auto e = I.firstNonFinite(X, T, true, "the patch embedding")) return e;
  auto layersOut = layers(X, batch, T, metrics, eps, true);
  if (!layersOut) return layersOut.takeError();
  const Eigen::MatrixXf &out = *layersOut;
  I.pooled.resize(batch, c.dim);
  for (int b = 0; b < batch; ++b)
    I.pooled.row(b) = c.pool == "mean" ? Eigen::RowVectorXf(out.middleRows(Eigen::Index(b) * T, T).colwise().mean())
                                       : Eigen::RowVectorXf(out.row(Eigen::Index(b) * T));
  layerNorm(I.pooled, I.pooledN, I.headLnW, I.headLnB);
  Eigen::MatrixXf logits = I.pooledN * I.headT;
  logits.rowwise() += I.headB;
  if (auto e = I.firstNonFinite(logits, 0, true, "the head")) return e;
  return logits;
}

// ------------------------------------------------------------------------------------
// Synthesis

Eigen::MatrixXd crateSubspaces(const CrateModel &m, int layer) {
  const Tensor &t = m.tensors.at(layerKey(layer, "0.fn.qkv.weight"));
  Eigen::MatrixXd U(m.cfg.dim, m.cfg.dim);
  for (int i = 0; i < m.cfg.dim; ++i)
    for (int j = 0; j < m.cfg.dim; ++j) U(j, i) = t.data[size_t(i) * size_t(m.cfg.dim) + size_t(j)];
  return U;
}

llvm::Expected<CrateModel> synthCrateModel(const CrateSynthOptions &o) {
  auto bad = [](const std::string &msg) {
    return llvm::make_error<llvm::StringError>("crate synth: " + msg, llvm::inconvertibleErrorCode());
  };
  if (o.dim < 1 || o.dim > 4096) return bad(fmt::format("--dim {} is out of range [1, 4096]", o.dim));
  if (o.heads < 1 || o.heads > o.dim) return bad(fmt::format("--heads {} is out of range [1, {}]", o.heads, o.dim));
  if (o.dim % o.heads != 0) return bad(fmt::format("--dim {} is not divisible by --heads {}", o.dim, o.heads));
  if (o.depth < 1 || o.depth > 1024) return bad(fmt::format("--depth {} is out of range [1, 1024]", o.depth));
  if (o.tokens < 1 || o.tokens > 1 << 20) return bad(fmt::format("--tokens {} is out of range [1, 1048576]", o.tokens));
  if (!(o.noise >= 0) || !std::isfinite(o.noise)) return bad("--noise must be a finite number >= 0");
  if (!std::isfinite(o.step)) return bad("--step must be finite");
  if (!(o.eta >= 0 && o.eta <= 1)) return bad("--eta must be in [0, 1] (the dictionary has norm 1)");
  if (!(o.lambda >= 0) || !std::isfinite(o.lambda)) return bad("--lambda must be a finite number >= 0");
  if (o.basis != "random" && o.basis != "coordinates")
    return bad("--basis is '" + o.basis + "', expected 'coordinates' or 'random'");
  if (o.dictionary != "identity" && o.dictionary != "orthogonal")
    return bad("--dictionary is '" + o.dictionary + "', expected 'identity' or 'orthogonal'");
  // Before anything is allocated: the weights grow as depth * dim^2, the attention over
  // the tokens (one sequence) as tokens^2.
  if (double need = crateSynthBytes(o); need > kCrateMemoryLimit) {
    const double weights = 28.0 * o.depth * double(o.dim) * o.dim, attention = 4.0 * double(o.tokens) * o.tokens;
    return bad(fmt::format("--dim {} --depth {} --tokens {} need about {} of memory, more than the {} raspc allows; "
                           "lower {}",
                           o.dim, o.depth, o.tokens, formatBytes(need), formatBytes(kCrateMemoryLimit),
                           attention > weights ? "--tokens" : "--depth or --dim"));
  }

  std::mt19937_64 rng(o.seed);
  const int d = o.dim, K = o.heads, p = d / K;
  Eigen::MatrixXd U = randomOrthogonal(d, rng);
  if (o.basis == "coordinates") {
    // A random signed permutation: column j is +-e_perm[j].
    std::vector<int> perm(static_cast<size_t>(d));
    for (int i = 0; i < d; ++i) perm[size_t(i)] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    Eigen::MatrixXd P = Eigen::MatrixXd::Zero(d, d);
    for (int j = 0; j < d; ++j) P(perm[size_t(j)], j) = U(0, j) < 0 ? -1.0 : 1.0;
    U = P;
  }
  Eigen::MatrixXd D = o.dictionary == "orthogonal" ? randomOrthogonal(d, rng) : Eigen::MatrixXd::Identity(d, d);
  Eigen::MatrixXd Id = Eigen::MatrixXd::Identity(d, d);

  CrateModel m;
  CrateConfig &c = m.cfg;
  c.image_size = 1;
  c.patch_size = 1;
  c.channels = d;
  c.dim = d;
  c.depth = o.depth;
  c.heads = K;
  c.num_classes = K;
  c.eta = o.eta;
  c.lambda = o.lambda;
  c.pool = "cls";
  for (auto &[name, shape] : crateTensorShapes(c)) m.tensors.emplace(name, filled(shape, 0.0f));
  for (const char *ln : {"to_patch_embedding.1.weight", "to_patch_embedding.3.weight", "mlp_head.0.weight"})
    m.tensors[ln] = filled({d}, 1.0f);
  m.tensors["to_patch_embedding.2.weight"] = fromMatrix(Id);
  for (int l = 0; l < o.depth; ++l) {
    m.tensors[layerKey(l, "0.norm.weight")] = filled({d}, 1.0f);
    m.tensors[layerKey(l, "1.norm.weight")] = filled({d}, 1.0f);
    m.tensors[layerKey(l, "0.fn.qkv.weight")] = fromMatrix(U.transpose());
    m.tensors[layerKey(l, "0.fn.to_out.0.weight")] = fromMatrix(o.step * U);
    m.tensors[layerKey(l, "1.fn.weight")] = fromMatrix(D);
  }
  std::normal_distribution<double> normal(0.0, 1.0);
  Eigen::MatrixXd tokens(o.tokens, d);
  for (int i = 0; i < o.tokens; ++i) {
    int k = i % K;
    Eigen::VectorXd coef(p);
    for (int j = 0; j < p; ++j) coef(j) = normal(rng);
    Eigen::VectorXd x = U.middleCols(k * p, p) * coef;
    for (int j = 0; j < d; ++j) x(j) += o.noise * normal(rng);
    tokens.row(i) = x.transpose();
    m.synthLabels.push_back(k);
  }
  m.synthTokens = fromMatrix(tokens);
  if (auto e = validateCrateModel(m, "crate synth")) return e;
  return m;
}

} // namespace raspc
