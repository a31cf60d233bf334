// raspc: the RASP toolchain's command line.
#include "backend/Model.h"
#include "frontend/Program.h"
#include "tools/Commands.h"

#include <CLI/CLI.hpp>
#include <llvm/Support/raw_ostream.h>

#include <iostream>
#include <new>
#include <stdexcept>

using namespace raspc;

namespace {

using CommonFlags = tools::ProgramFlags;

void addProgramFlags(CLI::App *cmd, CommonFlags &f) {
  cmd->add_option("FILE", f.file, "RASP program")->required();
  cmd->add_option("--sop", f.output, "the s-op to show or compile (default: the last s-op assigned at top level)");
  // The old spelling, so that it gets a clear error rather than CLI11's "not expected".
  cmd->add_option("--output", f.renamedOutput)->group("");
  cmd->add_option("--vocab", f.vocab, "vocabulary, tokens separated by spaces (default: from the file header)")
      ->check(CLI::Validator([](std::string &v) { return vocabularyProblem(splitArgs(v)); }, "TOKENS"));
  cmd->add_option("--max-len", f.maxLen, "maximum input length (default: from the file header)")
      ->check(CLI::Range(1, 100000));
  cmd->add_flag("--causal", f.causal, "causal meaning: selectors see only keys at or before the query");
}

// One limit for the models compile writes and run / inspect read.
void addMaxParams(CLI::App *cmd, std::optional<int64_t> &maxParams) {
  cmd->add_option("--max-params", maxParams,
                  "refuse a model with more parameters (default " + std::to_string(kDefaultMaxParams) + ")")
      ->check(CLI::Range(int64_t(1), INT64_MAX));
}

int runEval(const CommonFlags &f, const std::string &input, bool json, bool all) {
  Program p;
  auto opts = tools::loadProgram(p, f);
  if (!opts) return 1;
  auto tokens = p.parseInput(input, *opts);
  if (!tokens) return 1;
  Interpreter interp(p.graph(), p.interpreterOptions(*opts));
  if (!all) {
    auto out = p.resolveOutput(opts->output);
    if (!out) return 1;
    if (!p.interpret(interp, *tokens, {*out})) return 1;
    std::string name = opts->output ? *opts->output : *p.evaluator().lastSOpName();
    if (json)
      std::cout << "{\"output\": \"" << jsonEscape(name) << "\", \"value\": " << formatSequence(interp.sop(*out), true)
                << "}\n";
    else
      std::cout << formatSequence(interp.sop(*out), false) << "\n";
    return 0;
  }
  std::vector<std::pair<std::string, Value>> named;
  std::vector<ir::NodeId> roots;
  for (auto &name : p.evaluator().topLevelNames()) {
    const Value *v = p.evaluator().lookup(name);
    if (v && (v->is(Value::SOp) || v->is(Value::Sel))) {
      named.emplace_back(name, *v);
      roots.push_back(v->node());
    }
  }
  // A selector prints as an n x n matrix: only for inputs short enough to read.
  constexpr size_t kMaxSelectorPrint = 1000;
  for (auto &[name, v] : named)
    if (v.is(Value::Sel) && tokens->size() > kMaxSelectorPrint) {
      std::cerr << "raspc: error: --all prints selectors as matrices, for inputs of at most " << kMaxSelectorPrint
                << " tokens (this one has " << tokens->size() << "); print an s-op with --sop NAME\n";
      return 1;
    }
  if (!p.interpret(interp, *tokens, roots)) return 1;
  std::string out = json ? "{\"values\": {" : "";
  for (size_t i = 0; i < named.size(); ++i) {
    auto &[name, v] = named[i];
    if (json) {
      out += (i ? ", \"" : "\"") + jsonEscape(name) + "\": " +
             (v.is(Value::SOp) ? formatSequence(interp.sop(v.node()), true)
                               : formatSelectorRows(interp.selector(v.node()), true, ""));
    } else if (v.is(Value::SOp)) {
      out += name + " = " + formatSequence(interp.sop(v.node()), false) + "\n";
    } else {
      out += name + " =\n" + formatSelectorRows(interp.selector(v.node()), false, "  ");
    }
  }
  std::cout << out << (json ? "}}\n" : "");
  return 0;
}

int runGraph(const CommonFlags &f) {
  Program p;
  auto opts = tools::loadProgram(p, f);
  if (!opts) return 1;
  auto out = p.resolveOutput(opts->output);
  if (!out) return 1;
  std::cout << p.graph().toDot({*out});
  return 0;
}

// The first word that is not a flag must name a subcommand of `app` (and so on down
// the tree): CLI11 would only say "A subcommand is required". Usage error (exit 2).
bool checkCommandNames(CLI::App &app, int argc, char **argv) {
  CLI::App *at = &app;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.empty() || a[0] == '-') continue; // the tree's levels take no options with values
    auto subs = at->get_subcommands([](CLI::App *) { return true; });
    if (subs.empty()) return true;
    CLI::App *next = nullptr;
    std::string names;
    for (CLI::App *s : subs) {
      if (s->get_name() == a) next = s;
      names += (names.empty() ? "" : ", ") + s->get_name();
    }
    if (!next) {
      std::cerr << "raspc: error: unknown command '" << path << a << "' (" << (path.empty() ? "" : path)
                << "commands: " << names << ")\n";
      return false;
    }
    path += a + " ";
    at = next;
  }
  return true;
}

} // namespace

static int realMain(int argc, char **argv) {
  CLI::App app{"raspc: compile RASP programs into transformer weights, and run them"};
  app.set_version_flag("--version", std::string("raspc 0.1.0"));
  app.require_subcommand(1);

  CommonFlags evalFlags;
  std::string input;
  bool json = false, all = false;
  auto *eval = app.add_subcommand("eval", "evaluate a RASP program on an input with the reference interpreter");
  addProgramFlags(eval, evalFlags);
  std::optional<std::string> evalInputs;
  auto *evalIn = eval->add_option("--input", input, "input tokens separated by spaces, e.g. \"3 1 2 2\"");
  eval->add_option("--inputs", evalInputs, "a file with one input sequence per line (one output line each)")
      ->excludes(evalIn);
  eval->add_flag("--json", json, "print {\"output\": NAME, \"value\": [...]}");
  eval->add_flag("--all", all, "print every named top-level s-op and selector");

  CommonFlags graphFlags;
  auto *graph = app.add_subcommand("graph", "print the computation graph of the output as Graphviz DOT");
  addProgramFlags(graph, graphFlags);

  std::optional<std::string> replFile;
  auto *repl = app.add_subcommand("repl", "interactive RASP: statements, values shown on an example input");
  repl->add_option("FILE", replFile, "a program to load first");
  bool replJson = false;
  repl->add_flag("--json", replJson,
                 "one JSON object per statement read (its input lines and what it printed); no prompts");
  bool replStrTokens = false;
  repl->add_flag("--tokens-as-strings", replStrTokens,
                 "`tokens` is `tokens_str`, as in the original RASP (by default it is typed by the example)");

  CommonFlags compileFlags;
  std::string compileOut, compileFormat = "hdf5";
  bool force = false, compileJson = false;
  auto *compile = app.add_subcommand("compile", "compile a RASP program into transformer weights (HDF5 or safetensors)");
  addProgramFlags(compile, compileFlags);
  addMaxParams(compile, compileFlags.maxParams);
  compile->add_option("-o,--out", compileOut, "the weight file to write, e.g. sort.h5")->required();
  compile->add_option("--format", compileFormat, "hdf5 (default) or safetensors (docs/weights.md)")
      ->check(CLI::IsMember({"hdf5", "safetensors"}));
  compile->add_flag("--force", force, "overwrite an existing file");
  compile->add_flag("--json", compileJson, "print the summary as JSON");

  std::string modelFile, precision = "f32", device = "cpu";
  std::optional<std::string> runInput, runInputs;
  bool runJson = false, runTrace = false;
  int runBatch = 256, runThreads = 0, verifyThreads = 0;
  auto *run = app.add_subcommand("run", "run a compiled model on inputs (CPU or CUDA GPU)");
  run->add_option("MODEL", modelFile, "compiled model (.h5)")->required();
  auto *inOpt = run->add_option("--input", runInput, "input tokens separated by spaces");
  run->add_option("--inputs", runInputs, "a file with one input sequence per line")->excludes(inOpt);
  run->add_option("--batch", runBatch, "with --inputs: sequences run together, which bounds memory (default 256)")
      ->check(CLI::Range(1, 1 << 16));
  run->add_flag("--json", runJson, "print {\"value\": [...]} (one object per line)");
  run->add_flag("--trace", runTrace, "print every s-op decoded from the residual stream after each sublayer");
  run->add_option("--precision", precision, "f32 (default) or f64 (CPU only)")->check(CLI::IsMember({"f32", "f64"}));
  run->add_option("--device", device, "cpu (default) or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  run->add_option("--threads", runThreads, "CPU threads for the forward pass (default 0: one per core)")
      ->check(CLI::Range(0, 1024));
  std::optional<int64_t> runMaxParams, inspectMaxParams;
  addMaxParams(run, runMaxParams);

  CommonFlags verifyFlags;
  int samples = 2000;
  uint64_t seed = 1;
  bool verifyJson = false;
  auto *verify = app.add_subcommand("verify", "compile, then check the model against the interpreter");
  addProgramFlags(verify, verifyFlags);
  addMaxParams(verify, verifyFlags.maxParams);
  verify->add_option("--samples", samples, "random inputs when exhaustive checking is too large (default 2000)")
      ->check(CLI::Range(1, 100000000));
  verify->add_option("--seed", seed, "random seed (default 1)")->check(tools::seedValidator());
  verify->add_flag("--json", verifyJson, "print the result as JSON");
  verify->add_option("--threads", verifyThreads, "CPU threads for the forward pass (default 0: one per core)")
      ->check(CLI::Range(0, 1024));
  bool verifyCircuit = false;
  int circuitPairs = 32;
  auto *circuitFlag =
      verify->add_flag("--circuit", verifyCircuit, "also check the circuit by interventions (docs/runtime.md)");
  verify->add_option("--pairs", circuitPairs, "input pairs per node, component and edge for --circuit (default 32)")
      ->check(CLI::Range(1, 1000000))
      ->needs(circuitFlag);

  std::string inspectFile;
  bool inspectJson = false;
  auto *inspect = app.add_subcommand("inspect", "show a compiled model: layers, heads, neurons, residual");
  inspect->add_option("MODEL", inspectFile, "compiled model (.h5)")->required();
  inspect->add_flag("--json", inspectJson, "print JSON");
  addMaxParams(inspect, inspectMaxParams);

  auto crate = tools::addCrateCommands(app);
  auto transform = tools::addTransformCommand(app);
  auto suite = tools::addSuiteCommands(app);

  std::string showModel, showInput, showOut;
  bool showForce = false;
  std::optional<int64_t> showMaxParams;
  auto *show = app.add_subcommand("show", "draw a model's attention patterns and decoded s-ops on an input (SVG or HTML)");
  show->add_option("MODEL", showModel, "compiled model (.h5)")->required();
  show->add_option("--input", showInput, "input tokens separated by spaces")->required();
  show->add_option("-o,--out", showOut, "the picture to write: x.svg, or x.html (the SVG and tables)")->required();
  show->add_flag("--force", showForce, "overwrite an existing file");
  addMaxParams(show, showMaxParams);

  if (!checkCommandNames(app, argc, argv)) return 2;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp &e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    app.exit(e);
    return 2;
  }
  for (auto *f : {&evalFlags, &graphFlags, &compileFlags, &verifyFlags})
    if (f->renamedOutput) {
      std::cerr << "raspc: error: --output is now --sop NAME (the s-op to show or compile); "
                   "the file a command writes is -o/--out\n";
      return 2;
    }
  if (eval->parsed()) {
    if (evalInputs) {
      if (all) {
        std::cerr << "raspc: error: --all prints one input's s-ops; give it with --input\n";
        return 2;
      }
      return tools::runEvalInputs(evalFlags, *evalInputs, json);
    }
    if (evalIn->count() == 0) {
      std::cerr << "raspc eval: give --input \"...\" or --inputs FILE\n";
      return 2;
    }
    return runEval(evalFlags, input, json, all);
  }
  if (graph->parsed()) return runGraph(graphFlags);
  if (repl->parsed()) return tools::runRepl(replFile, replJson, replStrTokens);
  if (compile->parsed()) return tools::runCompile(compileFlags, compileOut, force, compileJson, compileFormat);
  if (run->parsed()) {
    if (!runInput && !runInputs) {
      std::cerr << "raspc run: give --input \"...\" or --inputs FILE\n";
      return 2;
    }
    return tools::runModel(modelFile, runInput, runInputs, runJson, runTrace, precision, device, runBatch,
                           runMaxParams.value_or(kDefaultMaxParams), runThreads);
  }
  if (verify->parsed()) return tools::runVerify(verifyFlags, samples, seed, verifyJson, verifyThreads,
                                                  verifyCircuit ? std::optional<int>(circuitPairs) : std::nullopt);
  if (inspect->parsed()) return tools::runInspect(inspectFile, inspectJson, inspectMaxParams.value_or(kDefaultMaxParams));
  if (auto rc = crate()) return *rc;
  if (auto rc = transform()) return *rc;
  if (auto rc = suite()) return *rc;
  if (show->parsed())
    return tools::runShow(showModel, showInput, showOut, showForce, showMaxParams.value_or(kDefaultMaxParams));
  return 2;
}

int main(int argc, char **argv) {
  // The last resort: sizes raspc can foresee are refused earlier with the flag to
  // change; an allocation that still fails is an error, not an abort.
  try {
    return realMain(argc, argv);
  } catch (const std::bad_alloc &) {
    std::cerr << "raspc: error: out of memory (an allocation failed; try smaller inputs or options)\n";
  } catch (const std::length_error &e) {
    std::cerr << "raspc: error: out of memory (a size too large to allocate: " << e.what() << ")\n";
  }
  return 1;
}
