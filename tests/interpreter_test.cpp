#include "TestUtil.h"

#include <gtest/gtest.h>

#include <sys/resource.h>

using namespace raspc;
using raspc::test::Loaded;

namespace {

TEST(Interpreter, PrimitiveSOps) {
  Loaded l("t = tokens; i = indices; n = length; c = 7 + 0 * indices;");
  EXPECT_EQ(l.eval("t", "3 1 2"), "[3, 1, 2]");
  EXPECT_EQ(l.eval("t", "a 1 b"), "[\"a\", \"1\", \"b\"]"); // not all ints: strings
  EXPECT_EQ(l.eval("i", "a b c"), "[0, 1, 2]");
  EXPECT_EQ(l.eval("n", "a b c d"), "[4, 4, 4, 4]");
  EXPECT_EQ(l.eval("c", "a b"), "[7, 7]");
}

TEST(Interpreter, TypedTokenViews) {
  Loaded l("a = tokens_int + 1; b = tokens_str; c = tokens_float * 2; d = not tokens_bool;");
  EXPECT_EQ(l.eval("a", "1 2"), "[2, 3]");
  EXPECT_EQ(l.eval("b", "1 2"), "[\"1\", \"2\"]");
  EXPECT_EQ(l.eval("c", "1.5 2"), "[3.0, 4.0]");
  EXPECT_EQ(l.eval("d", "True 0"), "[false, true]");
  EXPECT_EQ(l.eval("a", "1 x"), "raspc: error: input token 'x' at position 1 is not an integer (tokens_int)\n");
}

TEST(Interpreter, TokensTypedByVocabulary) {
  Loaded l("t = tokens;");
  InterpreterOptions o;
  o.intTokens = false;
  EXPECT_EQ(l.eval("t", "1 2", o), "[\"1\", \"2\"]");
}

TEST(Interpreter, SelectRowsAreQueries) {
  // M[q][k] = keys[k] < queries[q]
  Loaded l("s = select(indices, indices, <); e = select(indices, 0, ==); t = select(tokens, tokens, ==);");
  EXPECT_EQ(l.eval("s", "a b c"), "[[0, 0, 0], [1, 0, 0], [1, 1, 0]]");
  EXPECT_EQ(l.eval("e", "a b c"), "[[1, 0, 0], [1, 0, 0], [1, 0, 0]]");
  EXPECT_EQ(l.eval("t", "a b a"), "[[1, 0, 1], [0, 1, 0], [1, 0, 1]]");
}

TEST(Interpreter, SelectComparisons) {
  Loaded l("a = select(tokens, tokens, >); b = select(tokens, tokens, >=); c = select(tokens, tokens, <=);"
           "d = select(tokens, tokens, !=);");
  EXPECT_EQ(l.eval("a", "1 2"), "[[0, 1], [0, 0]]");
  EXPECT_EQ(l.eval("b", "1 2"), "[[1, 1], [0, 1]]");
  EXPECT_EQ(l.eval("c", "1 2"), "[[1, 0], [1, 1]]");
  EXPECT_EQ(l.eval("d", "1 2"), "[[0, 1], [1, 0]]");
}

TEST(Interpreter, CompositeSelectors) {
  Loaded l("lt = select(indices, indices, <); eq = select(tokens, tokens, ==);"
           "a = lt and eq; o = lt or eq; n = not lt;");
  EXPECT_EQ(l.eval("a", "x y x"), "[[0, 0, 0], [0, 0, 0], [1, 0, 0]]");
  EXPECT_EQ(l.eval("o", "x y x"), "[[1, 0, 1], [1, 1, 0], [1, 1, 1]]");
  EXPECT_EQ(l.eval("n", "x y x"), "[[1, 1, 1], [0, 1, 1], [0, 0, 1]]");
}

TEST(Interpreter, AggregateNoneOneSeveral) {
  Loaded l("first = aggregate(select(indices, 0, ==), tokens);"
           "prev = aggregate(select(indices, indices - 1, ==), tokens, None);"
           "prevd = aggregate(select(indices, indices - 1, ==), tokens);" // 0 when omitted, as the original
           "mean = aggregate(select(indices, indices, <=), tokens);"
           "strs = aggregate(select(indices, indices + 1, ==), tokens_str, None);");
  EXPECT_EQ(l.eval("first", "5 6 7"), "[5, 5, 5]");
  EXPECT_EQ(l.eval("prev", "5 6 7"), "[null, 5, 6]");
  EXPECT_EQ(l.eval("prevd", "5 6 7"), "[0, 5, 6]");
  EXPECT_EQ(l.eval("mean", "1 2 6"), "[1, 1.5, 3.0]"); // one selected keeps its type
  EXPECT_EQ(l.eval("strs", "a b c"), "[\"b\", \"c\", null]");
}

TEST(Interpreter, AveragingStringsIsALocatedError) {
  Loaded l("x = 1;\nm = aggregate(select(indices, indices, <=), tokens_str);\n");
  EXPECT_EQ(l.eval("m", "a b"),
            "test.rasp:2:5: error: aggregate averages 2 selected values at query position 1, but 'a' (key position 0) "
            "is a string; only numbers can be averaged\nm = aggregate(select(indices, indices, <=), tokens_str);\n"
            "    ^\n");
}

TEST(Interpreter, SelectorWidth) {
  Loaded l("w = selector_width(select(tokens, tokens, ==)); z = selector_width(select(indices, indices, <));");
  EXPECT_EQ(l.eval("w", "a b a a"), "[3, 1, 3, 3]");
  EXPECT_EQ(l.eval("z", "a b c"), "[0, 1, 2]");
}

TEST(Interpreter, NonePropagatesThroughElementwiseOps) {
  Loaded l("p = aggregate(select(indices, indices - 1, ==), tokens, None); a = p + 1; b = p == 1; c = not p;"
           "d = round(p); e = 1 if p else 0; f = p in [1, 2];");
  EXPECT_EQ(l.eval("a", "1 2"), "[null, 2]");
  EXPECT_EQ(l.eval("b", "1 2"), "[null, true]");
  EXPECT_EQ(l.eval("c", "1 2"), "[null, false]");
  EXPECT_EQ(l.eval("d", "1 2"), "[null, 1]");
  EXPECT_EQ(l.eval("e", "1 2"), "[null, 1]");
  EXPECT_EQ(l.eval("f", "1 2"), "[null, true]");
}

TEST(Interpreter, ElementwiseOperations) {
  Loaded l("a = tokens * 2 + 1; b = tokens / 2; c = tokens % 2 == 0; d = -tokens; e = tokens ^ 2;"
           "f = indicator(tokens > 1); g = round(tokens / 4); h = \"big\" if tokens > 2 else \"small\";"
           "i = tokens > 1 and tokens < 3; j = tokens < 2 or tokens > 2;");
  EXPECT_EQ(l.eval("a", "1 2 3"), "[3, 5, 7]");
  EXPECT_EQ(l.eval("b", "1 2 3"), "[0.5, 1.0, 1.5]");
  EXPECT_EQ(l.eval("c", "1 2 3"), "[false, true, false]");
  EXPECT_EQ(l.eval("d", "1 2 3"), "[-1, -2, -3]");
  EXPECT_EQ(l.eval("e", "1 2 3"), "[1, 4, 9]");
  EXPECT_EQ(l.eval("f", "1 2 3"), "[0, 1, 1]");
  EXPECT_EQ(l.eval("g", "2 6 10"), "[0, 2, 2]"); // 0.5 -> 0, 1.5 -> 2, 2.5 -> 2: half to even
  EXPECT_EQ(l.eval("h", "1 2 3"), "[\"small\", \"small\", \"big\"]");
  EXPECT_EQ(l.eval("i", "1 2 3"), "[false, true, false]");
  EXPECT_EQ(l.eval("j", "1 2 3"), "[true, false, true]");
}

TEST(Interpreter, ContainersWithSOps) {
  Loaded l("a = tokens in [1, 3]; b = [10, 20, 30][tokens]; c = {\"x\": 1, \"y\": 2}[tokens_str];"
           "d = 2 in tokens; e = tokens[0]; f = tokens[-1]; g = tokens[5];");
  EXPECT_EQ(l.eval("a", "1 2 3"), "[true, false, true]");
  EXPECT_EQ(l.eval("b", "0 2 1"), "[10, 30, 20]");
  EXPECT_EQ(l.eval("c", "y x"), "[2, 1]");
  EXPECT_EQ(l.eval("d", "1 2 3"), "[true, true, true]");
  EXPECT_EQ(l.eval("d", "1 3"), "[false, false]");
  EXPECT_EQ(l.eval("e", "4 5 6"), "[4, 4, 4]");
  EXPECT_EQ(l.eval("f", "4 5 6"), "[6, 6, 6]");
  EXPECT_EQ(l.eval("g", "4 5 6"), "[0, 0, 0]"); // out of range: 0, as an aggregate without default
}

TEST(Interpreter, RuntimeErrorsNameTheExpressionAndPosition) {
  Loaded l("x = 1;\nb = [10, 20][tokens];\nd = 6 / (tokens - 2);\nc = {\"x\": 1}[tokens_str];\n");
  EXPECT_EQ(l.eval("b", "0 5"), "test.rasp:2:13: error: index 5 out of range for a list of length 2 (at position 1)\n"
                                "b = [10, 20][tokens];\n            ^\n");
  EXPECT_EQ(l.eval("d", "1 2"), "test.rasp:3:7: error: division by zero (at position 1)\nd = 6 / (tokens - 2);\n"
                                "      ^\n");
  EXPECT_EQ(l.eval("c", "x z"), "test.rasp:4:13: error: key \"z\" not in dictionary (at position 1)\n"
                                "c = {\"x\": 1}[tokens_str];\n            ^\n");
}

TEST(Interpreter, CausalMeaningHidesLaterKeys) {
  Loaded l("n = selector_width(select(indices, indices, >=)); r = aggregate(select(indices, length - indices - 1, ==), tokens);");
  InterpreterOptions causal;
  causal.causal = true;
  EXPECT_EQ(l.eval("n", "a b c"), "[3, 2, 1]");
  EXPECT_EQ(l.eval("n", "a b c", causal), "[1, 1, 1]");
  // length is the prefix length i + 1, so the "reverse" reads position 0 everywhere.
  EXPECT_EQ(l.eval("r", "a b c", causal), "[\"a\", \"a\", \"a\"]");
  Loaded m("n = length;");
  EXPECT_EQ(m.eval("n", "a b c", causal), "[1, 2, 3]"); // the length of the visible prefix
}

TEST(Interpreter, EmptyInput) {
  Loaded l("n = length; h = hist(tokens);");
  EXPECT_EQ(l.eval("n", ""), "[]");
  EXPECT_EQ(l.eval("h", ""), "[]");
}

} // namespace

namespace {

TEST(AllInputs, ShortestFirstWithinTheLimit) {
  auto all = raspc::allInputs({"a", "b"}, 3);
  ASSERT_EQ(all.size(), 14u); // 2 + 4 + 8
  EXPECT_EQ(all[0], (std::vector<std::string>{"a"}));
  EXPECT_EQ(all[2], (std::vector<std::string>{"a", "a"}));
  EXPECT_EQ(all[3], (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(raspc::allInputs({"a", "b"}, 3, 13).size(), 6u); // length 3 would pass the limit
  EXPECT_TRUE(raspc::allInputs({}, 3).empty());
}

// Selectors are computed one query row at a time: memory per selector node is O(n),
// never n x n (today 16 MB per selector node at n = 4000, 2.6 GB at n = 50,000).
TEST(InterpreterLimits, SelectorsAreNotMaterialised) {
  std::string src = "s0 = select(tokens, tokens, ==);\n";
  for (int i = 1; i <= 16; ++i) src += "s" + std::to_string(i) + " = not s" + std::to_string(i - 1) + ";\n";
  src += "w = selector_width(s16);\n";
  Loaded l(src);
  ASSERT_TRUE(l.ok) << l.errors();
  std::string input, expected = "[";
  for (int i = 0; i < 4000; ++i) {
    input += i % 2 ? " b" : " a";
    expected += i ? ", 2000" : "2000";
  }
  struct rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  EXPECT_EQ(l.eval("w", input), expected + "]");
  getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024) << "KB more at the peak";
}

TEST(InterpreterLimits, SelectTypeErrorNamesTheFirstPair) {
  // The first failing (query, key) pair in row order, found without an n x n pass.
  Loaded l("t = tokens_str; s = select(t, indices, <); w = selector_width(s);");
  auto firstLine = [](const std::string &s) { return s.substr(0, s.find('\n')); };
  EXPECT_EQ(firstLine(l.eval("w", "a b c")),
            "test.rasp:1:21: error: cannot compare string and int with '<' (key position 0, query position 0)");
  Loaded m("k = tokens if indices > 1 else indices; s = select(k, indices, <=); w = selector_width(s);");
  InterpreterOptions o;
  o.intTokens = false;
  EXPECT_EQ(firstLine(m.eval("w", "a b c d", o)),
            "test.rasp:1:45: error: cannot compare string and int with '<=' (key position 2, query position 0)");
  o.causal = true; // query 2 is the first that sees key 2
  EXPECT_EQ(firstLine(m.eval("w", "a b c d", o)),
            "test.rasp:1:45: error: cannot compare string and int with '<=' (key position 2, query position 2)");
}

} // namespace

namespace {

// `x if c else y` reads only the chosen branch at each position: a failure (or None)
// in the other branch is discarded, as Python evaluates one branch.
TEST(Interpreter, ConditionalDiscardsAFailureInTheBranchNotTaken) {
  const std::string first = "first = aggregate(select(indices, 0, ==), tokens, 0);\n";
  Loaded l(first + "r = tokens / first if first != 0 else 0;\n"
                   "s = tokens / first + 1 if first != 0 else -1;\n");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.eval("r", "0 1 2"), "[0, 0, 0]");
  EXPECT_EQ(l.eval("r", "2 1 4"), "[1.0, 0.5, 2.0]");
  EXPECT_EQ(l.eval("s", "0 3"), "[-1, -1]"); // through a later map, then discarded
  // Not discarded: an error at the division, naming the first failed position.
  Loaded d(first + "d = tokens / first;\n");
  EXPECT_EQ(d.eval("d", "0 1"), "test.rasp:2:12: error: division by zero (at position 0)\nd = tokens / first;\n"
                                "           ^\n");
  Loaded t(first + "t = tokens / first if indices > 0 else 0;\n");
  EXPECT_EQ(t.eval("t", "0"), "[0]");
  EXPECT_EQ(t.eval("t", "0 1"), "test.rasp:2:12: error: division by zero (at position 1)\n"
                                "t = tokens / first if indices > 0 else 0;\n           ^\n");
  // A failed condition fails the result.
  Loaded u("u = 1 if 6 / tokens > 2 else 0;\n");
  EXPECT_EQ(u.eval("u", "1 3"), "[1, 0]");
  EXPECT_EQ(u.eval("u", "1 0"), "test.rasp:1:12: error: division by zero (at position 1)\n"
                                "u = 1 if 6 / tokens > 2 else 0;\n           ^\n");
  // An aggregate or a select reads every value: a failure there is an error.
  Loaded a(first + "a = aggregate(select(indices, indices, ==), tokens / first, 0);\n");
  EXPECT_EQ(a.eval("a", "2 1"), "[1.0, 0.5]");
  EXPECT_EQ(a.eval("a", "0 1"), "test.rasp:2:52: error: division by zero (at position 0)\n"
                                "a = aggregate(select(indices, indices, ==), tokens / first, 0);\n"
                                "                                                   ^\n");
  Loaded w(first + "w = selector_width(select(tokens / first, 1, ==));\n");
  EXPECT_EQ(w.eval("w", "2 1"), "[1, 1]");
  EXPECT_EQ(w.eval("w", "0 1 0"), "test.rasp:2:34: error: division by zero (at position 0)\n"
                                  "w = selector_width(select(tokens / first, 1, ==));\n"
                                  "                                 ^\n");
}

// The None rule for conditionals (docs/language.md): None in the branch not taken is
// discarded; a None condition gives None.
TEST(Interpreter, ConditionalNoneRule) {
  Loaded l("prev = aggregate(select(indices, indices - 1, ==), tokens, None);\n"
           "p0 = prev if indices > 0 else 0;\n"
           "c = 1 if prev == 3 else 2;\n"
           "q = prev if indices == 0 else 0;\n");
  ASSERT_TRUE(l.ok) << l.errors();
  EXPECT_EQ(l.eval("p0", "3 4 5"), "[0, 3, 4]");
  EXPECT_EQ(l.eval("c", "3 4 5"), "[null, 1, 2]");
  EXPECT_EQ(l.eval("q", "3 4 5"), "[null, 0, 0]"); // the chosen branch's None stays
}

} // namespace
