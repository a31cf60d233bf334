// A single RASP value at one sequence position: None, bool, int, float or string.
#pragma once
#include <cstdint>
#include <string>
#include <variant>

namespace raspc {

using Scalar = std::variant<std::monostate, bool, int64_t, double, std::string>;

inline bool isNone(const Scalar &s) { return std::holds_alternative<std::monostate>(s); }
inline bool isNumber(const Scalar &s) {
  return std::holds_alternative<bool>(s) || std::holds_alternative<int64_t>(s) ||
         std::holds_alternative<double>(s);
}
// Numeric value of a bool/int/float scalar (callers check isNumber first).
double toDouble(const Scalar &s);

// Python-like rendering: None, True, 3, 2.0, 0.5; strings bare or quoted.
std::string formatScalar(const Scalar &s, bool quoteStrings = false);
// JSON rendering: null, true, 3, 2.0, "a".
std::string jsonScalar(const Scalar &s);
// Escape a string for a JSON string literal (without the quotes): always valid JSON
// in valid UTF-8; control characters as \u escapes, a byte that is not part of
// well-formed UTF-8 as \udc80-\udcff (which json::parse turns back into the byte).
std::string jsonEscape(const std::string &s);

// Python equality: 1 == 1.0 == True; strings equal only to strings.
bool scalarEquals(const Scalar &a, const Scalar &b);
// A total order used for hashing-consistent sorting of value sets: None < numbers < strings.
bool scalarLess(const Scalar &a, const Scalar &b);
// Type-tagged key for hash-consing (1 and 1.0 and True differ).
std::string scalarKey(const Scalar &s);
const char *scalarTypeName(const Scalar &s);

} // namespace raspc
