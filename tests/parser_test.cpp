#include "frontend/Parser.h"

#include <gtest/gtest.h>
#include <llvm/Support/MemoryBuffer.h>

using namespace raspc;

namespace {

struct Parsed {
  llvm::SourceMgr sm;
  std::string diags;
  llvm::raw_string_ostream os{diags};
  DiagnosticEngine engine{sm, os};
  std::unique_ptr<ast::Module> module;
  explicit Parsed(const std::string &src) {
    unsigned id = sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(src, "p.rasp"), llvm::SMLoc());
    module = parseBuffer(id, engine);
    os.flush();
  }
};

// The grouping of one expression statement, as an s-expression.
std::string group(const std::string &expr) {
  Parsed p(expr + ";");
  EXPECT_EQ(p.diags, "") << expr;
  if (p.module->statements.size() != 1 || p.module->statements[0]->kind != ast::StmtKind::Expr) return "<not expr>";
  return ast::toString(*p.module->statements[0]->values[0]);
}

std::string errors(const std::string &src) { return Parsed(src).diags; }

TEST(Parser, Atoms) {
  EXPECT_EQ(group("12"), "12");
  EXPECT_EQ(group("1.5"), "1.5");
  EXPECT_EQ(group("\"ab\""), "\"ab\"");
  EXPECT_EQ(group("tokens"), "tokens");
  EXPECT_EQ(group("[1, 2, 3]"), "[list 1 2 3]");
  EXPECT_EQ(group("[]"), "[list]");
  EXPECT_EQ(group("{1: \"a\", 2: \"b\"}"), "{dict 1 \"a\" 2 \"b\"}");
  EXPECT_EQ(group("[x + 1 for x in range(3)]"), "[(+ x 1) for x in (call range 3)]");
  EXPECT_EQ(group("{k: v for k, v in zip(a, b)}"), "{k: v for k,v in (call zip a b)}");
}

TEST(Parser, PostfixAndCalls) {
  EXPECT_EQ(group("f(1, g(2))[0]"), "(index (call f 1 (call g 2)) 0)");
  EXPECT_EQ(group("select(indices, 0, ==)"), "(select indices 0 ==)");
  EXPECT_EQ(group("select(k, q, !=)"), "(select k q !=)");
  EXPECT_EQ(group("aggregate(s, tokens, 0)"), "(call aggregate s tokens 0)");
  EXPECT_EQ(group("round(x)"), "(call round x)");
}

// Tightest first: () [] call; prefix not - +; ^; * /; %; + -; comparisons; and/or;
// ternary; in.
TEST(Parser, Precedence) {
  EXPECT_EQ(group("1 + 2 * 3"), "(+ 1 (* 2 3))");
  EXPECT_EQ(group("(1 + 2) * 3"), "(* (+ 1 2) 3)");
  EXPECT_EQ(group("-x ^ 2"), "(^ (- x) 2)");
  EXPECT_EQ(group("2 ^ 3 ^ 2"), "(^ (^ 2 3) 2)");
  EXPECT_EQ(group("a * b % c"), "(% (* a b) c)");
  EXPECT_EQ(group("a % b + c"), "(+ (% a b) c)");
  EXPECT_EQ(group("a % b * c"), "(% a (* b c))");
  EXPECT_EQ(group("a - b - c"), "(- (- a b) c)");
  EXPECT_EQ(group("a + 1 == b * 2"), "(== (+ a 1) (* b 2))");
  EXPECT_EQ(group("a < b < c"), "(< (< a b) c)");
  EXPECT_EQ(group("not a == b"), "(== (not a) b)");
  EXPECT_EQ(group("a == b and c or d"), "(or (and (== a b) c) d)");
  EXPECT_EQ(group("a or b and c"), "(and (or a b) c)");
  EXPECT_EQ(group("x if a and b else y"), "(if (and a b) x y)");
  EXPECT_EQ(group("x + 1 if c else y - 1"), "(if c (+ x 1) (- y 1))");
  EXPECT_EQ(group("a if b else c if d else e"), "(if d (if b a c) e)");
  EXPECT_EQ(group("x + 1 in [1, 2]"), "(in (+ x 1) [list 1 2])");
  EXPECT_EQ(group("a in b if c else d"), "(in a (if c b d))");
  EXPECT_EQ(group("x if y in z else w"), "(if (in y z) x w)");
  EXPECT_EQ(group("select(a, b, ==) and select(c, d, <)"), "(and (select a b ==) (select c d <))");
  EXPECT_EQ(group("- - 1"), "(- (- 1))");
  EXPECT_EQ(group("+x"), "(+ x)");
}

TEST(Parser, Statements) {
  Parsed p(R"(
a = 1;
b, c = 2, 3;
d, e = f(x);
def g(x, y) {
  z = x + y;
  def h(w) { return w; }
  return h(z), 1;
}
for i in range(4) { a = a + i; }
for k, v in zip(xs, ys) { }
load "lib";
a + 1;
)");
  ASSERT_EQ(p.diags, "");
  auto &s = p.module->statements;
  ASSERT_EQ(s.size(), 8u);
  EXPECT_EQ(s[0]->kind, ast::StmtKind::Assign);
  EXPECT_EQ(s[1]->names, (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(s[1]->values.size(), 2u);
  EXPECT_EQ(s[2]->values.size(), 1u);
  EXPECT_EQ(s[3]->kind, ast::StmtKind::Def);
  EXPECT_EQ(s[3]->params, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(s[3]->body.size(), 2u);
  EXPECT_EQ(s[3]->body[1]->kind, ast::StmtKind::Def);
  EXPECT_EQ(s[3]->values.size(), 2u);
  EXPECT_EQ(s[4]->kind, ast::StmtKind::For);
  EXPECT_EQ(s[5]->names, (std::vector<std::string>{"k", "v"}));
  EXPECT_EQ(s[6]->kind, ast::StmtKind::Load);
  EXPECT_EQ(s[6]->path, "lib");
  EXPECT_EQ(s[7]->kind, ast::StmtKind::Expr);
}

TEST(ParserErrors, MissingSemicolon) {
  EXPECT_EQ(errors("a = 1\nb = 2;"), "p.rasp:2:1: error: expected ';' at end of statement, found identifier 'b'\n"
                                     "b = 2;\n^\n");
}

TEST(ParserErrors, MissingOperand) {
  EXPECT_EQ(errors("x = tokens + ;"), "p.rasp:1:14: error: expected an expression, found ';'\nx = tokens + ;\n"
                                      "             ^\n");
}

TEST(ParserErrors, UnclosedParenAtEndOfFile) {
  EXPECT_EQ(errors("x = (1 + 2;"), "p.rasp:1:11: error: expected ')' to close '(', found ';'\nx = (1 + 2;\n"
                                   "          ^\n");
  EXPECT_EQ(errors("x = f(1"), "p.rasp:1:8: error: expected ')' to close the argument list, found end of file\n"
                               "x = f(1\n       ^\n");
}

TEST(ParserErrors, SelectNeedsComparison) {
  EXPECT_EQ(errors("s = select(a, b, +);"),
            "p.rasp:1:18: error: expected a comparison (== != < <= > >=) or a function of (key, query) as the "
            "third argument of select, found '+'\ns = select(a, b, +);\n                 ^\n");
}

TEST(ParserErrors, FunctionWithoutReturn) {
  EXPECT_EQ(errors("def f(x) {\n  y = x;\n}\nz = (1;\n"),
            "p.rasp:3:1: error: function 'f' has no return statement (it must end with one)\n}\n^\n"
            "p.rasp:4:7: error: expected ')' to close '(', found ';'\nz = (1;\n      ^\n");
}

TEST(ParserErrors, ReturnNotLast) {
  EXPECT_EQ(errors("def f(x) {\n  return x;\n  y = 1;\n}\n"),
            "p.rasp:3:3: error: 'return' must be the last statement of function 'f'\n  y = 1;\n  ^\n");
}

TEST(ParserErrors, ReturnOutsideFunction) {
  EXPECT_EQ(errors("return 1;"), "p.rasp:1:1: error: 'return' outside a function\nreturn 1;\n^\n");
  EXPECT_EQ(errors("for i in range(2) { return i; }"),
            "p.rasp:1:21: error: 'return' outside a function\nfor i in range(2) { return i; }\n                    ^\n");
  EXPECT_EQ(errors("def f(x) {\n  for i in x { return i; }\n  return 0;\n}\ny = 1;\n"),
            "p.rasp:2:16: error: 'return' inside a loop body: a function returns once, at its end\n"
            "  for i in x { return i; }\n               ^\n");
}

TEST(ParserErrors, DuplicateParameter) {
  EXPECT_EQ(errors("def f(x, x) { return x; }"),
            "p.rasp:1:10: error: duplicate parameter 'x'\ndef f(x, x) { return x; }\n         ^\n");
}

TEST(ParserErrors, AssignToNonName) {
  EXPECT_EQ(errors("f(x) = 1;"), "p.rasp:1:6: error: can only assign to names\nf(x) = 1;\n     ^\n");
}

TEST(ParserErrors, UnmatchedBrace) {
  EXPECT_EQ(errors("a = 1;\n}\n"), "p.rasp:2:1: error: unmatched '}'\n}\n^\n");
}

TEST(ParserErrors, SeveralIndependentErrorsAllReported) {
  EXPECT_EQ(errors("a = 1 +;\nb = 2;\nc = (3;\nd = [1, 2;\n"),
            "p.rasp:1:8: error: expected an expression, found ';'\na = 1 +;\n       ^\n"
            "p.rasp:3:7: error: expected ')' to close '(', found ';'\nc = (3;\n      ^\n"
            "p.rasp:4:10: error: expected ']' to close the list, found ';'\nd = [1, 2;\n         ^\n");
}

TEST(ParserErrors, ErrorsInsideFunctionBodyKeepTheRest) {
  Parsed p("def f(x) {\n  y = x +;\n  return x;\n}\nz = 1;\n");
  EXPECT_EQ(p.diags, "p.rasp:2:10: error: expected an expression, found ';'\n  y = x +;\n         ^\n");
  ASSERT_EQ(p.module->statements.size(), 2u);
  EXPECT_EQ(p.module->statements[0]->kind, ast::StmtKind::Def);
}

TEST(ParserErrors, DeepNestingIsAnErrorNotACrash) {
  std::string src = "x = " + std::string(10000, '(') + "1" + std::string(10000, ')') + ";";
  std::string d = errors(src);
  EXPECT_EQ(d.substr(0, 70), "p.rasp:1:205: error: nesting is too deep (more than 200 levels)\n...(((");
}

TEST(ParserErrors, LongChainIsAnErrorNotACrash) {
  std::string src = "x = 1";
  for (int i = 0; i < 5000; ++i) src += "+1";
  src += ";";
  std::string d = errors(src);
  EXPECT_EQ(d.substr(0, d.find('\n')), "p.rasp:1:2004: error: expression is too deeply nested (more than 1000 levels)");
}

} // namespace
