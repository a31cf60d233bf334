// Host values of the RASP evaluator. Host values (numbers, strings, lists, dicts,
// functions) are computed eagerly; s-ops and selectors are references to graph nodes.
#pragma once
#include "ir/Graph.h"
#include "ir/Scalar.h"

#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace raspc {

namespace ast { struct Stmt; }
struct Env;
class Value;

// `depth` is how deeply lists and dicts nest inside this one; the evaluator bounds it
// so that printing, comparing and freeing values cannot exhaust the stack.
struct ListValue {
  std::vector<Value> items;
  unsigned depth = 1;
};
struct DictValue;
struct Function {
  const ast::Stmt *def; // the `def` statement (kept alive by the evaluator)
  Env *closure;         // the scope it was defined in (owned by the evaluator)
};

enum class Builtin : uint8_t {
  Aggregate, SelectorWidth, Round, Indicator, Range, Zip, Len, Numerical, Categorical, Draw,
};
const char *builtinName(Builtin b);

struct SOpRef { ir::NodeId id; };
struct SelRef { ir::NodeId id; };
// The value of a name whose definition failed: using it fails silently, so one error
// is reported once rather than at every use.
struct Poison {};

class Value {
public:
  using Storage = std::variant<std::monostate, bool, int64_t, double, std::string,
                               std::shared_ptr<const ListValue>, std::shared_ptr<const DictValue>,
                               std::shared_ptr<const Function>, Builtin, SOpRef, SelRef, Poison>;
  enum Kind { None, Bool, Int, Float, Str, List, Dict, Func, BuiltinFn, SOp, Sel, Poisoned };

  Value() = default;
  Value(bool b) : v_(b) {}
  Value(int64_t i) : v_(i) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(std::shared_ptr<const ListValue> l) : v_(std::move(l)) {}
  Value(std::shared_ptr<const DictValue> d) : v_(std::move(d)) {}
  Value(std::shared_ptr<const Function> f) : v_(std::move(f)) {}
  Value(Builtin b) : v_(b) {}
  Value(SOpRef s) : v_(s) {}
  Value(SelRef s) : v_(s) {}
  Value(Poison p) : v_(p) {}
  static Value fromScalar(const Scalar &s);
  static Value list(std::vector<Value> items);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is(Kind k) const { return kind() == k; }
  bool isScalar() const { return kind() <= Str; }
  bool isNumber() const { return kind() == Bool || kind() == Int || kind() == Float; }
  Scalar scalar() const; // requires isScalar()
  const ListValue &asList() const { return *std::get<std::shared_ptr<const ListValue>>(v_); }
  const DictValue &asDict() const { return *std::get<std::shared_ptr<const DictValue>>(v_); }
  const Function &asFunc() const { return *std::get<std::shared_ptr<const Function>>(v_); }
  Builtin asBuiltin() const { return std::get<Builtin>(v_); }
  ir::NodeId node() const { return is(SOp) ? std::get<SOpRef>(v_).id : std::get<SelRef>(v_).id; }
  bool asBool() const { return std::get<bool>(v_); }
  int64_t asInt() const { return std::get<int64_t>(v_); }
  double asFloat() const { return std::get<double>(v_); }
  const std::string &asStr() const { return std::get<std::string>(v_); }
  const Storage &storage() const { return v_; }

private:
  Storage v_;
};

// Dict keys are scalars; Python's 1 == 1.0 == True share one slot (dictKey).
struct DictValue {
  std::vector<std::pair<Value, Value>> items;
  unsigned depth = 1;
  std::unordered_map<std::string, size_t> index;
  const Value *find(const Scalar &key) const;
  void set(const Value &key, Value v); // key must be scalar
};

unsigned nestingDepth(const Value &v); // 0 for non-containers
const char *typeName(const Value &v); // "int", "list", "s-op", ...
std::string aTypeName(const Value &v); // "an int", "a list", "an s-op", ...
std::string formatValue(const Value &v); // host values only, Python-like
bool valueEquals(const Value &a, const Value &b); // deep host equality
// The characters of a string, as Python sees them: one per UTF-8 code point ("§ab" has
// three). A byte that is not part of well-formed UTF-8 is a character of its own.
std::vector<std::string> codePoints(const std::string &s);

} // namespace raspc
