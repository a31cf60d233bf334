#include "Graph.h"

#include "semantics/Interpreter.h"

#include <fmt/format.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/raw_ostream.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

namespace raspc::py {

using ir::NodeKind;

ir::NodeId PyGraph::add(ir::Node n) {
  if (g.size() >= ir::Graph::kMaxNodes)
    throw Error(fmt::format("the graph has more than {} nodes", ir::Graph::kMaxNodes));
  return g.intern(std::move(n));
}

ir::NodeId PyGraph::node(int64_t id, const char *what) const {
  if (id < 0 || uint64_t(id) >= g.size())
    throw Error(fmt::format("{}: {} is not a node of this graph (it has {})", what, id, g.size()));
  return ir::NodeId(id);
}

ir::NodeId PyGraph::sop(int64_t id, const char *what) const {
  ir::NodeId n = node(id, what);
  if (g[n].isSelector()) throw Error(fmt::format("{}: node {} ({}) is a selector, not an s-op", what, id, g.label(n)));
  return n;
}

ir::NodeId PyGraph::selector(int64_t id, const char *what) const {
  ir::NodeId n = node(id, what);
  if (!g[n].isSelector()) throw Error(fmt::format("{}: node {} ({}) is an s-op, not a selector", what, id, g.label(n)));
  return n;
}

void PyGraph::locate() {
  if (located == g.size()) return;
  // Line k + 1 describes node k in every buffer, so a line number is a node id + 1.
  std::string text(located, '\n');
  std::vector<size_t> offsets;
  auto ref = [&](ir::NodeId a) {
    const ir::Node &n = g[a];
    bool builtin = n.kind == NodeKind::Tokens || n.kind == NodeKind::Indices || n.kind == NodeKind::Length;
    return !n.name.empty() || (builtin && n.encoding == ir::Encoding::Categorical) ? g.label(a) : fmt::format("n{}", a);
  };
  for (size_t i = located; i < g.size(); ++i) {
    const ir::Node &n = g[ir::NodeId(i)];
    offsets.push_back(text.size());
    std::string what = ir::kindName(n.kind);
    if (n.kind == NodeKind::Map)
      what += fmt::format("[{}]", n.op == ir::MapOp::Func ? n.table->fn->label() : std::string(ir::opName(n.op)));
    if (n.kind == NodeKind::Select) what += fmt::format("[{}]", ir::cmpName(n.cmp));
    if (n.kind == NodeKind::Constant) what += fmt::format("[{}]", formatScalar(n.value, true));
    if (n.kind == NodeKind::Tokens) what = ir::tokenTypeName(n.tokenType);
    std::string args;
    for (ir::NodeId a : n.args) args += (args.empty() ? "" : ", ") + ref(a);
    if (n.kind == NodeKind::Aggregate && !isNone(n.value))
      args += ", default=" + formatScalar(n.value, true);
    std::string enc = n.encoding == ir::Encoding::Numerical ? "numerical " : "";
    text += fmt::format("{} = {}{}({})\n", ref(ir::NodeId(i)), enc, what, args);
    listing += text.substr(offsets.back());
  }
  auto buf = llvm::MemoryBuffer::getMemBufferCopy(text, "<graph>");
  const char *start = buf->getBufferStart();
  sm.AddNewSourceBuffer(std::move(buf), llvm::SMLoc());
  for (size_t k = 0; k < offsets.size(); ++k)
    g.locateNode(ir::NodeId(located + k), llvm::SMLoc::getFromPointer(start + offsets[k]));
  located = g.size();
}

void PyGraph::fail(llvm::Error e) {
  std::string text;
  llvm::raw_string_ostream os(text);
  DiagnosticEngine d(sm, os);
  d.report(std::move(e));
  d.flushRepeats();
  throw diagnosticsError(d, sm, text);
}

namespace {

ir::Comparison parseCmp(const std::string &s) {
  static const std::pair<const char *, ir::Comparison> cmps[] = {
      {"==", ir::Comparison::Eq}, {"!=", ir::Comparison::Ne},    {"<", ir::Comparison::Lt},
      {"<=", ir::Comparison::Le}, {">", ir::Comparison::Gt},     {">=", ir::Comparison::Ge},
      {"true", ir::Comparison::True}, {"false", ir::Comparison::False}};
  for (auto &[name, c] : cmps)
    if (s == name) return c;
  throw Error("unknown comparison '" + s + "' (known: ==, !=, <, <=, >, >=, true, false)");
}

ir::TokenType parseTokenType(const std::string &s) {
  if (s == "auto") return ir::TokenType::Auto;
  if (s == "int") return ir::TokenType::Int;
  if (s == "str") return ir::TokenType::Str;
  if (s == "float") return ir::TokenType::Float;
  if (s == "bool") return ir::TokenType::Bool;
  throw Error("unknown token type '" + s + "' (known: auto, int, str, float, bool)");
}

std::string typeName(nb::handle h) { return nb::cast<std::string>(nb::str(nb::handle(h.type()).attr("__name__"))); }

// The host function of a Func node: calls the Python callable (with the GIL, on the
// caller's thread) and turns what it returns, or raises, into a value or an error
// that names the function and the arguments.
ir::HostFunction::Fn pythonFunction(PyGraph *owner, size_t index, std::string label) {
  // The graph owns the node and so the function: `owner` outlives every call.
  return [owner, index, label = std::move(label)](const Scalar *args, size_t n, Scalar &out,
                                                  std::string &error) -> bool {
    nb::gil_scoped_acquire gil;
    if (index >= owner->callables.size()) { // cleared by the garbage collector
      error = label + ": the function is gone (its graph is being freed)";
      return false;
    }
    nb::handle fn = owner->callables[index];
    nb::list list;
    for (size_t i = 0; i < n; ++i) list.append(toPython(args[i]));
    nb::tuple tuple = nb::tuple(list);
    auto called = [&]() {
      std::string a;
      for (nb::handle x : list) a += (a.empty() ? "" : ", ") + nb::cast<std::string>(nb::repr(x));
      return fmt::format("{}({})", label, a);
    };
    try {
      nb::object r = fn(*tuple);
      std::string why;
      if (!fromPython(r, out, why)) {
        error = fmt::format("{} returned {}: {}", called(), nb::cast<std::string>(nb::repr(r)), why);
        return false;
      }
      return true;
    } catch (nb::python_error &e) {
      error = fmt::format("{} raised {}: {}", called(), typeName(e.value()), nb::cast<std::string>(nb::str(e.value())));
      return false;
    }
  };
}

int graphTraverse(PyObject *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
  if (!nb::inst_ready(self)) return 0;
  for (const nb::object &fn : nb::inst_ptr<PyGraph>(self)->callables) Py_VISIT(fn.ptr());
  return 0;
}

int graphClear(PyObject *self) {
  nb::inst_ptr<PyGraph>(self)->callables.clear();
  return 0;
}

PyType_Slot graphSlots[] = {{Py_tp_traverse, (void *)graphTraverse}, {Py_tp_clear, (void *)graphClear}, {0, nullptr}};

} // namespace

void bindGraph(nb::module_ &m) {
  nb::class_<PyGraph>(m, "Graph", nb::type_slots(graphSlots),
                      "A RASP computation graph built node by node; node ids are ints.")
      .def(nb::init<>())
      .def("__len__", [](const PyGraph &g) { return g.g.size(); })
      .def(
          "tokens",
          [](PyGraph &g, const std::string &type) {
            ir::Node n;
            n.kind = NodeKind::Tokens;
            n.tokenType = parseTokenType(type);
            return g.add(std::move(n));
          },
          nb::arg("type") = "auto",
          "The input. type 'auto': ints when every token of the vocabulary / input is an int, else strs.")
      .def("indices",
           [](PyGraph &g) {
             ir::Node n;
             n.kind = NodeKind::Indices;
             return g.add(std::move(n));
           })
      .def("length",
           [](PyGraph &g) {
             ir::Node n;
             n.kind = NodeKind::Length;
             return g.add(std::move(n));
           })
      .def(
          "constant",
          [](PyGraph &g, nb::handle value) {
            ir::Node n;
            n.kind = NodeKind::Constant;
            std::string error;
            if (!fromPython(value, n.value, error)) throw Error("constant: " + error);
            return g.add(std::move(n));
          },
          nb::arg("value").none())
      .def(
          "func",
          [](PyGraph &g, nb::object fn, const std::vector<int64_t> &args, std::string label) {
            if (!PyCallable_Check(fn.ptr())) throw Error("func: " + typeName(fn) + " is not callable");
            if (args.empty() || args.size() > 3)
              throw Error(fmt::format("func: a function of {} s-ops; 1, 2 or 3 are supported (combine more in steps)",
                                      args.size()));
            if (label.empty())
              label = nb::hasattr(fn, "__name__") ? nb::cast<std::string>(nb::str(fn.attr("__name__"))) : "func";
            ir::Node n;
            n.kind = NodeKind::Map;
            n.op = ir::MapOp::Func;
            for (int64_t a : args) n.args.push_back(g.sop(a, "func"));
            auto t = std::make_shared<ir::Table>();
            g.callables.push_back(fn);
            t->fn = std::make_shared<ir::HostFunction>(label, args.size(),
                                                       pythonFunction(&g, g.callables.size() - 1, label));
            n.table = std::move(t);
            return g.add(std::move(n));
          },
          nb::arg("fn"), nb::arg("args"), nb::arg("label") = "",
          "fn applied elementwise to the s-ops args (1 to 3 of them); None in any argument gives None.")
      .def(
          "select",
          [](PyGraph &g, int64_t keys, int64_t queries, nb::object cmp) {
            ir::Node n;
            n.kind = NodeKind::Select;
            n.args = {g.sop(keys, "select keys"), g.sop(queries, "select queries")};
            if (nb::isinstance<nb::str>(cmp)) {
              n.cmp = parseCmp(nb::cast<std::string>(cmp));
            } else if (PyCallable_Check(cmp.ptr())) { // cmp(key, query), tabulated by the compiler
              std::string label =
                  nb::hasattr(cmp, "__name__") ? nb::cast<std::string>(nb::str(cmp.attr("__name__"))) : "predicate";
              n.cmp = ir::Comparison::Fn;
              auto t = std::make_shared<ir::Table>();
              g.callables.push_back(cmp);
              t->fn = std::make_shared<ir::HostFunction>(label, 2, pythonFunction(&g, g.callables.size() - 1, label));
              n.table = std::move(t);
            } else {
              throw Error("select: cmp is a comparison ('==', '<', ..., 'true', 'false') or a function of (key, "
                          "query), not " + typeName(cmp));
            }
            return g.add(std::move(n));
          },
          nb::arg("keys"), nb::arg("queries"), nb::arg("cmp"),
          "M[q][k] = keys[k] cmp queries[q]; cmp a comparison or a callable cmp(key, query).")
      .def(
          "select_and",
          [](PyGraph &g, int64_t a, int64_t b) {
            ir::Node n;
            n.kind = NodeKind::SelectAnd;
            n.args = {g.selector(a, "select_and"), g.selector(b, "select_and")};
            return g.add(std::move(n));
          },
          nb::arg("a"), nb::arg("b"))
      .def(
          "select_or",
          [](PyGraph &g, int64_t a, int64_t b) {
            ir::Node n;
            n.kind = NodeKind::SelectOr;
            n.args = {g.selector(a, "select_or"), g.selector(b, "select_or")};
            return g.add(std::move(n));
          },
          nb::arg("a"), nb::arg("b"))
      .def(
          "select_not",
          [](PyGraph &g, int64_t a) {
            ir::Node n;
            n.kind = NodeKind::SelectNot;
            n.args = {g.selector(a, "select_not")};
            return g.add(std::move(n));
          },
          nb::arg("a"))
      .def(
          "aggregate",
          [](PyGraph &g, int64_t sel, int64_t sop, nb::handle def) {
            ir::Node n;
            n.kind = NodeKind::Aggregate;
            n.args = {g.selector(sel, "aggregate"), g.sop(sop, "aggregate")};
            std::string error;
            if (!fromPython(def, n.value, error)) throw Error("aggregate default: " + error);
            return g.add(std::move(n));
          },
          nb::arg("sel"), nb::arg("sop"), nb::arg("default").none() = nb::none())
      .def(
          "selector_width",
          [](PyGraph &g, int64_t sel) {
            ir::Node n;
            n.kind = NodeKind::SelectorWidth;
            n.args = {g.selector(sel, "selector_width")};
            return g.add(std::move(n));
          },
          nb::arg("sel"))
      .def(
          "encode",
          [](PyGraph &g, int64_t id, const std::string &enc) {
            ir::Node n = g.g[g.sop(id, "encode")];
            if (enc == "numerical") n.encoding = ir::Encoding::Numerical;
            else if (enc == "categorical") n.encoding = ir::Encoding::Categorical;
            else throw Error("encode: unknown encoding '" + enc + "' (known: numerical, categorical)");
            n.name.clear();
            n.loc = llvm::SMLoc();
            return g.add(std::move(n));
          },
          nb::arg("node"), nb::arg("encoding"), "The node with that encoding (a node of its own).")
      .def(
          "name", [](PyGraph &g, int64_t id, const std::string &name) { g.g.nameNode(g.node(id, "name"), name); },
          nb::arg("node"), nb::arg("name"), "Names a node (the first name given wins).")
      .def(
          "label", [](const PyGraph &g, int64_t id) { return g.g.label(g.node(id, "label")); }, nb::arg("node"))
      .def(
          "evaluate",
          [](PyGraph &g, int64_t id, nb::handle tokensSeq, bool causal) -> nb::object {
            ir::NodeId n = g.node(id, "evaluate");
            bool allInts = true;
            for (nb::handle t : tokensSeq) allInts = allInts && PyLong_Check(t.ptr()) && !PyBool_Check(t.ptr());
            std::vector<std::string> tokens = tokensOf(tokensSeq);
            g.locate();
            InterpreterOptions io;
            io.causal = causal;
            io.intTokens = allInts && !tokens.empty();
            Interpreter interp(g.g, io);
            if (auto e = interp.run(tokens, {n})) g.fail(std::move(e));
            if (!g.g[n].isSelector()) return toPython(interp.sop(n));
            SelectorValue s = interp.selector(n);
            nb::list rows;
            for (size_t q = 0; q < s.n; ++q) {
              nb::list row;
              for (size_t k = 0; k < s.n; ++k) row.append(nb::bool_(s.at(q, k)));
              rows.append(row);
            }
            return rows;
          },
          nb::arg("node"), nb::arg("tokens"), nb::arg("causal") = false,
          "The reference interpreter: the node's values on tokens (a selector: rows by query).");
}

} // namespace raspc::py
