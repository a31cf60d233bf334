// Rotated and compressed variants of a compiled model, measured against it
// (backend/Variants.h transforms the weights; `raspc transform` and the suite builder
// call these).
//
// A measurement runs the original and the variant on the same inputs, every input of
// every length 1 .. max length when there are at most `maxInputs` of them, else a
// seeded sample of `maxInputs` (a length uniform in 1 .. max length, then uniform
// tokens), and counts the inputs whose decoded outputs agree (matchesInterpreter: the
// original is exact against the interpreter, so agreeing with it is exactness). The
// largest difference of any logit at any real position is reported too.
//
// A compression keeps the k principal axes of the residual states the model reaches
// (every row, BOS included, after the embedding and after every sublayer, on the fit
// inputs: the same inputs when exhaustive, else a sample of another seed, so that a
// sampled measurement is on inputs the compression did not see). States of a compiled
// model span fewer dimensions than it has labels (a categorical s-op's one-hot
// directions sum to the `one` direction, ...): down to that span the compressed model
// is exact, below it features overlap and the outputs degrade, which the measurement
// states (accuracy is measured, never assumed).
#pragma once
#include "backend/Model.h"

#include <llvm/Support/Error.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace raspc {

struct VariantOptions {
  uint64_t seed = 1;         // of the basis and of the sampled inputs
  uint64_t maxInputs = 2000; // exhaustive up to this many inputs, else a sample of this many
  // Called after each batch of each measurement: inputs done and in all, with the
  // width being measured (the suite shows a bar from it). May be empty.
  std::function<void(uint64_t done, uint64_t total, int dModel)> progress;
};

// One measurement of a variant against the model it was made from.
struct VariantMeasurement {
  int dModel = 0;           // the variant's residual width
  uint64_t inputs = 0;      // inputs run
  uint64_t exactInputs = 0; // of which every position decoded as the original's
  double accuracy = 0;      // exactInputs / inputs (1 when there are no inputs)
  double maxLogitError = 0; // max |logit_variant - logit_original| over real positions
  bool exact() const { return exactInputs == inputs; }
};

// What `raspc transform` prints and suite/*/checks.json's "variants" record.
struct VariantReport {
  std::string kind;       // "rotated" | "compressed"
  int fromDModel = 0;     // the original's residual width
  int labels = 0;         // residual labels (features): the original's n_labels
  int span = 0;           // compressed: dimensions the fit inputs' residual states span
  uint64_t fitInputs = 0; // compressed: inputs whose states chose the axes
  uint64_t seed = 1;
  bool exhaustive = false;   // the inputs are every input up to the maximum length
  VariantMeasurement result; // of the variant written
  // Compression with a search (--compress auto): every width tried, in order, and the
  // next smaller width than the result (its measurement), when one was tried.
  bool searched = false;
  std::vector<VariantMeasurement> tried;
  std::optional<VariantMeasurement> nextSmaller;

  // {"kind", "from_d_model", "d_model", "labels", "inputs", "exhaustive",
  //  "exact_inputs", "accuracy", "exact", "max_logit_error", "seed"[, "span",
  //  "fit_inputs" (compressed)][, "search":
  //  {"tried": [{"d_model", "inputs", "exact_inputs", "accuracy", "max_logit_error"}],
  //   "next_smaller": {...} | null}]}
  std::string json() const;
  // Human lines, e.g. "compressed: d_model 23 -> 17 (of 23 labels): exact on all 363 inputs (...)".
  std::string text() const;
};

struct Variant {
  Model model;
  VariantReport report;
};

// The inputs a measurement runs (see above); `exhaustive` says which kind.
std::vector<std::vector<std::string>> variantInputs(const Model &m, uint64_t maxInputs, uint64_t seed,
                                                    bool &exhaustive);

// Measures `variant` against `original` on `inputs` (both models are validated and run
// on the CPU in float32, as `raspc run` runs them).
llvm::Expected<VariantMeasurement> measureVariant(const Model &original, const Model &variant,
                                                  const std::vector<std::vector<std::string>> &inputs,
                                                  const VariantOptions &opts = {});

// The rotated model (rotateModel with opts.seed) and its measurement.
llvm::Expected<Variant> makeRotated(const Model &m, const VariantOptions &opts = {});

// The principal axes of the residual states of `m` on `inputs` (see above): `columns`
// [d_model, d_model] row-major, orthonormal columns by decreasing second moment
// `moments`; `span` counts the moments above 1e-9 of the largest.
struct ResidualAxes {
  int d = 0;
  std::vector<double> columns, moments;
  int span = 0;
};
llvm::Expected<ResidualAxes> residualAxes(const Model &m, const std::vector<std::vector<std::string>> &inputs);

// `m` compressed onto the first k axes (1 <= k <= d_model), randomly rotated within them
// (subspaceMap with `seed`).
llvm::Expected<Model> compressModel(const Model &m, const ResidualAxes &axes, int k, uint64_t seed);

// The model compressed to k dimensions (1 <= k < d_model) and its measurement, exact or
// not.
llvm::Expected<Variant> makeCompressed(const Model &m, int k, const VariantOptions &opts = {});

// The smallest compression found exact on the inputs: a bisection over k in
// [1, d_model - 1] (the axes are nested, so exactness is taken to hold from the
// smallest exact width up; every width tried is reported), then a measurement of
// k - 1 if the bisection did not make one. When not even d_model - 1 dimensions are
// exact, the result is d_model - 1 with its accuracy (< 1): stated, never hidden. A
// model with d_model 1 cannot be compressed (an error).
llvm::Expected<Variant> searchCompression(const Model &m, const VariantOptions &opts = {});

} // namespace raspc
