// CRATE in the runtime: the CPU executor against an independent double-precision
// reference, the white-box quantities (gradient of R^c, ISTA's LASSO objective), the
// synthesised models, malformed files and the `raspc crate` commands.
#include "TestUtil.h"
#include "backend/Hdf5Util.h"
#include "runtime/Crate.h"
#include "tools/Plot.h"

#include <gtest/gtest.h>

#include <limits>
#include <hdf5.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>

using namespace raspc;
using raspc::test::raspcBinary;
using raspc::test::run;

namespace {

std::string tempPath(const std::string &name) { return test::tempPath(name); }

// The value, or the test fails (gtest reports the exception with the error text).
template <typename T> T expectOk(llvm::Expected<T> v) {
  if (!v) throw std::runtime_error(llvm::toString(v.takeError()));
  return std::move(*v);
}

std::string errorText(llvm::Error e) { return e ? llvm::toString(std::move(e)) : std::string("<success>"); }
template <typename T> std::string errorText(llvm::Expected<T> v) {
  return v ? std::string("<success>") : llvm::toString(v.takeError());
}

// ------------------------------------------------------------------------------------
// An independent reference: plain loops in double, straight from the formulas.

using Mat = std::vector<std::vector<double>>;

Mat zeros(size_t r, size_t c) { return Mat(r, std::vector<double>(c, 0.0)); }

const Tensor &W(const CrateModel &m, const std::string &name) { return m.tensors.at(name); }

// y = x W^T + b, W [out, in]
Mat linearRef(const Mat &x, const Tensor &w, const Tensor *b) {
  size_t out = size_t(w.shape[0]), in = size_t(w.shape[1]);
  Mat y = zeros(x.size(), out);
  for (size_t n = 0; n < x.size(); ++n)
    for (size_t o = 0; o < out; ++o) {
      double s = b ? b->data[o] : 0.0;
      for (size_t i = 0; i < in; ++i) s += x[n][i] * w.data[o * in + i];
      y[n][o] = s;
    }
  return y;
}

Mat layerNormRef(const Mat &x, const Tensor &w, const Tensor &b) {
  Mat y = x;
  for (size_t n = 0; n < x.size(); ++n) {
    double mean = 0, var = 0;
    for (double v : x[n]) mean += v;
    mean /= double(x[n].size());
    for (double v : x[n]) var += (v - mean) * (v - mean);
    var /= double(x[n].size());
    for (size_t i = 0; i < x[n].size(); ++i) y[n][i] = (x[n][i] - mean) / std::sqrt(var + 1e-5) * w.data[i] + b.data[i];
  }
  return y;
}

// Logits of one image [C, S, S] (a pointer into the batch).
std::vector<double> referenceForward(const CrateModel &m, const float *img) {
  const CrateConfig &c = m.cfg;
  const size_t P = size_t(c.patch_size), C = size_t(c.channels), S = size_t(c.image_size), side = S / P;
  const size_t D = size_t(c.dim), K = size_t(c.heads), p = D / K, np = side * side;
  // Patches, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)": walk the image and place each pixel.
  Mat patches = zeros(np, P * P * C);
  for (size_t ch = 0; ch < C; ++ch)
    for (size_t y = 0; y < S; ++y)
      for (size_t x = 0; x < S; ++x) {
        size_t h = y / P, p1 = y % P, w = x / P, p2 = x % P;
        patches[h * side + w][p1 * P * C + p2 * C + ch] = img[(ch * S + y) * S + x];
      }
  Mat e = layerNormRef(patches, W(m, "to_patch_embedding.1.weight"), W(m, "to_patch_embedding.1.bias"));
  e = linearRef(e, W(m, "to_patch_embedding.2.weight"), &W(m, "to_patch_embedding.2.bias"));
  e = layerNormRef(e, W(m, "to_patch_embedding.3.weight"), W(m, "to_patch_embedding.3.bias"));
  const size_t T = np + 1;
  Mat X = zeros(T, D);
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < D; ++i)
      X[t][i] = (t == 0 ? W(m, "cls_token").data[i] : e[t - 1][i]) + W(m, "pos_embedding").data[t * D + i];
  for (int l = 0; l < c.depth; ++l) {
    std::string pre = "transformer.layers." + std::to_string(l) + ".";
    Mat Z = layerNormRef(X, W(m, pre + "0.norm.weight"), W(m, pre + "0.norm.bias"));
    Mat Wq = linearRef(Z, W(m, pre + "0.fn.qkv.weight"), nullptr); // q = k = v
    Mat cat = zeros(T, D);
    for (size_t k = 0; k < K; ++k)
      for (size_t i = 0; i < T; ++i) {
        std::vector<double> s(T);
        double mx = -1e300, sum = 0;
        for (size_t j = 0; j < T; ++j) {
          double dot = 0;
          for (size_t a = 0; a < p; ++a) dot += Wq[i][k * p + a] * Wq[j][k * p + a];
          s[j] = dot / std::sqrt(double(p));
          mx = std::max(mx, s[j]);
        }
        for (double &v : s) sum += (v = std::exp(v - mx));
        for (size_t j = 0; j < T; ++j)
          for (size_t a = 0; a < p; ++a) cat[i][k * p + a] += s[j] / sum * Wq[j][k * p + a];
      }
    Mat out = linearRef(cat, W(m, pre + "0.fn.to_out.0.weight"), &W(m, pre + "0.fn.to_out.0.bias"));
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < D; ++i) X[t][i] += out[t][i];
    Z = layerNormRef(X, W(m, pre + "1.norm.weight"), W(m, pre + "1.norm.bias"));
    // x1 = F.linear(z, Dict); grad_1 = F.linear(x1, Dict.t()); grad_2 = F.linear(z, Dict.t())
    const Tensor &dict = W(m, pre + "1.fn.weight");
    Tensor dictT({int64_t(D), int64_t(D)});
    for (size_t i = 0; i < D; ++i)
      for (size_t j = 0; j < D; ++j) dictT.data[i * D + j] = dict.data[j * D + i];
    Mat x1 = linearRef(Z, dict, nullptr);
    Mat g1 = linearRef(x1, dictT, nullptr);
    Mat g2 = linearRef(Z, dictT, nullptr);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < D; ++i)
        X[t][i] = std::max(0.0, Z[t][i] + c.eta * (g2[t][i] - g1[t][i]) - c.eta * c.lambda);
  }
  Mat pooled = zeros(1, D);
  for (size_t i = 0; i < D; ++i) {
    if (c.pool == "cls") {
      pooled[0][i] = X[0][i];
    } else {
      for (size_t t = 0; t < T; ++t) pooled[0][i] += X[t][i] / double(T);
    }
  }
  pooled = layerNormRef(pooled, W(m, "mlp_head.0.weight"), W(m, "mlp_head.0.bias"));
  return linearRef(pooled, W(m, "mlp_head.1.weight"), &W(m, "mlp_head.1.bias"))[0];
}

std::vector<float> randomImages(int batch, const CrateConfig &c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(size_t(batch) * size_t(c.channels) * size_t(c.image_size) * size_t(c.image_size));
  for (float &x : v) x = normal(rng);
  return v;
}

CrateConfig tinyConfig() {
  CrateConfig c;
  c.image_size = 2;
  c.patch_size = 1;
  c.channels = 3;
  c.dim = 4;
  c.depth = 1;
  c.heads = 2;
  c.num_classes = 5;
  return c;
}

void expectMatchesReference(const CrateConfig &c, int batch, uint64_t seed) {
  CrateModel m = randomCrateModel(c, seed);
  auto exec = expectOk(CrateExecutor::create(m));
  std::vector<float> images = randomImages(batch, c, seed + 100);
  Eigen::MatrixXf logits = expectOk(exec.run(images.data(), batch));
  ASSERT_EQ(logits.rows(), batch);
  ASSERT_EQ(logits.cols(), c.num_classes);
  const size_t per = size_t(c.channels) * size_t(c.image_size) * size_t(c.image_size);
  for (int b = 0; b < batch; ++b) {
    std::vector<double> ref = referenceForward(m, images.data() + size_t(b) * per);
    for (int j = 0; j < c.num_classes; ++j)
      EXPECT_NEAR(logits(b, j), ref[size_t(j)], 1e-5 * std::max(1.0, std::abs(ref[size_t(j)])))
          << "image " << b << " class " << j;
  }
}

// ------------------------------------------------------------------------------------
// Executor

TEST(CrateExecutor, TinyModelMatchesReference) { expectMatchesReference(tinyConfig(), 1, 1); }

TEST(CrateExecutor, PatchesDepthBatchAndMeanPool) {
  CrateConfig c = tinyConfig();
  c.image_size = 4;
  c.patch_size = 2; // patch_dim 12: the (p1 p2 c) order matters
  c.depth = 3;
  c.dim = 8;
  c.heads = 4;
  expectMatchesReference(c, 3, 7);
  c.pool = "mean";
  expectMatchesReference(c, 2, 8);
}

TEST(CrateExecutor, BuffersAreReusedAcrossBatchSizes) {
  CrateConfig c = tinyConfig();
  CrateModel m = randomCrateModel(c, 3);
  auto exec = expectOk(CrateExecutor::create(m));
  std::vector<float> images = randomImages(4, c, 5);
  Eigen::MatrixXf all = expectOk(exec.run(images.data(), 4));
  Eigen::MatrixXf one = expectOk(exec.run(images.data() + 12, 1)); // image 1 alone
  EXPECT_LT((all.row(1) - one.row(0)).cwiseAbs().maxCoeff(), 1e-5);
  Eigen::MatrixXf again = expectOk(exec.run(images.data(), 4));
  EXPECT_EQ(all, again);
}

// A hand-checkable layer: one token (softmax of a 1x1 score is 1), identity LayerNorm
// parameters, U = I, Wo = I, D = I, so
//   X_half = X + LN(X), X_next = ReLU(LN(X_half) - eta lambda).
TEST(CrateExecutor, HandCheckedSingleToken) {
  CrateConfig c = tinyConfig();
  CrateModel m = randomCrateModel(c, 1);
  for (auto &[name, t] : m.tensors) {
    bool normW = name.find("norm.weight") != std::string::npos;
    std::fill(t.data.begin(), t.data.end(), normW ? 1.0f : 0.0f);
  }
  for (const char *n : {"transformer.layers.0.0.fn.qkv.weight", "transformer.layers.0.0.fn.to_out.0.weight",
                        "transformer.layers.0.1.fn.weight"}) {
    Tensor &t = m.tensors[n];
    for (int i = 0; i < 4; ++i) t.at(i, i) = 1.0f;
  }
  auto exec = expectOk(CrateExecutor::create(m));
  Eigen::MatrixXf x(1, 4);
  x << 1, 2, 3, 6; // mean 3, variance 3.5: LN(x) = (x - 3) / sqrt(3.5 + 1e-5)
  Eigen::MatrixXf y = expectOk(exec.runLayers(x, 1, 1));
  double sd = std::sqrt(3.5 + 1e-5);
  double half[4], mean = 0, var = 0;
  for (int i = 0; i < 4; ++i) mean += half[i] = x(0, i) + (x(0, i) - 3) / sd;
  mean /= 4;
  for (double h : half) var += (h - mean) * (h - mean) / 4;
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(y(0, i), std::max(0.0, (half[i] - mean) / std::sqrt(var + 1e-5) - 0.01), 1e-6) << i;
  EXPECT_EQ(y(0, 0), 0.0f); // negative after LN: cut by the ReLU
  EXPECT_EQ(y(0, 1), 0.0f);
}

// ------------------------------------------------------------------------------------
// White-box quantities

Eigen::MatrixXd randomMatrix(int r, int c, std::mt19937_64 &rng, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  Eigen::MatrixXd m(r, c);
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j) m(i, j) = normal(rng);
  return m;
}

TEST(CrateWhiteBox, CodingRatesMatchTheirDefinitions) {
  std::mt19937_64 rng(11);
  const int N = 7, d = 6, K = 3, p = 2;
  Eigen::MatrixXd Z = randomMatrix(N, d, rng), U = randomMatrix(d, d, rng);
  double eps = 0.5;
  // BRIEF's notation: Zb = Z^T (d x N), logdet(I_N + a Zb^T Zb).
  Eigen::MatrixXd Zb = Z.transpose();
  Eigen::MatrixXd M = Eigen::MatrixXd::Identity(N, N) + double(d) / (N * eps * eps) * Zb.transpose() * Zb;
  EXPECT_NEAR(codingRate(Z, eps), 0.5 * std::log(M.determinant()), 1e-9);
  double rc = 0;
  for (int k = 0; k < K; ++k) {
    Eigen::MatrixXd A = U.middleCols(k * p, p).transpose() * Zb; // U_k^T Z
    Eigen::MatrixXd G = Eigen::MatrixXd::Identity(N, N) + double(p) / (N * eps * eps) * A.transpose() * A;
    rc += 0.5 * std::log(G.determinant());
  }
  EXPECT_NEAR(compressionRate(Z, U, K, eps), rc, 1e-9);
}

TEST(CrateWhiteBox, GradientOfRcMatchesFiniteDifferences) {
  std::mt19937_64 rng(5);
  const int N = 9, d = 8, K = 4;
  Eigen::MatrixXd Z = randomMatrix(N, d, rng), U = randomMatrix(d, d, rng);
  Eigen::MatrixXd g = compressionGradient(Z, U, K);
  const double h = 1e-5;
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < d; ++j) {
      Eigen::MatrixXd zp = Z, zm = Z;
      zp(i, j) += h;
      zm(i, j) -= h;
      double fd = (compressionRate(zp, U, K) - compressionRate(zm, U, K)) / (2 * h);
      EXPECT_NEAR(g(i, j), fd, 1e-6 * std::max(1.0, std::abs(fd))) << i << "," << j;
    }
}

TEST(CrateWhiteBox, GradientStepLowersRc) {
  std::mt19937_64 rng(9);
  for (int trial = 0; trial < 5; ++trial) {
    const int N = 16, d = 8, K = 2;
    Eigen::MatrixXd Z = randomMatrix(N, d, rng), U = randomMatrix(d, d, rng);
    Eigen::MatrixXd g = compressionGradient(Z, U, K);
    double before = compressionRate(Z, U, K);
    double after = compressionRate(Z - 1e-3 * g, U, K);
    EXPECT_LT(after, before) << trial;
    // First order: the decrease is about step * |grad|^2.
    EXPECT_NEAR(before - after, 1e-3 * g.squaredNorm(), 1e-3 * 1e-3 * g.squaredNorm() * 50);
  }
}

TEST(CrateWhiteBox, IstaStepDoesNotIncreaseLasso) {
  std::mt19937_64 rng(13);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    const int N = 10, d = 6;
    Eigen::MatrixXd D = randomMatrix(d, d, rng), Z = randomMatrix(N, d, rng);
    Eigen::MatrixXd X = randomMatrix(N, d, rng).cwiseAbs(); // feasible: X >= 0
    double L = Eigen::JacobiSVD<Eigen::MatrixXd>(D).singularValues()(0);
    double lambda = 0.1 + unit(rng);
    for (double eta : {1.0 / (L * L), 0.5 / (L * L), 0.01 / (L * L)}) {
      Eigen::MatrixXd Xn = istaStep(X, Z, D, eta, lambda);
      EXPECT_GE(Xn.minCoeff(), 0.0);
      EXPECT_LE(lassoObjective(Xn, Z, D, lambda), lassoObjective(X, Z, D, lambda) + 1e-10) << trial << " " << eta;
    }
    // Iterating converges monotonically.
    double eta = 1.0 / (L * L), prev = lassoObjective(X, Z, D, lambda);
    for (int it = 0; it < 50; ++it) {
      X = istaStep(X, Z, D, eta, lambda);
      double cur = lassoObjective(X, Z, D, lambda);
      EXPECT_LE(cur, prev + 1e-10);
      prev = cur;
    }
  }
}

TEST(CrateWhiteBox, LayerIstaIsIstaStepFromZ) {
  // With identity norms and zero attention output, a layer's output is istaStep(Z, Z, D).
  CrateConfig c = tinyConfig();
  c.dim = 6;
  c.heads = 3;
  CrateModel m = randomCrateModel(c, 4);
  for (const char *n : {"transformer.layers.0.0.fn.to_out.0.weight", "transformer.layers.0.0.fn.to_out.0.bias",
                        "transformer.layers.0.1.norm.bias"})
    std::fill(m.tensors[n].data.begin(), m.tensors[n].data.end(), 0.0f);
  std::fill(m.tensors["transformer.layers.0.1.norm.weight"].data.begin(),
            m.tensors["transformer.layers.0.1.norm.weight"].data.end(), 1.0f);
  auto exec = expectOk(CrateExecutor::create(m));
  std::mt19937_64 rng(2);
  Eigen::MatrixXd X = randomMatrix(5, 6, rng);
  // Z = LN(X) with unit weight, zero bias.
  Eigen::MatrixXd Z = X;
  for (int r = 0; r < 5; ++r) {
    double mean = X.row(r).mean();
    double var = (X.row(r).array() - mean).square().mean();
    Z.row(r) = (X.row(r).array() - mean) / std::sqrt(var + 1e-5);
  }
  Eigen::MatrixXd D(6, 6);
  const Tensor &dt = m.tensors["transformer.layers.0.1.fn.weight"];
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) D(i, j) = dt.at(i, j);
  Eigen::MatrixXd want = istaStep(Z, Z, D, c.eta, c.lambda);
  Eigen::MatrixXf got = expectOk(exec.runLayers(X.cast<float>(), 1, 5));
  EXPECT_LT((got.cast<double>() - want).cwiseAbs().maxCoeff(), 1e-5);
}

// ------------------------------------------------------------------------------------
// Synthesised models

std::vector<CrateLayerMetrics> synthMetrics(const CrateSynthOptions &o) {
  CrateModel m = expectOk(synthCrateModel(o));
  auto exec = expectOk(CrateExecutor::create(m));
  Eigen::MatrixXf X(m.synthTokens.shape[0], m.synthTokens.shape[1]);
  for (int64_t i = 0; i < X.rows(); ++i)
    for (int64_t j = 0; j < X.cols(); ++j) X(i, j) = m.synthTokens.at(i, j);
  std::vector<CrateLayerMetrics> ms;
  expectOk(exec.runLayers(X, 1, int(X.rows()), &ms));
  return ms;
}

// MSSA does the compressing: without it (step 0) R^c stops falling.
TEST(CrateSynth, MssaDrivesTheCompression) {
  CrateSynthOptions o;
  o.depth = 6;
  auto with = synthMetrics(o);
  o.step = 0;
  auto without = synthMetrics(o);
  EXPECT_LT(with.back().Rc, without.back().Rc - 1.0);
  EXPECT_GT(without.back().Rc, without[2].Rc);
}

TEST(CrateSynth, CompressionFallsAcrossLayers) {
  for (uint64_t seed : {1, 2, 3}) {
    CrateSynthOptions o;
    o.dim = 32;
    o.heads = 4;
    o.depth = 6;
    o.tokens = 128;
    o.seed = seed;
    CrateModel m = expectOk(synthCrateModel(o));
    auto exec = expectOk(CrateExecutor::create(m));
    const Tensor &t = m.synthTokens;
    Eigen::MatrixXf X(t.shape[0], t.shape[1]);
    for (int64_t i = 0; i < t.shape[0]; ++i)
      for (int64_t j = 0; j < t.shape[1]; ++j) X(i, j) = t.at(i, j);
    std::vector<CrateLayerMetrics> ms;
    expectOk(exec.runLayers(X, 1, o.tokens, &ms));
    ASSERT_EQ(ms.size(), 6u);
    for (size_t l = 1; l < ms.size(); ++l) EXPECT_LT(ms[l].Rc, ms[l - 1].Rc) << "seed " << seed << " layer " << l;
    for (const CrateLayerMetrics &x : ms) {
      EXPECT_GT(x.sparsity, 0.0);
      EXPECT_LT(x.sparsity, 1.0);
    }
  }
}

TEST(CrateSynth, Construction) {
  CrateSynthOptions o;
  o.dim = 12;
  o.heads = 3;
  o.depth = 2;
  o.tokens = 10;
  CrateModel m = expectOk(synthCrateModel(o));
  Eigen::MatrixXd U = crateSubspaces(m, 1);
  EXPECT_LT((U.transpose() * U - Eigen::MatrixXd::Identity(12, 12)).cwiseAbs().maxCoeff(), 1e-6);
  // Tokens lie near their subspace: most of their energy is in U_k.
  for (int i = 0; i < 10; ++i) {
    Eigen::VectorXd x(12);
    for (int j = 0; j < 12; ++j) x(j) = m.synthTokens.at(i, j);
    int k = m.synthLabels[size_t(i)];
    EXPECT_EQ(k, i % 3);
    EXPECT_GT((U.middleCols(k * 4, 4).transpose() * x).squaredNorm(), 0.7 * x.squaredNorm());
  }
  EXPECT_EQ(errorText(synthCrateModel({10, 4, 2, 8, 1})), "crate synth: --dim 10 is not divisible by --heads 4");
}

// ------------------------------------------------------------------------------------
// Files

TEST(CrateFile, RoundTrip) {
  CrateConfig c = tinyConfig();
  c.pool = "mean";
  c.eta = 0.05;
  CrateModel m = randomCrateModel(c, 21);
  std::string path = tempPath("roundtrip.h5");
  ASSERT_EQ(errorText(writeCrateModel(m, path, {true, {}})), "<success>");
  CrateModel r = expectOk(readCrateModel(path));
  EXPECT_EQ(r.cfg.pool, "mean");
  EXPECT_EQ(r.cfg.eta, 0.05);
  EXPECT_EQ(r.cfg.dim, 4);
  EXPECT_EQ(r.tensors.size(), m.tensors.size());
  for (auto &[name, t] : m.tensors) {
    EXPECT_EQ(r.tensors[name].shape, t.shape) << name;
    EXPECT_EQ(r.tensors[name].data, t.data) << name;
  }
  EXPECT_TRUE(r.synthTokens.shape.empty());

  CrateSynthOptions o;
  o.dim = 8;
  o.heads = 2;
  o.tokens = 6;
  CrateModel s = expectOk(synthCrateModel(o));
  ASSERT_EQ(errorText(writeCrateModel(s, path, {true, {}})), "<success>");
  CrateModel rs = expectOk(readCrateModel(path));
  EXPECT_EQ(rs.synthTokens.data, s.synthTokens.data);
  EXPECT_EQ(rs.synthLabels, s.synthLabels);
}

// Edits a written file with the HDF5 C API.
struct Edit {
  hid_t f;
  explicit Edit(const std::string &path) { f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT); }
  ~Edit() { H5Fclose(f); }
  void remove(const std::string &name) { H5Ldelete(f, name.c_str(), H5P_DEFAULT); }
  // Replaces dataset `name`, chunked with a checksum as raspc writes it (unless not
  // `checksum`).
  void put(const std::string &name, const std::vector<hsize_t> &dims, const std::vector<float> &data,
           bool checksum = true) {
    remove(name);
    hid_t sp = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (checksum) {
      H5Pset_chunk(dcpl, int(dims.size()), dims.data());
      H5Pset_fletcher32(dcpl);
    }
    hid_t d = H5Dcreate2(f, name.c_str(), H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
    H5Dclose(d);
    H5Sclose(sp);
  }
  void intAttr(const std::string &name, int64_t v) {
    hid_t g = H5Gopen2(f, "metadata", H5P_DEFAULT);
    H5Adelete(g, name.c_str());
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, name.c_str(), H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Gclose(g);
  }
};

class CrateMalformed : public ::testing::Test {
protected:
  std::string path = tempPath("malformed.h5");
  CrateModel m = randomCrateModel(tinyConfig(), 3);
  void SetUp() override { ASSERT_EQ(errorText(writeCrateModel(m, path, {true, {}})), "<success>"); }
};

TEST_F(CrateMalformed, MissingTensor) {
  Edit(path).remove("transformer.layers.0.1.fn.weight");
  EXPECT_EQ(errorText(readCrateModel(path)), path + ": missing tensor 'transformer.layers.0.1.fn.weight'");
}

TEST_F(CrateMalformed, WrongShape) {
  Edit(path).put("transformer.layers.0.0.fn.qkv.weight", {4, 3}, std::vector<float>(12, 0.5f));
  EXPECT_EQ(errorText(readCrateModel(path)),
            path + ": tensor 'transformer.layers.0.0.fn.qkv.weight' has shape [4, 3], expected [4, 4]");
}

TEST_F(CrateMalformed, NanWeight) {
  std::vector<float> w = m.tensors["mlp_head.1.weight"].data;
  w[1 * 4 + 2] = std::nanf("");
  Edit(path).put("mlp_head.1.weight", {5, 4}, w);
  EXPECT_EQ(errorText(readCrateModel(path)), path + ": tensor 'mlp_head.1.weight' has a non-finite value (nan) at [1, 2]");
}

TEST_F(CrateMalformed, ImageSizeNotDivisibleByPatchSize) {
  {
    Edit e(path);
    e.intAttr("image_size", 5);
    e.intAttr("patch_size", 2);
  }
  EXPECT_EQ(errorText(readCrateModel(path)), path + ": config image_size = 5 is not divisible by patch_size = 2");
}

TEST_F(CrateMalformed, DimNotDivisibleByHeads) {
  Edit(path).intAttr("heads", 3);
  EXPECT_EQ(errorText(readCrateModel(path)), path + ": config dim = 4 is not divisible by heads = 3");
}

TEST_F(CrateMalformed, MissingAttributeAndNotCrate) {
  {
    Edit e(path);
    hid_t g = H5Gopen2(e.f, "metadata", H5P_DEFAULT);
    H5Adelete(g, "depth");
    H5Gclose(g);
  }
  EXPECT_EQ(errorText(readCrateModel(path)), path + ": missing attribute 'metadata/depth'");
  std::string other = tempPath("not_crate.h5");
  ASSERT_EQ(errorText(writeCrateImages(other, std::vector<float>(12, 0.0f), 1, 3, 2, {true, {}})), "<success>");
  EXPECT_EQ(errorText(readCrateModel(other)), other + ": missing group 'metadata'");
}

TEST_F(CrateMalformed, WrongInputImageSize) {
  std::string images = tempPath("images_4x4.h5");
  ASSERT_EQ(errorText(writeCrateImages(images, std::vector<float>(2 * 3 * 16, 0.0f), 2, 3, 4, {true, {}})), "<success>");
  EXPECT_EQ(errorText(readCrateImages(images, m.cfg)),
            images + ": dataset 'images' has shape [2, 3, 4, 4], expected [B, 3, 2, 2] with B >= 1 (the model's "
                     "channels and image size)");
  std::vector<float> bad(12, 0.0f);
  bad[5] = INFINITY;
  ASSERT_EQ(errorText(writeCrateImages(images, bad, 1, 3, 2, {true, {}})), "<success>");
  EXPECT_EQ(errorText(readCrateImages(images, m.cfg)),
            images + ": dataset 'images' has a non-finite value (inf) at [0, 1, 0, 1]");
}

// An images file of a few KB declaring a huge shape (never written) is refused on its
// declared shape, before anything is allocated; so is one beyond the batch limit.
TEST_F(CrateMalformed, ImagesShapeCheckedBeforeReading) {
  std::string images = tempPath("declared.h5");
  ASSERT_EQ(errorText(writeCrateImages(images, std::vector<float>(12, 0.0f), 1, 3, 2, {true, {}})), "<success>");
  auto declare = [&](std::vector<hsize_t> dims) {
    Edit e(images);
    e.remove("images");
    hid_t sp = H5Screate_simple(4, dims.data(), nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[4] = {1, 1, 2, 2};
    H5Pset_chunk(dcpl, 4, chunk);
    H5Pset_fletcher32(dcpl);
    H5Dclose(H5Dcreate2(e.f, "images", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Pclose(dcpl);
    H5Sclose(sp);
  };
  declare({1, 1, 46340, 46340});
  EXPECT_LT(std::filesystem::file_size(images), 8000u);
  EXPECT_EQ(errorText(readCrateImages(images, m.cfg)),
            images + ": dataset 'images' has shape [1, 1, 46340, 46340], expected [B, 3, 2, 2] with B >= 1 (the "
                     "model's channels and image size)");
  declare({70000, 3, 2, 2});
  EXPECT_EQ(errorText(readCrateImages(images, m.cfg)),
            images + ": dataset 'images' holds 70000 images, more than the 65536 raspc reads at once (at most 65536 "
                     "images and 268435456 values)");
  declare({2, 3, 2, 2});
  EXPECT_EQ(errorText(readCrateImages(images, m.cfg)), images + ": dataset 'images' has no stored data (never written)");
}

// Every dataset of a CRATE file must carry a checksum; reading is from memory, and a
// FIFO is refused at once.
TEST_F(CrateMalformed, ChecksumsRequiredAndRegularFilesOnly) {
  std::vector<float> w = m.tensors["mlp_head.1.weight"].data;
  Edit(path).put("mlp_head.1.weight", {5, 4}, w, false);
  EXPECT_EQ(errorText(readCrateModel(path)), path + ": tensor 'mlp_head.1.weight' has no checksum");
  Edit(path).put("mlp_head.1.weight", {5, 4}, w);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto back = readCrateModelFromImage(bytes, "bytes");
  ASSERT_TRUE(bool(back)) << errorText(back.takeError());
  EXPECT_EQ(back->tensors.at("mlp_head.1.weight").data, w);
  EXPECT_EQ(errorText(readCrateImagesFromImage("", "bytes", m.cfg)), "bytes: not an HDF5 file");
  std::string fifo = tempPath("fifo.h5");
  std::remove(fifo.c_str());
  if (::mkfifo(fifo.c_str(), 0600) != 0) GTEST_SKIP() << "cannot create a FIFO here";
  EXPECT_EQ(errorText(readCrateModel(fifo)), fifo + ": is not a regular file (a FIFO)");
  EXPECT_EQ(errorText(readCrateImages(fifo, m.cfg)), fifo + ": is not a regular file (a FIFO)");
  std::remove(fifo.c_str());
}

// ------------------------------------------------------------------------------------
// Command line

std::vector<std::string> lines(const std::string &s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

TEST(CrateCli, SynthWritesAModelAndPrintsFallingRc) {
  std::string path = tempPath("synth_cli.h5");
  std::remove(path.c_str());
  auto r = run(raspcBinary() + " crate synth --dim 16 --heads 4 --depth 3 --tokens 64 --seed 2 -o " + path);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto ls = lines(r.out);
  ASSERT_EQ(ls.size(), 5u) << r.out;
  EXPECT_EQ(ls[0], "wrote " + path + ": dim 16, 4 heads of width 4, depth 3, 64 tokens, seed 2");
  EXPECT_EQ(ls[1].substr(0, 5), "layer");
  double prev = 1e300;
  for (int l = 0; l < 3; ++l) {
    std::istringstream in(ls[size_t(2 + l)]);
    int layer;
    double R, Rc, sp;
    in >> layer >> R >> Rc >> sp;
    EXPECT_EQ(layer, l);
    EXPECT_LT(Rc, prev);
    prev = Rc;
  }
  // Not overwritten without --force; `crate run` on it prints the same table.
  auto again = run(raspcBinary() + " crate synth --dim 16 --heads 4 --depth 3 --tokens 64 --seed 2 -o " + path);
  EXPECT_EQ(again.exitCode, 1);
  EXPECT_EQ(again.out, "raspc: error: '" + path + "' exists; pass --force to overwrite it\n");
  auto rerun = run(raspcBinary() + " crate run " + path);
  EXPECT_EQ(rerun.exitCode, 0);
  EXPECT_EQ(rerun.out, r.out.substr(ls[0].size() + 1));
  auto json = run(raspcBinary() + " crate run " + path + " --json");
  EXPECT_EQ(lines(json.out).size(), 3u);
  EXPECT_EQ(json.out.substr(0, 18), "{\"layer\": 0, \"R\": ");
  auto bad = run(raspcBinary() + " crate synth --dim 10 --heads 4 --force -o " + path);
  EXPECT_EQ(bad.exitCode, 1);
  EXPECT_EQ(bad.out, "raspc: error: crate synth: --dim 10 is not divisible by --heads 4\n");
}

TEST(CrateCli, RunPrintsTopClasses) {
  CrateConfig c = tinyConfig();
  c.num_classes = 7;
  CrateModel m = randomCrateModel(c, 31);
  std::string model = tempPath("cli_model.h5"), images = tempPath("cli_images.h5"), out = tempPath("cli_logits.h5");
  ASSERT_EQ(errorText(writeCrateModel(m, model, {true, {}})), "<success>");
  std::vector<float> im = randomImages(2, c, 3);
  ASSERT_EQ(errorText(writeCrateImages(images, im, 2, 3, 2, {true, {}})), "<success>");
  auto exec = expectOk(CrateExecutor::create(m));
  Eigen::MatrixXf logits = expectOk(exec.run(im.data(), 2));

  std::remove(out.c_str());
  auto r = run(raspcBinary() + " crate run " + model + " --input " + images + " --json --logits " + out);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto ls = lines(r.out);
  ASSERT_EQ(ls.size(), 2u);
  for (int b = 0; b < 2; ++b) {
    Eigen::Index best;
    logits.row(b).maxCoeff(&best);
    std::string prefix = "{\"image\": " + std::to_string(b) + ", \"top\": [[" + std::to_string(best) + ", ";
    EXPECT_EQ(ls[size_t(b)].substr(0, prefix.size()), prefix);
    size_t pairs = 0;
    for (char ch : ls[size_t(b)]) pairs += ch == '[';
    EXPECT_EQ(pairs, 6u); // the list and 5 pairs
  }
  {
    auto f = h5::openForReading(out);
    ASSERT_TRUE(bool(f)) << llvm::toString(f.takeError());
    Tensor t;
    ASSERT_EQ(errorText(h5::readTensor(f->get(), out, "logits", t, std::vector<int64_t>{2, 7})), "<success>");
    for (int b = 0; b < 2; ++b)
      for (int j = 0; j < 7; ++j) EXPECT_EQ(t.at(b, j), logits(b, j));
  }

  auto text = run(raspcBinary() + " crate run " + model + " --input " + images + " --top 2 --metrics");
  ASSERT_EQ(text.exitCode, 0) << text.out;
  ls = lines(text.out);
  ASSERT_EQ(ls.size(), 4u) << text.out; // 2 images, header, 1 layer
  EXPECT_EQ(ls[0].substr(0, 9), "image 0: ");
  EXPECT_EQ(ls[2].substr(0, 5), "layer");
  EXPECT_EQ(ls[3].substr(0, 2), "0 ");

  auto wrong = run(raspcBinary() + " crate run " + model + " --input " + model);
  EXPECT_EQ(wrong.exitCode, 1);
  EXPECT_EQ(wrong.out, "raspc: error: " + model + ": missing dataset 'images'\n");
  auto noInput = run(raspcBinary() + " crate run " + model);
  EXPECT_EQ(noInput.exitCode, 2);
  EXPECT_EQ(noInput.out, "raspc crate run: give --input IMAGES.h5 (" + model + " has no synthesised tokens)\n");
}

} // namespace

// ------------------------------------------------------------------------------------
// The plot of the metrics (--plot; tools/Plot.h)

namespace {

using raspc::tools::metricsSvg;
llvm::Error writeFileAtomically(const std::string &path, const std::string &bytes, bool force) {
  return raspc::files::writeFileAtomically(path, bytes, {force, {}});
}

// Pixels of the plot areas (tools/Plot.cpp): panel k spans x in [340 k + 72, 340 k + 320],
// y in [72, 270]; the middle is y = 171.
constexpr double kPanel = 340, kPlotLeft = 72, kPlotRight = 320, kPlotTop = 72, kPlotBottom = 270;
constexpr double kMiddleY = (kPlotTop + kPlotBottom) / 2;

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool fileExists(const std::string &path) { return std::filesystem::exists(path); }

size_t occurrences(const std::string &s, const std::string &what) {
  size_t n = 0;
  for (size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) ++n;
  return n;
}

using Points = std::vector<std::pair<double, double>>;

// The points of every <polyline>, in document order.
std::vector<Points> polylines(const std::string &svg) {
  std::vector<Points> all;
  for (size_t pos = svg.find("<polyline "); pos != std::string::npos; pos = svg.find("<polyline ", pos + 1)) {
    size_t start = svg.find("points=\"", pos) + 8, end = svg.find('"', start);
    std::istringstream in(svg.substr(start, end - start));
    Points ps;
    for (std::string xy; in >> xy;) {
      size_t comma = xy.find(',');
      ps.emplace_back(std::stod(xy.substr(0, comma)), std::stod(xy.substr(comma + 1)));
    }
    all.push_back(ps);
  }
  return all;
}

// The values in the markers' tooltips ("layer 2: 52.2259"), in document order.
std::vector<double> tooltipValues(const std::string &svg) {
  std::vector<double> vs;
  for (size_t pos = svg.find("<title>layer "); pos != std::string::npos; pos = svg.find("<title>layer ", pos + 1))
    vs.push_back(std::stod(svg.substr(svg.find(": ", pos) + 2)));
  return vs;
}

// No "nan" or "inf" anywhere, in any case.
void expectOnlyFiniteText(const std::string &svg) {
  std::string l = svg;
  for (char &ch : l) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  EXPECT_EQ(l.find("nan"), std::string::npos) << svg;
  EXPECT_EQ(l.find("inf"), std::string::npos) << svg;
}

bool havePython() { return run("/usr/bin/python3 -c pass").exitCode == 0; }

// The file read by Python's XML parser: the root element and its size, then per panel
// (<g id="panel-...">) its title and how many polylines and markers it holds.
std::string xmlSummary(const std::string &svgPath) {
  std::string script = tempPath("svg_summary.py");
  std::ofstream(script) << "import sys, xml.etree.ElementTree as E\n"
                           "ns = '{http://www.w3.org/2000/svg}'\n"
                           "r = E.parse(sys.argv[1]).getroot()\n"
                           "print(r.tag, r.get('version'), r.get('width'), r.get('height'), r.get('viewBox'))\n"
                           "for g in r.findall(ns + 'g'):\n"
                           "    print(g.get('id'), '|', g.find(ns + 'text').text, '|',\n"
                           "          len(g.findall('.//' + ns + 'polyline')), len(g.findall('.//' + ns + 'circle')))\n";
  return run("/usr/bin/python3 " + script + " " + svgPath).out;
}

std::string expectedSummary(int markersPerPanel) {
  std::string n = std::to_string(markersPerPanel);
  return "{http://www.w3.org/2000/svg}svg 1.1 1020 330 0 0 1020 330\n"
         "panel-R | coding rate R(Z) | 1 " + n + "\n"
         "panel-Rc | compression term R^c(Z; U) | 1 " + n + "\n"
         "panel-sparsity | sparsity after ISTA | 1 " + n + "\n";
}

// One polyline per panel with a point per layer, layers left to right at the same x in
// every panel, each inside its plot area, and the y pixels an affine, decreasing function
// of the values (SVG's y grows downwards).
void expectPlotsMetrics(const std::string &svg, const std::vector<CrateLayerMetrics> &ms, double tolerance) {
  auto lines = polylines(svg);
  ASSERT_EQ(lines.size(), 3u) << svg;
  double CrateLayerMetrics::*fields[] = {&CrateLayerMetrics::R, &CrateLayerMetrics::Rc, &CrateLayerMetrics::sparsity};
  for (size_t k = 0; k < 3; ++k) {
    const Points &ps = lines[k];
    ASSERT_EQ(ps.size(), ms.size()) << "panel " << k;
    for (size_t i = 0; i < ps.size(); ++i) {
      EXPECT_NEAR(ps[i].first - double(k) * kPanel, lines[0][i].first, 1e-9);
      EXPECT_GT(ps[i].first, double(k) * kPanel + kPlotLeft);
      EXPECT_LT(ps[i].first, double(k) * kPanel + kPlotRight);
      EXPECT_GE(ps[i].second, kPlotTop);
      EXPECT_LE(ps[i].second, kPlotBottom);
      if (i == 0) continue;
      EXPECT_GT(ps[i].first, ps[i - 1].first);
      double dv = ms[i].*fields[k] - ms[0].*fields[k], dy = ps[i].second - ps[0].second;
      if (std::fabs(dv) <= tolerance) continue;
      double slope = dy / dv, first = (ps[1].second - ps[0].second) / (ms[1].*fields[k] - ms[0].*fields[k]);
      EXPECT_LT(slope, 0) << "panel " << k << " layer " << i;
      EXPECT_NEAR(slope, first, 0.02 * std::fabs(first)) << "panel " << k << " layer " << i;
    }
  }
  std::vector<double> tips = tooltipValues(svg);
  ASSERT_EQ(tips.size(), 3 * ms.size());
  for (size_t k = 0; k < 3; ++k)
    for (size_t i = 0; i < ms.size(); ++i)
      EXPECT_NEAR(tips[k * ms.size() + i], ms[i].*fields[k], tolerance + 1e-5 * std::fabs(ms[i].*fields[k]))
          << "panel " << k << " layer " << i;
  expectOnlyFiniteText(svg);
}

TEST(CratePlot, SynthWritesAnSvgPlot) {
  std::string model = tempPath("plot.h5"), model2 = tempPath("plot2.h5"), plot = tempPath("plot.svg"),
              plot2 = tempPath("plot_run.svg");
  for (const std::string &p : {model, model2, plot, plot2}) std::remove(p.c_str());
  std::string synth =
      raspcBinary() + " crate synth --dim 16 --heads 4 --depth 4 --tokens 64 --seed 2 --plot " + plot + " -o ";
  // stdout: the summary and the table, as without --plot.
  auto r = run("(" + synth + model + " 2>/dev/null)");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto ls = lines(r.out);
  ASSERT_EQ(ls.size(), 6u) << r.out;
  EXPECT_EQ(ls[0], "wrote " + model + ": dim 16, 4 heads of width 4, depth 4, 64 tokens, seed 2");
  std::vector<CrateLayerMetrics> ms(4);
  for (int l = 0; l < 4; ++l) {
    std::istringstream in(ls[size_t(2 + l)]);
    CrateLayerMetrics &m = ms[size_t(l)];
    in >> m.layer >> m.R >> m.Rc >> m.sparsity;
    ASSERT_EQ(m.layer, l);
  }
  std::string svg = readFile(plot);
  ASSERT_EQ(svg.substr(0, 38), "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"1020\" height=\"330\" "
                     "viewBox=\"0 0 1020 330\""),
            std::string::npos);
  EXPECT_NE(svg.find("<title>" + model +
                     ": per-layer metrics on its synthesised tokens (dim 16, 4 heads, depth 4, 64 tokens, seed 2; "
                     "eps 0.5)</title>"),
            std::string::npos);
  for (const char *title : {">coding rate R(Z)</text>", ">compression term R^c(Z; U)</text>",
                            ">sparsity after ISTA</text>"})
    EXPECT_EQ(occurrences(svg, title), 1u) << title;
  EXPECT_EQ(occurrences(svg, "<circle "), 12u);
  expectPlotsMetrics(svg, ms, 1e-4);
  // R^c falls at every layer, so its line goes down the page: y grows.
  Points rc = polylines(svg)[1];
  for (size_t i = 1; i < rc.size(); ++i) {
    EXPECT_LT(ms[i].Rc, ms[i - 1].Rc);
    EXPECT_GT(rc[i].second, rc[i - 1].second);
  }
  if (havePython()) {
    EXPECT_EQ(xmlSummary(plot), expectedSummary(4));
  }

  // Not overwritten without --force: nothing is written, the plot is unchanged.
  auto again = run(synth + model2);
  EXPECT_EQ(again.exitCode, 1);
  EXPECT_EQ(again.out, "raspc: error: '" + plot + "' exists; pass --force to overwrite it\n");
  EXPECT_EQ(readFile(plot), svg);
  EXPECT_FALSE(fileExists(model2));
  // --force covers both files; "wrote PLOT" goes to stderr.
  auto forced = run("(" + synth + model + " --force >/dev/null)");
  EXPECT_EQ(forced.exitCode, 0);
  EXPECT_EQ(forced.out, "wrote " + plot + "\n");
  EXPECT_EQ(readFile(plot), svg);
  // With --json, the output is the JSON lines alone.
  auto json = run(synth + model + " --force --json");
  EXPECT_EQ(json.exitCode, 0);
  ls = lines(json.out);
  ASSERT_EQ(ls.size(), 4u) << json.out;
  for (const std::string &l : ls) EXPECT_EQ(l.substr(0, 10), "{\"layer\": ") << json.out;
  // No temporary file is left beside the plot.
  for (const auto &e : std::filesystem::directory_iterator(std::filesystem::path(plot).parent_path())) {
    std::string name = e.path().filename().string();
    EXPECT_NE(name.rfind(std::filesystem::path(plot).filename().string() + ".", 0), 0u) << name;
  }

  // `crate run` on the synthesised model, without --input: the same points.
  auto rerun = run(raspcBinary() + " crate run " + model + " --plot " + plot2);
  EXPECT_EQ(rerun.exitCode, 0) << rerun.out;
  EXPECT_NE(rerun.out.find("wrote " + plot2 + "\n"), std::string::npos) << rerun.out;
  std::string svg2 = readFile(plot2);
  EXPECT_EQ(polylines(svg2), polylines(svg));
  EXPECT_NE(svg2.find("<title>" + model + ": per-layer metrics on its synthesised tokens (eps 0.5)</title>"),
            std::string::npos);

  // Command-line errors: not an .svg name, the model's own file, a missing directory.
  auto png = run(raspcBinary() + " crate run " + model + " --plot " + tempPath("plot.png"));
  EXPECT_EQ(png.exitCode, 2);
  EXPECT_NE(png.out.find("--plot: the plot is SVG: give a file name ending in .svg"), std::string::npos) << png.out;
  EXPECT_FALSE(fileExists(tempPath("plot.png")));
  std::string svgModel = tempPath("model_named.svg");
  auto same = run(raspcBinary() + " crate synth --depth 1 -o " + svgModel + " --plot " + svgModel);
  EXPECT_EQ(same.exitCode, 2);
  EXPECT_EQ(same.out, "raspc: error: --plot '" + svgModel + "' is the same file as -o '" + svgModel + "'\n");
  std::string dir = tempPath("no_such_dir");
  auto missing = run(raspcBinary() + " crate run " + model + " --plot " + dir + "/p.svg");
  EXPECT_EQ(missing.exitCode, 1);
  EXPECT_EQ(missing.out, "raspc: error: " + dir + "/p.svg: cannot write: No such file or directory\n");
}

TEST(CratePlot, RunOnImages) {
  CrateConfig c = tinyConfig();
  c.depth = 3;
  CrateModel m = randomCrateModel(c, 41);
  std::string model = tempPath("model.h5"), images = tempPath("images.h5"), plot = tempPath("run.svg");
  std::remove(plot.c_str());
  ASSERT_EQ(errorText(writeCrateModel(m, model, {true, {}})), "<success>");
  std::vector<float> im = randomImages(2, c, 43);
  ASSERT_EQ(errorText(writeCrateImages(images, im, 2, 3, 2, {true, {}})), "<success>");
  auto exec = expectOk(CrateExecutor::create(m));
  std::vector<CrateLayerMetrics> ms;
  expectOk(exec.run(im.data(), 2, &ms));
  ASSERT_EQ(ms.size(), 3u);

  // Without --metrics the table is not printed, but the plot is drawn.
  std::string cmd = raspcBinary() + " crate run " + model + " --input " + images + " --top 2 --plot " + plot;
  auto r = run("(" + cmd + " 2>/dev/null)");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto ls = lines(r.out);
  ASSERT_EQ(ls.size(), 2u) << r.out;
  EXPECT_EQ(ls[0].substr(0, 9), "image 0: ");
  std::string svg = readFile(plot);
  expectPlotsMetrics(svg, ms, 1e-9);
  EXPECT_NE(svg.find("<title>" + model + ": per-layer metrics on " + images + ", 2 images (eps 0.5)</title>"),
            std::string::npos);
  if (havePython()) {
    EXPECT_EQ(xmlSummary(plot), expectedSummary(3));
  }

  // --metrics --json with --plot: only JSON on the output (images, then layers).
  auto json = run(cmd + " --metrics --json --force");
  ASSERT_EQ(json.exitCode, 0) << json.out;
  ls = lines(json.out);
  ASSERT_EQ(ls.size(), 5u) << json.out;
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(ls[i].substr(0, 10), i < 2 ? "{\"image\": " : "{\"layer\": ");
  EXPECT_EQ(readFile(plot), svg);
  // Exists, without --force.
  auto again = run(cmd);
  EXPECT_EQ(again.exitCode, 1);
  EXPECT_EQ(again.out, "raspc: error: '" + plot + "' exists; pass --force to overwrite it\n");
}

TEST(CratePlot, SingleLayerIsOneMarkerInTheMiddle) {
  std::string svg = metricsSvg({{0, 5.0, 3.0, 0.5}}, "one layer");
  auto ls = polylines(svg);
  ASSERT_EQ(ls.size(), 3u) << svg;
  for (size_t k = 0; k < 3; ++k) {
    ASSERT_EQ(ls[k].size(), 1u);
    EXPECT_EQ(ls[k][0].first, double(k) * kPanel + (kPlotLeft + kPlotRight) / 2);
    EXPECT_EQ(ls[k][0].second, kMiddleY); // a constant series sits in the middle
  }
  EXPECT_EQ(occurrences(svg, "<circle "), 3u);
  EXPECT_EQ(occurrences(svg, ">0</text>"), 3u); // the one layer tick, per panel
  EXPECT_EQ(occurrences(svg, ">1</text>"), 0u);
  // Padded ranges with rounded ticks: 4.5 .. 5.5, 2.6 .. 3.4, 0.45 .. 0.55.
  for (const char *label : {">4.5</text>", ">5.0</text>", ">5.5</text>", ">2.6</text>", ">3.4</text>",
                            ">0.45</text>", ">0.55</text>"})
    EXPECT_EQ(occurrences(svg, label), 1u) << label;
  EXPECT_EQ(tooltipValues(svg), (std::vector<double>{5.0, 3.0, 0.5}));
  expectOnlyFiniteText(svg);
  std::string path = tempPath("one.svg");
  ASSERT_EQ(errorText(writeFileAtomically(path, svg, true)), "<success>");
  if (havePython()) {
    EXPECT_EQ(xmlSummary(path), expectedSummary(1));
  }
}

TEST(CratePlot, ConstantSeriesAndTicks) {
  std::vector<CrateLayerMetrics> ms;
  const double R[] = {73.7791, 72.0172, 71.2707, 70.0642};
  for (int l = 0; l < 4; ++l) ms.push_back({l, R[l], 0.0, 0.25});
  std::string svg = metricsSvg(ms, "constant");
  auto ls = polylines(svg);
  ASSERT_EQ(ls.size(), 3u);
  for (size_t k = 1; k < 3; ++k)
    for (const auto &p : ls[k]) EXPECT_EQ(p.second, kMiddleY) << "panel " << k;
  // R: whole numbers 70 .. 74 (the range widened to whole steps); R^c = 0: -1 .. 1 by
  // 0.5, with no "-0.0"; sparsity 0.25: 0.225 .. 0.275 rounded out to steps of 0.02.
  for (const char *label : {">70</text>", ">71</text>", ">72</text>", ">73</text>", ">74</text>", ">-1.0</text>",
                            ">-0.5</text>", ">0.0</text>", ">0.5</text>", ">1.0</text>", ">0.22</text>",
                            ">0.24</text>", ">0.26</text>", ">0.28</text>"})
    EXPECT_EQ(occurrences(svg, label), 1u) << label;
  for (const char *label : {">69</text>", ">75</text>", ">-0.0</text>"}) EXPECT_EQ(occurrences(svg, label), 0u) << label;
  // The ends of the R axis are 70 and 74: 70.0642 sits just above the bottom.
  EXPECT_NEAR(ls[0][3].second, kPlotBottom - 0.0642 / 4 * (kPlotBottom - kPlotTop), 0.01);
  EXPECT_NEAR(ls[0][0].second, kPlotBottom - 3.7791 / 4 * (kPlotBottom - kPlotTop), 0.01);
  expectOnlyFiniteText(svg);
}

TEST(CratePlot, NonFiniteValuesAreLeftOut) {
  const double nan = std::nan(""), inf = INFINITY;
  std::vector<CrateLayerMetrics> ms = {{0, 4, 10, inf}, {1, 3, 9, 0.5}, {2, 2, nan, 0.6}, {3, 1, 7, 0.7}};
  std::string svg = metricsSvg(ms, "gaps");
  expectOnlyFiniteText(svg);
  auto ls = polylines(svg);
  // R whole; R^c broken at layer 2 (layers 0-1, then 3); sparsity from layer 1.
  ASSERT_EQ(ls.size(), 4u) << svg;
  EXPECT_EQ(ls[0].size(), 4u);
  EXPECT_EQ(ls[1].size(), 2u);
  EXPECT_EQ(ls[2].size(), 1u);
  EXPECT_EQ(ls[3].size(), 3u);
  EXPECT_EQ(ls[2][0].first - kPanel, ls[0][3].first); // R^c's last piece is layer 3
  EXPECT_GT(ls[2][0].second, ls[1][1].second);        // 7 < 9: lower on the page
  EXPECT_EQ(ls[3][0].first - 2 * kPanel, ls[0][1].first);
  EXPECT_EQ(occurrences(svg, "<circle "), 10u);
  EXPECT_EQ(occurrences(svg, "not finite, left out: layer 2<"), 1u);
  EXPECT_EQ(occurrences(svg, "not finite, left out: layer 0<"), 1u);
  EXPECT_EQ(tooltipValues(svg), (std::vector<double>{4, 3, 2, 1, 10, 9, 7, 0.5, 0.6, 0.7}));
  // A panel with no finite value at all: axes, no line.
  for (CrateLayerMetrics &m : ms) m.R = nan;
  svg = metricsSvg(ms, "no R");
  expectOnlyFiniteText(svg);
  EXPECT_EQ(polylines(svg).size(), 3u);
  EXPECT_EQ(occurrences(svg, "not finite, left out: layers 0, 1, 2, 3<"), 1u);
  EXPECT_EQ(occurrences(svg, "<circle "), 6u);
  std::string path = tempPath("gaps.svg");
  ASSERT_EQ(errorText(writeFileAtomically(path, svg, true)), "<success>");
  if (havePython()) {
    EXPECT_EQ(run("/usr/bin/python3 -c \"import xml.etree.ElementTree as E; E.parse('" + path + "')\"").out, "");
  }
}

TEST(CratePlot, TitleIsEscaped) {
  std::string svg = metricsSvg({{0, 1, 2, 0.5}}, "a<b & \"c\" 'd'\t\xff caf\xc3\xa9");
  EXPECT_EQ(occurrences(svg, "a&lt;b &amp; &quot;c&quot; &apos;d&apos; ? caf\xc3\xa9"), 2u) << svg;
  std::string path = tempPath("escaped.svg");
  ASSERT_EQ(errorText(writeFileAtomically(path, svg, true)), "<success>");
  if (havePython()) {
    EXPECT_EQ(run("/usr/bin/python3 -c \"import xml.etree.ElementTree as E; "
                  "print(E.parse('" + path + "').getroot().find('{http://www.w3.org/2000/svg}title').text)\"")
                  .out,
              "a<b & \"c\" 'd' ? caf\xc3\xa9\n");
  }
}

} // namespace

// ------------------------------------------------------------------------------------
// The GPU executor: logits within 1e-4 (relative to the largest) of the CPU's in float32,
// the same metrics, and a clear error where no GPU can be used.

namespace {

double maxRelativeError(const Eigen::MatrixXf &got, const Eigen::MatrixXf &want) {
  if (got.rows() != want.rows() || got.cols() != want.cols()) return INFINITY;
  return double((got - want).cwiseAbs().maxCoeff()) / std::max(double(want.cwiseAbs().maxCoeff()), 1e-30);
}

CrateConfig fullSize(int dim, int depth, int heads) {
  CrateConfig c;
  c.image_size = 224;
  c.patch_size = 16;
  c.dim = dim;
  c.depth = depth;
  c.heads = heads;
  c.num_classes = 1000;
  return c;
}

TEST(CrateCuda, UnavailableDeviceSaysWhy) {
  llvm::Error err = deviceError(Device::Cuda);
  if (!err) GTEST_SKIP() << "a GPU is usable here; the no-GPU error cannot be reached";
  const std::string why = llvm::toString(std::move(err));
  EXPECT_EQ(errorText(CrateExecutor::create(randomCrateModel(tinyConfig(), 1), "m.h5", Device::Cuda)),
            "cannot run on cuda: " + why);
  // The command line names the flag, before reading the model.
  auto r = run(raspcBinary() + " crate run /nonexistent.h5 --input /nonexistent.h5 --device cuda");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: --device cuda: " + why + "\n");
}

TEST(CrateCuda, LogitsAndMetricsMatchTheCpu) {
  RASPC_SKIP_WITHOUT_CUDA();
  CrateConfig patches = tinyConfig();
  patches.image_size = 4;
  patches.patch_size = 2;
  patches.depth = 3;
  patches.dim = 8;
  patches.heads = 4;
  CrateConfig mean = patches;
  mean.pool = "mean";
  struct Case {
    const char *name;
    CrateConfig cfg;
    int batch;
  } cases[] = {{"tiny test config", tinyConfig(), 3},
               {"patches", patches, 5},
               {"mean pool", mean, 4},
               {"CRATE-tiny", fullSize(384, 12, 6), 8},
               {"CRATE-base", fullSize(768, 12, 12), 2}};
  for (const Case &k : cases) {
    CrateModel m = randomCrateModel(k.cfg, 11);
    auto cpu = expectOk(CrateExecutor::create(m));
    auto gpu = expectOk(CrateExecutor::create(m, "model", Device::Cuda));
    EXPECT_EQ(gpu.device(), Device::Cuda);
    std::vector<float> images = randomImages(k.batch, k.cfg, 12);
    std::vector<CrateLayerMetrics> mc, mg;
    Eigen::MatrixXf a = expectOk(cpu.run(images.data(), k.batch, &mc));
    Eigen::MatrixXf b = expectOk(gpu.run(images.data(), k.batch, &mg));
    const double err = maxRelativeError(b, a);
    EXPECT_LT(err, 1e-4) << k.name;
    std::cout << "[ cuda     ] " << k.name << ", batch " << k.batch << ": max relative logit error vs CPU " << err
              << "\n";
    ASSERT_EQ(mc.size(), mg.size()) << k.name;
    for (size_t l = 0; l < mc.size(); ++l) {
      EXPECT_NEAR(mg[l].R, mc[l].R, 1e-3 * std::max(1.0, std::abs(mc[l].R))) << k.name << " layer " << l;
      EXPECT_NEAR(mg[l].Rc, mc[l].Rc, 1e-3 * std::max(1.0, std::abs(mc[l].Rc))) << k.name << " layer " << l;
      EXPECT_NEAR(mg[l].sparsity, mc[l].sparsity, 1e-3) << k.name << " layer " << l;
    }
    // A smaller batch after a larger one reuses the device buffers.
    Eigen::MatrixXf one = expectOk(gpu.run(images.data(), 1));
    EXPECT_LT(maxRelativeError(one, a.topRows(1)), 1e-4) << k.name;
  }
}

TEST(CrateCuda, SynthesisedLayersMatchTheCpu) {
  RASPC_SKIP_WITHOUT_CUDA();
  CrateSynthOptions o;
  o.depth = 6;
  CrateModel m = expectOk(synthCrateModel(o));
  const Tensor &t = m.synthTokens;
  Eigen::MatrixXf X(t.shape[0], t.shape[1]);
  for (int64_t i = 0; i < t.shape[0]; ++i)
    for (int64_t j = 0; j < t.shape[1]; ++j) X(i, j) = t.data[size_t(i * t.shape[1] + j)];
  auto cpu = expectOk(CrateExecutor::create(m));
  auto gpu = expectOk(CrateExecutor::create(m, "synth", Device::Cuda));
  std::vector<CrateLayerMetrics> mc, mg;
  Eigen::MatrixXf a = expectOk(cpu.runLayers(X, 1, int(X.rows()), &mc));
  Eigen::MatrixXf b = expectOk(gpu.runLayers(X, 1, int(X.rows()), &mg));
  EXPECT_LT(maxRelativeError(b, a), 1e-4);
  ASSERT_EQ(mg.size(), 6u);
  for (size_t l = 0; l < mc.size(); ++l) EXPECT_NEAR(mg[l].Rc, mc[l].Rc, 1e-3 * std::max(1.0, std::abs(mc[l].Rc)));
  EXPECT_LT(mg.back().Rc, mg.front().Rc); // the compression still falls on the GPU
}

} // namespace

// ------------------------------------------------------------------------------------
// Bounds: sizes never overflow, memory is estimated before it is allocated, and values
// too large for float32 are an error naming where they appeared.

namespace {

TEST(CrateBounds, ConfigSizesDoNotOverflow) {
  CrateModel m;
  m.cfg = tinyConfig();
  m.cfg.image_size = 1 << 20; // (2^20)^2 patches: an int overflow in 32 bits
  EXPECT_EQ(errorText(validateCrateModel(m, "m.h5")),
            "m.h5: config image_size 1048576 / patch_size 1 gives 1099511627776 patches, more than the 1048575 raspc "
            "runs");
  m.cfg = tinyConfig();
  m.cfg.image_size = m.cfg.patch_size = 1 << 10;
  m.cfg.channels = 1 << 20;
  EXPECT_EQ(errorText(validateCrateModel(m, "m.h5")),
            "m.h5: config channels 1048576 * patch_size 1024^2 gives 1099511627776 values per patch, more than the "
            "1048576 raspc runs");
}

TEST(CrateBounds, SynthRefusesBeyondTheMemoryLimit) {
  std::string path = tempPath("big.h5");
  std::remove(path.c_str());
  auto r = run(raspcBinary() + " crate synth --dim 4096 --depth 1024 -o " + path);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: crate synth: --dim 4096 --depth 1024 --tokens 128 need about 449.0 GiB of memory, "
                   "more than the 4.0 GiB raspc allows; lower --depth or --dim\n");
  r = run(raspcBinary() + " crate synth --tokens 1048576 -o " + path);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: crate synth: --dim 32 --depth 4 --tokens 1048576 need about 4097.6 GiB of memory, "
                   "more than the 4.0 GiB raspc allows; lower --tokens\n");
  EXPECT_FALSE(std::filesystem::exists(path));
  // Ranges are usage errors.
  r = run(raspcBinary() + " crate synth --dim 8192 -o " + path);
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "--dim: Value 8192 not in range 1 to 4096");
  r = run(raspcBinary() + " crate synth --tokens 0 -o " + path);
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "--tokens: Value 0 not in range 1 to 1048576");
}

// LayerNorms with weight 0 and bias 1 make their output exactly 1, so a following
// weight of 3e38 overflows float32 deterministically.
CrateModel overflowingModel(bool inLayer) {
  CrateModel m = randomCrateModel(tinyConfig(), 5);
  const char *ln = inLayer ? "transformer.layers.0.0.norm" : "to_patch_embedding.1";
  std::fill(m.tensors[std::string(ln) + ".weight"].data.begin(), m.tensors[std::string(ln) + ".weight"].data.end(), 0.0f);
  std::fill(m.tensors[std::string(ln) + ".bias"].data.begin(), m.tensors[std::string(ln) + ".bias"].data.end(), 1.0f);
  Tensor &w = m.tensors[inLayer ? "transformer.layers.0.0.fn.qkv.weight" : "to_patch_embedding.2.weight"];
  std::fill(w.data.begin(), w.data.end(), 3e38f);
  return m;
}

TEST(CrateBounds, NonFiniteActivationIsAnError) {
  std::vector<float> im = randomImages(2, tinyConfig(), 3);
  auto exec = expectOk(CrateExecutor::create(overflowingModel(false), "m.h5"));
  EXPECT_EQ(errorText(exec.run(im.data(), 2)),
            "m.h5: the patch embedding produced a non-finite value at image 0, token 1");
  auto exec2 = expectOk(CrateExecutor::create(overflowingModel(true), "m.h5"));
  std::vector<CrateLayerMetrics> ms;
  EXPECT_EQ(errorText(exec2.run(im.data(), 2, &ms)), "m.h5: layer 0 mssa produced a non-finite value at image 0, token 0");
  EXPECT_EQ(errorText(exec2.runLayers(Eigen::MatrixXf::Ones(3, 4), 1, 3)),
            "m.h5: layer 0 mssa produced a non-finite value at sequence 0, token 0");
  // Sequences of 200 tokens run one per chunk (on several threads where there are
  // cores): an infinity in the second sequence is named there, whichever chunk finds it.
  auto fine = expectOk(CrateExecutor::create(randomCrateModel(tinyConfig(), 5), "m.h5"));
  Eigen::MatrixXf two = Eigen::MatrixXf::Ones(400, 4);
  two(205, 1) = std::numeric_limits<float>::infinity();
  EXPECT_EQ(errorText(fine.runLayers(two, 2, 200)), "m.h5: layer 0 mssa produced a non-finite value at sequence 1, token 0");

  // On the command line, with --json too: the error and nothing on stdout.
  std::string model = tempPath("overflow.h5"), images = tempPath("overflow_images.h5");
  ASSERT_EQ(errorText(writeCrateModel(overflowingModel(true), model, {true, {}})), "<success>");
  ASSERT_EQ(errorText(writeCrateImages(images, im, 2, 3, 2, {true, {}})), "<success>");
  auto r = run(raspcBinary() + " crate run " + model + " --input " + images + " --json");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + model + ": layer 0 mssa produced a non-finite value at image 0, token 0\n");
}

} // namespace
