// libFuzzer target over the whole front end: the bytes are a RASP program, run
// through Program like `raspc eval --all` does (prelude, lexer, parser, evaluator,
// header options, output resolution), then the reference interpreter on a few short
// inputs. Errors are expected and ignored; only crashes, hangs, leaks and undefined
// behaviour count.
#include "frontend/Program.h"

#include <llvm/Support/raw_ostream.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#ifndef RASPC_FUZZ_LOAD_DIR
#define RASPC_FUZZ_LOAD_DIR "."
#endif

namespace {

// Interpreting costs O(nodes * n^2); a program that built a huge graph has already
// exercised the evaluator, and interpreting it would only make the run time out.
constexpr size_t kMaxInterpretedNodes = 5000;
// Steps run ~10x slower under the sanitizers: the evaluator's full budget would
// outlast libFuzzer's -timeout on programs that are merely long, not endless.
constexpr uint64_t kFuzzMaxSteps = 1'000'000;

void interpret(raspc::Program &p, const raspc::ProgramOptions &opts, const std::vector<raspc::ir::NodeId> &roots,
               const std::vector<std::string> &tokens, bool causal) {
  raspc::InterpreterOptions io = p.interpreterOptions(opts);
  io.causal = io.causal || causal;
  raspc::Interpreter interp(p.graph(), io);
  if (!p.interpret(interp, tokens, roots)) return;
  // Render the results as the command line does.
  for (raspc::ir::NodeId id : roots) {
    if (p.graph()[id].isSelector()) (void)raspc::formatSelectorRows(interp.selector(id), true, "");
    else (void)raspc::formatSequence(interp.sop(id), false);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::raw_null_ostream diagOut;
  raspc::Program p(diagOut);
  p.evaluator().maxSteps = kFuzzMaxSteps;
  // The program "lives" in examples/, so `load "sort";` and friends resolve.
  llvm::StringRef source(reinterpret_cast<const char *>(data), size);
  if (!p.loadSource(source, RASPC_FUZZ_LOAD_DIR "/fuzz-input.rasp")) return 0;

  std::optional<raspc::ProgramOptions> opts = p.headerOptions();
  if (!opts) return 0;
  std::optional<raspc::ir::NodeId> out = p.resolveOutput(opts->output);
  if (!out) return 0;
  if (p.graph().size() > kMaxInterpretedNodes) return 0;

  // The output and every s-op / selector named at the top level (as --all does).
  std::vector<raspc::ir::NodeId> roots{*out};
  for (const std::string &name : p.evaluator().topLevelNames()) {
    const raspc::Value *v = p.evaluator().lookup(name);
    if (v && (v->is(raspc::Value::SOp) || v->is(raspc::Value::Sel))) roots.push_back(v->node());
  }
  (void)p.graph().toDot({*out});

  // Short inputs: ints, strings, and the empty sequence; also the causal meaning.
  // The header's vocabulary and max length are not enforced: the interpreter must
  // cope with any input, and parseInput is exercised separately below.
  interpret(p, *opts, roots, {"1", "2", "3", "-2"}, false);
  interpret(p, *opts, roots, {"a", "b", "a"}, true);
  interpret(p, *opts, roots, {}, false);
  if (auto tokens = p.parseInput("3 1 2", *opts)) interpret(p, *opts, roots, *tokens, false);
  return 0;
}
