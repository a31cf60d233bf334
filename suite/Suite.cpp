#include "suite/Suite.h"

#include "backend/Hdf5.h"
#include "backend/Json.h"
#include "backend/Safetensors.h"
#include "frontend/Program.h"
#include "passes/Compiler.h"
#include "runtime/Circuit.h"
#include "runtime/Executor.h"
#include "runtime/VariantCheck.h"
#include "suite/Exact.h"
#include "support/Files.h"

#include <fmt/format.h>
#include <llvm/ADT/StringRef.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Path.h>
#include <llvm/Support/raw_ostream.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fnmatch.h>
#include <glob.h>
#include <map>
#include <mutex>
#include <new>
#include <thread>

namespace raspc::suite {

struct EmbeddedProgram {
  const char *name, *source;
};
extern const EmbeddedProgram kEmbeddedPrograms[]; // generated: suite/EmbedPrograms.cmake

namespace {

llvm::Error err(const std::string &msg) { return llvm::createStringError(llvm::inconvertibleErrorCode(), msg); }

std::string quoted(const std::string &s) { return "\"" + jsonEscape(s) + "\""; }

std::string jsonStrings(const std::vector<std::string> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + quoted(v[i]);
  return s + "]";
}

bool validName(llvm::StringRef n) {
  return !n.empty() && n.find_if_not([](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }) ==
                           llvm::StringRef::npos;
}

std::string join(const std::vector<std::string> &v, const std::string &sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

} // namespace

const std::vector<std::string> &categories() {
  static const std::vector<std::string> c = {"classic",   "arithmetic-map",      "string-map", "sequence-map",
                                             "selector-width", "numerical-aggregate", "causal",     "composite-selector"};
  return c;
}

const std::vector<std::string> &difficulties() {
  static const std::vector<std::string> d = {"easy", "medium", "hard"};
  return d;
}

llvm::Expected<SuiteProgram> parseProgram(const std::string &name, const std::string &fileName,
                                          const std::string &source, bool strict) {
  SuiteProgram p{name, fileName, source, "", strict ? "" : "user", ""};
  struct Field {
    const char *key;
    std::string *value;
    const std::vector<std::string> *allowed;
    int line = 0;
  };
  Field fields[] = {{"description", &p.description, nullptr},
                    {"category", &p.category, &categories()},
                    {"difficulty", &p.difficulty, &difficulties()}};
  llvm::StringRef src = source;
  int lineNo = 0;
  // Only the leading block of comment lines is the header, as for '# raspc:'.
  while (!src.empty()) {
    llvm::StringRef line = src.take_until([](char c) { return c == '\n'; });
    src = src.drop_front(std::min(src.size(), line.size() + 1));
    ++lineNo;
    llvm::StringRef t = line.trim();
    if (t.empty()) continue;
    if (!t.startswith("#")) break;
    llvm::StringRef body = t.drop_front().ltrim();
    for (Field &f : fields) {
      llvm::StringRef rest = body;
      if (!rest.consume_front(f.key) || !rest.consume_front(":")) continue;
      std::string at = fmt::format("{}:{}", fileName, lineNo);
      if (f.line) return err(fmt::format("{}: a second '# {}:' header line (the first is line {})", at, f.key, f.line));
      f.line = lineNo;
      *f.value = rest.trim().str();
      if (f.allowed && std::find(f.allowed->begin(), f.allowed->end(), *f.value) == f.allowed->end())
        return err(fmt::format("{}: unknown {} '{}' (one of: {})", at, f.key, *f.value, join(*f.allowed, ", ")));
      if (f.value->empty()) return err(fmt::format("{}: the '# {}:' header line is empty", at, f.key));
    }
  }
  if (strict)
    for (Field &f : fields)
      if (!f.line) return err(fmt::format("{}:1: no '# {}:' header line (docs/suite.md)", fileName, f.key));
  return p;
}

llvm::Expected<std::vector<SuiteProgram>> embeddedPrograms() {
  std::vector<SuiteProgram> out;
  for (const EmbeddedProgram *e = kEmbeddedPrograms; e->name; ++e) {
    std::string file = fmt::format("suite/programs/{}.rasp", e->name);
    if (!validName(e->name)) return err(file + ": a suite program's name is made of a-z, 0-9 and _");
    auto p = parseProgram(e->name, file, e->source, true);
    if (!p) return p.takeError();
    out.push_back(std::move(*p));
  }
  std::sort(out.begin(), out.end(), [](auto &a, auto &b) { return a.name < b.name; });
  return out;
}

llvm::Expected<std::vector<SuiteProgram>> selectPrograms(const std::optional<std::string> &pattern) {
  std::vector<SuiteProgram> out;
  if (pattern && (pattern->find('/') != std::string::npos || llvm::StringRef(*pattern).endswith(".rasp"))) {
    glob_t g{};
    int rc = glob(pattern->c_str(), 0, nullptr, &g);
    std::vector<std::string> paths(g.gl_pathv, g.gl_pathv + (rc == 0 ? g.gl_pathc : 0));
    globfree(&g);
    if (paths.empty()) return err(fmt::format("--programs '{}': no file matches", *pattern));
    std::map<std::string, std::string> names; // model name -> the path that took it
    for (const std::string &path : paths) {
      std::string name = llvm::sys::path::stem(path).str();
      if (!validName(name))
        return err(fmt::format("{}: a suite model's name is the file's name without .rasp, made of a-z, 0-9 and _; "
                               "rename the file",
                               path));
      if (auto [it, fresh] = names.emplace(name, path); !fresh)
        return err(fmt::format("{} and {} would both be model '{}'", it->second, path, name));
      auto text = files::readRegularFile(path);
      if (!text) return text.takeError();
      auto p = parseProgram(name, path, *text, false);
      if (!p) return p.takeError();
      out.push_back(std::move(*p));
    }
    std::sort(out.begin(), out.end(), [](auto &a, auto &b) { return a.name < b.name; });
    return out;
  }
  auto all = embeddedPrograms();
  if (!all) return all.takeError();
  if (all->empty())
    return err("this raspc has no suite programs (suite/programs/ was empty when it was built); "
               "--programs 'dir/*.rasp' builds your own");
  if (!pattern) return all;
  for (SuiteProgram &p : *all)
    if (fnmatch(pattern->c_str(), p.name.c_str(), 0) == 0) out.push_back(std::move(p));
  if (out.empty())
    return err(fmt::format("--programs '{}': no suite program matches (`raspc suite list` names them; a pattern "
                           "with '/' or ending in .rasp selects your own files)",
                           *pattern));
  return out;
}

// ---------------------------------------------------------------------------------
// Summaries

std::string ModelSummary::json() const {
  auto num = [](int64_t v) { return v < 0 ? std::string("null") : std::to_string(v); };
  return fmt::format("{{\"name\": {}, \"description\": {}, \"category\": {}, \"difficulty\": {}, \"causal\": {}, "
                     "\"vocab\": {}, \"max_len\": {}, \"n_layers\": {}, \"d_model\": {}, \"n_heads\": {}, "
                     "\"d_mlp\": {}, \"params\": {}, \"nodes\": {}, \"exact\": {}, \"nodes_checked\": {}, "
                     "\"nodes_passed\": {}, \"edges\": {}, \"edges_necessary\": {}, \"rotated_exact\": {}, "
                     "\"compressed_d_model\": {}, \"compressed_exact\": {}, \"path\": {}, \"status\": {}, "
                     "\"error\": {}, \"seconds\": {:.3f}}}",
                     quoted(name), quoted(description), quoted(category), quoted(difficulty),
                     causal ? "true" : "false", jsonStrings(vocab), num(maxLen), num(nLayers), num(dModel),
                     num(nHeads), num(dMlp), num(params), num(nodes), exact ? "true" : "false", num(nodesChecked),
                     num(nodesPassed), num(edges), num(edgesNecessary), rotatedExact ? "true" : "false",
                     num(compressedDModel), compressedExact ? "true" : "false", quoted(path), quoted(status),
                     error.empty() ? "null" : quoted(error), seconds);
}

llvm::Expected<ModelSummary> ModelSummary::fromJson(const std::string &text, const std::string &what) {
  auto v = json::parse(text);
  if (!v) return err(what + ": " + llvm::toString(v.takeError()));
  if (v->kind != json::Value::Object) return err(what + ": not a JSON object");
  ModelSummary s;
  auto str = [&](const char *key, std::string &out) -> llvm::Error {
    const json::Value *m = v->get(key);
    if (m && m->kind == json::Value::Null) return llvm::Error::success();
    if (!m || m->kind != json::Value::String) return err(fmt::format("{}: '{}' is missing or not a string", what, key));
    out = m->s;
    return llvm::Error::success();
  };
  auto integer = [&](const char *key, auto &out) -> llvm::Error {
    const json::Value *m = v->get(key);
    if (m && m->kind == json::Value::Null) return llvm::Error::success();
    if (!m || m->kind != json::Value::Int) return err(fmt::format("{}: '{}' is missing or not an integer", what, key));
    out = std::remove_reference_t<decltype(out)>(m->i);
    return llvm::Error::success();
  };
  auto boolean = [&](const char *key, bool &out) -> llvm::Error {
    const json::Value *m = v->get(key);
    if (!m || m->kind != json::Value::Bool) return err(fmt::format("{}: '{}' is missing or not a boolean", what, key));
    out = m->b;
    return llvm::Error::success();
  };
  for (auto [k, p] : {std::pair{"name", &s.name}, {"description", &s.description}, {"category", &s.category},
                      {"difficulty", &s.difficulty}, {"path", &s.path}, {"status", &s.status}, {"error", &s.error}})
    if (auto e = str(k, *p)) return e;
  for (auto [k, p] : {std::pair{"max_len", &s.maxLen}, {"n_layers", &s.nLayers}, {"d_model", &s.dModel},
                      {"n_heads", &s.nHeads}, {"d_mlp", &s.dMlp}, {"nodes", &s.nodes}})
    if (auto e = integer(k, *p)) return e;
  if (auto e = integer("params", s.params)) return e;
  // Written by every build since the interventions and variants were added.
  for (auto [k, p] : {std::pair{"nodes_checked", &s.nodesChecked}, {"nodes_passed", &s.nodesPassed},
                      {"edges", &s.edges}, {"edges_necessary", &s.edgesNecessary},
                      {"compressed_d_model", &s.compressedDModel}})
    if (auto e = integer(k, *p)) return e;
  if (auto e = boolean("rotated_exact", s.rotatedExact)) return e;
  if (auto e = boolean("compressed_exact", s.compressedExact)) return e;
  if (auto e = boolean("causal", s.causal)) return e;
  if (auto e = boolean("exact", s.exact)) return e;
  const json::Value *vocab = v->get("vocab");
  if (!vocab || vocab->kind != json::Value::Array) return err(what + ": 'vocab' is missing or not an array");
  for (const json::Value &t : vocab->array) {
    if (t.kind != json::Value::String) return err(what + ": 'vocab' holds a non-string");
    s.vocab.push_back(t.s);
  }
  if (const json::Value *secs = v->get("seconds"); secs && secs->isNumber())
    s.seconds = secs->kind == json::Value::Int ? double(secs->i) : secs->d;
  return s;
}

int BuildResult::failed() const {
  return int(std::count_if(built.begin(), built.end(), [](auto &s) { return s.status != "ok"; }));
}

namespace {

// ---------------------------------------------------------------------------------
// One model's build: a list of steps over a ModelJob.

struct ModelJob {
  const SuiteProgram &prog;
  const BuildOptions &opts;
  std::string dir; // DIR/models/<name>
  files::OutputRule rule;
  std::string diagText;
  llvm::raw_string_ostream diagOut{diagText};
  Program program{diagOut};
  ProgramOptions popts;
  ir::NodeId output = 0;
  std::optional<Model> model;
  std::optional<Executor> exec; // of `model`, made by the exactness step
  // checks.json's sections in order ("exact", then those of later steps), each a JSON value.
  std::vector<std::pair<std::string, std::string>> checks;
  // The card's "Checks" lines (Markdown), one or more per step that checks something.
  std::vector<std::string> cardChecks;
  ModelSummary summary;

  ModelJob(const SuiteProgram &p, const BuildOptions &o) : prog(p), opts(o) {
    dir = o.dir + "/models/" + p.name;
    rule.force = o.force;
  }
  std::string path(const std::string &file) const { return dir + "/" + file; }
  // Creates the model's subfolder `name` (e.g. "rotated") for a step's files.
  llvm::Error folder(const std::string &name) const {
    if (std::error_code ec = llvm::sys::fs::create_directories(path(name)))
      return err(fmt::format("{}: cannot create the folder: {}", path(name), ec.message()));
    return llvm::Error::success();
  }
  llvm::Error write(const std::string &file, llvm::StringRef bytes) const {
    return files::writeFileAtomically(path(file), bytes, rule);
  }
  // What the program's diagnostics said (the errors with their source lines).
  std::string diagnostics() {
    diagOut.flush();
    return llvm::StringRef(diagText).rtrim().str();
  }
};

llvm::Error compileStep(ModelJob &j) {
  Program &p = j.program;
  const bool loaded = p.loadSource(j.prog.source, j.prog.fileName);
  // The header's options are known even when the program has an error: the summary shows them.
  auto header = p.headerOptions();
  if (header) {
    if (header->vocab) j.summary.vocab = *header->vocab;
    if (header->maxLen) j.summary.maxLen = *header->maxLen;
    j.summary.causal = header->causal;
  }
  if (!loaded || !header) return err(j.diagnostics());
  j.popts = *header;
  if (!j.popts.vocab || j.popts.vocab->empty())
    return err(j.prog.fileName + ": no vocabulary: a '# raspc: --vocab \"...\"' header line is needed");
  if (!j.popts.maxLen) return err(j.prog.fileName + ": no maximum length: a '# raspc: --max-len N' header line is needed");
  auto out = p.resolveOutput(j.popts.output);
  if (!out) return err(j.diagnostics());
  j.output = *out;
  CompileOptions co;
  co.vocab = *j.popts.vocab;
  co.maxLen = *j.popts.maxLen;
  co.causal = j.popts.causal;
  co.outputName = j.popts.output ? *j.popts.output : *p.evaluator().lastSOpName();
  co.source = j.prog.source;
  // The file's name, not the folder it was built from: a model's metadata (and its
  // TransformerLens model_name) does not depend on where the suite was built.
  co.sourceName = llvm::sys::path::filename(j.prog.fileName).str();
  co.warn = [&](llvm::SMLoc loc, const std::string &msg) { p.diags().warning(loc, msg); };
  CompileStats stats;
  auto m = compileProgram(p.graph(), *out, co, p.sourceMgr(), &stats);
  if (!m) {
    p.diags().report(m.takeError());
    return err(j.diagnostics());
  }
  j.model = std::move(*m);
  const ModelConfig &c = j.model->cfg;
  j.summary.nLayers = c.n_layers;
  j.summary.dModel = c.d_model;
  j.summary.nHeads = c.n_heads;
  j.summary.dMlp = c.d_mlp;
  j.summary.params = stats.parameters;
  j.summary.nodes = int(j.model->nodes.size());
  return llvm::Error::success();
}

// The keys of python/raspc/tl.py config_dict (TransformerLens gets at least one head,
// head dimension and neuron), plus the hooks the suite's circuits name: per-head
// results (hook_result) and per-head q/k/v inputs.
std::string tlConfigJson(const Model &m) {
  const ModelConfig &c = m.cfg;
  return fmt::format(
      "{{\n  \"n_layers\": {},\n  \"d_model\": {},\n  \"n_heads\": {},\n  \"d_head\": {},\n  \"d_mlp\": {},\n"
      "  \"n_ctx\": {},\n  \"d_vocab\": {},\n  \"d_vocab_out\": {},\n  \"act_fn\": \"relu\",\n"
      "  \"normalization_type\": null,\n  \"attention_dir\": \"{}\",\n  \"positional_embedding_type\": \"standard\",\n"
      "  \"attn_scale\": {},\n  \"use_attn_scale\": true,\n  \"attn_only\": false,\n  \"final_rms\": false,\n"
      "  \"gated_mlp\": false,\n  \"original_architecture\": \"raspc\",\n  \"architecture\": \"TransformerLensNative\",\n"
      "  \"model_name\": {},\n  \"init_weights\": false,\n  \"use_attn_result\": true,\n"
      "  \"use_split_qkv_input\": true\n}}\n",
      c.n_layers, c.d_model, std::max(c.n_heads, 1), std::max(c.d_head, 1), std::max(c.d_mlp, 1), c.n_ctx, c.d_vocab,
      c.d_vocab_out, c.causal ? "causal" : "bidirectional",
      jsonScalar(Scalar(c.d_head > 0 ? std::sqrt(double(c.d_head)) : 1.0)),
      quoted("raspc:" + (m.sourceName.empty() ? m.outputName : m.sourceName)));
}

std::string encodersJson(const Model &m) {
  std::string values = "[";
  for (size_t i = 0; i < m.outputValues.size(); ++i) values += (i ? ", " : "") + jsonScalar(m.outputValues[i]);
  values += "]";
  return fmt::format("{{\n  \"input\": {{\"vocab\": {}, \"bos_id\": {}, \"pad_id\": {}, \"int_tokens\": {}, "
                     "\"max_len\": {}}},\n  \"output\": {{\"encoding\": {}, \"values\": {}}}\n}}\n",
                     jsonStrings(m.vocab), m.bosId, m.padId, m.intTokens ? "true" : "false", m.cfg.n_ctx - 1,
                     quoted(m.outputEncoding), values);
}

llvm::Error writeProgramStep(ModelJob &j) { return j.write("program.rasp", j.prog.source); }

llvm::Error writeModelStep(ModelJob &j) {
  const Model &m = *j.model;
  if (auto e = writeModel(m, j.path("model.h5"), j.rule)) return e;
  if (auto e = writeSafetensors(m, j.path("model.safetensors"), j.rule)) return e;
  if (auto e = j.write("tl_config.json", tlConfigJson(m))) return e;
  if (auto e = j.write("encoders.json", encodersJson(m))) return e;
  return j.write("ground_truth.json", "{\"residual_labels\": " + jsonStrings(m.residualLabels) +
                                          ",\n \"nodes\": " + groundTruthJson(m.nodes) + "}\n");
}

llvm::Error exactStep(ModelJob &j) {
  auto exec = Executor::create(*j.model);
  if (!exec) return exec.takeError();
  j.exec.emplace(std::move(*exec));
  auto r = checkExact(j.program, *j.model, j.output, j.popts, *j.exec, ExactOptions{j.opts.samples, j.opts.seed, {}});
  if (!r) return r.takeError();
  j.checks.emplace_back("exact", r->json());
  j.summary.exact = r->exact();
  j.cardChecks.push_back(fmt::format("- exact: {} of {} inputs ({}) decode to the interpreter's output{}", r->equal(),
                                     r->inputs, r->exhaustive ? "every input up to the maximum length" : "random",
                                     r->rejected ? fmt::format(" ({} rejected by the interpreter)", r->rejected) : ""));
  if (r->exact()) return llvm::Error::success();
  std::string why = r->describeMismatch();
  if (r->rejected)
    why += fmt::format("the interpreter rejects {} input{}, first \"{}\": {}", r->rejected, r->rejected == 1 ? "" : "s",
                       r->rejectedInput, r->rejectedError);
  return err(fmt::format("not exact: {} mismatch{} in {} inputs; {}", r->mismatches, r->mismatches == 1 ? "" : "es",
                         r->inputs, llvm::StringRef(why).rtrim().str()));
}

// circuit.json (runtime/Circuit.h: components, per-node components and cones, edges at
// both granularities) and checks.json "interventions": every node's interchange and cone
// checks must pass, or the model fails.
llvm::Error circuitStep(ModelJob &j) {
  Circuit c = circuitOf(*j.model);
  if (auto e = j.write("circuit.json", circuitJson(c))) return e;
  CircuitCheckOptions o;
  o.seed = j.opts.seed;
  auto r = checkCircuit(j.program.graph(), j.output, j.program.interpreterOptions(j.popts), *j.model, c, o);
  if (!r) return r.takeError();
  j.checks.emplace_back("interventions", circuitReportJson(*r));
  ModelSummary &s = j.summary;
  s.nodesChecked = s.nodesPassed = 0;
  std::string failed;
  for (const NodeCheck &n : r->nodes) {
    if (n.check == "skipped") continue;
    ++s.nodesChecked;
    if (n.passed()) ++s.nodesPassed;
    else failed += (failed.empty() ? "" : ", ") + (n.name.empty() ? fmt::format("node {}", n.id) : n.name);
  }
  s.edges = r->heads.total;
  s.edgesNecessary = r->heads.necessary;
  j.cardChecks.push_back(fmt::format(
      "- interventions ({} pairs per node, seed {}): {} of {} nodes pass interchange and cone ablation "
      "({} skipped, each with its reason in checks.json); necessary on some pair: {}/{} components, {}/{} edges (heads), "
      "{}/{} edges (qkv)",
      r->pairsPerNode, r->seed, s.nodesPassed, s.nodesChecked, r->nodes.size() - size_t(s.nodesChecked),
      r->componentsNecessary, r->componentsTotal, r->heads.necessary, r->heads.total, r->qkv.necessary,
      r->qkv.total));
  if (!r->passed) return err("intervention checks failed on " + failed + " (checks.json \"interventions\")");
  return llvm::Error::success();
}

// A report's human lines as one Markdown list item.
std::string cardLine(const std::string &text) {
  std::string out = "- ";
  for (char c : llvm::StringRef(text).rtrim()) out += c == '\n' ? std::string("; ") : std::string(1, c);
  return out;
}

// rotated/model.h5 (the residual stream turned by a random orthogonal matrix: decodes as
// the original up to float32 rounding, measured) and compressed/model.h5 (the narrowest residual found exact on
// the measured inputs, or the measured loss), with checks.json "variants".
llvm::Error variantsStep(ModelJob &j) {
  VariantOptions vo;
  vo.seed = j.opts.seed;
  auto rot = makeRotated(*j.model, vo);
  if (!rot) return rot.takeError();
  if (auto e = j.folder("rotated")) return e;
  if (auto e = writeModel(rot->model, j.path("rotated/model.h5"), j.rule)) return e;
  std::string json = "{\"rotated\": " + rot->report.json();
  j.cardChecks.push_back(cardLine(rot->report.text()));
  j.summary.rotatedExact = rot->report.result.exact();
  if (j.model->cfg.d_model > 1) {
    auto comp = searchCompression(*j.model, vo);
    if (!comp) return comp.takeError();
    if (auto e = j.folder("compressed")) return e;
    if (auto e = writeModel(comp->model, j.path("compressed/model.h5"), j.rule)) return e;
    json += ", \"compressed\": " + comp->report.json();
    j.cardChecks.push_back(cardLine(comp->report.text()));
    j.summary.compressedDModel = comp->report.result.dModel;
    j.summary.compressedExact = comp->report.result.exact();
  } else {
    json += ", \"compressed\": null";
    j.cardChecks.push_back("- compressed: none (a residual of one dimension)");
  }
  j.checks.emplace_back("variants", json + "}");
  // A rotation is exact in real arithmetic; in float32 a numerical output can land past
  // its snapping tolerance on a rare input (numagg_mean_top_half: 1 in 2000). That is
  // stated (checks.json "exact": false, the card's line), not a failure of the model.
  return llvm::Error::success();
}

// The steps of one model, in order. The first that fails stops the model: its error
// becomes the summary's, and the finishing step still writes what is known.
using Step = llvm::Error (*)(ModelJob &);
const Step kSteps[] = {
    writeProgramStep, // program.rasp
    compileStep,      // the program -> a Model
    writeModelStep,   // model.h5, model.safetensors, tl_config.json, encoders.json, ground_truth.json
    exactStep,        // checks.json "exact": the model against the interpreter
    circuitStep,      // circuit.json, checks.json "interventions"
    variantsStep,     // rotated/, compressed/, checks.json "variants"
};

std::string mdEscape(std::string s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += ' ';
    else out += c;
  }
  return out;
}

std::string cardMarkdown(const ModelJob &j) {
  const SuiteProgram &p = j.prog;
  const ModelSummary &s = j.summary;
  std::string md = fmt::format("# {}\n\n{}\n\n", p.name, p.description.empty() ? "(no description)" : p.description);
  md += "| | |\n|---|---|\n";
  md += fmt::format("| category | {} |\n| difficulty | {} |\n| causal | {} |\n", p.category,
                    p.difficulty.empty() ? "-" : p.difficulty, s.causal ? "yes" : "no");
  md += fmt::format("| vocabulary | {} |\n| maximum length | {} |\n", s.vocab.empty() ? "-" : mdEscape(join(s.vocab, " ")),
                    s.maxLen < 0 ? "-" : std::to_string(s.maxLen));
  if (j.model) {
    const ModelConfig &c = j.model->cfg;
    md += fmt::format("| layers | {} |\n| d_model (residual) | {} |\n| heads | {} ({} per layer at most), d_head {} |\n"
                      "| d_mlp | {} |\n| parameters | {} |\n| output | {} ({}) |\n",
                      c.n_layers, c.d_model, usedHeads(*j.model), c.n_heads, c.d_head, c.d_mlp, s.params,
                      mdEscape(j.model->outputName), j.model->outputEncoding);
  }
  md += fmt::format("| status | {} |\n\n", s.status == "ok" ? "built, exact" : "**failed**");
  if (!s.error.empty()) md += "## Error\n\n```\n" + s.error + "\n```\n\n";
  md += "## Program\n\n```python\n" + llvm::StringRef(p.source).rtrim().str() + "\n```\n\n";
  if (j.model) {
    md += "## Nodes\n\nWhere each RASP node lives (layer -1: the embedding; helpers serve a node without "
          "computing it).\n\n";
    md += "| id | node | kind | op | encoding | layer | sublayer | heads | MLP neurons | helpers |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|\n";
    for (const NodeInfo &n : j.model->nodes) {
      std::vector<std::string> heads, helpers;
      for (int h : n.heads) heads.push_back(std::to_string(h));
      for (const HelperBlock &b : n.helpers) {
        std::string where = fmt::format("{} layer {}", b.role, b.layer);
        if (!b.heads.empty()) {
          std::vector<std::string> hs;
          for (int h : b.heads) hs.push_back(std::to_string(h));
          where += " heads " + join(hs, ",");
        }
        if (b.mlpBegin >= 0) where += fmt::format(" neurons {}-{}", b.mlpBegin, b.mlpEnd - 1);
        helpers.push_back(where);
      }
      md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", n.id, mdEscape(nodeLabel(n)), n.kind,
                        mdEscape(n.op), n.encoding, n.layer, n.sublayer.empty() ? "-" : n.sublayer,
                        heads.empty() ? "-" : join(heads, ", "),
                        n.mlpBegin >= 0 ? fmt::format("{}-{}", n.mlpBegin, n.mlpEnd - 1) : "-",
                        helpers.empty() ? "-" : mdEscape(join(helpers, "; ")));
    }
    md += "\n";
  }
  if (!j.cardChecks.empty()) md += "## Checks\n\n" + join(j.cardChecks, "\n") + "\n\n";
  // The files this build left (a failed model has fewer), and those the finishing step writes.
  static const std::pair<const char *, const char *> kFiles[] = {
      {"program.rasp", "the program"},
      {"model.h5", "the weights and metadata (raspc docs/weights.md)"},
      {"model.safetensors", "the same weights"},
      {"tl_config.json", "the TransformerLens configuration"},
      {"encoders.json", "input and output encoding"},
      {"ground_truth.json", "where each node lives"},
      {"circuit.json", "the circuit, edges between TransformerLens components"},
      {"checks.json", "the checks' figures"},
      {"rotated/model.h5", "the model in a rotated residual basis"},
      {"compressed/model.h5", "the model with a compressed residual stream"},
      {"summary.json", "this model's line of the suite's index"}};
  md += "## Files\n\n";
  for (auto [file, what] : kFiles)
    if (llvm::sys::fs::exists(j.path(file)) || (llvm::StringRef(file) == "checks.json" && j.model) ||
        llvm::StringRef(file) == "summary.json")
      md += fmt::format("- `{}`: {}\n", file, what);
  return md;
}

// Always runs, after the steps (all, or up to the one that failed).
llvm::Error finishStep(ModelJob &j) {
  if (j.model) {
    std::string checks = "{";
    for (size_t i = 0; i < j.checks.size(); ++i)
      checks += fmt::format("{}\n  {}: {}", i ? "," : "", quoted(j.checks[i].first), j.checks[i].second);
    if (auto e = j.write("checks.json", checks + "\n}\n")) return e;
  }
  if (auto e = j.write("card.md", cardMarkdown(j))) return e;
  return j.write("summary.json", j.summary.json() + "\n");
}

ModelSummary buildModel(const SuiteProgram &prog, const BuildOptions &opts) {
  auto t0 = std::chrono::steady_clock::now();
  ModelJob j(prog, opts);
  ModelSummary &s = j.summary;
  s.name = prog.name;
  s.description = prog.description;
  s.category = prog.category;
  s.difficulty = prog.difficulty;
  s.path = "models/" + prog.name;
  auto fail = [&](std::string why) {
    s.status = "failed";
    if (s.error.empty()) s.error = std::move(why);
  };
  try {
    if (std::error_code ec = llvm::sys::fs::create_directories(j.dir))
      fail(fmt::format("{}: cannot create the folder: {}", j.dir, ec.message()));
    else
      for (Step step : kSteps)
        if (auto e = step(j)) {
          fail(llvm::toString(std::move(e)));
          break;
        }
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s.status == "ok" || llvm::sys::fs::is_directory(j.dir))
      if (auto e = finishStep(j)) fail(llvm::toString(std::move(e)));
  } catch (const std::bad_alloc &) {
    fail("out of memory");
  } catch (const std::length_error &e) {
    fail(std::string("out of memory (") + e.what() + ")");
  }
  if (s.status != "ok") s.exact = false;
  return s;
}

std::string csvField(const std::string &f) {
  if (f.find_first_of(",\"\n\r") == std::string::npos) return f;
  std::string out = "\"";
  for (char c : f) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

} // namespace

llvm::Expected<BuildResult> build(const BuildOptions &opts, const ModelDone &done) {
  if (opts.shardCount < 1 || opts.shardIndex < 1 || opts.shardIndex > opts.shardCount)
    return err(fmt::format("--shard {}/{}: give I/N with 1 <= I <= N", opts.shardIndex, opts.shardCount));
  auto all = selectPrograms(opts.programs);
  if (!all) return all.takeError();
  std::vector<SuiteProgram> progs;
  for (size_t i = size_t(opts.shardIndex - 1); i < all->size(); i += size_t(opts.shardCount))
    progs.push_back(std::move((*all)[i]));
  if (llvm::sys::fs::exists(opts.dir) && !llvm::sys::fs::is_directory(opts.dir))
    return err(opts.dir + ": is not a directory");
  // Refused before any work: a rebuild must be asked for.
  std::vector<std::string> existing;
  for (const SuiteProgram &p : progs)
    if (llvm::sys::fs::exists(opts.dir + "/models/" + p.name)) existing.push_back(opts.dir + "/models/" + p.name);
  if (!existing.empty() && !opts.force)
    return err(fmt::format("'{}' exists{}; pass --force to rebuild", existing[0],
                           existing.size() > 1 ? fmt::format(" (and {} more model folder{})", existing.size() - 1, existing.size() > 2 ? "s" : "") : ""));
  if (std::error_code ec = llvm::sys::fs::create_directories(opts.dir + "/models"))
    return err(fmt::format("{}: cannot create the folder: {}", opts.dir, ec.message()));

  BuildResult result;
  result.built.resize(progs.size());
  size_t jobs = opts.jobs > 0 ? size_t(opts.jobs) : std::max(1u, std::thread::hardware_concurrency());
  jobs = std::min(jobs, std::max<size_t>(1, progs.size()));
  // Every worker's executor runs its products on one thread; Eigen's thread count is
  // process-wide, so it is set once here, before the workers read it (runtime/Cpu.cpp).
  Eigen::setNbThreads(1);
  std::atomic<size_t> next{0};
  std::mutex mu;
  size_t finished = 0;
  std::vector<size_t> order; // indices in the order they finished
  auto worker = [&] {
    for (size_t i; (i = next++) < progs.size();) {
      ModelSummary s = buildModel(progs[i], opts);
      std::lock_guard<std::mutex> lock(mu);
      result.built[i] = std::move(s);
      order.push_back(i);
      ++finished;
      if (done) done(result.built[i], finished, progs.size());
    }
  };
  if (jobs == 1) {
    worker();
  } else {
    std::vector<std::thread> threads;
    for (size_t t = 0; t < jobs; ++t) threads.emplace_back(worker);
    for (auto &t : threads) t.join();
  }
  std::vector<ModelSummary> inOrder;
  for (size_t i : order) inOrder.push_back(std::move(result.built[i]));
  result.built = std::move(inOrder);
  auto index = writeIndex(opts.dir);
  if (!index) return index.takeError();
  result.indexJson = std::move(*index);
  return result;
}

llvm::Expected<std::string> writeIndex(const std::string &dir) {
  const std::string modelsDir = dir + "/models";
  if (!llvm::sys::fs::is_directory(modelsDir)) return err(modelsDir + ": no such folder (is " + dir + " a built suite?)");
  std::vector<ModelSummary> models;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(modelsDir, ec), end; it != end && !ec; it.increment(ec)) {
    if (!llvm::sys::fs::is_directory(it->path())) continue;
    std::string name = llvm::sys::path::filename(it->path()).str();
    if (!validName(name)) continue; // not a model's folder
    std::string file = it->path() + "/summary.json";
    // A model whose build did not finish, or whose summary is unreadable: listed as
    // failed with the reason, never silently dropped.
    auto failed = [&](std::string why) {
      ModelSummary s;
      s.name = name;
      s.path = "models/" + name;
      s.status = "failed";
      s.error = std::move(why);
      models.push_back(std::move(s));
    };
    if (!llvm::sys::fs::exists(file)) {
      failed("no summary.json: its build did not finish");
      continue;
    }
    auto text = files::readRegularFile(file);
    if (!text) {
      failed(llvm::toString(text.takeError()));
      continue;
    }
    auto s = ModelSummary::fromJson(*text, file);
    if (!s) {
      failed(llvm::toString(s.takeError()));
      continue;
    }
    models.push_back(std::move(*s));
  }
  if (ec) return err(fmt::format("{}: cannot list: {}", modelsDir, ec.message()));
  std::sort(models.begin(), models.end(), [](auto &a, auto &b) { return a.name < b.name; });

  std::string index = fmt::format("{{\"raspc_version\": \"{}\", \"models\": [", RASPC_VERSION);
  for (size_t i = 0; i < models.size(); ++i) index += (i ? ",\n  " : "\n  ") + models[i].json();
  index += "\n]}\n";

  std::string csv = "name,description,category,difficulty,causal,vocab,max_len,n_layers,d_model,n_heads,d_mlp,params,"
                    "nodes,exact,nodes_checked,nodes_passed,edges,edges_necessary,rotated_exact,compressed_d_model,"
                    "compressed_exact,path,status,error\n";
  auto num = [](int64_t v) { return v < 0 ? std::string() : std::to_string(v); };
  auto yes = [](bool b) { return b ? "true" : "false"; };
  for (const ModelSummary &s : models)
    csv += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", csvField(s.name),
                       csvField(s.description), csvField(s.category), csvField(s.difficulty), yes(s.causal),
                       csvField(join(s.vocab, " ")), num(s.maxLen), num(s.nLayers), num(s.dModel), num(s.nHeads),
                       num(s.dMlp), num(s.params), num(s.nodes), yes(s.exact), num(s.nodesChecked),
                       num(s.nodesPassed), num(s.edges), num(s.edgesNecessary), yes(s.rotatedExact),
                       num(s.compressedDModel), yes(s.compressedExact), csvField(s.path), s.status,
                       csvField(s.error));

  size_t ok = size_t(std::count_if(models.begin(), models.end(), [](auto &s) { return s.status == "ok"; }));
  std::string md = "# raspc ground-truth suite\n\n";
  md += fmt::format("{} models: {} built and exact against the RASP interpreter, {} failed. Built by raspc {}; "
                    "`index.json` and `index.csv` list them for programs, each model's `card.md` describes it, "
                    "and raspc's docs/suite.md the layout and how to score an interpretability method with it.\n\n",
                    models.size(), ok, models.size() - ok, RASPC_VERSION);
  std::map<std::string, int> perCategory;
  for (const ModelSummary &s : models) ++perCategory[s.category.empty() ? "-" : s.category];
  md += "| category | models |\n|---|---|\n";
  for (auto &[c, n] : perCategory) md += fmt::format("| {} | {} |\n", c, n);
  md += "\n| model | category | difficulty | description | layers | d_model | parameters | status |\n"
        "|---|---|---|---|---|---|---|---|\n";
  for (const ModelSummary &s : models) {
    std::string status = s.status == "ok" ? "exact" : "**failed**: " + mdEscape(llvm::StringRef(s.error).split('\n').first.str());
    md += fmt::format("| [{}]({}/card.md) | {} | {} | {} | {} | {} | {} | {} |\n", s.name, s.path, s.category,
                      s.difficulty.empty() ? "-" : s.difficulty, mdEscape(s.description),
                      s.nLayers < 0 ? "-" : std::to_string(s.nLayers), s.dModel < 0 ? "-" : std::to_string(s.dModel),
                      s.params < 0 ? "-" : std::to_string(s.params), status);
  }
  files::OutputRule rule{true, {}}; // the index is derived: always rewritten
  if (auto e = files::writeFileAtomically(dir + "/index.json", index, rule)) return e;
  if (auto e = files::writeFileAtomically(dir + "/index.csv", csv, rule)) return e;
  if (auto e = files::writeFileAtomically(dir + "/README.md", md, rule)) return e;
  return index;
}

llvm::Expected<std::string> listJson() {
  auto progs = embeddedPrograms();
  if (!progs) return progs.takeError();
  std::string out = "[";
  for (size_t i = 0; i < progs->size(); ++i) {
    const SuiteProgram &p = (*progs)[i];
    // The header's compile options, as compile reads them.
    std::string diag;
    llvm::raw_string_ostream os(diag);
    Program prog(os);
    std::vector<std::string> vocab;
    int maxLen = 0;
    bool causal = false;
    (void)prog.loadSource(p.source, p.fileName); // the header reads even when the program has an error
    if (auto h = prog.headerOptions()) {
      vocab = h->vocab.value_or(std::vector<std::string>{});
      maxLen = h->maxLen.value_or(0);
      causal = h->causal;
    }
    out += fmt::format("{}\n  {{\"name\": {}, \"description\": {}, \"category\": {}, \"difficulty\": {}, "
                       "\"vocab\": {}, \"max_len\": {}, \"causal\": {}}}",
                       i ? "," : "", quoted(p.name), quoted(p.description), quoted(p.category), quoted(p.difficulty),
                       jsonStrings(vocab), maxLen, causal ? "true" : "false");
  }
  return out + (progs->empty() ? "]\n" : "\n]\n");
}

} // namespace raspc::suite
