// The weight file: one HDF5 file per compiled model, readable with h5py alone
// (docs/weights.md describes the format).
//
//   /embed.W_E, /pos_embed.W_pos, /blocks.{l}.attn.W_Q, ... /unembed.b_U
//       float32 datasets named and shaped as in TransformerLens
//   /metadata            group; attributes format_version, n_layers, d_model, n_heads,
//                        d_head, d_mlp, d_vocab, d_vocab_out, n_ctx, causal (ints),
//                        bos_id, pad_id, int_tokens (ints), output_name,
//                        output_encoding, source_name (strings)
//   /metadata/vocab, residual_labels, output_values   1-d UTF-8 strings
//   /metadata/source, ground_truth                     one UTF-8 string, shape [1]
//   /metadata/residual_basis   float32 [n_labels, d_model], only in a rotated or
//                              compressed model (backend/Variants.h)
//
// Every dataset is chunked with a fletcher32 checksum, which the reader requires; the
// attributes are checksummed by the HDF5 1.10 format's object headers.
// Strings (attributes too) are written fixed-length, NUL-padded: variable-length
// strings live in HDF5's global heap, which has no checksum, and libhdf5 crashes on a
// damaged one. Both kinds are read (each heap reference is checked first).
//
// Every error names the file, then the tensor, attribute or dataset at fault, e.g.
//   model.h5: tensor 'blocks.0.attn.W_Q' has shape [2, 10, 4], expected [2, 12, 4]
#pragma once
#include "backend/Model.h"
#include "support/Files.h"

#include <llvm/Support/Error.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace raspc {

// Writes `m` to `path` atomically under `rule` (support/Files.h: an existing file is
// replaced only with rule.force; an interrupted write never leaves a partial file at
// `path`). The model is validated first (validateModel); an invalid model is an error
// and nothing is written.
llvm::Error writeModel(const Model &m, const std::string &path, const files::OutputRule &rule = {});

// Reads and validates a weight file. Never crashes on malformed input: a missing,
// truncated or non-HDF5 file, a missing or mis-typed tensor or attribute, a wrong
// shape, a dataset without a checksum, a non-finite weight or inconsistent metadata is
// an llvm::StringError. A configuration of more than `maxParams` parameters is refused
// before any tensor is read.
llvm::Expected<Model> readModel(const std::string &path, int64_t maxParams = kDefaultMaxParams);
// The same from the bytes of a weight file in memory; `name` stands for the file name.
llvm::Expected<Model> readModelFromImage(std::string bytes, const std::string &name,
                                         int64_t maxParams = kDefaultMaxParams);

// The tensors a model with configuration `cfg` must have, with their TransformerLens
// shapes, in a fixed order (embed, pos_embed, blocks by layer, unembed).
std::vector<std::pair<std::string, std::vector<int64_t>>> expectedTensors(const ModelConfig &cfg);

// Checks that a model is complete and consistent: configuration ranges, every tensor of
// expectedTensors present with its shape (no other tensor), finite weights, the
// vocabulary (d_vocab entries, distinct, "<bos>" at bosId and "<pad>" at padId),
// residual labels (d_model of them), the output encoding and values, and the ground
// truth (distinct ids, args naming known ids, layers / heads / neuron ranges /
// directions in range, and, for a categorical node, one written direction per value
// other than None; one for a numerical node). Messages start with `what` (the file name).
llvm::Error validateModel(const Model &m, const std::string &what);

// "[2, 12, 4]"
std::string formatShape(const std::vector<int64_t> &shape);

// The ground truth as the JSON text stored in metadata/ground_truth, and back.
std::string groundTruthJson(const std::vector<NodeInfo> &nodes);
llvm::Expected<std::vector<NodeInfo>> parseGroundTruth(const std::string &json);

} // namespace raspc
