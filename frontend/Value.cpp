#include "frontend/Value.h"

#include "semantics/Semantics.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace raspc {

const char *builtinName(Builtin b) {
  switch (b) {
  case Builtin::Aggregate: return "aggregate";
  case Builtin::SelectorWidth: return "selector_width";
  case Builtin::Round: return "round";
  case Builtin::Indicator: return "indicator";
  case Builtin::Range: return "range";
  case Builtin::Zip: return "zip";
  case Builtin::Len: return "len";
  case Builtin::Numerical: return "numerical";
  case Builtin::Categorical: return "categorical";
  case Builtin::Draw: return "draw";
  }
  return "?";
}

Value Value::fromScalar(const Scalar &s) {
  return std::visit(
      [](auto &&v) -> Value {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::monostate>) return Value();
        else return Value(v);
      },
      s);
}

Value Value::list(std::vector<Value> items) {
  auto l = std::make_shared<ListValue>();
  for (auto &v : items) l->depth = std::max(l->depth, nestingDepth(v) + 1);
  l->items = std::move(items);
  return Value(std::shared_ptr<const ListValue>(std::move(l)));
}

Scalar Value::scalar() const {
  switch (kind()) {
  case Bool: return asBool();
  case Int: return asInt();
  case Float: return asFloat();
  case Str: return asStr();
  default: return std::monostate{};
  }
}

const Value *DictValue::find(const Scalar &key) const {
  auto it = index.find(dictKey(key));
  return it == index.end() ? nullptr : &items[it->second].second;
}

void DictValue::set(const Value &key, Value v) {
  // Before the overwrite case too: {0: 0, 0: d} must not hide d's depth.
  depth = std::max(depth, nestingDepth(v) + 1);
  std::string k = dictKey(key.scalar());
  auto it = index.find(k);
  if (it != index.end()) {
    items[it->second].second = std::move(v);
    return;
  }
  index.emplace(std::move(k), items.size());
  items.emplace_back(key, std::move(v));
}

unsigned nestingDepth(const Value &v) {
  if (v.is(Value::List)) return v.asList().depth;
  if (v.is(Value::Dict)) return v.asDict().depth;
  return 0;
}

const char *typeName(const Value &v) {
  switch (v.kind()) {
  case Value::None: return "None";
  case Value::Bool: return "bool";
  case Value::Int: return "int";
  case Value::Float: return "float";
  case Value::Str: return "string";
  case Value::List: return "list";
  case Value::Dict: return "dict";
  case Value::Func: return "function";
  case Value::BuiltinFn: return "builtin function";
  case Value::SOp: return "s-op";
  case Value::Sel: return "selector";
  case Value::Poisoned: return "error";
  }
  return "?";
}

std::string aTypeName(const Value &v) {
  std::string t = typeName(v);
  if (v.is(Value::None)) return t;
  bool vowel = t[0] == 'a' || t[0] == 'e' || t[0] == 'i' || t[0] == 'o' || t[0] == 'u' || t == "s-op";
  return (vowel ? "an " : "a ") + t;
}

std::string formatValue(const Value &v) {
  switch (v.kind()) {
  case Value::List: {
    std::string s = "[";
    for (size_t i = 0; i < v.asList().items.size(); ++i)
      s += (i ? ", " : "") + formatValue(v.asList().items[i]);
    return s + "]";
  }
  case Value::Dict: {
    std::string s = "{";
    bool first = true;
    for (auto &[k, val] : v.asDict().items) {
      s += (first ? "" : ", ") + formatValue(k) + ": " + formatValue(val);
      first = false;
    }
    return s + "}";
  }
  case Value::Str: return "\"" + v.asStr() + "\"";
  case Value::Func: return "<function>";
  case Value::BuiltinFn: return std::string("<builtin ") + builtinName(v.asBuiltin()) + ">";
  case Value::SOp: return "<s-op>";
  case Value::Sel: return "<selector>";
  case Value::Poisoned: return "<error>";
  default: return formatScalar(v.scalar());
  }
}

namespace {
// Containers share elements, so [a, a] nested 99 deep has 2^99 paths; remembering
// the pairs of containers already found equal keeps a comparison linear in the
// number of distinct containers. (Unequal pairs end the comparison at once.)
using EqualPairs = std::set<std::pair<const void *, const void *>>;

bool valueEqualsImpl(const Value &a, const Value &b, EqualPairs &equal) {
  if (a.isScalar() && b.isScalar()) return scalarEquals(a.scalar(), b.scalar());
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
  case Value::List: {
    auto &x = a.asList().items, &y = b.asList().items;
    if (x.size() != y.size()) return false;
    if (equal.count({&x, &y})) return true;
    for (size_t i = 0; i < x.size(); ++i)
      if (!valueEqualsImpl(x[i], y[i], equal)) return false;
    equal.insert({&x, &y});
    return true;
  }
  case Value::Dict: {
    auto &x = a.asDict(), &y = b.asDict();
    if (x.items.size() != y.items.size()) return false;
    if (equal.count({&x, &y})) return true;
    for (auto &[k, v] : x.items) {
      const Value *o = y.find(k.scalar());
      if (!o || !valueEqualsImpl(v, *o, equal)) return false;
    }
    equal.insert({&x, &y});
    return true;
  }
  case Value::Func: return &a.asFunc() == &b.asFunc();
  case Value::BuiltinFn: return a.asBuiltin() == b.asBuiltin();
  case Value::SOp:
  case Value::Sel: return a.node() == b.node();
  default: return false;
  }
}
} // namespace

bool valueEquals(const Value &a, const Value &b) {
  EqualPairs equal;
  return valueEqualsImpl(a, b, equal);
}

} // namespace raspc

namespace raspc {
std::vector<std::string> codePoints(const std::string &s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + n > s.size()) n = 1;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) n = 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}
} // namespace raspc
