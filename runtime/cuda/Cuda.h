// The GPU half of the runtime: forward passes on one CUDA device, float32, cuBLAS for
// the matrix products and our own kernels for embedding, masked softmax, bias+ReLU,
// LayerNorm and the ISTA update (runtime/cuda/Cuda.cu).
//
// This header is plain C++ (no CUDA or Eigen types) so that the executors in runtime/
// (compiled by the host compiler) drive the GPU through it. runtime/cuda/Loader.cpp
// implements it by opening the plugin libraspc_cuda.so (Cuda.cu, runtime/cuda/Plugin.h)
// on first use; without nvcc, or without the plugin, unavailableReason() says why and
// create() fails with that reason, so callers need no #ifdefs.
//
// Conventions: every matrix is row-major; weights are host pointers, copied to the
// device by create() (the caller may free them afterwards); results are copied back to
// host buffers the caller provides. Errors come back as strings that name the CUDA or
// cuBLAS call that failed.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace raspc::cuda {

// Empty when a CUDA device can be used; otherwise why not ("raspc was built without
// CUDA", "no CUDA device: <driver message>", ...). Probes once and caches the answer.
std::string unavailableReason();
// The device's name and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)".
std::string deviceName();

// ---------------------------------------------------------------------------------------
// Compiled RASP models (TransformerLens layout without LayerNorm, ReLU MLPs).

struct RaspLayer {
  int heads = 0;   // heads kept: Q, K, V have heads * d_head columns
  int neurons = 0; // MLP neurons kept
  const float *WQ = nullptr, *WK = nullptr, *WV = nullptr; // [d_model, heads * d_head]
  const float *bQ = nullptr, *bK = nullptr, *bV = nullptr; // [heads * d_head]
  const float *WO = nullptr;                               // [heads * d_head, d_model]
  const float *bO = nullptr;                               // [d_model]
  const float *Win = nullptr, *bin = nullptr;              // [d_model, neurons], [neurons]
  const float *Wout = nullptr, *bout = nullptr;            // [neurons, d_model], [d_model]
};

struct RaspWeights {
  int dModel = 0, dHead = 0, nCtx = 0, dVocab = 0, dVocabOut = 0;
  bool causal = false;
  const float *WE = nullptr;   // [d_vocab, d_model]
  const float *Wpos = nullptr; // [n_ctx, d_model]
  const float *WU = nullptr;   // [d_model, d_vocab_out]
  const float *bU = nullptr;   // [d_vocab_out]
  std::vector<RaspLayer> layers;
};

// Called with the residual stream on the host, [nSeq * seqRows, d_model], after the
// embedding (layer -1, "embed") and after every sublayer ("attn", "mlp").
using RaspTraceFn = std::function<void(int layer, const char *sublayer, const float *residual)>;

class RaspForward {
public:
  virtual ~RaspForward() = default;
  static std::unique_ptr<RaspForward> create(const RaspWeights &w, std::string *error);

  // ids: [nSeq, seqRows] token ids (BOS first, right-padded); lens[b]: tokens of
  // sequence b without BOS (keys at or after lens[b] + 1 are PAD and masked).
  // logits (host): [nSeq * seqRows, d_vocab_out]. Returns false with *error set.
  virtual bool forward(const int *ids, const int *lens, int nSeq, int seqRows, float *logits,
                       const RaspTraceFn *trace, std::string *error) = 0;
};

// ---------------------------------------------------------------------------------------
// CRATE. Tensors in PyTorch layout (Linear weight [out, in]), as stored in the model file.

struct CrateLayer {
  const float *ln1w = nullptr, *ln1b = nullptr; // [dim]
  const float *qkv = nullptr;                   // [dim, dim]
  const float *outW = nullptr, *outB = nullptr; // [dim, dim], [dim]
  const float *ln2w = nullptr, *ln2b = nullptr; // [dim]
  const float *D = nullptr;                     // [dim, dim]
};

struct CrateWeights {
  int imageSize = 0, patchSize = 0, channels = 0, dim = 0, heads = 0, classes = 0;
  float eta = 0.1f, lambda = 0.1f;
  bool meanPool = false;
  const float *peLn1w = nullptr, *peLn1b = nullptr; // [patch_dim]
  const float *peW = nullptr, *peB = nullptr;       // [dim, patch_dim], [dim]
  const float *peLn2w = nullptr, *peLn2b = nullptr; // [dim]
  const float *pos = nullptr;                       // [tokens, dim]
  const float *cls = nullptr;                       // [dim]
  std::vector<CrateLayer> layers;
  const float *headLnW = nullptr, *headLnB = nullptr; // [dim]
  const float *headW = nullptr, *headB = nullptr;     // [classes, dim], [classes]
};

// Called (when given) after every layer with host copies, [rows, dim] each, of
// Z = LN1(X) (the input of the layer's attention) and of the layer's output.
using CrateLayerFn = std::function<void(int layer, const float *Z, const float *out, int rows)>;

class CrateForward {
public:
  virtual ~CrateForward() = default;
  static std::unique_ptr<CrateForward> create(const CrateWeights &w, std::string *error);

  // images (host): [batch, channels, size, size]; logits (host): [batch, classes].
  virtual bool run(const float *images, int batch, float *logits, const CrateLayerFn *layerFn,
                   std::string *error) = 0;
  // The layers alone on `groups` sequences of `tokens` rows each, X and out (host):
  // [groups * tokens, dim].
  virtual bool runLayers(const float *X, int groups, int tokens, float *out, const CrateLayerFn *layerFn,
                         std::string *error) = 0;
};

} // namespace raspc::cuda
