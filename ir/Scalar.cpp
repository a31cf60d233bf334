#include "ir/Scalar.h"

#include <cmath>
#include <fmt/format.h>

namespace raspc {

double toDouble(const Scalar &s) {
  if (auto *b = std::get_if<bool>(&s)) return *b ? 1.0 : 0.0;
  if (auto *i = std::get_if<int64_t>(&s)) return static_cast<double>(*i);
  if (auto *d = std::get_if<double>(&s)) return *d;
  return 0.0;
}

static std::string formatDouble(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", d); // shortest round-trip
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF), or 0 when there is none.
static size_t utf8Length(const std::string &s, size_t i) {
  auto byte = [&](size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
  auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) { return byte(k) >= lo && byte(k) <= hi; };
  unsigned c = byte(i);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

std::string jsonEscape(const std::string &s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Names and values come from files and command lines, in any encoding. A byte
      // that is not part of well-formed UTF-8 is written as the lone surrogate
      // \udcXX (Python's "surrogateescape"): the output is valid UTF-8 and valid JSON,
      // and json::parse (and Python's bytes(..., 'surrogateescape')) gets the byte back,
      // so weight files keep such values exactly.
      size_t n = utf8Length(s, i);
      if (n == 0) {
        out += fmt::format("\\u{:04x}", 0xDC00 + c);
        ++i;
      } else {
        out.append(s, i, n);
        i += n;
      }
      continue;
    }
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\t': out += "\\t"; break;
    case '\r': out += "\\r"; break;
    default:
      if (c < 0x20 || c == 0x7f) out += fmt::format("\\u{:04x}", c);
      else out += static_cast<char>(c);
    }
    ++i;
  }
  return out;
}

std::string formatScalar(const Scalar &s, bool quoteStrings) {
  return std::visit(
      [&](auto &&v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::monostate>) return "None";
        else if constexpr (std::is_same_v<T, bool>) return v ? "True" : "False";
        else if constexpr (std::is_same_v<T, int64_t>) return std::to_string(v);
        else if constexpr (std::is_same_v<T, double>) return formatDouble(v);
        else return quoteStrings ? "\"" + v + "\"" : v;
      },
      s);
}

std::string jsonScalar(const Scalar &s) {
  return std::visit(
      [&](auto &&v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::monostate>) return "null";
        else if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, int64_t>) return std::to_string(v);
        else if constexpr (std::is_same_v<T, double>)
          return std::isfinite(v) ? formatDouble(v) : "null";
        else return "\"" + jsonEscape(v) + "\"";
      },
      s);
}

bool scalarEquals(const Scalar &a, const Scalar &b) {
  if (isNumber(a) && isNumber(b)) {
    if (std::holds_alternative<double>(a) || std::holds_alternative<double>(b))
      return toDouble(a) == toDouble(b);
    auto ai = std::holds_alternative<bool>(a) ? int64_t(std::get<bool>(a)) : std::get<int64_t>(a);
    auto bi = std::holds_alternative<bool>(b) ? int64_t(std::get<bool>(b)) : std::get<int64_t>(b);
    return ai == bi;
  }
  if (a.index() != b.index()) return false;
  if (isNone(a)) return true;
  return std::get<std::string>(a) == std::get<std::string>(b);
}

static int rank(const Scalar &s) { return isNone(s) ? 0 : isNumber(s) ? 1 : 2; }

bool scalarLess(const Scalar &a, const Scalar &b) {
  int ra = rank(a), rb = rank(b);
  if (ra != rb) return ra < rb;
  if (ra == 1) {
    double x = toDouble(a), y = toDouble(b);
    if (x != y) return x < y;
    return a.index() < b.index(); // keep 1 and 1.0 distinct but adjacent
  }
  if (ra == 2) return std::get<std::string>(a) < std::get<std::string>(b);
  return false;
}

std::string scalarKey(const Scalar &s) {
  switch (s.index()) {
  case 0: return "N";
  case 1: return std::get<bool>(s) ? "bT" : "bF";
  case 2: return "i" + std::to_string(std::get<int64_t>(s));
  case 3: return fmt::format("f{:a}", std::get<double>(s));
  default: return "s" + std::to_string(std::get<std::string>(s).size()) + ":" + std::get<std::string>(s);
  }
}

const char *scalarTypeName(const Scalar &s) {
  static const char *names[] = {"None", "bool", "int", "float", "string"};
  return names[s.index()];
}

} // namespace raspc
