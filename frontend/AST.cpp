#include "frontend/AST.h"

#include <fmt/format.h>

namespace raspc::ast {

static std::string opText(Tok t) {
  std::string s = tokSpelling(t);
  return s.size() > 2 && s.front() == '\'' ? s.substr(1, s.size() - 2) : s;
}

std::string toString(const Expr &e) {
  auto list = [&](const std::vector<ExprPtr> &xs) {
    std::string s;
    for (auto &x : xs) s += " " + toString(*x);
    return s;
  };
  auto vars = [&] {
    std::string s;
    for (auto &v : e.vars) s += (s.empty() ? "" : ",") + v;
    return s;
  };
  switch (e.kind) {
  case ExprKind::Int: return std::to_string(e.intValue);
  case ExprKind::Float: return fmt::format("{}", e.floatValue);
  case ExprKind::String: return "\"" + e.text + "\"";
  case ExprKind::Name: return e.text;
  case ExprKind::List: return "[list" + list(e.items) + "]";
  case ExprKind::Dict: return "{dict" + list(e.items) + "}";
  case ExprKind::ListComp: return "[" + toString(*e.a) + " for " + vars() + " in " + toString(*e.b) + "]";
  case ExprKind::DictComp:
    return "{" + toString(*e.a) + ": " + toString(*e.c) + " for " + vars() + " in " + toString(*e.b) + "}";
  case ExprKind::Unary: return "(" + opText(e.op) + " " + toString(*e.a) + ")";
  case ExprKind::Binary: return "(" + opText(e.op) + " " + toString(*e.a) + " " + toString(*e.b) + ")";
  case ExprKind::Ternary: return "(if " + toString(*e.b) + " " + toString(*e.a) + " " + toString(*e.c) + ")";
  case ExprKind::Index: return "(index " + toString(*e.a) + " " + toString(*e.b) + ")";
  case ExprKind::Call: return "(call " + toString(*e.a) + list(e.items) + ")";
  case ExprKind::Select:
    return "(select " + toString(*e.a) + " " + toString(*e.b) + " " + opText(e.op) + ")";
  }
  return "?";
}

} // namespace raspc::ast
