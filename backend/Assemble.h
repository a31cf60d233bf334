// Assembly: dense TransformerLens tensors from a placed craft program.
#pragma once
#include "backend/Model.h"
#include "ir/Craft.h"

#include <string>
#include <vector>

namespace raspc {

// `order` lists the residual directions kept, in d_model order (from the layout
// pass). Fills cfg, tensors, vocab, BOS/PAD ids, output encoding and values, and
// residual labels; the compiler adds the ground truth.
Model assembleModel(const craft::Program &p, const std::vector<int> &order, const std::vector<std::string> &vocab,
                    int maxLen, bool causal);

// The shape of the model assembleModel would build (cheap: no tensor is allocated).
ModelConfig modelConfig(const craft::Program &p, const std::vector<int> &order, size_t vocabSize, int maxLen,
                        bool causal);

// The number of parameters (every tensor's elements) of a model of this shape,
// saturating at INT64_MAX instead of overflowing.
int64_t parameterCount(const ModelConfig &c);

// Column of each residual direction in `order` (-1 where dropped).
std::vector<int> directionColumns(const craft::Program &p, const std::vector<int> &order);

} // namespace raspc
