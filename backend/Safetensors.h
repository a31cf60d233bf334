// A compiled model as one safetensors file, for PyTorch and TransformerLens users
// (docs/weights.md, "The safetensors file"). The layout is the safetensors format:
//
//   8 bytes   N, the header's length, little-endian uint64
//   N bytes   a JSON object: for each tensor {"dtype": "F32", "shape": [...],
//             "data_offsets": [begin, end]} under its TransformerLens name, and
//             "__metadata__", a map of strings (below); padded with spaces to 8 bytes
//   the data  every tensor's float32 values, little-endian, row-major, back to back in
//             the order of expectedTensors (offsets count from the end of the header)
//
// The tensors are the HDF5 file's, bit for bit. "__metadata__" carries what the HDF5
// file's metadata group carries, one key per attribute or dataset, every value a
// string (the format allows only strings): integers in decimal, strings as they are,
// and vocab, residual_labels, output_values and ground_truth as JSON arrays; plus
// "hooked_transformer_config", a JSON object of HookedTransformerConfig arguments, and,
// in a rotated or compressed model, "residual_basis" as a JSON array of rows (kept out
// of the tensors, which load strictly into TransformerLens).
#pragma once
#include "backend/Model.h"
#include "support/Files.h"

#include <llvm/Support/Error.h>

#include <map>
#include <string>

namespace raspc {

// The arguments of transformer_lens.HookedTransformerConfig for `m`, as a JSON object
// (the value of "hooked_transformer_config").
std::string hookedTransformerConfigJson(const Model &m);

// The "__metadata__" map of `m`'s file.
std::map<std::string, std::string> safetensorsMetadata(const Model &m);

// The bytes of `m`'s safetensors file. The model is validated first (validateModel:
// errors start with `what`); a metadata string that is not valid UTF-8 (safetensors
// readers require UTF-8 JSON) is an error naming its key.
llvm::Expected<std::string> safetensorsBytes(const Model &m, const std::string &what);

// Writes `m` to `path` under `rule` (support/Files.h: atomically, an existing file
// replaced only with rule.force, never an input).
llvm::Error writeSafetensors(const Model &m, const std::string &path, const files::OutputRule &rule = {});

} // namespace raspc
