// The craft IR: a transformer described as blocks over labelled residual directions,
// before any dense matrix exists (Tracr's "craft" level). Passes lower the RASP graph
// into it; layer allocation and residual layout place it; assembly makes tensors.
#pragma once
#include "ir/Graph.h"
#include "ir/Scalar.h"

#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace raspc::craft {

// Residual directions, each with a unique label ("one", "tokens:3", "sort:2", "frac").
class Residual {
public:
  int add(const std::string &label); // returns the existing id for a known label
  int find(const std::string &label) const;
  const std::string &label(int dir) const { return labels_[size_t(dir)]; }
  size_t size() const { return labels_.size(); }

private:
  std::vector<std::string> labels_;
  std::unordered_map<std::string, int> index_;
};

// Directions every model has.
constexpr int kOne = 0; // 1 at every position (BOS included)
constexpr int kBos = 1; // 1 at BOS only

// How a value is stored in the residual stream.
struct Feature {
  bool numerical = false;
  std::vector<Scalar> values; // categorical: the value of each direction; numerical: the value set
  std::vector<int> dirs;      // categorical: one per value; numerical: exactly one
  // Categorical: the value may also be None, stored as no direction set. Its
  // indicator is then `one` minus the value directions.
  bool canBeNone = false;
  // A constant is stored in the `one` direction (numerical: scaled by its value).
  bool isConstant() const { return dirs.size() == 1 && dirs[0] == kOne; }
};

using Weights = std::vector<std::pair<int, double>>; // (direction, weight)

// One ReLU neuron: relu(sum in + bias), added to the residual through `out`.
struct Neuron {
  Weights in;
  double bias = 0;
  Weights out;
};

struct Entry {
  int row, col;
  double w;
};

enum class BlockKind { Mlp, Attention };

struct Block {
  BlockKind kind = BlockKind::Mlp;
  ir::NodeId node = 0;   // the RASP node this block computes (for the ground truth)
  std::string what;      // short description ("map", "aggregate", "selector width", ...)
  // Mlp:
  std::vector<Neuron> neurons;
  // Attention: score(q, k) = sum qk[i].w * x_q[row] * x_k[col]; output adds
  // sum_k softmax * (ov[i].w * x_k[row]) to direction col.
  std::vector<Entry> qk, ov;
  // Filled by layer allocation:
  int sublayer = -1;     // 2l: attention of layer l, 2l + 1: its MLP
  int index = -1;        // head number or first neuron within the layer

  std::vector<int> reads() const;
  std::vector<int> writes() const;
};

struct Program {
  Residual residual;
  std::vector<Block> blocks; // in dependency order: a block reads only what earlier blocks write
  // Embedding: token value -> directions, position -> directions.
  std::vector<std::pair<std::string, Weights>> tokenEmbedding; // per vocabulary item (no BOS/PAD)
  std::vector<Weights> positionEmbedding;                      // per position 1..N
  // Output: the feature of the output node.
  Feature output;
  ir::NodeId outputNode = 0;
  // Where each materialized RASP node's value lives.
  std::map<ir::NodeId, Feature> features;
};

} // namespace raspc::craft
