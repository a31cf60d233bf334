// Subcommands of the raspc tool.
#pragma once
#include "backend/Model.h"
#include "frontend/Program.h"
#include "support/Files.h"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
class Validator;
}

namespace raspc::tools {

// Interactive loop: reads statements, shows each value on the example input.
int runRepl(const std::optional<std::string> &file, bool json = false, bool tokensAsStrings = false);

// Flags shared by the commands that read a RASP program.
struct ProgramFlags {
  std::string file;
  std::optional<std::string> output; // --sop
  std::optional<std::string> renamedOutput; // --output, the old spelling of --sop: an error
  std::optional<std::string> vocab;
  std::optional<int> maxLen;
  bool causal = false;
  std::optional<int64_t> maxParams; // compile, verify: refuse larger models (default kDefaultMaxParams)
};

// Loads f.file with the command-line options over its header's.
std::optional<ProgramOptions> loadProgram(Program &p, const ProgramFlags &f);

// One file a command writes: the flag that names it ("-o", "--plot", "--logits") and
// its path (nullopt: not asked for).
struct Output {
  std::string flag;
  std::optional<std::string> path;
};

// Checks a command's outputs before any work, under support/Files.h's rule: an empty
// name or two outputs naming one file is a usage error (returns 2), a refused output an
// error (returns 1); each is printed. 0: every output can be written.
int checkOutputs(const std::vector<Output> &outs, const files::OutputRule &rule);

// eval --inputs: the output s-op for each line of the file, one line (or JSON object) each.
int runEvalInputs(const ProgramFlags &f, const std::string &inputsFile, bool json);
// format: "hdf5" or "safetensors".
int runCompile(const ProgramFlags &f, const std::string &out, bool force, bool json, const std::string &format);
int runModel(const std::string &model, const std::optional<std::string> &input,
             const std::optional<std::string> &inputsFile, bool json, bool trace, const std::string &precision,
             const std::string &device, int batchSize, int64_t maxParams, int threads);
// circuitPairs: also run the circuit's intervention checks (runtime/Circuit.h) with
// that many input pairs.
int runVerify(const ProgramFlags &f, int samples, uint64_t seed, bool json, int threads,
              std::optional<int> circuitPairs = std::nullopt);
int runInspect(const std::string &model, bool json, int64_t maxParams);

// --seed: a non-negative integer (CLI11 would wrap "-1" around to 2^64 - 1).
CLI::Validator seedValidator();

// Adds `crate run` and `crate synth` (tools/Crate.cpp). After parsing, the returned
// function runs the crate command that was parsed and gives its exit code, or nullopt
// when no crate command was given.
std::function<std::optional<int>()> addCrateCommands(CLI::App &app);

// Adds `transform` (tools/Transform.cpp): a rotated or compressed variant of a model.
// After parsing, the returned function runs it and gives its exit code, or nullopt
// when it was not the command given.
std::function<std::optional<int>()> addTransformCommand(CLI::App &app);

// What each attention head computes or serves, by (layer, head): the node's label, with
// the helper's role in parentheses for a helper head ("x (BOS cleanup)").
std::map<std::pair<int, int>, std::string> headLabels(const Model &m);

// Adds `suite build | index | list` (tools/Suite.cpp); the returned function runs the
// one parsed, as addCrateCommands.
std::function<std::optional<int>()> addSuiteCommands(CLI::App &app);

// raspc show: attention patterns and decoded s-ops of a model on one input, as SVG or
// HTML (tools/Show.cpp).
int runShow(const std::string &model, const std::string &input, const std::string &out, bool force,
            int64_t maxParams);

} // namespace raspc::tools
