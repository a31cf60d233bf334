// Rotated and compressed variants of a compiled model: one change of the residual
// stream's basis (docs/weights.md, "The residual basis").
//
// A map T [d_model, d_new] of the residual stream (x -> x T) is applied to the weights
// so that the new model computes x T wherever the old one computed x:
//   writers  W_E T, W_pos T, W_O[h] T, b_O T, W_out T, b_out T
//   readers  T^T W_Q[h], T^T W_K[h], T^T W_V[h], T^T W_in, T^T W_U
// and the residual basis B [n_labels, d_model] becomes B T (the identity's is T), so
// that the ground truth (whose reads and writes index labels) still reads x B^T.
// Rotation: T a seeded random orthogonal matrix (d_new = d_model): the outputs are those
// of the original up to float32 rounding. Compression: T = V R, V orthonormal columns
// spanning k < d_model dimensions (runtime/VariantCheck.h chooses them from the
// residual states the model reaches) and R a random k x k rotation: a reader then sees
// x V V^T, which is x exactly when x lies in V's span, and what the loss costs
// otherwise is measured there.
#pragma once
#include "backend/Model.h"

#include <llvm/Support/Error.h>

#include <cstdint>
#include <string>
#include <vector>

namespace raspc {

// A random orthogonal n x n matrix, row-major, in double: the Q of the QR
// decomposition of a matrix of standard normal entries with R's diagonal positive
// (Haar-distributed). Depends only on (n, seed), on every platform: the normals come
// from std::mt19937_64 through Box-Muller, not from std::normal_distribution, whose
// algorithm the standard leaves to each library.
std::vector<double> randomOrthogonal(int n, uint64_t seed);

// The map of a rotation: randomOrthogonal(d, seed) as float32 [d, d].
Tensor rotationMap(int d, uint64_t seed);

// The map of a compression onto the span of k orthonormal columns: V R, with V the
// first k columns of `columns` (row-major [d, >= k], orthonormal columns) and R =
// randomOrthogonal(k, seed), so that no label keeps an axis of its own. float32 [d, k].
Tensor subspaceMap(const std::vector<double> &columns, int d, int cols, int k, uint64_t seed);

// The model whose residual stream is x T (T: float32 [m.cfg.d_model, d_new], d_new >=
// 1, finite): every weight changed as above (computed in double, stored in float32),
// d_model = d_new, and the residual basis composed with T. Labels, ground truth and
// everything else are kept. Errors: a map of the wrong shape or with a non-finite value.
llvm::Expected<Model> transformResidual(const Model &m, const Tensor &map);

// transformResidual with rotationMap(d_model, seed).
llvm::Expected<Model> rotateModel(const Model &m, uint64_t seed);

// The residual vector [d_model] of label `label` (an index of residualLabels, as the
// ground truth's reads and writes are): its row of the basis, or the one-hot direction
// without one. Where a probe for a node's value should look in a variant. Empty when
// out of range.
std::vector<float> labelVector(const Model &m, int label);

// What the basis makes of the model: "" (none: one-hot labels), "rotated" (as many
// dimensions as labels) or "compressed" (fewer dimensions than labels).
std::string residualBasisKind(const Model &m);

} // namespace raspc
