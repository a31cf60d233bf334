// raspc compile / run / verify / inspect: from RASP to weights and back.
#include "backend/Hdf5.h"
#include "backend/Safetensors.h"
#include "backend/Variants.h"
#include "frontend/Program.h"
#include "passes/Compiler.h"
#include "runtime/Circuit.h"
#include "runtime/Executor.h"
#include "suite/Exact.h"
#include "support/Files.h"
#include "tools/Commands.h"
#include "tools/Progress.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/SourceMgr.h>
#include <llvm/Support/raw_ostream.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <unistd.h>

namespace raspc::tools {

std::optional<ProgramOptions> loadProgram(Program &p, const ProgramFlags &f) {
  ProgramOptions flags;
  if (f.vocab) flags.vocab = splitArgs(*f.vocab);
  flags.maxLen = f.maxLen;
  flags.output = f.output;
  flags.causal = f.causal;
  return p.loadFileWithOptions(f.file, flags);
}

namespace {

void error(const std::string &msg) { llvm::errs() << "raspc: error: " << msg << "\n"; }

} // namespace

int checkOutputs(const std::vector<Output> &outs, const files::OutputRule &rule) {
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!outs[i].path) continue;
    const std::string &p = *outs[i].path;
    if (p.empty()) {
      error(outs[i].flag + ": empty file name");
      return 2;
    }
    for (size_t j = 0; j < i; ++j) {
      if (!outs[j].path) continue;
      bool same = false;
      if (*outs[j].path == p || (!llvm::sys::fs::equivalent(*outs[j].path, p, same) && same)) {
        error(fmt::format("{} '{}' is the same file as {} '{}'", outs[i].flag, p, outs[j].flag, *outs[j].path));
        return 2;
      }
    }
    if (auto e = files::checkOutput(p, rule)) {
      error(llvm::toString(std::move(e)));
      return 1;
    }
  }
  return 0;
}

namespace {

struct Compiled {
  Model model;
  CompileStats stats;
  ir::NodeId output;
  ProgramOptions opts;
  double seconds;
};

std::optional<Compiled> compileFile(Program &p, const ProgramFlags &f) {
  auto opts = loadProgram(p, f);
  if (!opts) return std::nullopt;
  if (!opts->vocab || opts->vocab->empty()) {
    error("no vocabulary: give --vocab \"a b c\" or a '# raspc: --vocab ...' header line in " + f.file);
    return std::nullopt;
  }
  if (!opts->maxLen) {
    error("no maximum length: give --max-len N or a '# raspc: --max-len N' header line in " + f.file);
    return std::nullopt;
  }
  auto out = p.resolveOutput(opts->output);
  if (!out) return std::nullopt;
  CompileOptions co;
  co.vocab = *opts->vocab;
  co.maxLen = *opts->maxLen;
  co.causal = opts->causal;
  co.maxParams = f.maxParams.value_or(kDefaultMaxParams);
  co.outputName = opts->output ? *opts->output : *p.evaluator().lastSOpName();
  co.source = p.sourceMgr().getMemoryBuffer(p.mainBuffer())->getBuffer().str();
  co.sourceName = f.file;
  co.warn = [&](llvm::SMLoc loc, const std::string &msg) { p.diags().warning(loc, msg); };
  Compiled c{{}, {}, *out, *opts, 0};
  auto t0 = std::chrono::steady_clock::now();
  auto m = compileProgram(p.graph(), *out, co, p.sourceMgr(), &c.stats);
  c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!m) {
    p.diags().report(m.takeError());
    return std::nullopt;
  }
  c.model = std::move(*m);
  return c;
}

std::string summary(const CompileStats &s) {
  return fmt::format("{} layer{}, {} head{} (at most {} per layer), residual width {}, MLP width {}, {} parameters",
                     s.layers, s.layers == 1 ? "" : "s", s.heads, s.heads == 1 ? "" : "s", s.headsPerLayer,
                     s.residual, s.mlpWidth, s.parameters);
}

} // namespace

int runCompile(const ProgramFlags &f, const std::string &out, bool force, bool json, const std::string &format) {
  files::OutputRule rule{force, {f.file}};
  if (int rc = checkOutputs({{"-o", out}}, rule)) return rc;
  Program p;
  auto c = compileFile(p, f);
  if (!c) return 1;
  // Every file the program loaded is an input too.
  for (unsigned id = 1; id <= p.sourceMgr().getNumBuffers(); ++id)
    rule.inputs.push_back(p.sourceMgr().getMemoryBuffer(id)->getBufferIdentifier().str());
  if (auto err = format == "safetensors" ? writeSafetensors(c->model, out, rule) : writeModel(c->model, out, rule)) {
    error(llvm::toString(std::move(err)));
    return 1;
  }
  if (json)
    std::cout << fmt::format("{{\"file\": \"{}\", \"layers\": {}, \"heads\": {}, \"n_heads\": {}, \"residual\": {}, "
                             "\"mlp\": {}, \"parameters\": {}, \"seconds\": {:.6f}}}\n",
                             jsonEscape(out), c->stats.layers, c->stats.heads, c->stats.headsPerLayer,
                             c->stats.residual, c->stats.mlpWidth, c->stats.parameters, c->seconds);
  else
    std::cout << "wrote " << out << ": " << summary(c->stats) << "\n";
  return 0;
}

namespace {

// The lines of an --inputs file, one at a time: memory is bounded by the longest line
// allowed, whatever the file's size. A last line without '\n' counts; nothing after
// the last '\n' is no line (as std::getline).
class LineReader {
public:
  static constexpr size_t kMaxLine = size_t(1) << 20;

  explicit LineReader(std::string path) : path_(std::move(path)) {}
  ~LineReader() {
    if (f_) std::fclose(f_);
  }

  llvm::Error open() {
    // A FIFO or a directory is refused at once instead of blocking or reading nothing.
    if (auto e = files::checkRegularFile(path_)) return e;
    f_ = std::fopen(path_.c_str(), "rb");
    if (!f_) return llvm::createStringError(llvm::inconvertibleErrorCode(), "%s: cannot open: %s", path_.c_str(),
                                            std::strerror(errno));
    return llvm::Error::success();
  }

  // The next line (without '\n') into `line`; false at the end of the file.
  llvm::Expected<bool> next(std::string &line) {
    line.clear();
    int c;
    bool any = false;
    while ((c = getc_unlocked(f_)) != EOF) {
      any = true;
      if (c == '\n') break;
      if (line.size() == kMaxLine)
        return llvm::createStringError(llvm::inconvertibleErrorCode(), "%s:%llu: the line is longer than %zu bytes",
                                       path_.c_str(), (unsigned long long)(number_ + 1), kMaxLine);
      line += char(c);
    }
    if (std::ferror(f_))
      return llvm::createStringError(llvm::inconvertibleErrorCode(), "%s:%llu: cannot read: %s", path_.c_str(),
                                     (unsigned long long)(number_ + 1), std::strerror(errno));
    if (!any) return false;
    ++number_;
    return true;
  }

  uint64_t lineNumber() const { return number_; } // of the last line read, from 1

private:
  std::string path_;
  std::FILE *f_ = nullptr;
  uint64_t number_ = 0;
};

// The byte column (from 1) of token `pos` (from 0) of a line, as splitArgs splits it.
size_t tokenColumn(llvm::StringRef text, int pos) {
  size_t off = 0;
  for (int i = 0; i <= pos; ++i) {
    off = text.find_first_not_of(" \t\r\n\v\f", i ? text.find_first_of(" \t\r\n\v\f", off) : 0);
    if (off == llvm::StringRef::npos) return 1;
  }
  return off + 1;
}

} // namespace

int runEvalInputs(const ProgramFlags &f, const std::string &inputsFile, bool json) {
  Program p;
  auto opts = tools::loadProgram(p, f);
  if (!opts) return 1;
  auto out = p.resolveOutput(opts->output);
  if (!out) return 1;
  LineReader reader(inputsFile);
  if (auto e = reader.open()) {
    error(llvm::toString(std::move(e)));
    return 1;
  }
  Interpreter interp(p.graph(), p.interpreterOptions(*opts));
  const std::string name = opts->output ? *opts->output : *p.evaluator().lastSOpName();
  std::string line;
  // The outputs of the lines before an error come first, as on a terminal.
  auto fail = [](const std::string &msg) {
    std::cout.flush();
    error(msg);
    return 1;
  };
  while (true) {
    auto more = reader.next(line);
    if (!more) return fail(llvm::toString(more.takeError()));
    if (!*more) break;
    // Checked here, not by parseInput, so that errors name the file's line and column.
    std::vector<std::string> tokens = splitArgs(line);
    const std::string at = fmt::format("{}:{}", inputsFile, reader.lineNumber());
    if (opts->maxLen && int(tokens.size()) > *opts->maxLen)
      return fail(fmt::format("{}: {} tokens, more than the maximum length {}", at, tokens.size(), *opts->maxLen));
    if (opts->vocab)
      for (size_t i = 0; i < tokens.size(); ++i)
        if (std::find(opts->vocab->begin(), opts->vocab->end(), tokens[i]) == opts->vocab->end())
          return fail(fmt::format("{}:{}: input token '{}' is not in the vocabulary {{{}}}", at,
                                  tokenColumn(line, int(i)), tokens[i], fmt::join(*opts->vocab, " ")));
    std::cout.flush();
    if (!p.interpret(interp, tokens, {*out})) {
      std::cerr << at << ": note: the input on this line\n";
      return 1;
    }
    const auto &v = interp.sop(*out);
    if (json)
      std::cout << "{\"output\": \"" << jsonEscape(name) << "\", \"value\": " << formatSequence(v, true) << "}\n";
    else
      std::cout << formatSequence(v, false) << "\n";
  }
  return 0;
}

int runModel(const std::string &path, const std::optional<std::string> &input,
             const std::optional<std::string> &inputsFile, bool json, bool trace, const std::string &precision,
             const std::string &device, int batchSize, int64_t maxParams, int threads) {
  Device dev = *parseDevice(device);
  if (dev == Device::Cuda && precision == "f64") { // a usage error, whether or not a GPU is here
    error("--precision f64 runs on the CPU only (the CUDA executor is float32)");
    return 2;
  }
  if (auto e = deviceError(dev)) {
    error("--device " + device + ": " + llvm::toString(std::move(e)));
    return 1;
  }
  auto m = readModel(path, maxParams);
  if (!m) {
    error(llvm::toString(m.takeError()));
    return 1;
  }
  auto exec = Executor::create(*m, precision == "f64" ? Precision::F64 : Precision::F32, dev);
  if (!exec) {
    error(llvm::toString(exec.takeError()));
    return 1;
  }
  exec->setThreads(threads);
  std::optional<LineReader> reader;
  if (inputsFile) {
    reader.emplace(*inputsFile);
    if (auto e = reader->open()) {
      error(llvm::toString(std::move(e)));
      return 1;
    }
  }
  // Batches of at most batchSize sequences, run and printed one after the other, so
  // that memory does not grow with the number of lines. lines[b] is the text of
  // batch[b], firstLine the file's line number of batch[0].
  std::vector<std::vector<std::string>> batch;
  std::vector<std::string> lines;
  uint64_t firstLine = 1;
  std::string pending; // one line read ahead, to know whether more follow
  bool havePending = false, multi = false;
  auto readAhead = [&]() -> llvm::Error {
    auto more = reader->next(pending);
    if (!more) return more.takeError();
    havePending = *more;
    return llvm::Error::success();
  };
  // "in.txt:3: " for --inputs (the line of sequence b of the batch), "" for --input.
  auto at = [&](int b) {
    return inputsFile ? fmt::format("{}:{}: ", *inputsFile, firstLine + uint64_t(b)) : std::string();
  };
  if (reader) {
    if (auto e = readAhead()) {
      error(llvm::toString(std::move(e)));
      return 1;
    }
  }
  uint64_t seqBase = 0; // sequences before this batch (for the trace's "[seq]" labels)
  // What each head computes or serves, for the attention part of the trace.
  std::map<std::pair<int, int>, std::string> headLabels = tools::headLabels(*m);
  std::map<int, Eigen::MatrixXd> entering; // per sequence: the residual entering the next sublayer
  std::vector<std::string> traceJson;      // per sequence of the batch, with --json
  TraceFn fn = [&](int layer, const std::string &sub, const Eigen::MatrixXd &res, int seq) {
    std::vector<std::pair<int, Eigen::MatrixXd>> patterns;
    if (sub == "attn") {
      auto all = attentionPatterns(*m, layer, entering[seq]);
      for (int h = 0; h < int(all.size()); ++h)
        if (headLabels.count({layer, h})) patterns.emplace_back(h, std::move(all[size_t(h)]));
    }
    entering[seq] = res;
    auto values = decodeNodes(*m, res);
    if (json) {
      if (traceJson.size() <= size_t(seq)) traceJson.resize(size_t(seq) + 1);
      std::string &t = traceJson[size_t(seq)];
      t += fmt::format("{}{{\"layer\": {}, \"sublayer\": \"{}\", \"values\": {{", t.empty() ? "" : ", ", layer, sub);
      for (size_t i = 0; i < values.size(); ++i)
        t += fmt::format("{}\"{}\": {}", i ? ", " : "", jsonEscape(values[i].first), formatSequence(values[i].second, true));
      t += "}";
      if (!patterns.empty()) {
        t += ", \"attention\": [";
        for (size_t i = 0; i < patterns.size(); ++i) {
          auto &[h, p] = patterns[i];
          t += fmt::format("{}{{\"head\": {}, \"node\": \"{}\", \"pattern\": [", i ? ", " : "", h,
                           jsonEscape(headLabels[{layer, h}]));
          for (Eigen::Index q = 0; q < p.rows(); ++q) {
            t += q ? ", [" : "[";
            for (Eigen::Index k = 0; k < p.cols(); ++k) t += fmt::format("{}{:.6g}", k ? ", " : "", p(q, k));
            t += "]";
          }
          t += "]}";
        }
        t += "]";
      }
      t += "}";
      return;
    }
    std::cout << (multi ? fmt::format("[{}] ", seqBase + uint64_t(seq)) : "")
              << (layer < 0 ? std::string("embedding") : fmt::format("layer {} {}", layer, sub)) << ":\n";
    for (auto &[name, vals] : values) std::cout << "  " << name << " = " << formatSequence(vals, false) << "\n";
    // Each query row: the keys it attends to with weight at least 0.005 (BOS is the row/key before position 0).
    for (auto &[h, p] : patterns) {
      std::cout << "  head " << h << " (" << headLabels[{layer, h}] << ") attends:\n";
      auto pos = [](Eigen::Index i) { return i == 0 ? std::string("BOS") : std::to_string(i - 1); };
      for (Eigen::Index q = 0; q < p.rows(); ++q) {
        std::string row;
        for (Eigen::Index k = 0; k < p.cols(); ++k)
          if (p(q, k) >= 0.005) row += fmt::format("{}{} {:.2f}", row.empty() ? "" : ", ", pos(k), p(q, k));
        std::cout << "    " << pos(q) << ": " << row << "\n";
      }
    }
  };
  const size_t maxLen = size_t(exec->maxLength());
  bool first = true;
  while (true) {
    batch.clear();
    lines.clear();
    if (!reader) {
      if (!first) break;
      batch.push_back(splitArgs(input.value_or("")));
    } else {
      firstLine = reader->lineNumber(); // that of the pending line
      while (havePending && batch.size() < size_t(batchSize)) {
        lines.push_back(std::move(pending));
        batch.push_back(splitArgs(lines.back()));
        if (batch.back().size() > maxLen) {
          error(fmt::format("{}{} tokens, more than the model's maximum length {}", at(int(batch.size()) - 1),
                            batch.back().size(), maxLen));
          return 1;
        }
        if (auto e = readAhead()) {
          error(llvm::toString(std::move(e)));
          return 1;
        }
      }
      if (batch.empty()) break;
    }
    if (first) multi = batch.size() > 1 || havePending;
    first = false;
    traceJson.clear();
    entering.clear();
    auto out = exec->run(batch, trace ? &fn : nullptr);
    if (!out) {
      llvm::Error err = out.takeError();
      llvm::handleAllErrors(
          std::move(err),
          [&](const InputError &e) {
            if (inputsFile) {
              // file:line:col, the column of the token in that line.
              error(fmt::format("{}:{}:{}: {}", *inputsFile, firstLine + uint64_t(e.seq),
                                tokenColumn(lines[size_t(e.seq)], e.pos), e.detail));
              return;
            }
            // Point at the token in the input, as `raspc eval` does.
            llvm::SourceMgr sm;
            unsigned id =
                sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(*input, "<input>"), llvm::SMLoc());
            llvm::StringRef text = sm.getMemoryBuffer(id)->getBuffer();
            size_t off = tokenColumn(text, e.pos) - 1;
            sm.PrintMessage(llvm::errs(), llvm::SMLoc::getFromPointer(text.data() + off), llvm::SourceMgr::DK_Error,
                            e.msg);
          },
          [&](const NonFiniteError &e) {
            error(fmt::format("{}{}: {} produced a non-finite value at {}", at(e.seq), path, e.where(),
                              e.position()));
          },
          [&](const llvm::ErrorInfoBase &e) { error(e.message()); });
      return 1;
    }
    for (size_t b = 0; b < out->size(); ++b) {
      const auto &v = (*out)[b];
      if (!json)
        std::cout << formatSequence(v, false) << "\n";
      else if (trace)
        std::cout << "{\"value\": " << formatSequence(v, true) << ", \"trace\": [" << traceJson[b] << "]}\n";
      else
        std::cout << "{\"value\": " << formatSequence(v, true) << "}\n";
    }
    std::cout.flush(); // each batch's lines before any later error on stderr
    seqBase += batch.size();
  }
  return 0;
}

namespace {

// `raspc verify --circuit`: the circuit's intervention checks after exactness. Prints the
// summary (or, with --json, returns the "interventions" object in `jsonOut`); false when
// a node fails its interchange or cone check.
bool verifyCircuit(Program &p, const Compiled &c, int pairs, uint64_t seed, bool json, std::string &jsonOut,
                   bool &ran) {
  Circuit circ = circuitOf(c.model);
  CircuitCheckOptions o;
  o.pairs = pairs;
  o.seed = seed;
  std::optional<Progress> bar;
  if (!json)
    o.progress = [&](uint64_t done, uint64_t total) {
      if (!bar) bar.emplace(total, true);
      bar->update(done);
    };
  auto r = checkCircuit(p.graph(), c.output, p.interpreterOptions(c.opts), c.model, circ, o);
  if (!r) {
    error(llvm::toString(r.takeError()));
    return false;
  }
  ran = true;
  if (json) {
    jsonOut = circuitReportJson(*r);
    return r->passed;
  }
  std::cout << fmt::format("circuit: {} components, {} edges (heads), {} edges (qkv); {} pairs per node, seed {}{}\n",
                           circ.components.size(), circ.headEdges.size(), circ.qkvEdges.size(), pairs, seed,
                           r->skippedPairs ? fmt::format(", {} pairs rejected by the interpreter", r->skippedPairs) : "");
  for (size_t i = 0; i < r->nodes.size(); ++i) {
    const NodeCheck &n = r->nodes[i];
    // As traces and `inspect` name nodes: "tokens", "indices", "length", else kind_id.
    auto info = std::find_if(c.model.nodes.begin(), c.model.nodes.end(), [&](auto &x) { return x.id == n.id; });
    std::string label = info != c.model.nodes.end() ? nodeLabel(*info) : fmt::format("{}_{}", circ.nodes[i].kind, n.id);
    if (n.check == "skipped") {
      std::cout << fmt::format("  {:<20} skipped: {}\n", label, n.reason);
      continue;
    }
    std::cout << fmt::format("  {:<20} {:<11} {}/{} agree ({} change it), cone ablation {}{}{}\n", label, n.check,
                             n.agree, n.pairs, n.differs,
                             n.coneReason.empty() ? fmt::format("{}/{} unchanged", n.coneUnchanged, n.conePairs)
                                                  : "skipped (" + n.coneReason + ")",
                             n.skippedPairs ? fmt::format(", {} pairs rejected", n.skippedPairs) : "",
                             n.passed() ? "" : "  FAILED");
    auto tokens = [](const std::vector<std::string> &t) {
      std::string s;
      for (auto &x : t) s += (s.empty() ? "" : " ") + x;
      return s;
    };
    if (n.failure)
      std::cout << fmt::format("    interchange a \"{}\", b \"{}\": model {}, interpreter {}\n", tokens(n.failure->a),
                               tokens(n.failure->b), formatSequence(n.failure->output, false),
                               formatSequence(n.failureWant, false));
    if (n.coneFailure)
      std::cout << fmt::format("    cone ablation a \"{}\", b \"{}\": value {}, interpreter {}\n",
                               tokens(n.coneFailure->a), tokens(n.coneFailure->b), formatSequence(n.coneGot, false),
                               formatSequence(n.coneWant, false));
  }
  std::cout << fmt::format("necessary: {}/{} components, {}/{} edges (heads), {}/{} edges (qkv) ({:.2f} s)\n",
                           r->componentsNecessary, r->componentsTotal, r->heads.necessary, r->heads.total,
                           r->qkv.necessary, r->qkv.total, r->seconds);
  return r->passed;
}

} // namespace

int runVerify(const ProgramFlags &f, int samples, uint64_t seed, bool json, int threads,
              std::optional<int> circuitPairs) {
  Program p;
  auto c = compileFile(p, f);
  if (!c) return 1;
  auto exec = Executor::create(c->model);
  if (!exec) {
    error(llvm::toString(exec.takeError()));
    return 1;
  }
  exec->setThreads(threads);
  std::optional<Progress> bar;
  ExactOptions eo{samples, seed, [&](uint64_t done, uint64_t total) {
                    if (!bar) bar.emplace(total, !json);
                    bar->update(done);
                  }};
  auto r = checkExact(p, c->model, c->output, c->opts, *exec, eo);
  if (!r) {
    error(llvm::toString(r.takeError()));
    return 1;
  }
  if (r->firstMismatch) llvm::errs() << (json ? "" : "\n") << r->describeMismatch();
  if (r->rejected)
    llvm::errs() << (json ? "" : "\n") << "the interpreter rejects " << r->rejected << " input"
                 << (r->rejected == 1 ? "" : "s") << ", first \"" << r->rejectedInput << "\": " << r->rejectedError
                 << "\n";
  if (json && circuitPairs) {
    // checks.json's form: {"exact": ..., "interventions": ...}.
    std::string interventions;
    bool ran = false;
    bool passed = verifyCircuit(p, *c, *circuitPairs, seed, true, interventions, ran);
    if (!ran) return 1;
    std::cout << "{\"exact\": " << r->json() << ",\n \"interventions\": " << interventions << "}\n";
    return r->exact() && passed ? 0 : 1;
  }
  if (json)
    std::cout << fmt::format("{{\"inputs\": {}, \"exhaustive\": {}, \"mismatches\": {}, \"rejected\": {}, "
                             "\"seconds\": {:.3f}}}\n",
                             r->inputs, r->exhaustive ? "true" : "false", r->mismatches, r->rejected, r->seconds);
  else
    std::cout << fmt::format("{}: {} {} inputs, {} mismatch{}{} ({})\n", f.file, r->exhaustive ? "all" : "random",
                             r->inputs, r->mismatches, r->mismatches == 1 ? "" : "es",
                             r->rejected ? fmt::format(", {} rejected by the interpreter", r->rejected) : "",
                             summary(c->stats));
  if (circuitPairs && !json) {
    std::string unused;
    bool ran = false;
    bool passed = verifyCircuit(p, *c, *circuitPairs, seed, false, unused, ran);
    if (!ran || !passed) return 1;
  }
  return r->exact() ? 0 : 1;
}

int runInspect(const std::string &path, bool json, int64_t maxParams) {
  auto m = readModel(path, maxParams);
  if (!m) {
    error(llvm::toString(m.takeError()));
    return 1;
  }
  const auto &c = m->cfg;
  // Every head and MLP neuron range of layer l: "attn head H" / "mlp neurons A-B", the
  // node it computes or serves, and what it does (the node's kind and op, or the helper's role).
  struct Component {
    std::string place, node, what, op, location;
  };
  auto places = [](const std::vector<int> &heads, int begin, int end) {
    std::vector<std::string> out;
    for (int h : heads) out.push_back(fmt::format("attn head {}", h));
    if (begin >= 0) out.push_back(fmt::format("mlp neurons {}-{}", begin, end - 1));
    return out;
  };
  auto components = [&](int l) {
    std::vector<Component> out;
    for (auto &n : m->nodes) {
      if (n.layer == l)
        for (auto &where : places(n.heads, n.mlpBegin, n.mlpEnd))
          out.push_back({where, nodeLabel(n), n.kind, n.op, n.location});
      for (auto &h : n.helpers)
        if (h.layer == l)
          for (auto &where : places(h.heads, h.mlpBegin, h.mlpEnd))
            out.push_back({where, nodeLabel(n), h.role, "", n.location});
    }
    return out;
  };
  if (json) {
    std::string s = fmt::format("{{\"file\": \"{}\", \"n_layers\": {}, \"heads\": {}, \"n_heads\": {}, \"d_head\": {}, "
                                "\"d_model\": {}, \"d_mlp\": {}, \"n_ctx\": {}, \"causal\": {}, \"output\": \"{}\", "
                                "\"output_encoding\": \"{}\", \"layers\": [",
                                jsonEscape(path), c.n_layers, usedHeads(*m), c.n_heads, c.d_head, c.d_model, c.d_mlp, c.n_ctx,
                                c.causal ? "true" : "false", jsonEscape(m->outputName), m->outputEncoding);
    for (int l = 0; l < c.n_layers; ++l) {
      s += (l ? ", [" : "[");
      bool first = true;
      for (const Component &x : components(l)) {
        s += fmt::format("{}{{\"place\": \"{}\", \"node\": \"{}\", \"kind\": \"{}\", \"op\": \"{}\", \"location\": \"{}\"}}",
                         first ? "" : ", ", x.place, jsonEscape(x.node), jsonEscape(x.what), jsonEscape(x.op),
                         jsonEscape(x.location));
        first = false;
      }
      s += "]";
    }
    s += "], \"residual_basis\": " +
         (hasResidualBasis(*m) ? fmt::format("{{\"kind\": \"{}\", \"labels\": {}, \"d_model\": {}}}",
                                             residualBasisKind(*m), residualLabelCount(*m), c.d_model)
                               : std::string("null"));
    s += ", \"residual\": [";
    for (size_t i = 0; i < m->residualLabels.size(); ++i)
      s += (i ? ", \"" : "\"") + jsonEscape(m->residualLabels[i]) + "\"";
    std::cout << s << "]}\n";
    return 0;
  }
  std::string vocab;
  for (auto &v : m->vocab) vocab += (vocab.empty() ? "" : " ") + v;
  const int heads = usedHeads(*m);
  std::cout << fmt::format("{}: {} layer{}, {} head{} (n_heads {} per layer, d_head {}), d_model {}, d_mlp {}, n_ctx {}{}\n",
                           path, c.n_layers, c.n_layers == 1 ? "" : "s", heads, heads == 1 ? "" : "s", c.n_heads,
                           c.d_head, c.d_model, c.d_mlp, c.n_ctx, c.causal ? ", causal" : "");
  std::cout << "vocabulary: " << vocab << "\noutput: " << m->outputName << " (" << m->outputEncoding << ")\n";
  for (int l = 0; l < c.n_layers; ++l) {
    std::cout << fmt::format("layer {}:\n", l);
    for (const Component &x : components(l))
      std::cout << fmt::format("  {:<20} {:<16} {:<20} {}\n", x.place, x.node, x.what + (x.op.empty() ? "" : " " + x.op),
                               x.location);
  }
  if (hasResidualBasis(*m))
    std::cout << fmt::format("residual basis: {} ({} labels in {} dimensions; a label's vector is its row of "
                             "metadata/residual_basis)\n",
                             residualBasisKind(*m), residualLabelCount(*m), c.d_model);
  std::cout << "residual (" << m->residualLabels.size() << (hasResidualBasis(*m) ? " labels" : "") << "):";
  for (size_t i = 0; i < m->residualLabels.size(); ++i) std::cout << (i % 8 ? " " : "\n  ") << m->residualLabels[i];
  std::cout << "\n";
  return 0;
}

} // namespace raspc::tools
