#include "semantics/Semantics.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

namespace raspc {

using ir::MapOp;

std::string dictKey(const Scalar &s) {
  // Integral numbers (bools, ints, whole floats) share the int key, as in Python.
  if (auto *b = std::get_if<bool>(&s)) return "i" + std::to_string(int(*b));
  if (auto *d = std::get_if<double>(&s))
    if (std::isfinite(*d) && std::floor(*d) == *d && std::fabs(*d) < 9e18)
      return "i" + std::to_string(static_cast<int64_t>(*d));
  return scalarKey(s);
}

bool scalarTruthy(const Scalar &s) {
  switch (s.index()) {
  case 0: return false;
  case 1: return std::get<bool>(s);
  case 2: return std::get<int64_t>(s) != 0;
  case 3: return std::get<double>(s) != 0;
  default: return !std::get<std::string>(s).empty();
  }
}

bool selects(const ir::Node &select, const Scalar &key, const Scalar &query, std::string *error) {
  if (select.cmp != ir::Comparison::Fn) return selects(select.cmp, key, query, error);
  Scalar args[2] = {key, query}, out;
  std::string why;
  if (!select.table->fn->call(args, 2, out, why)) {
    if (error) *error = why;
    return false;
  }
  return !isNone(out) && scalarTruthy(out);
}

bool selects(ir::Comparison c, const Scalar &key, const Scalar &query, std::string *error) {
  // Constant comparisons select every key (even None) or none, as in Tracr.
  if (c == ir::Comparison::True) return true;
  if (c == ir::Comparison::False || c == ir::Comparison::Fn) return false; // Fn: see above
  // Two ints (indices, int tokens): the N^2 comparisons of a select are the
  // interpreter's hot loop, so compare them without building operands and a result.
  const int64_t *k = std::get_if<int64_t>(&key), *q = std::get_if<int64_t>(&query);
  if (k && q) {
    switch (c) {
    case ir::Comparison::Eq: return *k == *q;
    case ir::Comparison::Lt: return *k < *q;
    case ir::Comparison::Gt: return *k > *q;
    case ir::Comparison::Ge: return *k >= *q;
    case ir::Comparison::Le: return *k <= *q;
    case ir::Comparison::Ne: return *k != *q;
    default: break;
    }
  }
  static const MapOp ops[] = {MapOp::Eq, MapOp::Lt, MapOp::Gt, MapOp::Ge, MapOp::Le, MapOp::Ne};
  Scalar args[2] = {key, query};
  OpResult r = applyOp(ops[int(c)], args, 2);
  if (!r.ok) {
    if (error) *error = r.error;
    return false;
  }
  return !isNone(r.value) && scalarTruthy(r.value);
}

namespace {

OpResult err(std::string msg) { return OpResult{false, {}, std::move(msg)}; }
OpResult ok(Scalar v) { return OpResult{true, std::move(v), {}}; }

bool isIntLike(const Scalar &s) { return std::holds_alternative<bool>(s) || std::holds_alternative<int64_t>(s); }
int64_t intOf(const Scalar &s) {
  return std::holds_alternative<bool>(s) ? int64_t(std::get<bool>(s)) : std::get<int64_t>(s);
}

OpResult typeError(MapOp op, const Scalar &a, const Scalar &b) {
  return err(fmt::format("unsupported operand types for '{}': {} and {}", ir::opName(op), scalarTypeName(a),
                         scalarTypeName(b)));
}

// Integers are 64-bit (the original's Python ints are not): say so when one overflows.
OpResult overflow(const char *op) {
  return err(fmt::format("integer overflow in '{}': the result does not fit in 64 bits", op));
}

// A repeated string over this is refused: it would be one value of an s-op or a host string.
constexpr uint64_t kMaxRepeatBytes = 1'000'000;

OpResult arith(MapOp op, const Scalar &a, const Scalar &b) {
  if (op == MapOp::Add && std::holds_alternative<std::string>(a) && std::holds_alternative<std::string>(b))
    return ok(std::get<std::string>(a) + std::get<std::string>(b));
  if (op == MapOp::Mul && (std::holds_alternative<std::string>(a) != std::holds_alternative<std::string>(b))) {
    // Repetition, as Python: "ab" * 2 and 2 * "ab" are "abab"; a count below 1 gives "".
    const Scalar &str = std::holds_alternative<std::string>(a) ? a : b, &count = &str == &a ? b : a;
    if (!isIntLike(count)) return typeError(op, a, b);
    const std::string &t = std::get<std::string>(str);
    int64_t k = std::max<int64_t>(intOf(count), 0);
    if (!t.empty() && uint64_t(k) > kMaxRepeatBytes / t.size())
      return err(fmt::format("string repetition longer than {} bytes", kMaxRepeatBytes));
    std::string out;
    out.reserve(t.size() * size_t(k));
    for (int64_t i = 0; i < k; ++i) out += t;
    return ok(std::move(out));
  }
  if (!isNumber(a) || !isNumber(b)) return typeError(op, a, b);
  if (isIntLike(a) && isIntLike(b)) {
    int64_t x = intOf(a), y = intOf(b), r = 0;
    switch (op) {
    case MapOp::Add:
      if (__builtin_add_overflow(x, y, &r)) return overflow("+");
      return ok(r);
    case MapOp::Sub:
      if (__builtin_sub_overflow(x, y, &r)) return overflow("-");
      return ok(r);
    case MapOp::Mul:
      if (__builtin_mul_overflow(x, y, &r)) return overflow("*");
      return ok(r);
    case MapOp::Div:
      if (y == 0) return err("division by zero");
      return ok(double(x) / double(y));
    case MapOp::Mod: {
      if (y == 0) return err("modulo by zero");
      if (x == INT64_MIN && y == -1) return ok(int64_t(0));
      int64_t m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return ok(m);
    }
    case MapOp::Pow: {
      if (y < 0) {
        if (x == 0) return err("zero cannot be raised to a negative power");
        return ok(std::pow(double(x), double(y)));
      }
      if (x == 0 || x == 1) return ok(y == 0 ? int64_t(1) : x);
      if (x == -1) return ok(int64_t(y % 2 ? -1 : 1));
      if (y > 63) return overflow("^");
      int64_t result = 1;
      for (int64_t e = 0; e < y; ++e)
        if (__builtin_mul_overflow(result, x, &result)) return overflow("^");
      return ok(result);
    }
    default: break;
    }
  }
  double x = toDouble(a), y = toDouble(b);
  switch (op) {
  case MapOp::Add: return ok(x + y);
  case MapOp::Sub: return ok(x - y);
  case MapOp::Mul: return ok(x * y);
  case MapOp::Div:
    if (y == 0) return err("division by zero");
    return ok(x / y);
  case MapOp::Mod: {
    if (y == 0) return err("modulo by zero");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return ok(m);
  }
  case MapOp::Pow:
    if (x == 0 && y < 0) return err("zero cannot be raised to a negative power");
    if (x < 0 && std::floor(y) != y) return err("a negative number cannot be raised to a fractional power");
    return ok(std::pow(x, y));
  default: return typeError(op, a, b);
  }
}

OpResult compare(MapOp op, const Scalar &a, const Scalar &b) {
  if (op == MapOp::Eq) return ok(scalarEquals(a, b));
  if (op == MapOp::Ne) return ok(!scalarEquals(a, b));
  int c;
  if (isNumber(a) && isNumber(b)) {
    if (isIntLike(a) && isIntLike(b)) {
      int64_t x = intOf(a), y = intOf(b);
      c = x < y ? -1 : x > y ? 1 : 0;
    } else {
      double x = toDouble(a), y = toDouble(b);
      c = x < y ? -1 : x > y ? 1 : 0;
    }
  } else if (std::holds_alternative<std::string>(a) && std::holds_alternative<std::string>(b)) {
    int r = std::get<std::string>(a).compare(std::get<std::string>(b));
    c = r < 0 ? -1 : r > 0 ? 1 : 0;
  } else {
    return err(fmt::format("cannot compare {} and {} with '{}'", scalarTypeName(a), scalarTypeName(b),
                           ir::opName(op)));
  }
  switch (op) {
  case MapOp::Lt: return ok(c < 0);
  case MapOp::Le: return ok(c <= 0);
  case MapOp::Gt: return ok(c > 0);
  default: return ok(c >= 0);
  }
}

} // namespace

OpResult applyOp(MapOp op, const Scalar *args, size_t n, const ir::Table *table) {
  if (op == MapOp::IfElse) {
    if (isNone(args[1])) return ok(Scalar{});
    return ok(scalarTruthy(args[1]) ? args[0] : args[2]);
  }
  for (size_t i = 0; i < n; ++i)
    if (isNone(args[i])) return ok(Scalar{});
  const Scalar &a = args[0];
  switch (op) {
  case MapOp::Neg:
  case MapOp::Pos:
    if (!isNumber(a)) return err(fmt::format("bad operand type for unary '{}': {}", ir::opName(op), scalarTypeName(a)));
    if (std::holds_alternative<double>(a)) return ok(op == MapOp::Neg ? -std::get<double>(a) : std::get<double>(a));
    if (op == MapOp::Neg && intOf(a) == INT64_MIN) return overflow("unary -");
    return ok(op == MapOp::Neg ? -intOf(a) : intOf(a));
  case MapOp::Not: return ok(!scalarTruthy(a));
  case MapOp::Indicator: return ok(int64_t(scalarTruthy(a) ? 1 : 0));
  case MapOp::Round: {
    if (!isNumber(a)) return err(fmt::format("round needs a number, got a {}", scalarTypeName(a)));
    if (isIntLike(a)) return ok(intOf(a));
    double d = std::get<double>(a);
    if (!std::isfinite(d) || std::fabs(d) > 9.2e18) return err(fmt::format("cannot round {}", formatScalar(a)));
    return ok(int64_t(std::nearbyint(d))); // round half to even, as Python does
  }
  case MapOp::Add: case MapOp::Sub: case MapOp::Mul: case MapOp::Div: case MapOp::Mod: case MapOp::Pow:
    return arith(op, a, args[1]);
  case MapOp::Eq: case MapOp::Ne: case MapOp::Lt: case MapOp::Le: case MapOp::Gt: case MapOp::Ge:
    return compare(op, a, args[1]);
  case MapOp::And: return ok(scalarTruthy(a) && scalarTruthy(args[1]));
  case MapOp::Or: return ok(scalarTruthy(a) || scalarTruthy(args[1]));
  case MapOp::In:
    for (auto &v : table->values)
      if (scalarEquals(v, a)) return ok(true);
    return ok(false);
  case MapOp::Lookup: {
    if (table->isList) {
      if (!isIntLike(a)) return err(fmt::format("list indices must be ints, not {}", scalarTypeName(a)));
      int64_t i = intOf(a), n = int64_t(table->values.size());
      int64_t j = i < 0 ? i + n : i;
      if (j < 0 || j >= n) return err(fmt::format("index {} out of range for a list of length {}", i, n));
      return ok(table->values[j]);
    }
    std::string key = dictKey(a);
    for (size_t i = 0; i < table->keys.size(); ++i)
      if (dictKey(table->keys[i]) == key) return ok(table->values[i]);
    return err(fmt::format("key {} not in dictionary", formatScalar(a, true)));
  }
  case MapOp::Func: {
    Scalar out;
    std::string error;
    if (!table->fn->call(args, n, out, error)) {
      OpResult r = err(std::move(error));
      r.hostFailure = true;
      return r;
    }
    return ok(std::move(out));
  }
  default: return err("unknown operation");
  }
}

} // namespace raspc
