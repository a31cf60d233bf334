#include "backend/Json.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace raspc::json {

const Value *Value::get(std::string_view key) const {
  if (kind != Object) return nullptr;
  // The last occurrence wins, as in Python's json module.
  for (size_t i = keys.size(); i-- > 0;)
    if (keys[i] == key) return &members[i];
  return nullptr;
}

const char *kindName(Value::Kind k) {
  switch (k) {
  case Value::Null: return "null";
  case Value::Bool: return "boolean";
  case Value::Int: return "integer";
  case Value::Double: return "number";
  case Value::String: return "string";
  case Value::Array: return "array";
  case Value::Object: return "object";
  }
  return "?";
}

namespace {

class Parser {
public:
  explicit Parser(std::string_view text) : t_(text) {}

  llvm::Expected<Value> parseDocument() {
    Value v;
    skipWs();
    if (!parseValue(v, 0)) return takeError();
    skipWs();
    if (p_ != t_.size()) {
      fail("unexpected text after the JSON value");
      return takeError();
    }
    return v;
  }

private:
  std::string_view t_;
  size_t p_ = 0;
  std::string err_;
  size_t errAt_ = 0;

  bool fail(const std::string &what) {
    if (err_.empty()) {
      err_ = what;
      errAt_ = p_;
    }
    return false;
  }
  llvm::Error takeError() {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "invalid JSON at offset %zu: %s",
                                   errAt_, err_.c_str());
  }

  bool atEnd() const { return p_ >= t_.size(); }
  char peek() const { return atEnd() ? '\0' : t_[p_]; }
  void skipWs() {
    while (!atEnd() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r')) ++p_;
  }
  bool literal(std::string_view word) {
    if (t_.substr(p_, word.size()) != word) return fail("invalid literal");
    p_ += word.size();
    return true;
  }

  bool parseValue(Value &v, int depth) {
    if (depth >= kMaxDepth) return fail(fmt::format("nesting deeper than {} levels", kMaxDepth));
    if (atEnd()) return fail("unexpected end of input");
    char c = peek();
    switch (c) {
    case '{': return parseObject(v, depth);
    case '[': return parseArray(v, depth);
    case '"': v.kind = Value::String; return parseString(v.s);
    case 't': v.kind = Value::Bool; v.b = true; return literal("true");
    case 'f': v.kind = Value::Bool; v.b = false; return literal("false");
    case 'n': v.kind = Value::Null; return literal("null");
    default:
      if (c == '-' || (c >= '0' && c <= '9')) return parseNumber(v);
      return fail(fmt::format("unexpected character '{}'", printable(c)));
    }
  }

  static std::string printable(char c) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) return fmt::format("\\x{:02x}", u);
    return std::string(1, c);
  }

  bool parseArray(Value &v, int depth) {
    v.kind = Value::Array;
    ++p_; // '['
    skipWs();
    if (peek() == ']') {
      ++p_;
      return true;
    }
    while (true) {
      skipWs();
      v.array.emplace_back();
      if (!parseValue(v.array.back(), depth + 1)) return false;
      skipWs();
      if (atEnd()) return fail("unexpected end of input in an array");
      char c = t_[p_++];
      if (c == ']') return true;
      if (c != ',') {
        --p_;
        return fail("expected ',' or ']' in an array");
      }
    }
  }

  bool parseObject(Value &v, int depth) {
    v.kind = Value::Object;
    ++p_; // '{'
    skipWs();
    if (peek() == '}') {
      ++p_;
      return true;
    }
    while (true) {
      skipWs();
      if (peek() != '"') return fail("expected a string key in an object");
      std::string key;
      if (!parseString(key)) return false;
      skipWs();
      if (peek() != ':') return fail("expected ':' after an object key");
      ++p_;
      skipWs();
      v.keys.push_back(std::move(key));
      v.members.emplace_back();
      if (!parseValue(v.members.back(), depth + 1)) return false;
      skipWs();
      if (atEnd()) return fail("unexpected end of input in an object");
      char c = t_[p_++];
      if (c == '}') return true;
      if (c != ',') {
        --p_;
        return fail("expected ',' or '}' in an object");
      }
    }
  }

  bool hex4(unsigned &out) {
    if (t_.size() - p_ < 4) return fail("truncated \\u escape");
    out = 0;
    for (int k = 0; k < 4; ++k) {
      char c = t_[p_++];
      unsigned d;
      if (c >= '0' && c <= '9') d = unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') d = unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = unsigned(c - 'A' + 10);
      else {
        --p_;
        return fail("invalid hex digit in a \\u escape");
      }
      out = out * 16 + d;
    }
    return true;
  }

  static void appendUtf8(std::string &s, unsigned cp) {
    if (cp < 0x80) {
      s += char(cp);
    } else if (cp < 0x800) {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += char(0xE0 | (cp >> 12));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    } else {
      s += char(0xF0 | (cp >> 18));
      s += char(0x80 | ((cp >> 12) & 0x3F));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    }
  }

  bool parseString(std::string &out) {
    ++p_; // opening quote
    while (true) {
      if (atEnd()) return fail("unterminated string");
      char c = t_[p_];
      if (c == '"') {
        ++p_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      if (c != '\\') {
        out += c;
        ++p_;
        continue;
      }
      ++p_;
      if (atEnd()) return fail("unterminated string");
      char e = t_[p_++];
      switch (e) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        unsigned cp;
        if (!hex4(cp)) return false;
        if (cp >= 0xD800 && cp < 0xDC00) {
          if (t_.substr(p_, 2) != "\\u") return fail("unpaired surrogate in a \\u escape");
          p_ += 2;
          unsigned lo;
          if (!hex4(lo)) return false;
          if (lo < 0xDC00 || lo >= 0xE000) return fail("unpaired surrogate in a \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC80 && cp < 0xDD00) {
          // A byte that is not UTF-8, as jsonEscape writes it ("surrogateescape").
          out += char(cp - 0xDC00);
          break;
        } else if (cp >= 0xDC00 && cp < 0xE000) {
          return fail("unpaired surrogate in a \\u escape");
        }
        appendUtf8(out, cp);
        break;
      }
      default:
        --p_;
        return fail(fmt::format("invalid escape '\\{}'", printable(e)));
      }
    }
  }

  bool parseNumber(Value &v) {
    size_t start = p_;
    bool isInt = true;
    if (peek() == '-') ++p_;
    if (peek() == '0') {
      ++p_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++p_;
    } else {
      return fail("invalid number");
    }
    if (peek() == '.') {
      isInt = false;
      ++p_;
      if (!(peek() >= '0' && peek() <= '9')) return fail("invalid number: digits expected after '.'");
      while (peek() >= '0' && peek() <= '9') ++p_;
    }
    if (peek() == 'e' || peek() == 'E') {
      isInt = false;
      ++p_;
      if (peek() == '+' || peek() == '-') ++p_;
      if (!(peek() >= '0' && peek() <= '9')) return fail("invalid number: digits expected in the exponent");
      while (peek() >= '0' && peek() <= '9') ++p_;
    }
    const char *b = t_.data() + start, *e = t_.data() + p_;
    if (isInt) {
      int64_t i = 0;
      auto r = std::from_chars(b, e, i);
      if (r.ec == std::errc() && r.ptr == e) {
        v.kind = Value::Int;
        v.i = i;
        return true;
      }
      // Out of the int64 range: fall back to a double, as a float.
    }
    double d = 0;
    auto r = std::from_chars(b, e, d);
    if (r.ptr != e || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
      return fail("invalid number");
    if (r.ec == std::errc::result_out_of_range) {
      // Overflow to +-inf, underflow to 0, as Python's float() does.
      bool neg = *b == '-';
      bool tiny = false;
      for (const char *q = b; q < e; ++q)
        if ((*q == 'e' || *q == 'E') && q + 1 < e && q[1] == '-') tiny = true;
      d = tiny ? (neg ? -0.0 : 0.0) : (neg ? -HUGE_VAL : HUGE_VAL);
    }
    v.kind = Value::Double;
    v.d = d;
    return true;
  }
};

} // namespace

llvm::Expected<Value> parse(std::string_view text) { return Parser(text).parseDocument(); }

llvm::Expected<Scalar> toScalar(const Value &v) {
  switch (v.kind) {
  case Value::Null: return Scalar();
  case Value::Bool: return Scalar(v.b);
  case Value::Int: return Scalar(v.i);
  case Value::Double: return Scalar(v.d);
  case Value::String: return Scalar(v.s);
  default:
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "expected a scalar (null, boolean, number or string), got an %s",
                                   kindName(v.kind));
  }
}

} // namespace raspc::json

namespace raspc {
llvm::Expected<Scalar> parseJsonScalar(std::string_view text) {
  auto v = json::parse(text);
  if (!v) return v.takeError();
  return json::toScalar(*v);
}
} // namespace raspc
