// A minimal, strict JSON reader for the metadata of weight files (the ground-truth
// array and the output values). Objects, arrays, strings with escapes, numbers,
// true/false/null. A number without '.', 'e' or 'E' that fits in int64 is an Int,
// any other number a Double. Malformed input is an error naming the byte offset;
// nesting is capped (kMaxDepth) so the parser never recurses without bound.
// Writing JSON is done with jsonScalar / jsonEscape from ir/Scalar.h.
#pragma once
#include "ir/Scalar.h"

#include <llvm/Support/Error.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace raspc::json {

struct Value {
  enum Kind { Null, Bool, Int, Double, String, Array, Object };
  Kind kind = Null;
  bool b = false;
  int64_t i = 0;
  double d = 0.0;
  std::string s;
  std::vector<Value> array;
  std::vector<std::string> keys; // an object's members, in input order: keys[i]
  std::vector<Value> members;    // holds members[i]

  bool isNull() const { return kind == Null; }
  bool isNumber() const { return kind == Int || kind == Double; }
  // The member named `key` of an object, or nullptr (also when not an object).
  const Value *get(std::string_view key) const;
};

const char *kindName(Value::Kind k); // "null", "boolean", "integer", ...

constexpr int kMaxDepth = 64;

// Parses a whole JSON text (surrounding whitespace allowed, nothing else after it).
// Errors read "invalid JSON at offset N: <what>".
llvm::Expected<Value> parse(std::string_view text);

// A scalar value (null, true/false, a number or a string) as a RASP Scalar;
// arrays and objects are an error.
llvm::Expected<Scalar> toScalar(const Value &v);

} // namespace raspc::json

namespace raspc {
// Parses one JSON scalar as written by jsonScalar: `1` -> int, `0.5` -> float,
// `"a"` -> string, `true` -> bool, `null` -> None.
llvm::Expected<Scalar> parseJsonScalar(std::string_view text);
} // namespace raspc
