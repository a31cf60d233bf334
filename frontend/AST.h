// The RASP syntax tree produced by the parser and walked by the evaluator.
#pragma once
#include "frontend/Lexer.h"

#include <llvm/Support/SMLoc.h>

#include <memory>
#include <string>
#include <vector>

namespace raspc::ast {

enum class ExprKind : uint8_t {
  Int, Float, String, Name,
  List,      // items
  Dict,      // items = k0, v0, k1, v1, ...
  ListComp,  // a = element, b = iterable, vars
  DictComp,  // a = key, c = value, b = iterable, vars
  Unary,     // op a
  Binary,    // a op b   (arithmetic, comparison, and/or, in)
  Ternary,   // a if b else c
  Index,     // a[b]
  Call,      // a(items)
  Select,    // select(a, b, op), or select(a, b, c) with c a function of (key, query)
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind;
  llvm::SMLoc loc;  // the operator, or the start of a leaf / bracket
  Tok op = Tok::Eof;
  int64_t intValue = 0;
  double floatValue = 0;
  std::string text; // Name / String
  ExprPtr a, b, c;
  std::vector<ExprPtr> items;
  std::vector<std::string> vars; // comprehension variables
  std::vector<llvm::SMLoc> varLocs;
  unsigned depth = 1; // height of this subtree (bounded by the parser)

  Expr(ExprKind k, llvm::SMLoc l) : kind(k), loc(l) {}
};

// Repl: a statement of the original RASP REPL, accepted in files as it accepts them:
// names[0] is "set_example" (values[0] the example), "show_example", "full_seq",
// "examples" (path "on"/"off") or "exit"; names[1] the subset ("", "s-op", "selector").
enum class StmtKind : uint8_t { Expr, Assign, Def, For, Load, Repl };

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;

struct Stmt {
  StmtKind kind;
  llvm::SMLoc loc;
  // Assign: names = values; For: for names in values[0] { body };
  // Def: names[0](params) { body; return values }; Expr: values[0]; Load: path.
  std::vector<std::string> names;
  std::vector<llvm::SMLoc> nameLocs;
  std::vector<ExprPtr> values;
  std::vector<std::string> params;
  std::vector<llvm::SMLoc> paramLocs;
  std::vector<StmtPtr> body;
  llvm::SMLoc returnLoc;
  std::string path;

  Stmt(StmtKind k, llvm::SMLoc l) : kind(k), loc(l) {}
};

struct Module {
  unsigned bufferId = 0;
  std::vector<StmtPtr> statements;
};

} // namespace raspc::ast

namespace raspc::ast {
// S-expression rendering, e.g. "(+ a (* b 2))": shows exactly how an expression
// was grouped (for tests and debugging).
std::string toString(const Expr &e);
} // namespace raspc::ast
