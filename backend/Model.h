// A compiled transformer in memory: dense tensors with TransformerLens names and
// shapes, plus the metadata and ground truth written beside them. The compiler
// produces it, backend/Hdf5 writes and reads it, the runtime executes it.
#pragma once
#include "ir/Scalar.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace raspc {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data; // row-major, size = product of shape

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s) : shape(std::move(s)), data(numel(), 0.0f) {}
  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    return n;
  }
  // Element access for 1-, 2- and 3-d tensors.
  float &at(int64_t i) { return data[size_t(i)]; }
  float &at(int64_t i, int64_t j) { return data[size_t(i * shape[1] + j)]; }
  float &at(int64_t i, int64_t j, int64_t k) { return data[size_t((i * shape[1] + j) * shape[2] + k)]; }
  float at(int64_t i, int64_t j) const { return data[size_t(i * shape[1] + j)]; }
  float at(int64_t i, int64_t j, int64_t k) const { return data[size_t((i * shape[1] + j) * shape[2] + k)]; }
};

// TransformerLens HookedTransformerConfig fields (no layer norm, ReLU MLPs, attention
// scores divided by sqrt(d_head)).
struct ModelConfig {
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;     // per layer; layers with fewer heads are padded with zero heads
  int d_head = 0;
  int d_mlp = 0;       // per layer; padded with zero neurons
  int d_vocab = 0;     // input vocabulary incl. BOS and PAD
  int d_vocab_out = 0; // output columns
  int n_ctx = 0;       // maximum length + 1 (BOS)
  bool causal = false; // attention sees only keys at or before the query
};

// Ground truth for one RASP node: what it is and where in the model it lives.
// A head or a range of MLP neurons that serves a node without computing it: a change of
// encoding ("to categorical", "to numerical"), the tuple a selector compares ("tuple"),
// or the neuron that removes what BOS added to an aggregate ("BOS cleanup"). With the
// nodes' own heads and neurons, these account for every head and neuron of a model.
struct HelperBlock {
  std::string role;
  int layer = -1;
  std::string sublayer;           // "attn" | "mlp"
  std::vector<int> heads;         // attention heads in `layer`
  int mlpBegin = -1, mlpEnd = -1; // MLP neuron range [begin, end) in `layer`
  std::vector<int> reads, writes; // residual directions
};

struct NodeInfo {
  int id = 0;
  std::string name;     // assigned name, or empty
  std::string kind;     // ir::kindName: "map", "aggregate", "select", ...
  std::string op;       // for maps: "+", "==", ...; for selects: the comparison
  std::string encoding; // "categorical" | "numerical" | "" (selectors)
  std::vector<Scalar> valueSet;
  std::string location; // "file:line:col" or ""
  int layer = -1;             // -1: embedding / not materialised
  std::string sublayer;       // "embed" | "attn" | "mlp" | "" (selectors, fused maps)
  std::vector<int> heads;     // attention heads in `layer` (aggregate, selector width)
  int mlpBegin = -1, mlpEnd = -1; // MLP neuron range [begin, end) in `layer`
  std::vector<int> reads;     // residual directions read
  std::vector<int> writes;    // residual directions written (its value lives here)
  std::vector<int> args;      // ids of the nodes it is computed from
  std::vector<HelperBlock> helpers; // the heads and neurons that serve it
};

// The most parameters (float32 values, biases and unembedding included) in one compiled
// model: one limit for the compiler (which refuses a larger model before building it)
// and the reader (which refuses a file declaring more before allocating), so that what
// raspc writes raspc reads. `--max-params` raises it on both sides.
constexpr int64_t kDefaultMaxParams = int64_t(1) << 28; // 1 GiB of float32

struct Model {
  // 2: metadata/source and ground_truth are checksummed datasets of shape [1] (1 had
  // unchecksummed scalars); every non-empty dataset must carry a checksum.
  static constexpr int kFormatVersion = 2;
  ModelConfig cfg;
  std::map<std::string, Tensor> tensors; // "embed.W_E", "blocks.0.attn.W_Q", ...

  // Input vocabulary in id order; BOS and PAD are spelled "<bos>" and "<pad>".
  std::vector<std::string> vocab;
  int bosId = 0;
  int padId = 0;
  bool intTokens = false; // the program sees tokens as ints

  std::string outputName;
  std::string outputEncoding;         // "categorical" | "numerical"
  std::vector<Scalar> outputValues;   // categorical: value of each W_U column;
                                      // numerical: every value the output can take
  std::vector<std::string> residualLabels; // one per residual label (d_model of them without a basis)
  // The residual basis of a rotated or compressed model (backend/Variants.h): float32
  // [n_labels, d_model], row i the residual vector of label i (residualLabels[i]); the
  // ground truth's reads and writes index labels. A feature vector f over the labels
  // lives in the residual stream as f B and is read back as x B^T. Empty (shape {}):
  // the identity, labels are the residual's own directions (n_labels = d_model).
  Tensor residualBasis;
  std::string source;                 // the program text
  std::string sourceName;             // its file name
  std::vector<NodeInfo> nodes;        // ground truth, in graph order
};

// Attention heads that compute or serve a node: distinct (layer, head) pairs of the
// ground truth. The count `compile` and `inspect` print; cfg.n_heads is per layer.
int usedHeads(const Model &m);

// Whether the model has a residual basis (is rotated or compressed).
inline bool hasResidualBasis(const Model &m) { return !m.residualBasis.shape.empty(); }
// The number of residual labels: the rows of the basis, else d_model.
inline int64_t residualLabelCount(const Model &m) {
  return hasResidualBasis(m) ? m.residualBasis.shape[0] : int64_t(m.cfg.d_model);
}

} // namespace raspc
