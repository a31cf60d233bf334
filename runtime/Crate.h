// CRATE (Yu et al., "White-Box Transformers via Sparse Rate Reduction") in the runtime:
// the model, its HDF5 layout, a CPU executor (Eigen, float32), the white-box metrics
// (coding rate, compression term and its exact gradient, ISTA's LASSO objective) and
// the synthetic "ground truth" construction. docs/crate.md has the formulas.
//
//   auto m = readCrateModel("crate.h5");                  // validated
//   auto exec = CrateExecutor::create(*m);
//   auto logits = exec->run(images.data(), batch);        // [B, num_classes]
//
// Conventions: tokens are rows (a sequence is an N x dim matrix); linear layers follow
// PyTorch (weight [out, in], y = x W^T + b); tensors are named after the official
// PyTorch checkpoint keys without the `module.` prefix.
#pragma once
#include "backend/Model.h"
#include "runtime/Device.h"
#include "support/Files.h"

#include <Eigen/Dense>
#include <llvm/Support/Error.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace raspc {

struct CrateConfig {
  int image_size = 0;
  int patch_size = 0;
  int channels = 3;
  int dim = 0;
  int depth = 0;
  int heads = 0;
  int num_classes = 0;
  double eta = 0.1;
  double lambda = 0.1;
  std::string pool = "cls"; // "cls" or "mean"

  // In 64 bits: the sizes are ints of up to 2^20 each (validateCrateModel), whose
  // products overflow an int; validateCrateModel bounds these too before any use.
  int64_t numPatches() const {
    if (patch_size <= 0 || image_size <= 0) return 0;
    int64_t side = image_size / patch_size;
    return side * side;
  }
  int64_t patchDim() const { return int64_t(channels) * patch_size * patch_size; }
  int headDim() const { return heads > 0 ? dim / heads : 0; }
  int64_t tokens() const { return numPatches() + 1; } // cls + patches
};

// The most tokens per image (patches + cls) and values per patch a configuration may
// ask for.
constexpr int64_t kMaxCrateTokens = int64_t(1) << 20;

// The memory (bytes) a CRATE computation may take; beyond it raspc refuses with the
// estimate instead of failing to allocate.
constexpr double kCrateMemoryLimit = double(uint64_t(4) << 30);

// About how many bytes of activations a forward pass over `groups` sequences of
// `tokensPerGroup` tokens takes on the CPU (the buffers of each layer and the attention
// matrix), with the metrics' double copies when `metrics`.
double crateActivationBytes(const CrateConfig &c, int64_t groups, int64_t tokensPerGroup, bool metrics);

// "4.5 GiB", "12.0 MiB": a byte count for messages.
std::string formatBytes(double bytes);

struct CrateModel {
  static constexpr int kFormatVersion = 1;
  CrateConfig cfg;
  std::map<std::string, Tensor> tensors; // "to_patch_embedding.1.weight", ...
  // Synthesised models only (raspc crate synth): the sampled tokens [N, dim] that the
  // layers are run on, and the subspace each token was drawn from. Empty otherwise.
  Tensor synthTokens;
  std::vector<int> synthLabels;
};

// The tensors of a configuration with their shapes, in a fixed order.
std::vector<std::pair<std::string, std::vector<int64_t>>> crateTensorShapes(const CrateConfig &c);

// Checks the configuration (positive sizes, dim divisible by heads, image size divisible
// by patch size, at most kMaxCrateTokens tokens and patch values, pool "cls" or "mean",
// finite eta and lambda), every tensor's presence,
// shape and finiteness (no other tensor), and the synth tokens. Errors start with `what`.
llvm::Error validateCrateModel(const CrateModel &m, const std::string &what);

// HDF5: float32 datasets at the root named by the keys, a `metadata` group with
// attributes format = "crate", format_version, the config; optionally a `synth` group
// with datasets tokens [N, dim] and labels [N] (float32). Written atomically under
// `rule` (support/Files.h).
llvm::Error writeCrateModel(const CrateModel &m, const std::string &path, const files::OutputRule &rule = {});
llvm::Expected<CrateModel> readCrateModel(const std::string &path);
// The same from the bytes of a file in memory; `name` stands for the file name.
llvm::Expected<CrateModel> readCrateModelFromImage(std::string bytes, const std::string &name);

// A batch of images [B, C, H, W] float32 from dataset `images` of an HDF5 file, checked
// against the model's channels and image size and the limits below before it is read,
// then for finite values.
// The most images, and values, one images file may hold: checked on the declared shape
// before anything is read.
constexpr int64_t kMaxImageBatch = 65536;
constexpr int64_t kMaxImageValues = kDefaultMaxParams;
struct CrateImages {
  int batch = 0;
  std::vector<float> data; // B * C * H * W, row-major
};
llvm::Expected<CrateImages> readCrateImages(const std::string &path, const CrateConfig &c);
llvm::Expected<CrateImages> readCrateImagesFromImage(std::string bytes, const std::string &name,
                                                     const CrateConfig &c);
llvm::Error writeCrateImages(const std::string &path, const std::vector<float> &data, int batch, int channels,
                             int size, const files::OutputRule &rule = {});
// An HDF5 file holding one float32 dataset `name` (e.g. the logits of a run), written
// atomically under `rule`.
llvm::Error writeTensorFile(const std::string &path, const std::string &name, const Tensor &t,
                            const files::OutputRule &rule = {});

// A model with weights drawn at random (LayerNorms near identity, linear layers with
// PyTorch's default scale); for tests and benchmarks.
CrateModel randomCrateModel(const CrateConfig &c, uint64_t seed);

// ------------------------------------------------------------------------------------
// White-box quantities. Z holds tokens as rows (N x d): BRIEF's Z (d x N) is Z^T here.
// U is d x d with head k's basis U_k in columns [k p, (k+1) p), p = d / heads.

// R(Z) = 1/2 logdet(I + d/(N eps^2) Z^T Z)   (BRIEF's notation)
double codingRate(const Eigen::MatrixXd &Z, double eps = 0.5);
// R^c(Z; U) = sum_k 1/2 logdet(I + p/(N eps^2) (U_k^T Z)^T (U_k^T Z))
double compressionRate(const Eigen::MatrixXd &Z, const Eigen::MatrixXd &U, int heads, double eps = 0.5);
// dR^c/dZ in the same (rows) orientation as Z: the transpose of BRIEF's
// alpha sum_k U_k U_k^T Z (I + alpha G_k)^-1.
Eigen::MatrixXd compressionGradient(const Eigen::MatrixXd &Z, const Eigen::MatrixXd &U, int heads,
                                    double eps = 0.5);
// The LASSO objective of ISTA, rows as samples: lambda |X|_1 + 1/2 |Z - X D^T|_F^2
// (BRIEF's lambda |x|_1 + 1/2 |z - D x|^2 for every row); D is the stored fn.weight.
double lassoObjective(const Eigen::MatrixXd &X, const Eigen::MatrixXd &Z, const Eigen::MatrixXd &D, double lambda);
// One proximal gradient step on that objective with x >= 0, from X:
// ReLU(X + eta (Z D - X D^T D) - eta lambda). The CRATE layer is this step with X = Z.
Eigen::MatrixXd istaStep(const Eigen::MatrixXd &X, const Eigen::MatrixXd &Z, const Eigen::MatrixXd &D, double eta,
                         double lambda);

// Per layer: R and R^c of Z = LN1(X) (the layer's input after its first LayerNorm, with
// the layer's own U = qkv.weight^T), and the fraction of exact zeros in the ISTA output.
// For a batch of images: R and R^c averaged over images, sparsity over all tokens.
struct CrateLayerMetrics {
  int layer = 0;
  double R = 0, Rc = 0, sparsity = 0;
};

// ------------------------------------------------------------------------------------
// Executor (float32) on the CPU (Eigen) or a CUDA GPU (runtime/cuda/). Owns converted
// weights and activation buffers (grown to the largest batch, or chunk of one, and
// reused); run() is not thread-safe. With metrics on the GPU, each layer's Z and
// output come back to the host and the metrics are computed there, as on the CPU.
class CrateExecutor {
public:
  // Validates the model (validateCrateModel) and converts its weights; on Device::Cuda
  // fails with the reason when no GPU can be used (deviceError).
  static llvm::Expected<CrateExecutor> create(const CrateModel &m, const std::string &what = "model",
                                              Device d = Device::Cpu);

  CrateExecutor(CrateExecutor &&) noexcept;
  CrateExecutor &operator=(CrateExecutor &&) noexcept;
  ~CrateExecutor();

  // images: batch * channels * image_size^2 floats ([B, C, H, W]); returns logits
  // [B, num_classes]. With `metrics`, fills one entry per layer. Fails when the batch
  // would take more than kCrateMemoryLimit (the estimate), when an activation, a metric
  // or a logit is not finite ("WHAT: layer 2 ista produced a non-finite value at image
  // 0, token 3"; token 0 is cls), or on the GPU (the CUDA call that failed).
  llvm::Expected<Eigen::MatrixXf> run(const float *images, int batch,
                                      std::vector<CrateLayerMetrics> *metrics = nullptr, double eps = 0.5);

  // The transformer layers alone on `groups` sequences of `tokensPerGroup` tokens each,
  // stacked as rows of X ([groups * tokensPerGroup, dim]); returns the output tokens.
  llvm::Expected<Eigen::MatrixXf> runLayers(const Eigen::MatrixXf &X, int groups, int tokensPerGroup,
                                            std::vector<CrateLayerMetrics> *metrics = nullptr, double eps = 0.5);

  const CrateConfig &config() const;
  Device device() const;

  struct Impl;

private:
  explicit CrateExecutor(std::unique_ptr<Impl> impl);
  // runLayers; `images` names the groups in errors ("image 2" rather than "sequence 2").
  llvm::Expected<Eigen::MatrixXf> layers(const Eigen::MatrixXf &X, int groups, int tokensPerGroup,
                                         std::vector<CrateLayerMetrics> *metrics, double eps, bool images);
  std::unique_ptr<Impl> impl_;
};

// ------------------------------------------------------------------------------------
// White-box construction (raspc crate synth).
struct CrateSynthOptions {
  int dim = 32, heads = 4, depth = 4, tokens = 128;
  uint64_t seed = 1;
  double noise = 0.1;  // isotropic noise added to each sampled token (standard deviation per coordinate)
  double step = 1.0;   // output projection = step * U
  double eta = 0.1, lambda = 0.1;
  std::string dictionary = "identity"; // or "orthogonal": a random orthogonal D
  // "random": U is a random orthogonal matrix; "coordinates": a random signed
  // permutation, so that each subspace is spanned by coordinate axes (ISTA's ReLU,
  // which acts coordinate-wise, then keeps every token in its subspace).
  std::string basis = "coordinates";
};

// Draws U (a random orthogonal d x d matrix, split into `heads` blocks of p columns) and
// the dictionary, builds every layer from them (qkv.weight = U^T, to_out.0.weight =
// step U, to_out.0.bias = 0, LayerNorms identity, fn.weight = D), and samples the tokens:
// token i lies in subspace k = i mod heads with N(0, 1) coefficients in U_k, plus
// N(0, noise^2) in every coordinate. The image side is trivial: image_size =
// patch_size = 1, channels = dim, identity patch embedding, zero positional embedding,
// cls token and head (num_classes = heads). Options out of range, or asking for more
// memory than kCrateMemoryLimit to build and run (crateSynthBytes), are an error naming
// the flag to lower.
llvm::Expected<CrateModel> synthCrateModel(const CrateSynthOptions &o);

// About how many bytes `raspc crate synth` takes with these options: the model, the
// executor's copy of its weights, and a run over the tokens with the metrics.
double crateSynthBytes(const CrateSynthOptions &o);

// The projection U = qkv.weight^T of layer l, in double.
Eigen::MatrixXd crateSubspaces(const CrateModel &m, int layer);

} // namespace raspc
