// The forward pass of a compiled Model, on the CPU (Eigen; runtime/Cpu.cpp) or on a
// CUDA GPU (cuBLAS and our kernels; runtime/cuda/), with output decoding.
//
//   auto exec = Executor::create(model);                 // converts the weights once
//   auto out = exec->run({{"3", "1", "2", "2"}});        // [[1, 2, 2, 3]]
//   auto gpu = Executor::create(model, Precision::F32, Device::Cuda);
//
// Input sequences never contain BOS: it is prepended at position 0, and a batch of
// sequences of unequal lengths is right-padded with PAD, whose keys every head masks.
// The computation follows TransformerLens with no layer norm and ReLU MLPs:
//   x = W_E[ids] + W_pos[positions]
//   per layer: x += sum_h softmax(mask(q_h k_h^T / sqrt(d_head))) v_h W_O[h] + b_O
//              x += ReLU(x W_in + b_in) W_out + b_out
//   logits = x W_U + b_U
// Decoding (positions 1..len, never BOS): categorical outputs take the value of the
// largest logit, or None when every logit is below 0.5; numerical outputs read column
// 0 and snap to the nearest value of Model::outputValues within 1e-3 * max(1, |v|).
//
// An executor owns its weights (converted to the working precision, with heads and MLP
// neurons that contribute nothing dropped) and its activation buffers, which grow to
// the largest chunk of a batch (CPU) or batch (GPU: device memory) seen and are
// reused; it does not reference the Model after create(). Both devices share encoding,
// padding, masks and decoding; only the forward pass differs. run() is not
// thread-safe; use one executor per thread.
#pragma once
#include "backend/Model.h"
#include "runtime/Device.h"

#include <Eigen/Dense>
#include <llvm/Support/Error.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace raspc {

enum class Precision { F32, F64 };

// Called with the residual stream of sequence `seq` of the batch (rows: BOS and its
// tokens, no PAD; columns: the d_model directions) after the embedding (layer -1,
// sublayer "embed") and after each attention ("attn") and MLP ("mlp") sublayer.
using TraceFn = std::function<void(int layer, const std::string &sublayer, const Eigen::MatrixXd &residual, int seq)>;

// A token that is not in the vocabulary (or is "<bos>"/"<pad>"): sequence `seq` of the
// batch, position `pos` (both from 0; positions count the user's tokens, not BOS).
// msg is "sequence S, position P: " + detail; detail says what is wrong with the token.
class InputError : public llvm::ErrorInfo<InputError> {
public:
  static char ID;
  InputError(int seq, int pos, std::string token, std::string detail);
  void log(llvm::raw_ostream &os) const override;
  std::error_code convertToErrorCode() const override { return llvm::inconvertibleErrorCode(); }
  int seq, pos;
  std::string token, detail, msg;
};

// The forward pass produced an infinity or NaN (weights too large for the working
// precision): where it first appeared. layer -1 is the embedding ("embed"), layer
// n_layers the unembedding ("unembed"); pos counts the user's tokens from 0, -1 is BOS.
// Message: "layer 1 mlp produced a non-finite value at sequence 0, position 3".
class NonFiniteError : public llvm::ErrorInfo<NonFiniteError> {
public:
  static char ID;
  NonFiniteError(int layer, std::string sublayer, int seq, int pos)
      : layer(layer), sublayer(std::move(sublayer)), seq(seq), pos(pos) {}
  void log(llvm::raw_ostream &os) const override;
  std::error_code convertToErrorCode() const override { return llvm::inconvertibleErrorCode(); }
  // "layer 1 mlp" / "the embedding" / "the unembedding"
  std::string where() const;
  // "position 3" / "BOS"
  std::string position() const;
  int layer;
  std::string sublayer;
  int seq, pos;
};

class Executor {
public:
  // Validates the model (validateModel) and converts its weights. Device::Cuda runs
  // float32 only, and fails with the reason when no GPU can be used (deviceError).
  static llvm::Expected<Executor> create(const Model &m, Precision p = Precision::F32, Device d = Device::Cpu);

  Executor(Executor &&) noexcept;
  Executor &operator=(Executor &&) noexcept;
  ~Executor();

  // Encodes, runs and decodes a batch: one output value per input token.
  // Errors: a token not in the vocabulary (InputError), a sequence longer than
  // n_ctx - 1 (its number and length), an infinity or NaN in the residual stream or
  // the logits (NonFiniteError), a failing GPU call (which one).
  llvm::Expected<std::vector<std::vector<Scalar>>> run(const std::vector<std::vector<std::string>> &batch,
                                                       const TraceFn *trace = nullptr);

  // The token ids the model sees for one sequence: BOS first, no padding.
  llvm::Expected<std::vector<int>> encode(const std::vector<std::string> &tokens, int seq = 0) const;

  // The raw logits of the last run(): [len + 1, d_vocab_out] for sequence `seq`
  // (row 0 is BOS). Empty before the first run.
  Eigen::MatrixXd logits(int seq) const;

  Precision precision() const;
  Device device() const;
  int maxLength() const; // n_ctx - 1

  // Threads for the CPU forward pass; 0 means one per core. A batch runs in chunks of
  // sequences (about 256 rows), which the threads take one after the other, so a thread
  // the machine holds back delays only its chunk: beside busy processes, more threads
  // were still faster than one (docs/runtime.md). The default is 1, as a library should
  // not start threads unasked; `raspc run` and `verify` ask for one per core. A batch of
  // one chunk runs on one thread. The GPU ignores it.
  void setThreads(int n);
  int threads() const;

  struct Impl; // runtime/ExecutorImpl.h

private:
  explicit Executor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Decodes one output row of logits (d_vocab_out values) as run() does.
Scalar decodeOutput(const Model &m, const double *logits, int n);

// Numerical snapping: the value of `values` nearest to x when within
// 1e-3 * max(1, |value|) (numbers only), else x as a float.
Scalar snapNumber(double x, const std::vector<Scalar> &values);

// Whether a decoded model output matches the interpreter's value: None only with None,
// numbers within 1e-6 relative to max(1, |want|), anything else equal.
bool matchesInterpreter(const Scalar &got, const Scalar &want);
bool matchesInterpreter(const std::vector<Scalar> &got, const std::vector<Scalar> &want);

// How traces and listings name a node: its RASP name, else "tokens", "indices",
// "length", else "<kind>_<id>".
std::string nodeLabel(const NodeInfo &n);

// The value of every ground-truth node with residual directions (non-empty `writes`)
// at each non-BOS position of `residual` (rows: BOS then tokens, as given to a
// TraceFn). Categorical: the value of the largest of its directions (writes[i] holds
// the i-th non-None value of valueSet), None when all are below 0.5; numerical: its
// direction, snapped to its value set as the output is. Named by the node's name, or
// "<kind>_<id>" if unnamed. A rotated or compressed model's stream is read through
// its basis first (labelSpace), so it decodes as the original's does.
std::vector<std::pair<std::string, std::vector<Scalar>>> decodeNodes(const Model &m, const Eigen::MatrixXd &residual);

// The residual stream [rows, d_model] in label coordinates [rows, n_labels], where the
// ground truth's reads and writes index columns: residual B^T with the model's basis B
// (Model::residualBasis), the residual itself without one. A stream of the wrong width
// gives no columns.
Eigen::MatrixXd labelSpace(const Model &m, const Eigen::MatrixXd &residual);

// The attention pattern of every head of `layer` (cfg.n_heads of them, numbered as in
// the file) on one sequence, from the residual stream entering the layer (rows: BOS
// then tokens, as given to a TraceFn; that of the sublayer before). [query, key]
// weights, each row summing to 1, later keys 0 when causal. Computed in double from
// the file's weights: what the forward pass computes, up to its rounding.
std::vector<Eigen::MatrixXd> attentionPatterns(const Model &m, int layer, const Eigen::MatrixXd &residual);

} // namespace raspc
