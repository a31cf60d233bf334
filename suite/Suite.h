// The ground-truth suite (docs/suite.md): curated RASP programs, embedded into this
// library at build time from suite/programs/*.rasp, compiled into a folder of models
// with their weights, encoders, ground truth, checks and a card each, and indexed.
//
//   DIR/index.json, index.csv, README.md
//   DIR/models/<name>/program.rasp, model.h5, model.safetensors, tl_config.json,
//       encoders.json, ground_truth.json, checks.json, card.md, summary.json
//
// A suite program starts with header comment lines:
//   # raspc: --vocab "1 2 3" --max-len 5          (and --causal for causal programs)
//   # description: sort the tokens ascending, ties broken by position
//   # category: classic
//   # difficulty: medium
#pragma once
#include <llvm/Support/Error.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace raspc::suite {

// The categories and difficulties a suite program may declare.
const std::vector<std::string> &categories();
const std::vector<std::string> &difficulties();

struct SuiteProgram {
  std::string name;     // [a-z0-9_]+: the folder under models/
  std::string fileName; // "classic_sort.rasp" (embedded) or the user's path
  std::string source;
  std::string description, category, difficulty;
};

// Reads the description / category / difficulty header lines of `source` (the leading
// block of '#' lines). `strict` (the curated programs): each must be there, once, with
// a known value; errors read "FILE:LINE: ..." ("FILE:1: no '# category:' header line").
// Not strict (a user's programs): missing lines give description "", category "user",
// difficulty ""; lines that are there are still checked.
llvm::Expected<SuiteProgram> parseProgram(const std::string &name, const std::string &fileName,
                                          const std::string &source, bool strict);

// Every embedded program, parsed strictly, sorted by name.
llvm::Expected<std::vector<SuiteProgram>> embeddedPrograms();

// The programs `pattern` selects: none given, every embedded program; a pattern with a
// '/' or ending in ".rasp", the user's files it matches (a filesystem glob; each file's
// name without ".rasp" is its model's name); otherwise the embedded programs whose
// names match it (fnmatch, e.g. "classic_*"). Matching nothing is an error.
llvm::Expected<std::vector<SuiteProgram>> selectPrograms(const std::optional<std::string> &pattern);

struct BuildOptions {
  std::string dir;
  std::optional<std::string> programs; // the pattern of selectPrograms
  int jobs = 0;                        // worker threads; 0: one per core
  int shardIndex = 1, shardCount = 1;  // build programs shardIndex, shardIndex + shardCount, ... (1-based)
  bool force = false;                  // rebuild models whose folders exist
  int samples = 2000;                  // exactness check: random inputs when not exhaustive
  uint64_t seed = 1;
};

// The line of the index for one model (its summary.json).
struct ModelSummary {
  std::string name, description, category, difficulty;
  bool causal = false;
  std::vector<std::string> vocab; // without BOS and PAD
  int maxLen = -1;
  // Sizes: -1 when the model was not compiled.
  int nLayers = -1, dModel = -1, nHeads = -1, dMlp = -1, nodes = -1;
  int64_t params = -1;
  bool exact = false;
  // Interventions (checks.json "interventions"): nodes checked (interchange or pattern)
  // and of those passing both their interchange and cone checks; circuit edges at
  // head/MLP granularity and of those necessary on some pair. -1: not run.
  int nodesChecked = -1, nodesPassed = -1, edges = -1, edgesNecessary = -1;
  // Variants: the rotated model decodes as this one on the measured inputs; the
  // compressed model's width and whether it is exact there. -1 / false: none.
  int compressedDModel = -1;
  bool rotatedExact = false, compressedExact = false;
  std::string path; // "models/<name>", relative to the suite folder
  std::string status = "ok"; // "ok" | "failed"
  std::string error;         // why it failed
  double seconds = 0;        // time to build it

  std::string json() const;
  static llvm::Expected<ModelSummary> fromJson(const std::string &text, const std::string &what);
};

struct BuildResult {
  std::vector<ModelSummary> built; // this run's models, in build order
  std::string indexJson;           // the whole index after the build
  int failed() const;
};

// Called once per model, from the worker that built it (one at a time), with the
// models finished so far and the total of this run.
using ModelDone = std::function<void(const ModelSummary &, size_t done, size_t total)>;

// Builds the selected programs' models in parallel (each model independent), then
// writes the index over every model in the folder. Errors (nothing built): a bad
// pattern or shard, an unreadable program, a model folder that exists without `force`
// ("DIR/models/x exists; pass --force to rebuild it"). A model that fails to compile or
// is not exact is not an error here: its summary says so (status "failed").
llvm::Expected<BuildResult> build(const BuildOptions &opts, const ModelDone &done = {});

// Writes DIR/index.json, index.csv and README.md from every DIR/models/*/summary.json;
// returns the index.json text.
llvm::Expected<std::string> writeIndex(const std::string &dir);

// The embedded programs as JSON: [{"name", "description", "category", "difficulty",
// "vocab", "max_len", "causal"}, ...].
llvm::Expected<std::string> listJson();

} // namespace raspc::suite
