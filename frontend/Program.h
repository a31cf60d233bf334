// A RASP program with everything needed to run it: the sources, diagnostics, the
// graph and the evaluator that built it. The command line, the REPL, the tests and
// the fuzzer all go through this one entry point.
#pragma once
#include "frontend/Diagnostics.h"
#include "frontend/Evaluator.h"
#include "ir/Graph.h"
#include "semantics/Interpreter.h"

#include <llvm/Support/SourceMgr.h>

#include <optional>
#include <string>
#include <vector>

namespace raspc {

// Compile options a program may carry in a leading comment line:
//   # raspc: --vocab "1 2 3" --max-len 5 --sop sorted --causal
struct ProgramOptions {
  std::optional<std::vector<std::string>> vocab;
  std::optional<int> maxLen;
  std::optional<std::string> output;
  bool causal = false;
  // Fills the fields of `this` that are unset from `defaults`.
  void inheritFrom(const ProgramOptions &defaults);
};

class Program {
public:
  explicit Program(llvm::raw_ostream &diagOut = llvm::errs());

  // Loads the prelude, then runs the file / source text as the main program. False
  // when any error was reported.
  bool loadFile(const std::string &path);
  bool loadSource(llvm::StringRef source, llvm::StringRef name);

  // The options in the main file's header comment (errors reported, then nullopt).
  std::optional<ProgramOptions> headerOptions();
  // loadFile, then the options: `flags` (from the command line) over the header's.
  std::optional<ProgramOptions> loadFileWithOptions(const std::string &path, ProgramOptions flags);

  // The s-op named `name`, or the default output: the last s-op assigned at the top
  // level. Reports an error and returns nullopt when there is none.
  std::optional<ir::NodeId> resolveOutput(const std::optional<std::string> &name);

  // Splits an input string into tokens and checks them against the vocabulary and
  // maximum length; errors point into the input text. nullopt on error.
  std::optional<std::vector<std::string>> parseInput(const std::string &text, const ProgramOptions &opts);

  // Runs the interpreter on `tokens` for `roots`; reports runtime errors.
  bool interpret(Interpreter &interp, const std::vector<std::string> &tokens, const std::vector<ir::NodeId> &roots);
  InterpreterOptions interpreterOptions(const ProgramOptions &opts) const;

  llvm::SourceMgr &sourceMgr() { return sm_; }
  DiagnosticEngine &diags() { return diags_; }
  ir::Graph &graph() { return graph_; }
  Evaluator &evaluator() { return eval_; }
  unsigned mainBuffer() const { return mainBuffer_; }

private:
  bool start();
  llvm::SourceMgr sm_;
  DiagnosticEngine diags_;
  ir::Graph graph_;
  Evaluator eval_;
  unsigned mainBuffer_ = 0;
};

// Renderings of values for people (Python-like) and machines (JSON).
std::string formatSequence(const std::vector<Scalar> &v, bool json);
std::string formatSelectorRows(const SelectorValue &s, bool json, const std::string &indent);

// Splits a command-line style string: whitespace separates, double quotes group.
std::vector<std::string> splitArgs(llvm::StringRef text, std::string *error = nullptr);

// What is wrong with a vocabulary, or "" when nothing is: "'1' appears twice", or
// "'<bos>' is reserved (the runtime adds BOS and PAD itself)". Checked where the
// vocabulary is given (--vocab, the header), so that the error names that place.
std::string vocabularyProblem(const std::vector<std::string> &vocab);

} // namespace raspc
