// raspc._core: the C++ compiler, interpreter, weight files and executor, called from
// Python in-process. python/raspc/ builds the public API on these functions; errors
// come out as raspc.RaspcError (raspc/errors.py) with the text the command line prints.
#include "Convert.h"
#include "Graph.h"

#include "backend/Hdf5.h"
#include "backend/Safetensors.h"
#include "frontend/Program.h"
#include "passes/Compiler.h"
#include "runtime/Executor.h"

#include <fmt/format.h>
#include <llvm/Support/raw_ostream.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>

namespace raspc::py {

namespace {

// A compiled or loaded model, with its executor made on first use.
struct PyModel {
  Model m;
  std::vector<std::string> inputs; // files a save must never overwrite (the source)
  std::optional<Executor> exec;

  Executor &executor() {
    if (!exec) {
      auto e = Executor::create(m);
      if (!e) throwError(e.takeError());
      exec.emplace(std::move(*e));
    }
    return *exec;
  }

  std::vector<std::vector<Scalar>> runBatch(const std::vector<std::vector<std::string>> &batch,
                                            const TraceFn *trace = nullptr) {
    Executor &ex = executor();
    for (size_t b = 0; b < batch.size(); ++b)
      if (batch[b].size() > size_t(ex.maxLength()))
        throw Error(fmt::format("sequence {}: {} tokens, more than the model's maximum length {}", b,
                                batch[b].size(), ex.maxLength()));
    auto out = ex.run(batch, trace);
    if (!out) throwError(out.takeError());
    return std::move(*out);
  }

  nb::list run(const std::vector<std::vector<std::string>> &batch) {
    nb::list out;
    for (auto &v : runBatch(batch)) out.append(toPython(v));
    return out;
  }

  nb::list logits(const std::vector<std::vector<std::string>> &batch) {
    runBatch(batch);
    nb::list out;
    for (size_t b = 0; b < batch.size(); ++b) out.append(toNumpy(executor().logits(int(b))));
    return out;
  }

  // Every step of one forward pass: (layer, sublayer, residual, {node: values}).
  nb::list trace(const std::vector<std::string> &tokens) {
    nb::list steps;
    TraceFn fn = [&](int layer, const std::string &sub, const Eigen::MatrixXd &res, int) {
      nb::dict values;
      for (auto &[name, vals] : decodeNodes(m, res)) values[nb::str(name.c_str())] = toPython(vals);
      steps.append(nb::make_tuple(layer, sub, toNumpy(res), values));
    };
    runBatch({tokens}, &fn);
    return steps;
  }

  nb::dict weights() const {
    nb::dict out;
    for (auto &[name, t] : m.tensors) out[nb::str(name.c_str())] = toNumpy(t.data, t.shape);
    return out;
  }

  nb::dict config() const {
    nb::dict c;
    c["n_layers"] = m.cfg.n_layers;
    c["d_model"] = m.cfg.d_model;
    c["n_heads"] = m.cfg.n_heads;
    c["d_head"] = m.cfg.d_head;
    c["d_mlp"] = m.cfg.d_mlp;
    c["d_vocab"] = m.cfg.d_vocab;
    c["d_vocab_out"] = m.cfg.d_vocab_out;
    c["n_ctx"] = m.cfg.n_ctx;
    c["causal"] = m.cfg.causal;
    return c;
  }

  nb::dict metadata() const {
    nb::dict d;
    d["format_version"] = Model::kFormatVersion;
    d["config"] = config();
    d["vocab"] = nb::cast(m.vocab);
    d["bos_id"] = m.bosId;
    d["pad_id"] = m.padId;
    d["int_tokens"] = m.intTokens;
    d["max_len"] = m.cfg.n_ctx - 1;
    d["causal"] = m.cfg.causal;
    d["layers"] = m.cfg.n_layers;
    d["output"] = m.outputName;
    d["output_encoding"] = m.outputEncoding;
    d["output_values"] = toPython(m.outputValues);
    d["residual_labels"] = nb::cast(m.residualLabels);
    // A rotated or compressed model's label vectors [n_labels, d_model], as lists (so
    // that metadata dicts still compare with ==); None: one-hot.
    if (hasResidualBasis(m)) {
      nb::list rows;
      const int64_t n = m.residualBasis.shape[0], dm = m.residualBasis.shape[1];
      for (int64_t i = 0; i < n; ++i) {
        nb::list row;
        for (int64_t j = 0; j < dm; ++j) row.append(double(m.residualBasis.at(i, j)));
        rows.append(row);
      }
      d["residual_basis"] = rows;
    } else {
      d["residual_basis"] = nb::none();
    }
    d["source"] = m.source;
    d["source_name"] = m.sourceName;
    nb::dict enc;
    for (const NodeInfo &n : m.nodes)
      if (!n.encoding.empty()) enc[nb::str(nodeLabel(n).c_str())] = n.encoding;
    d["encodings"] = enc;
    return d;
  }

  std::string groundTruth() const { return groundTruthJson(m.nodes); }

  void save(const std::string &path, bool overwrite, const std::string &format) {
    files::OutputRule rule{overwrite, inputs};
    if (format != "hdf5" && format != "safetensors")
      throw nb::value_error(("format must be 'hdf5' or 'safetensors', not '" + format + "'").c_str());
    if (auto e = format == "hdf5" ? writeModel(m, path, rule) : writeSafetensors(m, path, rule))
      throwError(std::move(e));
  }
};

struct Options {
  std::optional<std::vector<std::string>> vocab;
  std::optional<int> maxLen;
  std::optional<bool> causal;
  std::optional<std::string> output;
};

// A RASP program loaded from a file or text, its diagnostics captured for the error.
struct Loaded {
  std::string diagText;
  llvm::raw_string_ostream os{diagText};
  Program p{os};
  ProgramOptions opts;

  [[noreturn]] void fail() {
    p.diags().flushRepeats();
    throw diagnosticsError(p.diags(), p.sourceMgr(), diagText);
  }

  Loaded(const std::string &source, const std::string &name, bool isFile, const Options &o) {
    ProgramOptions flags;
    if (o.vocab) {
      if (std::string why = vocabularyProblem(*o.vocab); !why.empty()) throw Error("vocab: " + why);
      flags.vocab = o.vocab;
    }
    if (o.maxLen && (*o.maxLen < 1 || *o.maxLen > 100000))
      throw Error(fmt::format("max_len must be between 1 and 100000, got {}", *o.maxLen));
    flags.maxLen = o.maxLen;
    flags.output = o.output;
    flags.causal = o.causal.value_or(false);
    std::optional<ProgramOptions> got;
    if (isFile) {
      got = p.loadFileWithOptions(name, flags);
    } else if (p.loadSource(source, name)) {
      got = p.headerOptions();
      if (got) {
        flags.inheritFrom(*got);
        got = flags;
      }
    }
    if (!got) fail();
    opts = *got;
    // causal=False given explicitly overrides a header's --causal.
    if (o.causal) opts.causal = *o.causal;
  }

  ir::NodeId output() {
    auto out = p.resolveOutput(opts.output);
    if (!out) fail();
    return *out;
  }
};

PyModel compileSource(const std::string &source, const std::string &name, bool isFile, const Options &o,
                      int64_t maxParams) {
  Loaded l(source, name, isFile, o);
  const std::string where = isFile ? name : std::string("the source");
  if (!l.opts.vocab || l.opts.vocab->empty())
    throw Error("no vocabulary: give vocab=[...] or a '# raspc: --vocab ...' header line in " + where);
  if (!l.opts.maxLen) throw Error("no maximum length: give max_len=N or a '# raspc: --max-len N' header line in " + where);
  ir::NodeId out = l.output();
  CompileOptions co;
  co.vocab = *l.opts.vocab;
  co.maxLen = *l.opts.maxLen;
  co.causal = l.opts.causal;
  co.maxParams = maxParams;
  co.outputName = l.opts.output ? *l.opts.output : *l.p.evaluator().lastSOpName();
  co.source = l.p.sourceMgr().getMemoryBuffer(l.p.mainBuffer())->getBuffer().str();
  co.sourceName = name;
  std::vector<std::string> warnings;
  co.warn = [&](llvm::SMLoc loc, const std::string &msg) {
    warnings.push_back(describeLoc(l.p.sourceMgr(), loc) + ": warning: " + msg);
  };
  auto m = compileProgram(l.p.graph(), out, co, l.p.sourceMgr());
  if (!m) {
    l.p.diags().report(m.takeError());
    l.fail();
  }
  for (auto &w : warnings)
    if (PyErr_WarnEx(PyExc_UserWarning, w.c_str(), 2) < 0) throw nb::python_error();
  PyModel pm;
  pm.m = std::move(*m);
  if (isFile)
    for (unsigned id = 1; id <= l.p.sourceMgr().getNumBuffers(); ++id)
      pm.inputs.push_back(l.p.sourceMgr().getMemoryBuffer(id)->getBufferIdentifier().str());
  return pm;
}

nb::list evalSource(const std::string &source, const std::string &name, bool isFile,
                    const std::vector<std::vector<std::string>> &inputs, const Options &o) {
  Loaded l(source, name, isFile, o);
  ir::NodeId out = l.output();
  nb::list results;
  for (size_t b = 0; b < inputs.size(); ++b) {
    const auto &tokens = inputs[b];
    if (l.opts.vocab)
      for (size_t i = 0; i < tokens.size(); ++i)
        if (std::find(l.opts.vocab->begin(), l.opts.vocab->end(), tokens[i]) == l.opts.vocab->end()) {
          std::string vocab;
          for (auto &v : *l.opts.vocab) vocab += (vocab.empty() ? "" : " ") + v;
          throw Error(fmt::format("sequence {}, position {}: input token '{}' is not in the vocabulary {{{}}}", b,
                                  i, tokens[i], vocab));
        }
    if (l.opts.maxLen && int(tokens.size()) > *l.opts.maxLen)
      throw Error(fmt::format("sequence {}: {} tokens, more than the maximum length {}", b, tokens.size(),
                              *l.opts.maxLen));
    Interpreter interp(l.p.graph(), l.p.interpreterOptions(l.opts));
    if (!l.p.interpret(interp, tokens, {out})) l.fail();
    results.append(toPython(interp.sop(out)));
  }
  return results;
}

PyModel load(const std::string &path, int64_t maxParams) {
  auto m = readModel(path, maxParams);
  if (!m) { // the file is the place of the error (no line: it is HDF5)
    std::string text = llvm::toString(m.takeError());
    throw Error(text, text, path);
  }
  PyModel pm;
  pm.m = std::move(*m);
  return pm;
}

nb::object compileGraph(PyGraph &g, int64_t output, nb::handle vocabSeq, int maxLen, bool causal, int64_t maxParams) {
  ir::NodeId out = g.sop(output, "output");
  std::vector<std::string> vocab = tokensOf(vocabSeq);
  if (vocab.empty()) throw Error("the vocabulary is empty");
  if (std::string why = vocabularyProblem(vocab); !why.empty()) throw Error("vocab: " + why);
  if (maxLen < 1 || maxLen > 100000) throw Error(fmt::format("max_len must be between 1 and 100000, got {}", maxLen));
  g.locate();
  CompileOptions co;
  co.vocab = vocab;
  co.maxLen = maxLen;
  co.causal = causal;
  co.maxParams = maxParams;
  co.outputName = g.g[out].name.empty() ? g.g.label(out) : g.g[out].name;
  co.source = g.text();
  co.sourceName = "<graph>";
  std::vector<std::string> warnings;
  co.warn = [&](llvm::SMLoc loc, const std::string &msg) {
    warnings.push_back(describeLoc(g.sm, loc) + ": warning: " + msg);
  };
  auto m = compileProgram(g.g, out, co, g.sm);
  if (!m) g.fail(m.takeError());
  for (auto &w : warnings)
    if (PyErr_WarnEx(PyExc_UserWarning, w.c_str(), 2) < 0) throw nb::python_error();
  PyModel pm;
  pm.m = std::move(*m);
  // As raspc.Model, the class the rest of the package hands out.
  return nb::module_::import_("raspc.model").attr("Model")(nb::cast(std::move(pm)));
}

} // namespace

} // namespace raspc::py

using namespace raspc::py;

NB_MODULE(_core, mod) {
  mod.doc() = "raspc's C++ core (use the raspc package, not this module)";
  nb::register_exception_translator([](const std::exception_ptr &p, void *) {
    try {
      std::rethrow_exception(p);
    } catch (const Error &e) {
      nb::object cls = nb::module_::import_("raspc.errors").attr("RaspcError");
      nb::object file = e.file.empty() ? nb::none() : nb::object(nb::str(e.file.c_str()));
      nb::object line = e.line ? nb::object(nb::int_(e.line)) : nb::none();
      nb::object col = e.col ? nb::object(nb::int_(e.col)) : nb::none();
      nb::object exc = cls(nb::str(e.text.c_str()), file, line, col, nb::str(e.message.c_str()));
      PyErr_SetObject(cls.ptr(), exc.ptr());
    }
  });

  nb::class_<PyModel>(mod, "Model")
      .def("run", &PyModel::run, nb::arg("batch"))
      .def("logits", &PyModel::logits, nb::arg("batch"))
      .def("trace", &PyModel::trace, nb::arg("tokens"))
      .def("weights", &PyModel::weights)
      .def("config", &PyModel::config)
      .def("metadata", &PyModel::metadata)
      .def("ground_truth_json", &PyModel::groundTruth)
      .def("save", &PyModel::save, nb::arg("path"), nb::arg("overwrite") = false, nb::arg("format") = "hdf5");

  mod.def(
      "compile_source",
      [](const std::string &source, const std::string &name, bool isFile, std::optional<std::vector<std::string>> vocab,
         std::optional<int> maxLen, std::optional<bool> causal, std::optional<std::string> output,
         int64_t maxParams) {
        return compileSource(source, name, isFile, Options{vocab, maxLen, causal, output}, maxParams);
      },
      nb::arg("source"), nb::arg("name"), nb::arg("is_file"), nb::arg("vocab").none(), nb::arg("max_len").none(),
      nb::arg("causal").none(), nb::arg("output").none(), nb::arg("max_params") = raspc::kDefaultMaxParams);
  mod.def(
      "eval_source",
      [](const std::string &source, const std::string &name, bool isFile,
         const std::vector<std::vector<std::string>> &inputs, std::optional<std::vector<std::string>> vocab,
         std::optional<int> maxLen, std::optional<bool> causal, std::optional<std::string> output) {
        return evalSource(source, name, isFile, inputs, Options{vocab, maxLen, causal, output});
      },
      nb::arg("source"), nb::arg("name"), nb::arg("is_file"), nb::arg("inputs"), nb::arg("vocab").none(),
      nb::arg("max_len").none(), nb::arg("causal").none(), nb::arg("output").none());
  mod.def("load", &load, nb::arg("path"), nb::arg("max_params") = raspc::kDefaultMaxParams);
  mod.def("compile_graph", &compileGraph, nb::arg("graph"), nb::arg("output"), nb::arg("vocab"), nb::arg("max_len"),
          nb::arg("causal") = false, nb::arg("max_params") = raspc::kDefaultMaxParams);
  mod.attr("DEFAULT_MAX_PARAMS") = raspc::kDefaultMaxParams;
  bindGraph(mod);
}
