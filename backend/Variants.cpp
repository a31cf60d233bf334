// Rotated and compressed variants (backend/Variants.h).
#include "backend/Variants.h"
#include "backend/Hdf5.h"

#include <fmt/format.h>

#include <cmath>
#include <random>

namespace raspc {

namespace {

llvm::Error fail(const std::string &msg) {
  return llvm::make_error<llvm::StringError>(msg, llvm::inconvertibleErrorCode());
}

// A standard normal from two uniform draws (Box-Muller): portable, unlike
// std::normal_distribution.
double normal(std::mt19937_64 &rng) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  // (0, 1]: never log(0).
  double u1 = (double(rng() >> 11) + 1.0) * 0x1.0p-53;
  double u2 = double(rng() >> 11) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

// y = a b for row-major a [r, n], b [n, c] (double accumulation of float32 operands).
std::vector<double> product(const float *a, const float *b, int64_t r, int64_t n, int64_t c) {
  std::vector<double> y(size_t(r * c), 0.0);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t k = 0; k < n; ++k) {
      const double x = a[i * n + k];
      if (x == 0) continue; // the compiled weights are mostly zero
      for (int64_t j = 0; j < c; ++j) y[size_t(i * c + j)] += x * double(b[k * c + j]);
    }
  return y;
}

// y = t^T a for t [n, c], a [n, r]: [c, r].
std::vector<double> transposedProduct(const float *t, const float *a, int64_t n, int64_t c, int64_t r) {
  std::vector<double> y(size_t(c * r), 0.0);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < r; ++j) {
      const double x = a[k * r + j];
      if (x == 0) continue;
      for (int64_t i = 0; i < c; ++i) y[size_t(i * r + j)] += double(t[k * c + i]) * x;
    }
  return y;
}

void store(float *dst, const std::vector<double> &src) {
  for (size_t i = 0; i < src.size(); ++i) dst[i] = float(src[i]);
}

} // namespace

std::vector<double> randomOrthogonal(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const size_t N = size_t(std::max(n, 0));
  std::vector<double> q(N * N);
  for (double &x : q) x = normal(rng);
  // Gram-Schmidt on the columns, twice per column (the second pass removes what
  // rounding left of the earlier columns): the Q of QR with R's diagonal positive.
  for (size_t j = 0; j < N; ++j) {
    for (int pass = 0; pass < 2; ++pass)
      for (size_t p = 0; p < j; ++p) {
        double dot = 0;
        for (size_t i = 0; i < N; ++i) dot += q[i * N + p] * q[i * N + j];
        for (size_t i = 0; i < N; ++i) q[i * N + j] -= dot * q[i * N + p];
      }
    double norm = 0;
    for (size_t i = 0; i < N; ++i) norm += q[i * N + j] * q[i * N + j];
    norm = std::sqrt(norm);
    // A Gaussian matrix is singular with probability 0; a column lost to rounding
    // would need n in the millions.
    for (size_t i = 0; i < N; ++i) q[i * N + j] /= norm;
  }
  return q;
}

Tensor rotationMap(int d, uint64_t seed) {
  std::vector<double> q = randomOrthogonal(d, seed);
  Tensor t({int64_t(d), int64_t(d)});
  for (size_t i = 0; i < q.size(); ++i) t.data[i] = float(q[i]);
  return t;
}

Tensor subspaceMap(const std::vector<double> &columns, int d, int cols, int k, uint64_t seed) {
  std::vector<double> r = randomOrthogonal(k, seed);
  Tensor t({int64_t(d), int64_t(k)});
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < k; ++j) {
      double x = 0;
      for (int p = 0; p < k; ++p)
        x += columns[size_t(i) * size_t(cols) + size_t(p)] * r[size_t(p) * size_t(k) + size_t(j)];
      t.at(i, j) = float(x);
    }
  return t;
}

llvm::Expected<Model> transformResidual(const Model &m, const Tensor &map) {
  const ModelConfig &c = m.cfg;
  const int64_t D = c.d_model;
  if (map.shape.size() != 2 || map.shape[0] != D || map.shape[1] < 1 || map.data.size() != map.numel())
    return fail(
        fmt::format("the residual map has shape {}, expected [d_model = {}, d_new >= 1]", formatShape(map.shape), D));
  for (float x : map.data)
    if (!std::isfinite(x)) return fail("the residual map has a non-finite value");
  const int64_t E = map.shape[1];
  const float *T = map.data.data();
  Model out = m;
  out.cfg.d_model = int(E);
  // Writers: [rows, D] -> [rows, E] (a tensor [..., D] is rows of D values).
  auto writer = [&](const std::string &name) {
    Tensor &t = out.tensors.at(name);
    const int64_t rows = D == 0 ? 0 : int64_t(t.data.size()) / D;
    std::vector<int64_t> shape = t.shape;
    shape.back() = E;
    Tensor n(shape);
    store(n.data.data(), product(t.data.data(), T, rows, D, E));
    t = std::move(n);
  };
  // Readers: per head [D, cols] -> [E, cols]; `heads` blocks back to back.
  auto reader = [&](const std::string &name, int64_t heads) {
    Tensor &t = out.tensors.at(name);
    const int64_t cols = t.shape.back();
    std::vector<int64_t> shape = t.shape;
    shape[shape.size() - 2] = E;
    Tensor n(shape);
    for (int64_t h = 0; h < heads; ++h)
      store(n.data.data() + h * E * cols, transposedProduct(T, t.data.data() + h * D * cols, D, E, cols));
    t = std::move(n);
  };
  writer("embed.W_E");
  writer("pos_embed.W_pos");
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string a = fmt::format("blocks.{}.attn.", l), p = fmt::format("blocks.{}.mlp.", l);
    for (const char *w : {"W_Q", "W_K", "W_V"}) reader(a + w, c.n_heads);
    writer(a + "W_O");
    writer(a + "b_O");
    reader(p + "W_in", 1);
    writer(p + "W_out");
    writer(p + "b_out");
  }
  reader("unembed.W_U", 1);
  // The labels' vectors: B T, or T itself for the identity.
  if (hasResidualBasis(m)) {
    const int64_t n = m.residualBasis.shape[0];
    Tensor b({n, E});
    store(b.data.data(), product(m.residualBasis.data.data(), T, n, D, E));
    out.residualBasis = std::move(b);
  } else {
    out.residualBasis = map;
  }
  return out;
}

llvm::Expected<Model> rotateModel(const Model &m, uint64_t seed) {
  return transformResidual(m, rotationMap(m.cfg.d_model, seed));
}

std::vector<float> labelVector(const Model &m, int label) {
  if (label < 0 || label >= residualLabelCount(m)) return {};
  const int64_t D = m.cfg.d_model;
  if (!hasResidualBasis(m)) {
    std::vector<float> v(size_t(D), 0.0f);
    v[size_t(label)] = 1.0f;
    return v;
  }
  auto row = m.residualBasis.data.begin() + ptrdiff_t(int64_t(label) * D);
  return std::vector<float>(row, row + ptrdiff_t(D));
}

std::string residualBasisKind(const Model &m) {
  if (!hasResidualBasis(m)) return "";
  const int64_t labels = m.residualBasis.shape[0];
  return labels == m.cfg.d_model ? "rotated" : labels > m.cfg.d_model ? "compressed" : "expanded";
}

} // namespace raspc
