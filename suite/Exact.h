// The exactness check of a compiled model against the RASP interpreter: `raspc verify`
// and every model of `raspc suite build` run this one check.
//
// Every input of every length 1..max_len when there are at most a million of them
// (exhaustive), else `samples` random inputs (uniform length, uniform tokens, from
// `seed`). Each decoded output must match the interpreter's (matchesInterpreter). An
// input the interpreter rejects (e.g. averaging strings) has no answer to match: it is
// counted and reported, never skipped silently.
#pragma once
#include "backend/Model.h"
#include "frontend/Program.h"
#include "runtime/Executor.h"

#include <llvm/Support/Error.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace raspc {

struct ExactOptions {
  int samples = 2000; // random inputs when the exhaustive check is too large
  uint64_t seed = 1;
  // Called after each batch with the inputs checked so far and the total.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct ExactMismatch {
  std::vector<std::string> input;
  std::vector<Scalar> want, got;
  // "  first difference: 'x' (map, layer 0 mlp) at f.rasp:3:5: interpreter [...], model [...]",
  // or "" when every traced s-op matches.
  std::string firstDifference;
};

struct ExactResult {
  uint64_t inputs = 0, mismatches = 0, rejected = 0;
  bool exhaustive = true;
  std::optional<ExactMismatch> firstMismatch;
  std::string rejectedInput, rejectedError; // the first input the interpreter rejects
  double seconds = 0;

  uint64_t equal() const { return inputs - mismatches - rejected; }
  bool exact() const { return mismatches == 0 && rejected == 0; }
  // {"inputs": N, "equal": N, "exhaustive": true, "mismatches": 0, "rejected": 0}
  std::string json() const;
  // "mismatch on input "1 2"\n  interpreter: [...]\n  model:       [...]\n" plus the first
  // difference; "" when there is none.
  std::string describeMismatch() const;
};

// Checks `model` (compiled from `output` of `p` under `opts`) with `exec`, an executor
// of that model. Errors: the executor failed on an input.
llvm::Expected<ExactResult> checkExact(Program &p, const Model &model, ir::NodeId output,
                                       const ProgramOptions &opts, Executor &exec, const ExactOptions &eo = {});

} // namespace raspc
