// Compiling a RASP file as `raspc compile` does, for the tests that need the model and
// the program together (compiler, circuits, variants).
#pragma once
#include "frontend/Program.h"
#include "passes/Compiler.h"

#include <llvm/Support/raw_ostream.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace raspc::test {

// A program, its options and its model (none when it did not compile: `diags` says why).
struct Built {
  std::string diags;
  llvm::raw_string_ostream os{diags};
  Program program{os};
  std::optional<Model> model;
  ir::NodeId output = 0;
  ProgramOptions opts;
  CompileStats stats;
};

// Flags over the file's header (unset: the header's).
struct BuildFlags {
  std::optional<std::vector<std::string>> vocab;
  std::optional<int> maxLen;
  bool causal = false;
  int64_t maxParams = kDefaultMaxParams;
};

inline std::unique_ptr<Built> buildFile(const std::string &path, const BuildFlags &f = {}) {
  auto b = std::make_unique<Built>();
  if (!b->program.loadFile(path)) return b;
  auto header = b->program.headerOptions();
  if (!header) return b;
  b->opts.vocab = f.vocab;
  b->opts.maxLen = f.maxLen;
  b->opts.causal = f.causal;
  b->opts.inheritFrom(*header);
  auto out = b->program.resolveOutput(b->opts.output);
  if (!out) return b;
  b->output = *out;
  CompileOptions co;
  co.vocab = *b->opts.vocab;
  co.maxLen = *b->opts.maxLen;
  co.causal = b->opts.causal;
  co.maxParams = f.maxParams;
  if (auto name = b->program.evaluator().lastSOpName()) co.outputName = *name;
  auto m = compileProgram(b->program.graph(), *out, co, b->program.sourceMgr(), &b->stats);
  if (!m) {
    b->program.diags().report(m.takeError());
    b->os.flush();
    return b;
  }
  b->model = std::move(*m);
  return b;
}

} // namespace raspc::test
