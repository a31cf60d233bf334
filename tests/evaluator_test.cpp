#include "TestUtil.h"

#include <gtest/gtest.h>

#include <fstream>

using namespace raspc;
using raspc::test::Loaded;

namespace {

TEST(HostValues, ArithmeticFollowsPython) {
  Loaded l("a = 7 / 2; b = 7 % 3; c = -7 % 3; d = 2 ^ 10; e = 1 + 2 * 3; f = 2.5 * 2; g = round(2.5);"
           "h = round(3.5); i = indicator(3 > 2); j = 10 / 5; k = \"ab\" + \"cd\"; l = [1] + [2, 3];");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.host("a"), "3.5");
  EXPECT_EQ(l.host("b"), "1");
  EXPECT_EQ(l.host("c"), "2");
  EXPECT_EQ(l.host("d"), "1024");
  EXPECT_EQ(l.host("e"), "7");
  EXPECT_EQ(l.host("f"), "5.0");
  EXPECT_EQ(l.host("g"), "2"); // half to even
  EXPECT_EQ(l.host("h"), "4");
  EXPECT_EQ(l.host("i"), "1");
  EXPECT_EQ(l.host("j"), "2.0");
  EXPECT_EQ(l.host("k"), "\"abcd\"");
  EXPECT_EQ(l.host("l"), "[1, 2, 3]");
}

TEST(HostValues, ListsDictsComprehensions) {
  Loaded l("xs = [x * x for x in range(4)]; d = {k: v for k, v in zip([\"a\", \"b\"], [1, 2])};"
           "n = len(xs); y = xs[-1]; z = d[\"b\"]; m = 3 in xs; q = \"c\" in d; r = range(1, 7, 2);"
           "s = \"hello\"[1]; t = {1: \"x\"}[1.0]; u = [[1, 2], [3]] == [[1, 2], [3]];");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.host("xs"), "[0, 1, 4, 9]");
  EXPECT_EQ(l.host("d"), "{\"a\": 1, \"b\": 2}");
  EXPECT_EQ(l.host("n"), "4");
  EXPECT_EQ(l.host("y"), "9");
  EXPECT_EQ(l.host("z"), "2");
  EXPECT_EQ(l.host("m"), "False");
  EXPECT_EQ(l.host("q"), "False");
  EXPECT_EQ(l.host("r"), "[1, 3, 5]");
  EXPECT_EQ(l.host("s"), "\"e\"");
  EXPECT_EQ(l.host("t"), "\"x\"");
  EXPECT_EQ(l.host("u"), "True");
}

TEST(HostValues, HostConditionalPicksOneBranchOnly) {
  // The untaken branch would be an error if it were evaluated.
  Loaded l("x = 1 if True else undefined_name; y = [1][5] if False else 2;");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.host("x"), "1");
  EXPECT_EQ(l.host("y"), "2");
}

TEST(Scoping, ForLoopWritesIntoEnclosingScope) {
  Loaded l("total = 0; for i in range(5) { total = total + i; last = i; }"
           "def f(n) { acc = 0; for j in range(n) { acc = acc + j; } return acc + j; } r = f(4);");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.host("total"), "10");
  EXPECT_EQ(l.host("last"), "4");
  EXPECT_EQ(l.host("i"), "4");
  EXPECT_EQ(l.host("r"), "9");
  EXPECT_EQ(l.host("acc"), "<undefined>"); // function locals stay local
  EXPECT_EQ(l.host("j"), "<undefined>");
}

TEST(Scoping, FunctionsCloseOverTheirDefiningScope) {
  Loaded l("def adder(n) { def add(x) { return x + n; } return add; } add2 = adder(2); r = add2(5);"
           "k = 10; def getk() { return k; } k = 20; s = getk();");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.host("r"), "7");
  EXPECT_EQ(l.host("s"), "20"); // names are looked up when the body runs
}

TEST(Scoping, TupleAssignmentAndReturn) {
  Loaded l("def two(x) { return x, x + 1; } a, b = two(1); c, d = d0, d1 = 5, 6;");
  EXPECT_FALSE(l.ok); // `c, d = d0, d1 = ...` is not RASP
  Loaded m("def two(x) { return x, x + 1; } a, b = two(1); c, d = 5, 6; c, d = d, c; t = two(3);");
  ASSERT_TRUE(m.ok) << m.errors();
  EXPECT_EQ(m.host("a"), "1");
  EXPECT_EQ(m.host("b"), "2");
  EXPECT_EQ(m.host("c"), "6");
  EXPECT_EQ(m.host("d"), "5");
  EXPECT_EQ(m.host("t"), "[3, 4]");
}

TEST(Scoping, RecursionWorksWithinTheLimit) {
  Loaded l("def fact(n) { return 1 if n <= 1 else n * fact(n - 1); } r = fact(10);");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.host("r"), "3628800");
}

TEST(Graph, IdenticalSubexpressionsAreOneNode) {
  Loaded l("a = tokens + 1; b = tokens + 1; c = select(indices, indices, <); d = select(indices, indices, <);"
           "e = numerical(tokens + 1);");
  ASSERT_TRUE(l.ok) << l.errors();
  auto &ev = l.program.evaluator();
  EXPECT_EQ(ev.lookup("a")->node(), ev.lookup("b")->node());
  EXPECT_EQ(ev.lookup("c")->node(), ev.lookup("d")->node());
  EXPECT_NE(ev.lookup("a")->node(), ev.lookup("e")->node()); // the encoding is part of identity
  EXPECT_EQ(l.program.graph()[ev.lookup("a")->node()].name, "a"); // first name wins
  EXPECT_EQ(l.program.graph()[ev.lookup("e")->node()].encoding, ir::Encoding::Numerical);
}

TEST(Graph, NodesKeepTheirSourceLocation) {
  Loaded l("x = 1;\ny = aggregate(select(indices, indices, ==), tokens);\n");
  ASSERT_TRUE(l.ok);
  ir::NodeId y = l.program.evaluator().lookup("y")->node();
  EXPECT_EQ(describeLoc(l.program.sourceMgr(), l.program.graph()[y].loc), "test.rasp:2:5");
}

TEST(Graph, LoopsUnrollIntoAChain) {
  Loaded l("x = tokens; for i in range(3) { x = x + 1; }");
  ASSERT_TRUE(l.ok);
  EXPECT_EQ(l.eval("x", "1 2"), "[4, 5]");
}

TEST(Graph, DotOutputNamesNodes) {
  Loaded l("s = select(indices, indices, ==); r = aggregate(s, tokens);");
  ASSERT_TRUE(l.ok);
  std::string dot = l.program.graph().toDot({l.program.evaluator().lookup("r")->node()});
  EXPECT_NE(dot.find("label=\"s\\nselect ==\", shape=diamond"), std::string::npos) << dot;
  EXPECT_NE(dot.find("label=\"r\\naggregate\""), std::string::npos) << dot;
  EXPECT_EQ(dot.rfind("digraph rasp {", 0), 0u);
}

TEST(Load, LoadsRelativeFilesOncePrivateNamesHidden) {
  std::string dir = ::testing::TempDir() + "raspc_load_test";
  std::string mk = "mkdir -p " + dir;
  ASSERT_EQ(std::system(mk.c_str()), 0);
  std::ofstream(dir + "/lib.rasp") << "_secret = 41;\npublic = _secret + 1;\ndef inc(x) { return x + _secret - 40; }\n";
  std::ofstream(dir + "/main.rasp") << "load \"lib\";\nload \"lib\";\na = public;\nb = inc(1);\nc = _secret;\n";
  std::string diags;
  llvm::raw_string_ostream os(diags);
  Program p(os);
  EXPECT_FALSE(p.loadFile(dir + "/main.rasp"));
  os.flush();
  EXPECT_EQ(formatValue(*p.evaluator().lookup("a")), "42");
  EXPECT_EQ(formatValue(*p.evaluator().lookup("b")), "2");
  EXPECT_EQ(diags, dir + "/main.rasp:5:5: error: use of undefined name '_secret'\nc = _secret;\n    ^\n");
}

TEST(Load, MissingFileIsLocated) {
  Loaded l("x = 1;\nload \"does_not_exist\";\n");
  EXPECT_FALSE(l.ok);
  EXPECT_EQ(l.errors(), "test.rasp:2:6: error: cannot load \"does_not_exist\": no file 'does_not_exist.rasp' in the "
                        "working directory\nload \"does_not_exist\";\n     ^\n");
}

TEST(Prelude, LoadsByDefaultAndHidesPrivateNames) {
  Loaded l("h = hist(tokens); p = _pick;");
  EXPECT_EQ(l.eval("h", "a b a"), "[2, 1, 2]");
  EXPECT_EQ(l.errors(), "test.rasp:1:23: error: use of undefined name '_pick'\nh = hist(tokens); p = _pick;\n"
                        "                      ^\n");
}

// ---- errors: each with its exact location ----

TEST(EvalErrors, UndefinedName) {
  Loaded l("x = tokns + 1;");
  EXPECT_EQ(l.errors(), "test.rasp:1:5: error: use of undefined name 'tokns'\nx = tokns + 1;\n    ^\n");
}

TEST(EvalErrors, Arity) {
  Loaded l("def f(a, b) { return a; }\nx = f(1);\ny = aggregate(select(indices, indices, ==));\n");
  EXPECT_EQ(l.errors(), "test.rasp:2:5: error: function 'f' takes 2 arguments, 1 given\nx = f(1);\n    ^\n"
                        "test.rasp:3:5: error: aggregate takes 2 to 3 arguments, 1 given\n"
                        "y = aggregate(select(indices, indices, ==));\n    ^\n");
}

TEST(EvalErrors, TypeErrors) {
  Loaded l("a = 1 + \"x\";\nb = aggregate(tokens, tokens);\nc = select(indices, indices, ==) + 1;\n"
           "d = len(tokens);\ne = 3(1);\nf = [1, 2][\"a\"];\n");
  EXPECT_EQ(l.errors(),
            "test.rasp:1:7: error: unsupported operand types for '+': int and string\na = 1 + \"x\";\n      ^\n"
            "test.rasp:2:15: error: aggregate needs a selector as argument 1, got an s-op\n"
            "b = aggregate(tokens, tokens);\n              ^\n"
            "test.rasp:3:34: error: selectors combine only with 'and', 'or' and 'not' of selectors; got selector + int\n"
            "c = select(indices, indices, ==) + 1;\n                                 ^\n"
            "test.rasp:4:9: error: len needs a list, dict or string, got an s-op (use 'length' for the length of the "
            "input)\nd = len(tokens);\n        ^\n"
            "test.rasp:5:5: error: an int is not callable\ne = 3(1);\n    ^\n"
            "test.rasp:6:12: error: list indices must be ints, not string\nf = [1, 2][\"a\"];\n           ^\n");
}

TEST(EvalErrors, ErrorInsideFunctionNotesTheCall) {
  Loaded l("def f(x) {\n  return x / 0;\n}\ny = f(1);\n");
  EXPECT_EQ(l.errors(), "test.rasp:2:12: error: division by zero\n  return x / 0;\n           ^\n"
                        "test.rasp:4:5: note: in call to 'f' here\ny = f(1);\n    ^\n");
}

TEST(EvalErrors, FailedNameIsNotReportedAgainAtEachUse) {
  Loaded l("a = undefined1;\nb = a + 1;\nc = b * 2;\nd = undefined2;\n");
  EXPECT_EQ(l.errors(), "test.rasp:1:5: error: use of undefined name 'undefined1'\na = undefined1;\n    ^\n"
                        "test.rasp:4:5: error: use of undefined name 'undefined2'\nd = undefined2;\n    ^\n");
}

TEST(EvalErrors, Unpacking) {
  Loaded l("a, b = 1, 2, 3;\nc, d = [1];\n");
  EXPECT_EQ(l.errors(), "test.rasp:1:1: error: cannot assign 3 values to 2 names\na, b = 1, 2, 3;\n^\n"
                        "test.rasp:2:8: error: cannot unpack 1 values into 2 names\nc, d = [1];\n       ^\n");
}

TEST(EvalErrors, RecursionWithoutEndIsAnError) {
  Loaded l("def f(x) { return f(x + 1); }\ny = f(1);\n");
  EXPECT_EQ(l.errors().substr(0, l.errors().find('\n')),
            "test.rasp:1:19: error: function calls nested more than 400 deep (recursion without end?)");
}

TEST(EvalErrors, EndlessLoopIsBounded) {
  Loaded l("x = 0;\nfor i in range(100000) { for j in range(100000) { x = x + 1; } }\n");
  // The column is wherever the budget runs out inside the loop body.
  EXPECT_EQ(l.errors().substr(0, 12), "test.rasp:2:");
  EXPECT_NE(l.errors().find(": error: evaluation takes more than 20000000 steps (a loop or recursion that does not "
                            "end?)\n"),
            std::string::npos);
}

TEST(EvalErrors, ValuesCannotGrowWithoutBound) {
  Loaded l("x = \"ab\";\nfor i in range(100) { x = x + x; }\ny = [];\nfor i in range(1000) { y = [y]; }\n");
  EXPECT_EQ(l.errors(),
            "test.rasp:2:29: error: value too large: more than 1000000 elements\n"
            "for i in range(100) { x = x + x; }\n                            ^\n"
            "test.rasp:4:28: error: lists are nested too deeply (more than 100 levels)\n"
            "for i in range(1000) { y = [y]; }\n                           ^\n");
}

TEST(EvalErrors, CannotLoopOverAnSOp) {
  Loaded l("for t in tokens { x = t; }");
  EXPECT_EQ(l.errors(), "test.rasp:1:10: error: cannot iterate over an s-op (s-ops are sequences of unknown length; "
                        "loops run on host values)\nfor t in tokens { x = t; }\n         ^\n");
}

} // namespace

// The original RASP's semantics (tech-srl/RASP), values as its interpreter gives them.
namespace {

TEST(OriginalRasp, AggregateWithoutDefaultGivesZero) {
  Loaded l("none = aggregate(select(tokens, 5, ==), tokens);"
           "explicit = aggregate(select(tokens, 5, ==), tokens, None);"
           "given = aggregate(select(tokens, 5, ==), tokens, 7);"
           "at = tokens[9];");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.eval("none", "3 1 3 2"), "[0, 0, 0, 0]");
  EXPECT_EQ(l.eval("explicit", "3 1"), "[null, null]");
  EXPECT_EQ(l.eval("given", "3 1"), "[7, 7]");
  EXPECT_EQ(l.eval("at", "3 1"), "[0, 0]");
}

TEST(OriginalRasp, ReplStatementsInFilesAreAccepted) {
  Loaded l("set example [3, 1] + [2]\n"
           "show example\n"
           "full seq display on\n"
           "s-op examples off\n"
           "selector examples on;\n"
           "draw(tokens);\n"
           "set = 4; show = set + 1; examples = 2;\n" // still ordinary names
           "x = tokens + 1;");
  ASSERT_TRUE(l.ok) << l.errors();
  const auto &r = l.program.evaluator().repl;
  EXPECT_EQ(r.example, (std::vector<std::string>{"3", "1", "2"}));
  EXPECT_TRUE(r.intExample);
  EXPECT_TRUE(r.fullSeqDisplay);
  EXPECT_FALSE(r.showSOpExamples);
  EXPECT_TRUE(r.showSelectorExamples);
  EXPECT_EQ(l.host("show"), "5");
  EXPECT_EQ(l.host("examples"), "2");
  EXPECT_EQ(l.eval("x", "1 2"), "[2, 3]");
}

TEST(OriginalRasp, SetExampleSplitsTextByCodePoint) {
  Loaded l("set example \"§a\" + \"b\"\nn = len(\"§ab\"); c = \"x§y\"[1];");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.program.evaluator().repl.example, (std::vector<std::string>{"§", "a", "b"}));
  EXPECT_FALSE(l.program.evaluator().repl.intExample);
  EXPECT_EQ(l.host("n"), "3");
  EXPECT_EQ(l.host("c"), "\"§\"");
}

TEST(OriginalRasp, ExitEndsTheFile) {
  Loaded l("a = 1;\nexit\nb = 2;");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.host("a"), "1");
  EXPECT_EQ(l.host("b"), "<undefined>");
}

TEST(OriginalRasp, ReservedNamesCannotBeRebound) {
  for (const char *stmt : {"length = 3;", "indices = 1;", "True = 0;", "full_s = 1;", "count = 2;",
                           "def sort(a) { return a; }", "for max in range(2) { y = 1; }", "def f(length) { return 1; }",
                           "tokens_str, q = 1, 2;"}) {
    Loaded l(stmt);
    EXPECT_FALSE(l.ok) << stmt;
    EXPECT_NE(l.errors().find("it is a reserved name"), std::string::npos) << stmt << "\n" << l.errors();
    EXPECT_NE(l.errors().find("test.rasp:1:"), std::string::npos) << l.errors();
  }
  Loaded ok("tokens = tokens_int; hist = 3; reverse = tokens;");
  EXPECT_TRUE(ok.ok) << ok.errors();
}

TEST(OriginalRasp, StringsIndexedAndRepeated) {
  Loaded l("q = \"qwerty\"[indices]; a = indices * \"a\"; b = \"ab\" * 2; c = 0 * \"x\"; d = \"§é\"[indices];");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.eval("q", "x y z"), "[\"q\", \"w\", \"e\"]");
  EXPECT_EQ(l.eval("a", "x y z"), "[\"\", \"a\", \"aa\"]");
  EXPECT_EQ(l.host("b"), "\"abab\"");
  EXPECT_EQ(l.host("c"), "\"\"");
  EXPECT_EQ(l.eval("d", "x y"), "[\"§\", \"é\"]");
  EXPECT_NE(l.eval("q", "1 2 3 4 5 6 7").find("index 6 out of range"), std::string::npos);
}

TEST(OriginalRasp, SOpsAndSelectorsApplyToInputs) {
  Loaded l("h = selector_width(select(tokens, tokens, ==)); s = select(indices, indices, <);"
           "a = h(\"abca\"); b = h([1, 2, 1]); c = s([7, 8]); d = tokens(\"§ab\"); e = tokens([1, 2]) + [3];");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.host("a"), "[2, 1, 1, 2]");
  EXPECT_EQ(l.host("b"), "[2, 1, 2]");
  EXPECT_EQ(l.host("c"), "[[False, False], [True, False]]");
  EXPECT_EQ(l.host("d"), "[\"§\", \"a\", \"b\"]");
  EXPECT_EQ(l.host("e"), "[1, 2, 3]");
  Loaded bad("x = tokens_int(\"ab\");");
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.errors().find("when applied to this input here"), std::string::npos) << bad.errors();
}

TEST(OriginalRasp, LibraryNamesGiveTheOriginalsValues) {
  // Expected values recorded with the original interpreter on the example [3, 1, 3, 2]
  // (with `tokens` as ints: the original's tokens_int).
  Loaded l("t = tokens_int; f = full_s; hf = has_focus(select(t, 2, ==)); av = average(t);"
           "l2 = load_from_location(t, 2); ln = load_from_location(t, indices + 1);"
           "sl = select_from_last(t, 3); sf = select_from_first(t, 3); sn = select_next_identical(t);"
           "c = count(t, 3); m = max(1, 1.0); sh = shift(t, 1, 9);");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.eval("f", "3 1"), "[[1, 1], [1, 1]]");
  EXPECT_EQ(l.eval("hf", "3 1 3 2"), "[true, true, true, true]");
  EXPECT_EQ(l.eval("av", "3 1 3 2"), "[2.25, 2.25, 2.25, 2.25]");
  EXPECT_EQ(l.eval("l2", "3 1 3 2"), "[3, 3, 3, 3]");
  EXPECT_EQ(l.eval("ln", "3 1 3 2"), "[1, 3, 2, 0]");
  EXPECT_EQ(l.eval("sl", "3 1 3 2"), "[[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]]");
  EXPECT_EQ(l.eval("sf", "3 1 3 2"), "[[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]");
  EXPECT_EQ(l.eval("sn", "3 1 3 2"), "[[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]");
  EXPECT_EQ(l.eval("c", "3 1 3 2"), "[2, 2, 2, 2]");
  EXPECT_EQ(l.host("m"), "1.0");
  EXPECT_EQ(l.eval("sh", "3 1 3 2"), "[9, 3, 1, 3]");
}

TEST(OriginalRasp, TokensBoolIsTruth) {
  Loaded l("b = tokens_bool;");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.eval("b", "0 1 2"), "[false, true, true]");
  EXPECT_EQ(l.eval("b", "True false a"), "[true, false, true]");
}

TEST(OriginalRasp, IntegerOverflowNamesTheLimit) {
  Loaded l("x = 2 ^ 62 * 4;");
  EXPECT_FALSE(l.ok);
  EXPECT_NE(l.errors().find("integer overflow in '*': the result does not fit in 64 bits"), std::string::npos)
      << l.errors();
}

} // namespace

namespace {
TEST(OriginalRasp, BadInputsAreLocatedErrors) {
  Loaded a("set example 3\n");
  EXPECT_EQ(a.errors(), "test.rasp:1:13: error: set example takes a string or a list as input, not an int\n"
                        "set example 3\n            ^\n");
  Loaded b("s = select(indices, indices, <);\ny = s(5);\n");
  EXPECT_EQ(b.errors(), "test.rasp:2:7: error: a selector takes a string or a list as input, not an int\n"
                        "y = s(5);\n      ^\n");
  Loaded c("x = tokens([[1]]);\n");
  EXPECT_EQ(c.errors(), "test.rasp:1:12: error: an input holds numbers, strings or bools, not a list\n"
                        "x = tokens([[1]]);\n           ^\n");
  Loaded d("full seq display maybe\n");
  EXPECT_EQ(d.errors(), "test.rasp:1:18: error: expected 'on' or 'off', found identifier 'maybe'\n"
                        "full seq display maybe\n                 ^\n");
  Loaded e("y = tokens(\"ab\", \"c\");\n");
  EXPECT_EQ(e.errors(), "test.rasp:1:5: error: an s-op takes 1 argument, 2 given\ny = tokens(\"ab\", \"c\");\n    ^\n");
}
} // namespace
