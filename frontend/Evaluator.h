// The host evaluator: runs RASP statements. Host values are computed eagerly
// (loops and comprehensions unroll); s-op and selector expressions add nodes to an
// ir::Graph. Errors are reported through the DiagnosticEngine at their location;
// a failing statement poisons the names it would have assigned and evaluation goes
// on, so independent errors are all reported.
#pragma once
#include "frontend/AST.h"
#include "frontend/Diagnostics.h"
#include "frontend/Value.h"
#include "ir/Graph.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace raspc {

struct Env {
  std::unordered_map<std::string, Value> vars;
  std::vector<std::string> order; // names in first-assignment order (statements only)
  Env *parent = nullptr;
  const Value *lookup(const std::string &name) const;
};

class Evaluator {
public:
  Evaluator(DiagnosticEngine &diags, ir::Graph &graph);
  ~Evaluator();

  // Runs the built-in standard library. Called once before the main program.
  bool loadPrelude();
  // Reads and runs FILE as the main program. False if any error was reported.
  // `bufferId` receives the file's buffer (0 when it could not be read).
  bool runFile(const std::string &path, unsigned *bufferId = nullptr);
  // Runs a buffer already added to the SourceMgr as (more of) the main program; the
  // REPL calls this once per input chunk.
  bool runBuffer(unsigned bufferId);

  // Called after every top-level statement of the main program that produced a
  // value: expression statements (name empty) and assignments (one call per name).
  std::function<void(const std::string &name, const Value &value)> onTopLevel;

  // The state the original REPL's statements set (`set example`, `examples off`, ...),
  // in the REPL and in files alike. The example is kept as input tokens; `intExample`
  // says whether they are ints (an example given as a list of ints) or strings (a text).
  struct ReplState {
    std::vector<std::string> example = {"h", "e", "l", "l", "o"};
    bool intExample = false;
    bool showSOpExamples = true, showSelectorExamples = true;
    bool fullSeqDisplay = false;
    bool exitRequested = false; // `exit` / `quit`: the REPL stops, a file stops running
  } repl;
  // Binds `tokens` to `tokens_str`, as the original RASP does (`raspc repl
  // --tokens-as-strings`); by default `tokens` is typed by the input.
  void bindTokensAsStrings();
  // A name whose definition failed is an error at each use (the REPL, where each input
  // stands alone), not silently skipped (files, where the failure was just reported).
  bool reportPoisonUse = false;
  // Called after a `load` at the top level of the main program, with the public names
  // the loaded file defined, in the order it first assigned them (the REPL prints them).
  std::function<void(const std::vector<std::pair<std::string, Value>> &)> onLoad;
  // Called after each REPL statement of the main program ran (the REPL prints).
  std::function<void(const ast::Stmt &)> onRepl;

  // Names assigned at the top level of the main program, in first-assignment order.
  const std::vector<std::string> &topLevelNames() const { return topNames_; }
  // The name of the last s-op assigned at the top level, if any.
  const std::optional<std::string> &lastSOpName() const { return lastSOp_; }
  // Looks a name up in the main program's scope (and the prelude / builtins).
  const Value *lookup(const std::string &name) const { return mainEnv_->lookup(name); }

  ir::Graph &graph() { return graph_; }
  DiagnosticEngine &diags() { return diags_; }

  static constexpr uint64_t kMaxSteps = 20'000'000;      // expressions evaluated
  static constexpr unsigned kMaxCallDepth = 400;          // nested function calls
  static constexpr size_t kMaxCollection = 1'000'000;      // list/dict/string length
  static constexpr size_t kMaxStackBytes = 3u << 20;      // evaluator stack use
  // The step limit in force; the fuzzer lowers it, as sanitizers make steps slow.
  uint64_t maxSteps = kMaxSteps;

private:
  friend class EvalImpl;
  DiagnosticEngine &diags_;
  ir::Graph &graph_;
  std::vector<std::unique_ptr<Env>> envs_;           // every scope ever made
  std::vector<std::unique_ptr<ast::Module>> modules_; // keeps function bodies alive
  Env *builtinEnv_;
  Env *mainEnv_;
  std::map<std::string, Env *> loaded_; // path -> module scope (nullptr while loading)
  std::vector<std::string> topNames_;
  std::optional<std::string> lastSOp_;
  // The prelude's text: nodes built there are located at the user's call instead.
  const char *preludeBegin_ = nullptr, *preludeEnd_ = nullptr;
  // Call sites in the user's files of the calls now running, innermost last.
  std::vector<llvm::SMLoc> userCalls_;
  uint64_t steps_ = 0;
  Env *newEnv(Env *parent);
  bool runModule(unsigned bufferId, Env *env, bool isMain);
};

} // namespace raspc
