#include "frontend/Evaluator.h"

#include "frontend/Parser.h"
#include "frontend/Stdlib.h"
#include "semantics/Interpreter.h"
#include "semantics/Semantics.h"

#include "support/Files.h"

#include <llvm/Support/FileSystem.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/Path.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace raspc {

namespace {
// A program file (or one it loads) over this is refused rather than read.
constexpr uint64_t kMaxProgramBytes = uint64_t(64) << 20;
} // namespace

const Value *Env::lookup(const std::string &name) const {
  for (const Env *e = this; e; e = e->parent) {
    auto it = e->vars.find(name);
    if (it != e->vars.end()) return &it->second;
  }
  return nullptr;
}

namespace {
// Thrown inside the evaluator; caught at statement level.
struct EvalError {
  llvm::SMLoc loc;
  std::string message;
};
struct PoisonUse {}; // a poisoned name was used: the error was already reported
} // namespace

using ast::Expr;
using ast::ExprKind;
using ast::Stmt;
using ast::StmtKind;
using ir::MapOp;
using ir::NodeId;
using ir::NodeKind;

class EvalImpl {
public:
  Evaluator &ev;
  ir::Graph &g;
  unsigned callDepth = 0;
  const char *stackBase = nullptr;

  explicit EvalImpl(Evaluator &e) : ev(e), g(e.graph_) {}

  [[noreturn]] static void fail(llvm::SMLoc loc, const llvm::Twine &msg) {
    throw EvalError{loc, msg.str()};
  }

  // ---- graph construction helpers ----
  bool inPrelude(llvm::SMLoc loc) const {
    const char *p = loc.getPointer();
    return p && p >= ev.preludeBegin_ && p < ev.preludeEnd_;
  }
  NodeId addNode(ir::Node n) {
    // A node built inside the standard library is the user's call of it: ground truth,
    // inspect and warnings then point at the user's line, not into the prelude.
    if (inPrelude(n.loc) && !ev.userCalls_.empty()) n.loc = ev.userCalls_.back();
    if (g.size() >= ir::Graph::kMaxNodes)
      fail(n.loc, llvm::Twine("the program builds more than ") + llvm::Twine(ir::Graph::kMaxNodes) +
                      " s-op and selector nodes");
    return g.intern(std::move(n));
  }
  NodeId constant(const Scalar &s, llvm::SMLoc loc) {
    ir::Node n;
    n.kind = NodeKind::Constant;
    n.value = s;
    n.loc = loc;
    return addNode(std::move(n));
  }
  // An s-op operand: s-ops as they are, atoms lifted to constant s-ops.
  NodeId liftSOp(const Value &v, llvm::SMLoc loc, const char *what) {
    if (v.is(Value::SOp)) return v.node();
    if (v.isScalar()) return constant(v.scalar(), loc);
    fail(loc, llvm::Twine("expected an s-op or an atom for ") + what + ", got " + aTypeName(v));
  }
  Value mapNode(MapOp op, std::vector<NodeId> args, llvm::SMLoc loc,
                std::shared_ptr<const ir::Table> table = nullptr) {
    ir::Node n;
    n.kind = NodeKind::Map;
    n.op = op;
    n.args = std::move(args);
    n.table = std::move(table);
    n.loc = loc;
    return SOpRef{addNode(std::move(n))};
  }
  NodeId builtinNode(NodeKind k, ir::TokenType t = ir::TokenType::Auto) {
    ir::Node n;
    n.kind = k;
    n.tokenType = t;
    return addNode(std::move(n));
  }

  // ---- guards ----
  void step(llvm::SMLoc loc) {
    charge(1, loc);
    char here;
    if (stackBase && size_t(stackBase - &here) > Evaluator::kMaxStackBytes)
      fail(loc, "evaluation is nested too deeply (recursion without end?)");
  }
  // Work on a whole collection (building, copying, scanning it) costs a step per
  // element: the step limit must bound the run time, and `for i in a { b = a == a; }`
  // or a loop with an empty body would otherwise run for hours.
  void charge(size_t n, llvm::SMLoc loc) {
    ev.steps_ += n;
    if (ev.steps_ > ev.maxSteps)
      fail(loc, llvm::Twine("evaluation takes more than ") + llvm::Twine(ev.maxSteps) +
                    " steps (a loop or recursion that does not end?)");
  }
  void checkSize(size_t n, llvm::SMLoc loc) {
    if (n > Evaluator::kMaxCollection)
      fail(loc, llvm::Twine("value too large: more than ") + llvm::Twine(Evaluator::kMaxCollection) +
                    " elements");
  }
  Value makeList(std::vector<Value> items, llvm::SMLoc loc) {
    checkSize(items.size(), loc);
    charge(items.size(), loc);
    Value v = Value::list(std::move(items));
    if (v.asList().depth > 100) fail(loc, "lists are nested too deeply (more than 100 levels)");
    return v;
  }

  // ---- statements ----
  void runStatements(const std::vector<ast::StmtPtr> &stmts, Env *env, bool topLevel) {
    for (auto &s : stmts) {
      if (ev.diags_.tooMany() || ev.repl.exitRequested) return;
      try {
        runStatement(*s, env, topLevel);
      } catch (EvalError &e) {
        ev.diags_.error(e.loc, e.message);
        poisonTargets(*s, env);
      } catch (PoisonUse &) {
        poisonTargets(*s, env);
      }
    }
  }

  // A reserved name keeps its value: assigning it was refused.
  void poisonTargets(const Stmt &s, Env *env) {
    if (s.kind == StmtKind::Assign || s.kind == StmtKind::Def)
      for (auto &n : s.names)
        if (!reservedName(n)) {
          if (!env->vars.count(n)) env->order.push_back(n);
          env->vars[n] = Poison{};
        }
  }

  // Names the original RASP refuses to rebind: every builtin (its inputs, constants and
  // host functions, so a new builtin is reserved too), `get`, and its library's names.
  // `tokens` stays assignable (`tokens = tokens_int;` is its documented idiom).
  bool reservedName(const std::string &name) const {
    static const char *const kLibrary[] = {
        "get", "full_s", "has_focus", "count", "contains", "max", "min", "average", "load_from_location", "shift",
        "mark_last_instance", "mark_first_instance", "select_from_last", "select_from_first", "sort",
        "select_next_identical"};
    if (name == "tokens") return false;
    if (ev.builtinEnv_->vars.count(name)) return true;
    for (const char *r : kLibrary)
      if (name == r) return true;
    return false;
  }
  void checkAssignable(const std::string &name, llvm::SMLoc loc) {
    if (!inPrelude(loc) && reservedName(name))
      fail(loc, "cannot assign to '" + name + "': it is a reserved name (a built-in or library name of RASP)");
  }

  void assign(Env *env, const std::string &name, Value v, bool topLevel) {
    if (v.is(Value::SOp) || v.is(Value::Sel)) g.nameNode(v.node(), name);
    if (!env->vars.count(name)) env->order.push_back(name);
    if (topLevel) {
      if (!env->vars.count(name)) ev.topNames_.push_back(name);
      if (v.is(Value::SOp)) ev.lastSOp_ = name;
    }
    env->vars[name] = v;
    if (topLevel && ev.onTopLevel) ev.onTopLevel(name, v);
  }

  void runStatement(const Stmt &s, Env *env, bool topLevel) {
    switch (s.kind) {
    case StmtKind::Expr: {
      Value v = eval(*s.values[0], env);
      if (topLevel && ev.onTopLevel) ev.onTopLevel("", v);
      return;
    }
    case StmtKind::Assign: {
      for (size_t i = 0; i < s.names.size(); ++i) checkAssignable(s.names[i], s.nameLocs[i]);
      std::vector<Value> vals = evalTargets(s.values, s.names.size(), s.loc, env);
      for (size_t i = 0; i < s.names.size(); ++i) assign(env, s.names[i], vals[i], topLevel);
      return;
    }
    case StmtKind::Def: {
      checkAssignable(s.names[0], s.nameLocs[0]);
      for (size_t i = 0; i < s.params.size(); ++i) checkAssignable(s.params[i], s.paramLocs[i]);
      auto f = std::make_shared<Function>(Function{&s, env});
      assign(env, s.names[0], Value(std::shared_ptr<const Function>(std::move(f))), topLevel);
      return;
    }
    case StmtKind::For: {
      for (size_t i = 0; i < s.names.size(); ++i) checkAssignable(s.names[i], s.nameLocs[i]);
      Value it = eval(*s.values[0], env);
      std::vector<Value> items = iterate(it, s.values[0]->loc);
      for (auto &item : items) {
        std::vector<Value> vals = unpack(item, s.names.size(), s.loc);
        for (size_t i = 0; i < s.names.size(); ++i) assign(env, s.names[i], vals[i], topLevel);
        // Errors inside the body are reported per statement; the loop goes on.
        runStatements(s.body, env, topLevel);
        if (ev.diags_.tooMany()) return;
      }
      return;
    }
    case StmtKind::Load: runLoad(s, env, topLevel); return;
    case StmtKind::Repl: runRepl(s, env, topLevel); return;
    }
  }

  void runRepl(const Stmt &s, Env *env, bool topLevel) {
    auto &r = ev.repl;
    const std::string &what = s.names[0], &sub = s.names[1];
    bool on = s.path == "on";
    if (what == "set_example") {
      Value v = eval(*s.values[0], env);
      checkOperand(v);
      bool ints = false;
      r.example = inputTokens(v, s.values[0]->loc, "set example", ints);
      r.intExample = ints;
    } else if (what == "full_seq") {
      r.fullSeqDisplay = on;
    } else if (what == "examples") {
      if (sub != "selector") r.showSOpExamples = on;
      if (sub != "s-op") r.showSelectorExamples = on;
    } else if (what == "exit") {
      r.exitRequested = true;
    }
    if (topLevel && ev.onRepl) ev.onRepl(s);
  }

  // n values for n targets: either n expressions, or one expression giving n values.
  std::vector<Value> evalTargets(const std::vector<ast::ExprPtr> &exprs, size_t n, llvm::SMLoc loc,
                                 Env *env) {
    std::vector<Value> vals;
    for (auto &e : exprs) vals.push_back(eval(*e, env));
    if (vals.size() == n) return vals;
    if (vals.size() == 1) return unpack(vals[0], n, exprs[0]->loc);
    fail(loc, llvm::Twine("cannot assign ") + llvm::Twine(vals.size()) + " values to " + llvm::Twine(n) +
                  " names");
  }

  std::vector<Value> unpack(const Value &v, size_t n, llvm::SMLoc loc) {
    if (n == 1) return {v};
    if (!v.is(Value::List))
      fail(loc, llvm::Twine("cannot unpack ") + aTypeName(v) + " into " + llvm::Twine(n) + " names");
    if (v.asList().items.size() != n)
      fail(loc, llvm::Twine("cannot unpack ") + llvm::Twine(v.asList().items.size()) + " values into " +
                    llvm::Twine(n) + " names");
    return v.asList().items;
  }

  std::vector<Value> iterate(const Value &v, llvm::SMLoc loc) {
    switch (v.kind()) {
    case Value::List: charge(v.asList().items.size(), loc); return v.asList().items;
    case Value::Dict: {
      charge(v.asDict().items.size(), loc);
      std::vector<Value> keys;
      for (auto &kv : v.asDict().items) keys.push_back(kv.first);
      return keys;
    }
    case Value::Str: {
      charge(v.asStr().size(), loc);
      std::vector<Value> chars;
      for (auto &c : codePoints(v.asStr())) chars.push_back(Value(std::move(c)));
      return chars;
    }
    case Value::Poisoned: throw PoisonUse{};
    default:
      fail(loc, llvm::Twine("cannot iterate over ") + aTypeName(v) +
                    (v.is(Value::SOp) ? " (s-ops are sequences of unknown length; loops run on host values)"
                                      : ""));
    }
  }

  void runLoad(const Stmt &s, Env *env, bool topLevel) {
    llvm::SMLoc loc = s.nameLocs[0];
    auto &sm = ev.diags_.sourceMgr();
    unsigned here = sm.FindBufferContainingLoc(loc);
    // As the original resolves it: relative to the working directory, then to the
    // directory of the file that loads it.
    llvm::SmallString<256> path(s.path + ".rasp"), real;
    if (llvm::sys::fs::real_path(path, real)) {
      llvm::SmallString<256> beside(llvm::sys::path::parent_path(sm.getMemoryBuffer(here)->getBufferIdentifier()));
      llvm::sys::path::append(beside, s.path + ".rasp");
      if (llvm::sys::fs::real_path(beside, real))
        fail(loc, "cannot load \"" + s.path + "\": no file '" + path + "' in the working directory" +
                      (beside != path ? " or '" + beside.str().str() + "'" : std::string()));
      path = beside;
    }
    std::string key = real.str().str();
    auto it = ev.loaded_.find(key);
    if (it != ev.loaded_.end()) {
      if (!it->second) fail(loc, "circular load of '" + path + "'");
      importPublic(it->second, env, s.loc, topLevel);
      return;
    }
    auto text = files::readRegularFile(key, kMaxProgramBytes);
    if (!text) fail(loc, "cannot load \"" + s.path + "\": " + llvm::toString(text.takeError()));
    unsigned id = sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(*text, key), loc);
    ev.loaded_[key] = nullptr;
    Env *modEnv = ev.newEnv(ev.mainEnv_->parent); // builtins and the prelude
    ev.runModule(id, modEnv, /*isMain=*/false);
    ev.repl.exitRequested = false; // `exit` in a loaded file ends that file only
    ev.loaded_[key] = modEnv;
    // As the original: the file's errors are reported (with this load as their context)
    // and what it did define is imported; names whose definition failed stay poisoned.
    importPublic(modEnv, env, s.loc, topLevel);
  }

  void importPublic(Env *from, Env *to, llvm::SMLoc, bool topLevel) {
    std::vector<std::pair<std::string, Value>> shown;
    for (auto &name : from->order) {
      if (name.empty() || name[0] == '_') continue;
      const Value &v = from->vars.at(name);
      if (!to->vars.count(name)) to->order.push_back(name); // re-exported by a loading file
      to->vars[name] = v;
      if (!v.is(Value::Poisoned)) shown.emplace_back(name, v);
    }
    if (topLevel && ev.onLoad) ev.onLoad(shown);
  }

  // ---- expressions ----
  Value lookupName(const Expr &e, Env *env) {
    const Value *v = env->lookup(e.text);
    if (!v) fail(e.loc, "use of undefined name '" + e.text + "'");
    if (v->is(Value::Poisoned)) {
      if (ev.reportPoisonUse) fail(e.loc, "'" + e.text + "' has no value: its definition failed");
      throw PoisonUse{};
    }
    return *v;
  }

  Value eval(const Expr &e, Env *env) {
    step(e.loc);
    switch (e.kind) {
    case ExprKind::Int: return Value(e.intValue);
    case ExprKind::Float: return Value(e.floatValue);
    case ExprKind::String: return Value(e.text);
    case ExprKind::Name: return lookupName(e, env);
    case ExprKind::List: {
      std::vector<Value> items;
      for (auto &i : e.items) items.push_back(eval(*i, env));
      return makeList(std::move(items), e.loc);
    }
    case ExprKind::Dict: {
      auto d = std::make_shared<DictValue>();
      for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
        Value k = eval(*e.items[i], env);
        if (!k.isScalar() || k.is(Value::None))
          fail(e.items[i]->loc, llvm::Twine("dictionary keys must be numbers, strings or bools, not ") +
                                    typeName(k));
        d->set(k, eval(*e.items[i + 1], env));
      }
      if (d->depth > 100) fail(e.loc, "dictionaries are nested too deeply");
      return Value(std::shared_ptr<const DictValue>(std::move(d)));
    }
    case ExprKind::ListComp:
    case ExprKind::DictComp: return evalComprehension(e, env);
    case ExprKind::Unary: return evalUnary(e, env);
    case ExprKind::Binary: return evalBinary(e, env);
    case ExprKind::Ternary: return evalTernary(e, env);
    case ExprKind::Index: return evalIndex(e, env);
    case ExprKind::Call: return evalCall(e, env);
    case ExprKind::Select: return evalSelect(e, env);
    }
    fail(e.loc, "unknown expression");
  }

  Value evalComprehension(const Expr &e, Env *env) {
    Value it = eval(*e.b, env);
    std::vector<Value> items = iterate(it, e.b->loc);
    // Comprehension variables live in their own scope, as in Python 3. No def can
    // capture it (expressions hold none), so it ends with the comprehension.
    Env scope;
    scope.parent = env;
    Env *inner = &scope;
    std::vector<Value> out;
    auto d = std::make_shared<DictValue>();
    for (auto &item : items) {
      std::vector<Value> vals = unpack(item, e.vars.size(), e.varLocs[0]);
      for (size_t i = 0; i < e.vars.size(); ++i) inner->vars[e.vars[i]] = vals[i];
      if (e.kind == ExprKind::ListComp) {
        out.push_back(eval(*e.a, inner));
        checkSize(out.size(), e.loc);
      } else {
        Value k = eval(*e.a, inner);
        if (!k.isScalar() || k.is(Value::None))
          fail(e.a->loc, llvm::Twine("dictionary keys must be numbers, strings or bools, not ") + typeName(k));
        d->set(k, eval(*e.c, inner));
        checkSize(d->items.size(), e.loc);
      }
    }
    if (e.kind == ExprKind::ListComp) return makeList(std::move(out), e.loc);
    if (d->depth > 100) fail(e.loc, "dictionaries are nested too deeply");
    return Value(std::shared_ptr<const DictValue>(std::move(d)));
  }

  static bool truthy(const Value &v) {
    switch (v.kind()) {
    case Value::None: return false;
    case Value::Bool: return v.asBool();
    case Value::Int: return v.asInt() != 0;
    case Value::Float: return v.asFloat() != 0;
    case Value::Str: return !v.asStr().empty();
    case Value::List: return !v.asList().items.empty();
    case Value::Dict: return !v.asDict().items.empty();
    default: return true;
    }
  }

  static void checkOperand(const Value &v) {
    if (v.is(Value::Poisoned)) throw PoisonUse{};
  }

  Value evalUnary(const Expr &e, Env *env) {
    Value a = eval(*e.a, env);
    checkOperand(a);
    if (e.op == Tok::KwNot) {
      if (a.is(Value::Sel)) {
        ir::Node n;
        n.kind = NodeKind::SelectNot;
        n.args = {a.node()};
        n.loc = e.loc;
        return SelRef{addNode(std::move(n))};
      }
      if (a.is(Value::SOp)) return mapNode(MapOp::Not, {a.node()}, e.loc);
      return Value(!truthy(a));
    }
    MapOp op = e.op == Tok::Minus ? MapOp::Neg : MapOp::Pos;
    if (a.is(Value::SOp)) return mapNode(op, {a.node()}, e.loc);
    if (!a.isScalar()) fail(e.loc, llvm::Twine("bad operand for unary '") + ir::opName(op) + "': " + typeName(a));
    auto r = applyScalar(op, {a.scalar()});
    if (!r.ok) fail(e.loc, r.error);
    return Value::fromScalar(r.value);
  }

  // Host-level application of an elementwise op, with the interpreter's semantics.
  static OpResult applyScalar(MapOp op, const std::vector<Scalar> &args) {
    return applyOp(op, args.data(), args.size());
  }

  static MapOp binaryOp(Tok t) {
    switch (t) {
    case Tok::Plus: return MapOp::Add;
    case Tok::Minus: return MapOp::Sub;
    case Tok::Star: return MapOp::Mul;
    case Tok::Slash: return MapOp::Div;
    case Tok::Percent: return MapOp::Mod;
    case Tok::Caret: return MapOp::Pow;
    case Tok::EqEq: return MapOp::Eq;
    case Tok::NotEq: return MapOp::Ne;
    case Tok::Less: return MapOp::Lt;
    case Tok::LessEq: return MapOp::Le;
    case Tok::Greater: return MapOp::Gt;
    case Tok::GreaterEq: return MapOp::Ge;
    case Tok::KwAnd: return MapOp::And;
    case Tok::KwOr: return MapOp::Or;
    default: return MapOp::None;
    }
  }

  std::shared_ptr<const ir::Table> tableOf(const Value &c, llvm::SMLoc loc) {
    auto t = std::make_shared<ir::Table>();
    charge(c.is(Value::List) ? c.asList().items.size() : c.asDict().items.size(), loc);
    if (c.is(Value::List)) {
      t->isList = true;
      for (auto &v : c.asList().items) {
        if (!v.isScalar())
          fail(loc, llvm::Twine("a list used with an s-op may hold only numbers, strings, bools and "
                                "None, not ") + aTypeName(v));
        t->values.push_back(v.scalar());
      }
    } else {
      t->isList = false;
      for (auto &[k, v] : c.asDict().items) {
        if (!v.isScalar())
          fail(loc, llvm::Twine("a dict used with an s-op may hold only numbers, strings, bools and "
                                "None, not ") + aTypeName(v));
        t->keys.push_back(k.scalar());
        t->values.push_back(v.scalar());
      }
    }
    return t;
  }

  Value evalIn(const Expr &e, const Value &x, const Value &c) {
    if (c.is(Value::SOp)) {
      // atom in sop: true everywhere iff some position holds the atom.
      if (!x.isScalar()) fail(e.loc, llvm::Twine("left side of 'in' an s-op must be an atom, not ") + aTypeName(x));
      NodeId sel = select(c.node(), constant(x.scalar(), e.loc), ir::Comparison::Eq, e.loc);
      ir::Node w;
      w.kind = NodeKind::SelectorWidth;
      w.args = {sel};
      w.loc = e.loc;
      NodeId width = addNode(std::move(w));
      return mapNode(MapOp::Gt, {width, constant(int64_t(0), e.loc)}, e.loc);
    }
    if (x.is(Value::SOp)) {
      if (!c.is(Value::List) && !c.is(Value::Dict))
        fail(e.loc, llvm::Twine("an s-op can be tested for membership in a list or dict, not ") + aTypeName(c));
      auto t = tableOf(c, e.loc);
      if (!t->isList) {
        auto keys = std::make_shared<ir::Table>();
        keys->values = t->keys;
        t = keys;
      }
      return mapNode(MapOp::In, {x.node()}, e.loc, t);
    }
    switch (c.kind()) {
    case Value::List:
      charge(c.asList().items.size(), e.loc);
      for (auto &v : c.asList().items)
        if (valueEquals(v, x)) return Value(true);
      return Value(false);
    case Value::Dict:
      if (!x.isScalar()) return Value(false);
      return Value(c.asDict().find(x.scalar()) != nullptr);
    case Value::Str:
      if (!x.is(Value::Str)) fail(e.loc, llvm::Twine("'in <string>' needs a string on the left, not ") + aTypeName(x));
      // memmem is linear; std::string::find takes seconds on "aa..ab" in "aa..a".
      charge(c.asStr().size() / 64, e.loc);
      return Value(memmem(c.asStr().data(), c.asStr().size(), x.asStr().data(), x.asStr().size()) != nullptr);
    default: fail(e.loc, llvm::Twine("cannot test membership in ") + aTypeName(c));
    }
  }

  Value evalBinary(const Expr &e, Env *env) {
    Value a = eval(*e.a, env);
    Value b = eval(*e.b, env);
    checkOperand(a);
    checkOperand(b);
    if (e.op == Tok::KwIn) return evalIn(e, a, b);
    MapOp op = binaryOp(e.op);
    if (a.is(Value::Sel) || b.is(Value::Sel)) {
      if (!(a.is(Value::Sel) && b.is(Value::Sel)) || (op != MapOp::And && op != MapOp::Or))
        fail(e.loc, llvm::Twine("selectors combine only with 'and', 'or' and 'not' of selectors; got ") +
                        typeName(a) + " " + ir::opName(op) + " " + typeName(b));
      ir::Node n;
      n.kind = op == MapOp::And ? NodeKind::SelectAnd : NodeKind::SelectOr;
      n.args = {a.node(), b.node()};
      n.loc = e.loc;
      return SelRef{addNode(std::move(n))};
    }
    if (a.is(Value::SOp) || b.is(Value::SOp))
      return mapNode(op, {liftSOp(a, e.a->loc, "this operator"), liftSOp(b, e.b->loc, "this operator")}, e.loc);
    // Host values.
    if (op == MapOp::And) return Value(truthy(a) && truthy(b));
    if (op == MapOp::Or) return Value(truthy(a) || truthy(b));
    if (op == MapOp::Eq || op == MapOp::Ne) {
      charge(a.is(Value::List) ? a.asList().items.size() : a.is(Value::Dict) ? a.asDict().items.size() : 0, e.loc);
      return Value(valueEquals(a, b) == (op == MapOp::Eq));
    }
    if (op == MapOp::Add && a.is(Value::List) && b.is(Value::List)) {
      std::vector<Value> items = a.asList().items;
      items.insert(items.end(), b.asList().items.begin(), b.asList().items.end());
      return makeList(std::move(items), e.loc);
    }
    if (op == MapOp::Add && a.is(Value::Str) && b.is(Value::Str)) {
      checkSize(a.asStr().size() + b.asStr().size(), e.loc);
      charge((a.asStr().size() + b.asStr().size()) / 64, e.loc); // bytes copy far faster than steps
      return Value(a.asStr() + b.asStr());
    }
    if (!a.isScalar() || !b.isScalar())
      fail(e.loc, llvm::Twine("unsupported operands for '") + ir::opName(op) + "': " + typeName(a) + " and " +
                      typeName(b));
    auto r = applyScalar(op, {a.scalar(), b.scalar()});
    if (!r.ok) fail(e.loc, r.error);
    return Value::fromScalar(r.value);
  }

  Value evalTernary(const Expr &e, Env *env) {
    Value c = eval(*e.b, env);
    checkOperand(c);
    if (c.is(Value::Sel)) fail(e.b->loc, "the condition of 'if' cannot be a selector");
    if (!c.is(Value::SOp)) return truthy(c) ? eval(*e.a, env) : eval(*e.c, env);
    Value x = eval(*e.a, env), y = eval(*e.c, env);
    checkOperand(x);
    checkOperand(y);
    return mapNode(MapOp::IfElse,
                   {liftSOp(x, e.a->loc, "a branch of 'if'"), c.node(), liftSOp(y, e.c->loc, "a branch of 'if'")},
                   e.loc);
  }

  static int64_t normalizeIndex(int64_t i, size_t n, llvm::SMLoc loc) {
    int64_t j = i < 0 ? i + int64_t(n) : i;
    if (j < 0 || j >= int64_t(n))
      fail(loc, llvm::Twine("index ") + llvm::Twine(i) + " out of range for length " + llvm::Twine(n));
    return j;
  }

  Value evalIndex(const Expr &e, Env *env) {
    Value c = eval(*e.a, env);
    Value i = eval(*e.b, env);
    checkOperand(c);
    checkOperand(i);
    if (c.is(Value::SOp)) {
      // sop[i]: the value at position i, at every position (None when out of range).
      if (!i.is(Value::Int))
        fail(e.b->loc, llvm::Twine("an s-op can be indexed only by a host int, not ") + aTypeName(i));
      NodeId pos = i.asInt() >= 0
                       ? constant(i.asInt(), e.loc)
                       : liftSOp(mapNode(MapOp::Add, {builtinNode(NodeKind::Length), constant(i.asInt(), e.loc)},
                                         e.loc),
                                 e.loc, "index");
      NodeId sel = select(builtinNode(NodeKind::Indices), pos, ir::Comparison::Eq, e.loc);
      return aggregate(sel, c.node(), Scalar(int64_t(0)), e.loc); // 0 out of range, as the original
    }
    if (i.is(Value::SOp)) {
      if (c.is(Value::Str)) { // "abc"[indices]: a lookup in the list of its characters
        checkSize(c.asStr().size(), e.loc);
        std::vector<Value> chars;
        for (auto &ch : codePoints(c.asStr())) chars.push_back(Value(std::move(ch)));
        return mapNode(MapOp::Lookup, {i.node()}, e.loc, tableOf(makeList(std::move(chars), e.loc), e.loc));
      }
      if (!c.is(Value::List) && !c.is(Value::Dict))
        fail(e.a->loc, llvm::Twine("only a list, dict or string can be indexed by an s-op, not ") + aTypeName(c));
      return mapNode(MapOp::Lookup, {i.node()}, e.loc, tableOf(c, e.loc));
    }
    switch (c.kind()) {
    case Value::List: {
      if (!i.is(Value::Int) && !i.is(Value::Bool))
        fail(e.b->loc, llvm::Twine("list indices must be ints, not ") + typeName(i));
      int64_t k = i.is(Value::Bool) ? int64_t(i.asBool()) : i.asInt();
      return c.asList().items[normalizeIndex(k, c.asList().items.size(), e.loc)];
    }
    case Value::Str: {
      if (!i.is(Value::Int)) fail(e.b->loc, llvm::Twine("string indices must be ints, not ") + typeName(i));
      charge(c.asStr().size() / 64, e.loc);
      std::vector<std::string> chars = codePoints(c.asStr());
      return Value(chars[normalizeIndex(i.asInt(), chars.size(), e.loc)]);
    }
    case Value::Dict: {
      const Value *v = i.isScalar() ? c.asDict().find(i.scalar()) : nullptr;
      if (!v) fail(e.loc, "key " + (i.isScalar() ? formatValue(i) : std::string(typeName(i))) + " not in dictionary");
      return *v;
    }
    default: fail(e.loc, llvm::Twine(aTypeName(c)) + " cannot be indexed");
    }
  }

  NodeId select(NodeId keys, NodeId queries, ir::Comparison cmp, llvm::SMLoc loc) {
    ir::Node n;
    n.kind = NodeKind::Select;
    n.cmp = cmp;
    n.args = {keys, queries};
    n.loc = loc;
    return addNode(std::move(n));
  }

  Value aggregate(NodeId sel, NodeId sop, const Scalar &dflt, llvm::SMLoc loc) {
    ir::Node n;
    n.kind = NodeKind::Aggregate;
    n.args = {sel, sop};
    n.value = dflt;
    n.loc = loc;
    return SOpRef{addNode(std::move(n))};
  }

  Value evalSelect(const Expr &e, Env *env) {
    Value k = eval(*e.a, env), q = eval(*e.b, env);
    checkOperand(k);
    checkOperand(q);
    if (e.c) return SelRef{predicateSelect(e, k, q, eval(*e.c, env))};
    ir::Comparison cmp;
    switch (e.op) {
    case Tok::EqEq: cmp = ir::Comparison::Eq; break;
    case Tok::Less: cmp = ir::Comparison::Lt; break;
    case Tok::Greater: cmp = ir::Comparison::Gt; break;
    case Tok::GreaterEq: cmp = ir::Comparison::Ge; break;
    case Tok::LessEq: cmp = ir::Comparison::Le; break;
    default: cmp = ir::Comparison::Ne; break;
    }
    return SelRef{select(liftSOp(k, e.a->loc, "the keys of select"), liftSOp(q, e.b->loc, "the queries of select"),
                         cmp, e.loc)};
  }

  // select(keys, queries, f): M[q][k] = f(keys[k], queries[q]) for a function of two
  // arguments. The compiler calls f on the values keys and queries can take (a W_QK
  // table over both), the interpreter on each pair; it runs then, not now, as a host
  // function of the graph (the evaluator outlives the graph's use).
  NodeId predicateSelect(const Expr &e, const Value &k, const Value &q, const Value &f) {
    checkOperand(f);
    if (!f.is(Value::Func))
      fail(e.c->loc, llvm::Twine("the third argument of select is a comparison (== != < <= > >=) or a function "
                                 "of (key, query), not ") +
                         aTypeName(f));
    Function fn = f.asFunc();
    const std::string &name = fn.def->names[0];
    if (fn.def->params.size() != 2)
      fail(e.c->loc, "a select predicate takes two arguments (key, query); '" + name + "' takes " +
                         llvm::Twine(fn.def->params.size()));
    Evaluator *owner = &ev;
    llvm::SMLoc at = e.c->loc;
    auto table = std::make_shared<ir::Table>();
    table->fn = std::make_shared<ir::HostFunction>(
        name, 2, [owner, fn, at](const Scalar *args, size_t, Scalar &out, std::string &error) {
          EvalImpl impl(*owner);
          char base;
          impl.stackBase = &base;
          try {
            Value r = impl.callFunction(fn, {Value::fromScalar(args[0]), Value::fromScalar(args[1])}, at);
            if (!r.isScalar()) {
              error = "select predicate '" + fn.def->names[0] + "' gave " + aTypeName(r) + ", not a bool";
              return false;
            }
            out = r.scalar();
            return true;
          } catch (EvalError &err) {
            error = err.message;
          } catch (PoisonUse &) {
            error = "select predicate '" + fn.def->names[0] + "' failed (reported above)";
          }
          return false;
        });
    ir::Node n;
    n.kind = NodeKind::Select;
    n.cmp = ir::Comparison::Fn;
    n.args = {liftSOp(k, e.a->loc, "the keys of select"), liftSOp(q, e.b->loc, "the queries of select")};
    n.table = std::move(table);
    n.loc = e.loc;
    return addNode(std::move(n));
  }

  // Whether running `body` can define a function, i.e. capture the running scope.
  static bool definesFunctions(const std::vector<ast::StmtPtr> &body) {
    for (auto &s : body)
      if (s->kind == StmtKind::Def || (s->kind == StmtKind::For && definesFunctions(s->body))) return true;
    return false;
  }

  void arity(const Expr &call, size_t lo, size_t hi, const char *name) {
    size_t n = call.items.size();
    if (n < lo || n > hi) {
      std::string want = lo == hi ? std::to_string(lo) : std::to_string(lo) + " to " + std::to_string(hi);
      fail(call.a->loc, llvm::Twine(name) + " takes " + want + " argument" + (hi == 1 ? "" : "s") + ", " +
                            llvm::Twine(n) + " given");
    }
  }

  Value evalCall(const Expr &e, Env *env) {
    Value f = eval(*e.a, env);
    checkOperand(f);
    std::vector<Value> args;
    for (auto &a : e.items) {
      args.push_back(eval(*a, env));
      checkOperand(args.back());
    }
    llvm::SMLoc loc = e.a->loc;
    if (f.is(Value::BuiltinFn)) return callBuiltin(e, f.asBuiltin(), args, loc);
    if (f.is(Value::SOp) || f.is(Value::Sel)) return callOnInput(e, f, args, loc);
    if (!f.is(Value::Func)) fail(loc, llvm::Twine(aTypeName(f)) + " is not callable");
    return callFunction(f.asFunc(), args, loc);
  }

  // Runs a user function on `args`, called at `loc`.
  Value callFunction(const Function &fn, const std::vector<Value> &args, llvm::SMLoc loc) {
    const Stmt &def = *fn.def;
    if (args.size() != def.params.size())
      fail(loc, "function '" + def.names[0] + "' takes " + llvm::Twine(def.params.size()) + " argument" +
                    (def.params.size() == 1 ? "" : "s") + ", " + llvm::Twine(args.size()) + " given");
    if (callDepth >= Evaluator::kMaxCallDepth)
      fail(loc, llvm::Twine("function calls nested more than ") + llvm::Twine(Evaluator::kMaxCallDepth) +
                    " deep (recursion without end?)");
    // Only a nested def keeps a frame alive (as its closure); other frames end with
    // the call, or a long loop of calls would hold gigabytes of dead frames.
    Env local;
    local.parent = fn.closure;
    Env *frame = definesFunctions(def.body) ? ev.newEnv(fn.closure) : &local;
    for (size_t i = 0; i < args.size(); ++i) frame->vars[def.params[i]] = args[i];
    ++callDepth;
    const bool userCall = !inPrelude(loc);
    if (userCall) ev.userCalls_.push_back(loc);
    struct Dec {
      unsigned &d;
      std::vector<llvm::SMLoc> *calls;
      ~Dec() {
        --d;
        if (calls) calls->pop_back();
      }
    } dec{callDepth, userCall ? &ev.userCalls_ : nullptr};
    // Errors inside a function body propagate to the call site's statement: the
    // body's location is reported, with a note at the call.
    for (auto &s : def.body) {
      try {
        runStatement(*s, frame, false);
      } catch (EvalError &err) {
        ev.diags_.error(err.loc, err.message);
        ev.diags_.note(loc, "in call to '" + def.names[0] + "' here");
        throw PoisonUse{};
      }
    }
    std::vector<Value> rets;
    try {
      for (auto &r : def.values) {
        rets.push_back(eval(*r, frame));
        checkOperand(rets.back());
      }
    } catch (EvalError &err) {
      ev.diags_.error(err.loc, err.message);
      ev.diags_.note(loc, "in call to '" + def.names[0] + "' here");
      throw PoisonUse{};
    }
    if (rets.size() == 1) return rets[0];
    return makeList(std::move(rets), loc);
  }

  // An input given as a host value, as the original takes one: a string is its characters
  // (as strings), a list its items; `ints` says whether they are all ints.
  std::vector<std::string> inputTokens(const Value &in, llvm::SMLoc loc, const char *user, bool &ints) {
    std::vector<std::string> toks;
    ints = false;
    if (in.is(Value::Str)) return codePoints(in.asStr());
    if (!in.is(Value::List))
      fail(loc, llvm::Twine(user) + " takes a string or a list as input, not " + aTypeName(in));
    ints = !in.asList().items.empty();
    for (auto &item : in.asList().items) {
      if (!item.isScalar() || item.is(Value::None))
        fail(loc, llvm::Twine("an input holds numbers, strings or bools, not ") + aTypeName(item));
      ints = ints && item.is(Value::Int);
      toks.push_back(item.is(Value::Str) ? item.asStr() : formatValue(item));
    }
    return toks;
  }

  // `x("abc")`, `x([1, 2])`: the value of an s-op (a list) or a selector (a list of rows
  // of bools) on that input, as the original REPL gives it. A string is its characters,
  // as strings; a list of ints makes int tokens.
  Value callOnInput(const Expr &e, const Value &f, const std::vector<Value> &args, llvm::SMLoc loc) {
    arity(e, 1, 1, f.is(Value::SOp) ? "an s-op" : "a selector");
    bool ints = false;
    std::vector<std::string> toks =
        inputTokens(args[0], e.items[0]->loc, f.is(Value::SOp) ? "an s-op" : "a selector", ints);
    checkSize(toks.size() * toks.size(), loc);
    charge(toks.size() * toks.size(), loc);
    InterpreterOptions opts;
    opts.intTokens = ints;
    Interpreter interp(g, opts);
    if (auto err = interp.run(toks, {f.node()})) {
      ev.diags_.report(std::move(err));
      ev.diags_.note(loc, "when applied to this input here");
      throw PoisonUse{};
    }
    std::vector<Value> out;
    if (f.is(Value::SOp)) {
      for (auto &x : interp.sop(f.node())) out.push_back(Value::fromScalar(x));
    } else {
      SelectorValue m = interp.selector(f.node());
      for (size_t q = 0; q < m.n; ++q) {
        std::vector<Value> row;
        for (size_t k = 0; k < m.n; ++k) row.push_back(Value(m.at(q, k)));
        out.push_back(makeList(std::move(row), loc));
      }
    }
    return makeList(std::move(out), loc);
  }

  Value callBuiltin(const Expr &e, Builtin b, const std::vector<Value> &args, llvm::SMLoc loc) {
    auto needSel = [&](size_t i) {
      if (!args[i].is(Value::Sel))
        fail(e.items[i]->loc, llvm::Twine(builtinName(b)) + " needs a selector as argument " + llvm::Twine(i + 1) +
                                  ", got " + aTypeName(args[i]));
      return args[i].node();
    };
    auto needInt = [&](size_t i) {
      if (!args[i].is(Value::Int))
        fail(e.items[i]->loc, llvm::Twine(builtinName(b)) + " needs an int, got " + aTypeName(args[i]));
      return args[i].asInt();
    };
    switch (b) {
    case Builtin::Aggregate: {
      arity(e, 2, 3, "aggregate");
      NodeId sel = needSel(0);
      NodeId sop = liftSOp(args[1], e.items[1]->loc, "the values of aggregate");
      // Without a default an empty selection gives 0, as in the original RASP; None (as
      // Tracr) only when asked for explicitly.
      Scalar dflt = int64_t(0);
      if (args.size() == 3) {
        if (!args[2].isScalar())
          fail(e.items[2]->loc, llvm::Twine("the default of aggregate must be an atom, not ") + aTypeName(args[2]));
        dflt = args[2].scalar();
      }
      return aggregate(sel, sop, dflt, loc);
    }
    case Builtin::SelectorWidth: {
      arity(e, 1, 1, "selector_width");
      ir::Node n;
      n.kind = NodeKind::SelectorWidth;
      n.args = {needSel(0)};
      n.loc = loc;
      return SOpRef{addNode(std::move(n))};
    }
    case Builtin::Round:
    case Builtin::Indicator: {
      arity(e, 1, 1, builtinName(b));
      MapOp op = b == Builtin::Round ? MapOp::Round : MapOp::Indicator;
      if (args[0].is(Value::SOp)) return mapNode(op, {args[0].node()}, loc);
      if (!args[0].isScalar())
        fail(e.items[0]->loc, llvm::Twine(builtinName(b)) + " needs a number or an s-op, got " + aTypeName(args[0]));
      auto r = applyScalar(op, {args[0].scalar()});
      if (!r.ok) fail(loc, r.error);
      return Value::fromScalar(r.value);
    }
    case Builtin::Range: {
      arity(e, 1, 3, "range");
      int64_t lo = 0, hi, st = 1;
      if (args.size() == 1) hi = needInt(0);
      else {
        lo = needInt(0);
        hi = needInt(1);
        if (args.size() == 3) st = needInt(2);
      }
      if (st == 0) fail(e.items[2]->loc, "range step must not be zero");
      std::vector<Value> items;
      for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
        items.push_back(Value(i));
        checkSize(items.size(), loc);
        if ((st > 0 && i > std::numeric_limits<int64_t>::max() - st) ||
            (st < 0 && i < std::numeric_limits<int64_t>::min() - st))
          break;
      }
      return makeList(std::move(items), loc);
    }
    case Builtin::Zip: {
      if (args.empty()) fail(loc, "zip takes at least 1 argument");
      std::vector<std::vector<Value>> cols;
      size_t n = std::numeric_limits<size_t>::max();
      for (size_t i = 0; i < args.size(); ++i) {
        cols.push_back(iterate(args[i], e.items[i]->loc));
        n = std::min(n, cols.back().size());
      }
      std::vector<Value> rows;
      for (size_t r = 0; r < n; ++r) {
        std::vector<Value> row;
        for (auto &c : cols) row.push_back(c[r]);
        rows.push_back(makeList(std::move(row), loc));
      }
      return makeList(std::move(rows), loc);
    }
    case Builtin::Len: {
      arity(e, 1, 1, "len");
      const Value &v = args[0];
      if (v.is(Value::List)) return Value(int64_t(v.asList().items.size()));
      if (v.is(Value::Dict)) return Value(int64_t(v.asDict().items.size()));
      if (v.is(Value::Str)) {
        charge(v.asStr().size() / 64, loc);
        return Value(int64_t(codePoints(v.asStr()).size()));
      }
      fail(e.items[0]->loc, llvm::Twine("len needs a list, dict or string, got ") + aTypeName(v) +
                                (v.is(Value::SOp) ? " (use 'length' for the length of the input)" : ""));
    }
    case Builtin::Draw:
      // The original draws the computation flow as a picture; raspc accepts the call so
      // its programs run, and `raspc graph` / `raspc inspect` show the same structure.
      arity(e, 1, 2, "draw");
      return Value();
    case Builtin::Numerical:
    case Builtin::Categorical: {
      arity(e, 1, 1, builtinName(b));
      if (!args[0].is(Value::SOp))
        fail(e.items[0]->loc, llvm::Twine(builtinName(b)) + " annotates an s-op, got " + aTypeName(args[0]));
      ir::Node n = g[args[0].node()];
      n.encoding = b == Builtin::Numerical ? ir::Encoding::Numerical : ir::Encoding::Categorical;
      n.name.clear();
      return SOpRef{addNode(std::move(n))};
    }
    }
    fail(loc, "unknown builtin");
  }
};

Evaluator::Evaluator(DiagnosticEngine &diags, ir::Graph &graph) : diags_(diags), graph_(graph) {
  builtinEnv_ = newEnv(nullptr);
  mainEnv_ = newEnv(builtinEnv_);
  EvalImpl impl(*this);
  auto &v = builtinEnv_->vars;
  v["True"] = Value(true);
  v["False"] = Value(false);
  v["None"] = Value();
  v["tokens"] = SOpRef{impl.builtinNode(NodeKind::Tokens, ir::TokenType::Auto)};
  v["tokens_asis"] = v["tokens"];
  v["tokens_int"] = SOpRef{impl.builtinNode(NodeKind::Tokens, ir::TokenType::Int)};
  v["tokens_str"] = SOpRef{impl.builtinNode(NodeKind::Tokens, ir::TokenType::Str)};
  v["tokens_float"] = SOpRef{impl.builtinNode(NodeKind::Tokens, ir::TokenType::Float)};
  v["tokens_bool"] = SOpRef{impl.builtinNode(NodeKind::Tokens, ir::TokenType::Bool)};
  v["indices"] = SOpRef{impl.builtinNode(NodeKind::Indices)};
  v["length"] = SOpRef{impl.builtinNode(NodeKind::Length)};
  for (Builtin b : {Builtin::Aggregate, Builtin::SelectorWidth, Builtin::Round, Builtin::Indicator, Builtin::Range,
                    Builtin::Zip, Builtin::Len, Builtin::Numerical, Builtin::Categorical, Builtin::Draw})
    v[builtinName(b)] = Value(b);
}

Evaluator::~Evaluator() = default;

void Evaluator::bindTokensAsStrings() { builtinEnv_->vars["tokens"] = builtinEnv_->vars["tokens_str"]; }

Env *Evaluator::newEnv(Env *parent) {
  envs_.push_back(std::make_unique<Env>());
  envs_.back()->parent = parent;
  return envs_.back().get();
}

bool Evaluator::runModule(unsigned bufferId, Env *env, bool isMain) {
  unsigned before = diags_.errorCount();
  auto module = parseBuffer(bufferId, diags_);
  if (diags_.errorCount() != before) return false;
  EvalImpl impl(*this);
  char base;
  impl.stackBase = &base;
  impl.runStatements(module->statements, env, isMain);
  modules_.push_back(std::move(module));
  return diags_.errorCount() == before;
}

bool Evaluator::loadPrelude() {
  auto &sm = diags_.sourceMgr();
  unsigned id = sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBuffer(kPreludeSource, "<prelude>"), llvm::SMLoc());
  preludeBegin_ = sm.getMemoryBuffer(id)->getBufferStart();
  preludeEnd_ = sm.getMemoryBuffer(id)->getBufferEnd();
  Env *prelude = newEnv(builtinEnv_);
  bool ok = runModule(id, prelude, false);
  // The main program sees the prelude's public names only.
  Env *exports = newEnv(builtinEnv_);
  for (auto &[name, v] : prelude->vars)
    if (name[0] != '_') exports->vars[name] = v;
  mainEnv_->parent = exports;
  return ok;
}

bool Evaluator::runFile(const std::string &path, unsigned *bufferId) {
  auto text = files::readRegularFile(path, kMaxProgramBytes);
  if (!text) {
    diags_.error(llvm::SMLoc(), llvm::toString(text.takeError()));
    return false;
  }
  llvm::SmallString<256> real;
  if (!llvm::sys::fs::real_path(path, real)) loaded_[real.str().str()] = mainEnv_;
  unsigned id = diags_.sourceMgr().AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(*text, path), llvm::SMLoc());
  if (bufferId) *bufferId = id;
  return runBuffer(id);
}

bool Evaluator::runBuffer(unsigned bufferId) { return runModule(bufferId, mainEnv_, true); }

} // namespace raspc
