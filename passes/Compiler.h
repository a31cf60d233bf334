// The RASP compiler: from the graph of a program to the weights of a transformer.
//
//   ValueSets -> Encodings -> Fusion -> Lower (craft IR) -> Allocate -> Layout -> Assemble
//
// Each pass lives in its own file of this folder; Passes.h declares them.
// AggregateCheck runs between ValueSets and Fusion.
#pragma once
#include "backend/Model.h"
#include "ir/Graph.h"

#include <llvm/Support/Error.h>
#include <llvm/Support/SourceMgr.h>

#include <functional>
#include <string>
#include <vector>

namespace raspc {

struct CompileOptions {
  std::vector<std::string> vocab; // input vocabulary (without BOS / PAD)
  int maxLen = 0;                 // maximum input length N
  bool causal = false;            // compile the causal meaning (masked attention)
  int64_t maxParams = kDefaultMaxParams; // refuse a larger model (--max-params)
  std::string outputName;         // name recorded in the model
  std::string source, sourceName; // the program text, for the metadata
  // Called for each warning (location, message), e.g. selects that look ahead under
  // --causal.
  std::function<void(llvm::SMLoc, const std::string &)> warn;
};

struct CompileStats {
  int layers = 0, heads = 0, residual = 0, mlpWidth = 0;
  int headsPerLayer = 0; // the most heads in one layer (n_heads)
  int64_t parameters = 0;
};

// Compiles the s-op `output` of `g`. Errors are LocatedErrors at the RASP expression
// that cannot be compiled, saying why.
llvm::Expected<Model> compileProgram(const ir::Graph &g, ir::NodeId output, const CompileOptions &opts,
                                     const llvm::SourceMgr &sm, CompileStats *stats = nullptr);

} // namespace raspc
