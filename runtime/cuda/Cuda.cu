// CUDA forward passes for compiled RASP models and CRATE (see Cuda.h).
//
// Every matrix is row-major on the device too. cuBLAS is column-major, so a row-major
// product C = op(A) op(B) is issued as the column-major C^T = op(B)^T op(A)^T, which
// needs no copies: a row-major matrix read column-major is its transpose (gemm()).
// Attention runs per head as one strided-batched product over the sequences of the
// batch; softmax, LayerNorm, bias+ReLU and ISTA are small kernels of our own, one warp
// per row where a row is reduced. Buffers grow to the largest batch seen and are kept.
#include "runtime/cuda/Plugin.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace raspc::cuda {

namespace {

// Thrown by the checks below and turned into the `error` string at the API boundary.
struct Failure {
  std::string msg;
};

void check(cudaError_t e, const char *what) {
  if (e != cudaSuccess) {
    (void)cudaGetLastError(); // clear a non-sticky error so later calls can proceed
    throw Failure{std::string(what) + ": " + cudaGetErrorString(e)};
  }
}

void check(cublasStatus_t s, const char *what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Failure{std::string(what) + ": " + cublasGetStatusString(s)};
}

// Launch errors (bad configuration) surface at the launch; execution errors at the next
// synchronising call, which every forward pass ends with (the copy back to the host).
void checkLaunch(const char *kernel) { check(cudaGetLastError(), kernel); }

template <class T> class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  DeviceBuffer(DeviceBuffer &&o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  // Grows (never shrinks) to at least `count` elements; the contents are not kept.
  void ensure(size_t count) {
    if (count <= n_) return;
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
    check(cudaMalloc(reinterpret_cast<void **>(&p_), count * sizeof(T)), "cudaMalloc");
    n_ = count;
  }
  void upload(const T *host, size_t count) {
    ensure(count);
    if (count) check(cudaMemcpy(p_, host, count * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  void download(T *host, size_t count) const {
    if (count) check(cudaMemcpy(host, p_, count * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
  }
  T *get() const { return p_; }

private:
  T *p_ = nullptr;
  size_t n_ = 0;
};

class Blas {
public:
  Blas() {
    check(cublasCreate(&h_), "cublasCreate");
    // Plain float32 products: the default mode never trades precision for speed
    // (TF32 tensor cores, whose 10-bit mantissas would break the exactness the
    // compiled models rely on, are opt-in), whatever a library user set before.
    check(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  Blas(const Blas &) = delete;
  Blas &operator=(const Blas &) = delete;
  ~Blas() {
    if (h_) cublasDestroy(h_);
  }

  // Row-major C[M, N] = op(A) op(B) + beta C, with op(A) [M, K] and op(B) [K, N].
  void gemm(bool ta, bool tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
            int ldc, float beta = 0.0f) const {
    if (M == 0 || N == 0) return;
    const float one = 1.0f;
    check(cublasSgemm(h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one, B, ldb,
                      A, lda, &beta, C, ldc),
          "cublasSgemm");
  }

  // `count` independent row-major products, operand i at A + i * sA (and so on).
  void gemmBatched(bool ta, bool tb, int M, int N, int K, const float *A, int lda, long long sA, const float *B,
                   int ldb, long long sB, float *C, int ldc, long long sC, int count) const {
    if (M == 0 || N == 0 || count == 0) return;
    const float one = 1.0f, zero = 0.0f;
    check(cublasSgemmStridedBatched(h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                                    &one, B, ldb, sB, A, lda, sA, &zero, C, ldc, sC, count),
          "cublasSgemmStridedBatched");
  }

private:
  cublasHandle_t h_ = nullptr;
};

// ---------------------------------------------------------------------------------------
// Kernels. Element-wise kernels use grid-stride loops; row kernels one warp per row.

constexpr int kThreads = 256;
constexpr int kWarp = 32;

unsigned blocksFor(size_t n) {
  size_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < 65535 ? (b ? b : 1) : 65535);
}
unsigned warpBlocksFor(size_t rows) {
  size_t b = (rows * kWarp + kThreads - 1) / kThreads;
  return unsigned(b ? b : 1);
}

__device__ float warpSum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ float warpMax(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// X[r] = WE[ids[r]] + Wpos[r mod seqRows]
__global__ void embedKernel(const int *ids, const float *WE, const float *Wpos, float *X, size_t rows, int seqRows,
                            int D) {
  const size_t n = rows * size_t(D);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / D, c = i % D;
    X[i] = WE[size_t(ids[r]) * D + c] + Wpos[(r % seqRows) * D + c];
  }
}

// X[r, c] = act(X[r, c] + b[c]) with act = ReLU or identity.
__global__ void biasKernel(float *X, const float *b, size_t rows, int cols, bool relu) {
  const size_t n = rows * size_t(cols);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float v = X[i] + b[i % cols];
    X[i] = relu ? fmaxf(v, 0.0f) : v;
  }
}

// Rows of S are the score rows of [groups, heads, T, T]. Each is scaled and softmaxed
// over its visible keys (all T; fewer than lens[g] + 1 when lens is given, the rest
// being PAD; at most i + 1 when causal); invisible keys get weight 0.
__global__ void softmaxKernel(float *S, size_t rows, int T, int heads, float scale, const int *lens, bool causal) {
  const size_t row = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return; // whole warps leave together
  const int i = int(row % T);
  const size_t g = row / (size_t(heads) * T);
  int visible = T;
  if (lens) visible = min(visible, lens[g] + 1);
  if (causal) visible = min(visible, i + 1);
  float *s = S + row * T;
  float mx = -INFINITY;
  for (int j = lane; j < visible; j += kWarp) mx = fmaxf(mx, s[j] * scale);
  mx = warpMax(mx);
  float sum = 0.0f;
  for (int j = lane; j < visible; j += kWarp) {
    float e = expf(s[j] * scale - mx);
    s[j] = e;
    sum += e;
  }
  sum = warpSum(sum);
  const float inv = 1.0f / sum;
  for (int j = lane; j < T; j += kWarp) s[j] = j < visible ? s[j] * inv : 0.0f;
}

// out[r] = (in[r] - mean) / sqrt(var + eps) * w + b per row (biased variance, as PyTorch).
__global__ void layerNormKernel(const float *in, float *out, const float *w, const float *b, size_t rows, int n,
                                float eps) {
  const size_t row = (blockIdx.x * size_t(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const float *x = in + row * n;
  float sum = 0.0f;
  for (int j = lane; j < n; j += kWarp) sum += x[j];
  const float mean = warpSum(sum) / float(n);
  float sq = 0.0f;
  for (int j = lane; j < n; j += kWarp) {
    float d = x[j] - mean;
    sq += d * d;
  }
  const float inv = rsqrtf(warpSum(sq) / float(n) + eps);
  float *y = out + row * n;
  for (int j = lane; j < n; j += kWarp) y[j] = (x[j] - mean) * inv * w[j] + b[j];
}

// X = ReLU(Z + eta (G2 - G1) - eta lambda): CRATE's ISTA step from Z.
__global__ void istaKernel(float *X, const float *Z, const float *G1, const float *G2, size_t n, float eta,
                           float etaLambda) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    X[i] = fmaxf(Z[i] + eta * (G2[i] - G1[i]) - etaLambda, 0.0f);
}

// images [B, C, S, S] -> patches [B * np, P * P * C]: b c (h p1) (w p2) -> b (h w) (p1 p2 c).
__global__ void patchKernel(const float *images, float *patches, int batch, int C, int S, int P) {
  const int side = S / P, np = side * side, pd = P * P * C;
  const size_t n = size_t(batch) * np * pd;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / pd;
    const int col = int(i % pd);
    const size_t b = r / np;
    const int pi = int(r % np), h = pi / side, w = pi % side;
    const int p1 = col / (P * C), rem = col % (P * C), p2 = rem / C, ch = rem % C;
    patches[i] = images[((b * C + ch) * S + size_t(h * P + p1)) * S + size_t(w * P + p2)];
  }
}

// X[b, 0] = cls + pos[0]; X[b, 1 + i] = emb[b * np + i] + pos[1 + i].
__global__ void tokensKernel(const float *emb, const float *cls, const float *pos, float *X, int batch, int T,
                             int dim) {
  const size_t n = size_t(batch) * T * dim;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / dim, b = r / T;
    const int c = int(i % dim), t = int(r % T);
    const float v = t == 0 ? cls[c] : emb[(b * (T - 1) + size_t(t - 1)) * dim + c];
    X[i] = v + pos[size_t(t) * dim + c];
  }
}

// pooled[b] = X[b, 0] (cls) or the mean of X[b, :] (mean).
__global__ void poolKernel(const float *X, float *pooled, int batch, int T, int dim, bool mean) {
  const size_t n = size_t(batch) * dim;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t b = i / dim;
    const int c = int(i % dim);
    const float *x = X + b * T * dim + c;
    if (!mean) {
      pooled[i] = x[0];
      continue;
    }
    float s = 0.0f;
    for (int t = 0; t < T; ++t) s += x[size_t(t) * dim];
    pooled[i] = s / float(T);
  }
}

void addBias(float *X, const float *b, size_t rows, int cols, bool relu = false) {
  if (rows == 0 || cols == 0) return;
  biasKernel<<<blocksFor(rows * cols), kThreads>>>(X, b, rows, cols, relu);
  checkLaunch("bias kernel");
}

void layerNorm(const float *in, float *out, const float *w, const float *b, size_t rows, int n) {
  if (rows == 0 || n == 0) return;
  layerNormKernel<<<warpBlocksFor(rows), kThreads>>>(in, out, w, b, rows, n, 1e-5f); // nn.LayerNorm's eps
  checkLaunch("layer norm kernel");
}

void softmax(float *S, size_t rows, int T, int heads, float scale, const int *lens, bool causal) {
  if (rows == 0 || T == 0) return;
  softmaxKernel<<<warpBlocksFor(rows), kThreads>>>(S, rows, T, heads, scale, lens, causal);
  checkLaunch("softmax kernel");
}

template <class F> bool guarded(std::string *error, F &&f) {
  try {
    f();
    return true;
  } catch (const Failure &e) {
    if (error) *error = e.msg;
  } catch (const std::bad_alloc &) {
    if (error) *error = "out of host memory";
  }
  return false;
}

// ---------------------------------------------------------------------------------------

class RaspGpu final : public RaspForward {
public:
  struct Layer {
    int heads = 0, neurons = 0;
    DeviceBuffer<float> WQ, WK, WV, bQ, bK, bV, WO, bO, Win, bin, Wout, bout;
  };

  explicit RaspGpu(const RaspWeights &w) : dModel(w.dModel), dHead(w.dHead), dOut(w.dVocabOut), causal(w.causal) {
    const size_t D = size_t(w.dModel);
    WE.upload(w.WE, size_t(w.dVocab) * D);
    Wpos.upload(w.Wpos, size_t(w.nCtx) * D);
    WU.upload(w.WU, D * size_t(w.dVocabOut));
    bU.upload(w.bU, size_t(w.dVocabOut));
    for (const RaspLayer &l : w.layers) {
      Layer L;
      L.heads = l.heads;
      L.neurons = l.neurons;
      const size_t HW = size_t(l.heads) * size_t(w.dHead), M = size_t(l.neurons);
      L.WQ.upload(l.WQ, D * HW);
      L.WK.upload(l.WK, D * HW);
      L.WV.upload(l.WV, D * HW);
      L.bQ.upload(l.bQ, HW);
      L.bK.upload(l.bK, HW);
      L.bV.upload(l.bV, HW);
      L.WO.upload(l.WO, HW * D);
      L.bO.upload(l.bO, D);
      L.Win.upload(l.Win, D * M);
      L.bin.upload(l.bin, M);
      L.Wout.upload(l.Wout, M * D);
      L.bout.upload(l.bout, D);
      maxHeads = std::max(maxHeads, l.heads);
      maxNeurons = std::max(maxNeurons, l.neurons);
      layers.push_back(std::move(L));
    }
  }

  bool forward(const int *ids, const int *lens, int nSeq, int seqRows, float *logits, const RaspTraceFn *trace,
               std::string *error) override {
    return guarded(error, [&] { run(ids, lens, nSeq, seqRows, logits, trace); });
  }

private:
  void run(const int *hostIds, const int *hostLens, int nSeq, int Tn, float *logits, const RaspTraceFn *trace) {
    const size_t N = size_t(nSeq) * size_t(Tn);
    const int D = dModel, Dh = dHead, HW = maxHeads * Dh;
    if (N == 0) return;
    ids.upload(hostIds, N);
    lens.upload(hostLens, size_t(nSeq));
    X.ensure(N * D);
    Q.ensure(N * HW);
    K.ensure(N * HW);
    V.ensure(N * HW);
    Z.ensure(N * HW);
    S.ensure(size_t(nSeq) * maxHeads * Tn * Tn);
    Hid.ensure(N * maxNeurons);
    Logits.ensure(N * dOut);

    embedKernel<<<blocksFor(N * D), kThreads>>>(ids.get(), WE.get(), Wpos.get(), X.get(), N, Tn, D);
    checkLaunch("embedding kernel");
    traceOut(trace, -1, "embed", N);

    const float scale = Dh > 0 ? 1.0f / std::sqrt(float(Dh)) : 1.0f;
    for (size_t l = 0; l < layers.size(); ++l) {
      const Layer &L = layers[l];
      if (L.heads > 0) {
        const int hw = L.heads * Dh;
        blas.gemm(false, false, int(N), hw, D, X.get(), D, L.WQ.get(), hw, Q.get(), hw);
        addBias(Q.get(), L.bQ.get(), N, hw);
        blas.gemm(false, false, int(N), hw, D, X.get(), D, L.WK.get(), hw, K.get(), hw);
        addBias(K.get(), L.bK.get(), N, hw);
        blas.gemm(false, false, int(N), hw, D, X.get(), D, L.WV.get(), hw, V.get(), hw);
        addBias(V.get(), L.bV.get(), N, hw);
        // S[b, h] = Q_bh K_bh^T; softmax; Z_bh = P_bh V_bh; over all sequences at once.
        const long long seqStride = (long long)Tn * hw, sStride = (long long)L.heads * Tn * Tn;
        for (int h = 0; h < L.heads; ++h)
          blas.gemmBatched(false, true, Tn, Tn, Dh, Q.get() + h * Dh, hw, seqStride, K.get() + h * Dh, hw,
                           seqStride, S.get() + size_t(h) * Tn * Tn, Tn, sStride, nSeq);
        softmax(S.get(), size_t(nSeq) * L.heads * Tn, Tn, L.heads, scale, lens.get(), causal);
        for (int h = 0; h < L.heads; ++h)
          blas.gemmBatched(false, false, Tn, Dh, Tn, S.get() + size_t(h) * Tn * Tn, Tn, sStride, V.get() + h * Dh,
                           hw, seqStride, Z.get() + h * Dh, hw, seqStride, nSeq);
        blas.gemm(false, false, int(N), D, hw, Z.get(), hw, L.WO.get(), D, X.get(), D, 1.0f);
      }
      addBias(X.get(), L.bO.get(), N, D);
      traceOut(trace, int(l), "attn", N);
      if (L.neurons > 0) {
        blas.gemm(false, false, int(N), L.neurons, D, X.get(), D, L.Win.get(), L.neurons, Hid.get(), L.neurons);
        addBias(Hid.get(), L.bin.get(), N, L.neurons, /*relu=*/true);
        blas.gemm(false, false, int(N), D, L.neurons, Hid.get(), L.neurons, L.Wout.get(), D, X.get(), D, 1.0f);
      }
      addBias(X.get(), L.bout.get(), N, D);
      traceOut(trace, int(l), "mlp", N);
    }
    blas.gemm(false, false, int(N), dOut, D, X.get(), D, WU.get(), dOut, Logits.get(), dOut);
    addBias(Logits.get(), bU.get(), N, dOut);
    Logits.download(logits, N * dOut);
  }

  void traceOut(const RaspTraceFn *trace, int layer, const char *sublayer, size_t N) {
    if (!trace || !*trace) return;
    host.resize(N * dModel);
    X.download(host.data(), host.size());
    (*trace)(layer, sublayer, host.data());
  }

  int dModel, dHead, dOut;
  bool causal;
  int maxHeads = 0, maxNeurons = 0;
  Blas blas;
  DeviceBuffer<float> WE, Wpos, WU, bU;
  std::vector<Layer> layers;
  DeviceBuffer<int> ids, lens;
  DeviceBuffer<float> X, Q, K, V, Z, S, Hid, Logits;
  std::vector<float> host;
};

// ---------------------------------------------------------------------------------------

class CrateGpu final : public CrateForward {
public:
  struct Layer {
    DeviceBuffer<float> ln1w, ln1b, qkv, outW, outB, ln2w, ln2b, D;
  };

  explicit CrateGpu(const CrateWeights &w)
      : S_(w.imageSize), P_(w.patchSize), C_(w.channels), dim(w.dim), heads(w.heads), classes(w.classes),
        eta(w.eta), lambda(w.lambda), meanPool(w.meanPool) {
    const size_t d = size_t(dim), pd = size_t(C_) * P_ * P_, side = size_t(P_ > 0 ? S_ / P_ : 0);
    const size_t tokens = side * side + 1;
    peLn1w.upload(w.peLn1w, pd);
    peLn1b.upload(w.peLn1b, pd);
    peW.upload(w.peW, d * pd);
    peB.upload(w.peB, d);
    peLn2w.upload(w.peLn2w, d);
    peLn2b.upload(w.peLn2b, d);
    pos.upload(w.pos, tokens * d);
    cls.upload(w.cls, d);
    for (const CrateLayer &l : w.layers) {
      Layer L;
      L.ln1w.upload(l.ln1w, d);
      L.ln1b.upload(l.ln1b, d);
      L.qkv.upload(l.qkv, d * d);
      L.outW.upload(l.outW, d * d);
      L.outB.upload(l.outB, d);
      L.ln2w.upload(l.ln2w, d);
      L.ln2b.upload(l.ln2b, d);
      L.D.upload(l.D, d * d);
      layers.push_back(std::move(L));
    }
    headLnW.upload(w.headLnW, d);
    headLnB.upload(w.headLnB, d);
    headW.upload(w.headW, size_t(classes) * d);
    headB.upload(w.headB, size_t(classes));
  }

  bool run(const float *images, int batch, float *logits, const CrateLayerFn *layerFn, std::string *error) override {
    return guarded(error, [&] { runImages(images, batch, logits, layerFn); });
  }

  bool runLayers(const float *hostX, int groups, int tokens, float *out, const CrateLayerFn *layerFn,
                 std::string *error) override {
    return guarded(error, [&] {
      const size_t rows = size_t(groups) * tokens;
      X.upload(hostX, rows * dim);
      layersOn(groups, tokens, layerFn);
      X.download(out, rows * dim);
    });
  }

private:
  void runImages(const float *hostImages, int batch, float *logits, const CrateLayerFn *layerFn) {
    if (batch == 0) return;
    const int side = S_ / P_, np = side * side, pd = C_ * P_ * P_, T = np + 1;
    const size_t B = size_t(batch), pixels = B * C_ * S_ * S_;
    images.upload(hostImages, pixels);
    patches.ensure(B * np * pd);
    patchesN.ensure(B * np * pd);
    emb.ensure(B * np * dim);
    embN.ensure(B * np * dim);
    X.ensure(B * T * dim);
    patchKernel<<<blocksFor(B * np * pd), kThreads>>>(images.get(), patches.get(), batch, C_, S_, P_);
    checkLaunch("patch kernel");
    layerNorm(patches.get(), patchesN.get(), peLn1w.get(), peLn1b.get(), B * np, pd);
    blas.gemm(false, true, int(B * np), dim, pd, patchesN.get(), pd, peW.get(), pd, emb.get(), dim);
    addBias(emb.get(), peB.get(), B * np, dim);
    layerNorm(emb.get(), embN.get(), peLn2w.get(), peLn2b.get(), B * np, dim);
    tokensKernel<<<blocksFor(B * T * dim), kThreads>>>(embN.get(), cls.get(), pos.get(), X.get(), batch, T, dim);
    checkLaunch("tokens kernel");

    layersOn(batch, T, layerFn);

    pooled.ensure(B * dim);
    pooledN.ensure(B * dim);
    out.ensure(B * classes);
    poolKernel<<<blocksFor(B * dim), kThreads>>>(X.get(), pooled.get(), batch, T, dim, meanPool);
    checkLaunch("pool kernel");
    layerNorm(pooled.get(), pooledN.get(), headLnW.get(), headLnB.get(), B, dim);
    blas.gemm(false, true, batch, classes, dim, pooledN.get(), dim, headW.get(), dim, out.get(), classes);
    addBias(out.get(), headB.get(), B, classes);
    out.download(logits, B * classes);
  }

  // The transformer layers on X ([groups * T, dim]) in place.
  void layersOn(int groups, int T, const CrateLayerFn *layerFn) {
    const size_t rows = size_t(groups) * T, n = rows * dim;
    if (rows == 0) return;
    const int p = dim / heads;
    Z1.ensure(n);
    W.ensure(n);
    O.ensure(n);
    Z2.ensure(n);
    G1.ensure(n);
    G2.ensure(n);
    Tmp.ensure(n);
    Sc.ensure(size_t(groups) * heads * T * T);
    const float scale = 1.0f / std::sqrt(float(p));
    const long long groupStride = (long long)T * dim, sStride = (long long)heads * T * T;
    for (size_t l = 0; l < layers.size(); ++l) {
      const Layer &L = layers[l];
      // MSSA: W = LN1(X) qkv^T; per head softmax(W_k W_k^T / sqrt(p)) W_k; X += O outW^T + outB.
      layerNorm(X.get(), Z1.get(), L.ln1w.get(), L.ln1b.get(), rows, dim);
      blas.gemm(false, true, int(rows), dim, dim, Z1.get(), dim, L.qkv.get(), dim, W.get(), dim);
      for (int k = 0; k < heads; ++k)
        blas.gemmBatched(false, true, T, T, p, W.get() + k * p, dim, groupStride, W.get() + k * p, dim, groupStride,
                         Sc.get() + size_t(k) * T * T, T, sStride, groups);
      softmax(Sc.get(), size_t(groups) * heads * T, T, heads, scale, nullptr, false);
      for (int k = 0; k < heads; ++k)
        blas.gemmBatched(false, false, T, p, T, Sc.get() + size_t(k) * T * T, T, sStride, W.get() + k * p, dim,
                         groupStride, O.get() + k * p, dim, groupStride, groups);
      blas.gemm(false, true, int(rows), dim, dim, O.get(), dim, L.outW.get(), dim, X.get(), dim, 1.0f);
      addBias(X.get(), L.outB.get(), rows, dim);
      // ISTA (PyTorch form): z = LN2(X); X = relu(z + eta (z D - (z D^T) D) - eta lambda).
      layerNorm(X.get(), Z2.get(), L.ln2w.get(), L.ln2b.get(), rows, dim);
      blas.gemm(false, true, int(rows), dim, dim, Z2.get(), dim, L.D.get(), dim, Tmp.get(), dim);
      blas.gemm(false, false, int(rows), dim, dim, Tmp.get(), dim, L.D.get(), dim, G1.get(), dim);
      blas.gemm(false, false, int(rows), dim, dim, Z2.get(), dim, L.D.get(), dim, G2.get(), dim);
      istaKernel<<<blocksFor(n), kThreads>>>(X.get(), Z2.get(), G1.get(), G2.get(), n, eta, eta * lambda);
      checkLaunch("ista kernel");
      if (layerFn && *layerFn) {
        hostZ.resize(n);
        hostX.resize(n);
        Z1.download(hostZ.data(), n);
        X.download(hostX.data(), n);
        (*layerFn)(int(l), hostZ.data(), hostX.data(), int(rows));
      }
    }
  }

  int S_, P_, C_, dim, heads, classes;
  float eta, lambda;
  bool meanPool;
  Blas blas;
  DeviceBuffer<float> peLn1w, peLn1b, peW, peB, peLn2w, peLn2b, pos, cls, headLnW, headLnB, headW, headB;
  std::vector<Layer> layers;
  DeviceBuffer<float> images, patches, patchesN, emb, embN, X, Z1, W, O, Z2, G1, G2, Tmp, Sc, pooled, pooledN, out;
  std::vector<float> hostZ, hostX;
};

std::string gpuUnavailableReason();

template <class Impl, class Weights, class Base> std::unique_ptr<Base> make(const Weights &w, std::string *error) {
  std::string why = gpuUnavailableReason();
  if (!why.empty()) {
    if (error) *error = why;
    return nullptr;
  }
  std::unique_ptr<Base> out;
  if (!guarded(error, [&] { out = std::make_unique<Impl>(w); })) return nullptr;
  return out;
}

std::string gpuUnavailableReason() {
  static const std::string reason = [] {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")";
    }
    if (n == 0) return std::string("no CUDA device found");
    return std::string();
  }();
  return reason;
}

std::string gpuDeviceName() {
  if (!gpuUnavailableReason().empty()) return "none";
  int dev = 0;
  cudaDeviceProp p{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return "unknown CUDA device";
  }
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ")";
}

std::unique_ptr<RaspForward> createRasp(const RaspWeights &w, std::string *error) {
  return make<RaspGpu, RaspWeights, RaspForward>(w, error);
}

std::unique_ptr<CrateForward> createCrate(const CrateWeights &w, std::string *error) {
  return make<CrateGpu, CrateWeights, CrateForward>(w, error);
}

} // namespace

} // namespace raspc::cuda

extern "C" __attribute__((visibility("default"))) const raspc::cuda::PluginApi *raspc_cuda_plugin() {
  using namespace raspc::cuda;
  static const PluginApi api{kPluginVersion, gpuUnavailableReason, gpuDeviceName, createRasp, createCrate};
  return &api;
}
