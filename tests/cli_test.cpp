// The raspc command as a user runs it: outputs, exit codes and error texts.
#include "TestModels.h"
#include "TestUtil.h"
#include "backend/Hdf5.h"
#include "backend/Json.h"

#include <gtest/gtest.h>

#include <llvm/Support/FileSystem.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using raspc::test::raspcBinary;
using raspc::test::run;
using raspc::test::sourceDir;

namespace {

std::string example(const std::string &name) { return sourceDir() + "/examples/" + name + ".rasp"; }

std::string tempFile(const std::string &name, const std::string &text) {
  std::string path = raspc::test::tempPath(name);
  std::ofstream(path) << text;
  return path;
}

TEST(Cli, EvalPrintsTheOutput) {
  auto r = run(raspcBinary() + " eval " + example("sort") + " --input \"3 1 2 2\"");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, "[1, 2, 2, 3]\n");
}

TEST(Cli, EvalJson) {
  auto r = run(raspcBinary() + " eval " + example("sort") + " --input \"3 1 2 2\" --json");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, "{\"output\": \"out\", \"value\": [1, 2, 2, 3]}\n");
}

TEST(Cli, EvalJsonTypes) {
  std::string f = tempFile("types.rasp", "p = aggregate(select(indices, indices - 1, ==), tokens, None);\n"
                                         "b = p == \"a\";\n");
  auto r = run(raspcBinary() + " eval " + f + " --input \"a b\" --json");
  EXPECT_EQ(r.out, "{\"output\": \"b\", \"value\": [null, true]}\n");
  r = run(raspcBinary() + " eval " + f + " --input \"a b\" --json --sop p");
  EXPECT_EQ(r.out, "{\"output\": \"p\", \"value\": [null, \"a\"]}\n");
}

TEST(Cli, EvalAllShowsEveryNamedSOpAndSelector) {
  std::string f = tempFile("all.rasp", "s = select(indices, indices, <);\nw = selector_width(s);\nk = 3;\n");
  auto r = run(raspcBinary() + " eval " + f + " --input \"a b\" --all");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, "s =\n  [0, 0]\n  [1, 0]\nw = [0, 1]\n");
  r = run(raspcBinary() + " eval " + f + " --input \"a b\" --all --json");
  EXPECT_EQ(r.out, "{\"values\": {\"s\": [[0, 0], [1, 0]], \"w\": [0, 1]}}\n");
}

TEST(Cli, SyntaxErrorsAreLocatedAndExitOne) {
  std::string f = tempFile("bad.rasp", "x = tokens +;\ny = (1;\n");
  auto r = run(raspcBinary() + " eval " + f + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, f + ":1:13: error: expected an expression, found ';'\nx = tokens +;\n            ^\n" + f +
                       ":2:7: error: expected ')' to close '(', found ';'\ny = (1;\n      ^\n");
}

TEST(Cli, InputTokenNotInVocabulary) {
  auto r = run(raspcBinary() + " eval " + example("sort") + " --input \"3 1 9\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "<input>:1:5: error: input token '9' is not in the vocabulary {1 2 3}\n3 1 9\n    ^\n");
}

TEST(Cli, InputLongerThanMaxLen) {
  auto r = run(raspcBinary() + " eval " + example("sort") + " --input \"1 2 3 1 2 3\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "<input>:1:1: error: input has 6 tokens, more than the maximum length 5\n1 2 3 1 2 3\n^\n");
}

TEST(Cli, FlagsOverrideTheHeader) {
  auto r = run(raspcBinary() + " eval " + example("sort") + " --vocab \"1 2 3 9\" --max-len 8 --input \"9 1 2 3 1 2\"");
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(r.out, "[1, 1, 2, 2, 3, 9]\n");
}

TEST(Cli, BadHeaderOptionIsLocated) {
  std::string f = tempFile("hdr.rasp", "# raspc: --vocab \"1 2\" --colour\nx = tokens;\n");
  auto r = run(raspcBinary() + " eval " + f + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, f + ":1:24: error: unknown header option '--colour' (known: --vocab, --max-len, --sop, "
                       "--causal)\n# raspc: --vocab \"1 2\" --colour\n                       ^\n");
}

TEST(Cli, RuntimeErrorIsLocated) {
  std::string f = tempFile("avg.rasp", "m = aggregate(select(indices, indices, <=), tokens_str);\n");
  auto r = run(raspcBinary() + " eval " + f + " --input \"a b\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, f + ":1:5: error: aggregate averages 2 selected values at query position 1, but 'a' (key "
                       "position 0) is a string; only numbers can be averaged\n"
                       "m = aggregate(select(indices, indices, <=), tokens_str);\n    ^\n");
}

TEST(Cli, OutputMustExistAndBeAnSOp) {
  auto r = run(raspcBinary() + " eval " + example("sort") + " --input \"1\" --sop nope");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: output 'nope' is not defined by the program\n");
  std::string f = tempFile("noout.rasp", "k = 3;\n");
  r = run(raspcBinary() + " eval " + f + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: the program assigns no s-op at the top level; name the output with --sop\n");
  r = run(raspcBinary() + " eval " + f + " --input \"1\" --sop k");
  EXPECT_EQ(r.out, "raspc: error: output 'k' is an int, not an s-op\n");
}

TEST(Cli, MissingFileAndBadFlags) {
  auto r = run(raspcBinary() + " eval /nonexistent.rasp --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: /nonexistent.rasp: cannot open: No such file or directory\n");
  r = run(raspcBinary() + " eval " + example("sort"));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc eval: give --input \"...\" or --inputs FILE\n");
  r = run(raspcBinary() + " frobnicate");
  EXPECT_EQ(r.exitCode, 2);
}

TEST(Cli, UnknownCommandIsNamed) {
  auto r = run(raspcBinary() + " frobnicate --json");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: unknown command 'frobnicate' (commands: eval, graph, repl, compile, run, verify, "
                   "inspect, crate, transform, suite, show)\n");
  r = run(raspcBinary() + " crate frob");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: unknown command 'crate frob' (crate commands: run, synth)\n");
}

TEST(Cli, NegativeSeedIsAUsageError) {
  auto r = run(raspcBinary() + " verify " + example("sort") + " --seed -1");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "--seed: '-1' is not a non-negative integer");
  std::string out = raspc::test::tempPath("seed.h5");
  r = run(raspcBinary() + " crate synth -o " + out + " --seed -7");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "--seed: '-7' is not a non-negative integer");
  EXPECT_FALSE(std::ifstream(out).good());
}

// A vocabulary with a duplicate or a reserved token is the fault of the flag or header
// line that gave it, not of the output file.
TEST(Cli, VocabularyErrorsNameWhereTheVocabularyCameFrom) {
  std::string out = raspc::test::tempPath("v.h5");
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --vocab \"1 1 2\"");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "--vocab: '1' appears twice");
  r = run(raspcBinary() + " eval " + example("sort") + " --input 1 --vocab \"1 <pad>\"");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "--vocab: '<pad>' is reserved (the runtime adds BOS and PAD itself)");
  std::string f = tempFile("dupvocab.rasp", "# raspc: --vocab \"a b a\" --max-len 3\nx = tokens;\n");
  r = run(raspcBinary() + " compile " + f + " -o " + out);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, f + ":1:10: error: --vocab: 'a' appears twice\n# raspc: --vocab \"a b a\" --max-len 3\n"
                       "         ^\n");
  EXPECT_FALSE(std::ifstream(out).good());
}

// An error raised on every iteration of a loop is shown once, with a count.
TEST(Cli, RepeatedErrorIsPrintedOnce) {
  std::string f = tempFile("loop.rasp", "for i in range(50) { m = 1 / 0; }\nx = tokens;\n");
  auto r = run(raspcBinary() + " eval " + f + " --input \"1 2\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, f + ":1:28: error: division by zero\nfor i in range(50) { m = 1 / 0; }\n                           ^\n" +
                       f + ":1:28: note: this error occurred 49 more times\n");
  r = run(raspcBinary() + " repl", "for i in range(3) { m = aggregate(select(indices, indices, <=), tokens); }\n");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_NE(r.out.find("<repl:1>:1:25: note: this error occurred 2 more times\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(": error:"), r.out.rfind(": error:")) << r.out;
}

TEST(Cli, CausalEval) {
  std::string f = tempFile("causal.rasp", "n = selector_width(select(indices, indices, >=));\n");
  EXPECT_EQ(run(raspcBinary() + " eval " + f + " --input \"a b c\"").out, "[3, 2, 1]\n");
  EXPECT_EQ(run(raspcBinary() + " eval " + f + " --input \"a b c\" --causal").out, "[1, 1, 1]\n");
}

TEST(Cli, GraphPrintsDot) {
  auto r = run(raspcBinary() + " graph " + example("reverse"));
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out.rfind("digraph rasp {", 0), 0u);
  EXPECT_NE(r.out.find("aggregate"), std::string::npos);
  EXPECT_NE(r.out.find("shape=diamond"), std::string::npos);
  EXPECT_EQ(r.out.substr(r.out.size() - 2), "}\n");
}

TEST(Cli, ReplShowsValuesOnTheExample) {
  auto r = run(raspcBinary() + " repl", "x = tokens;\nset example [1, 2, 3]\ny = x +\n  1;\ns = select(indices, indices, <);\n"
                                   "len([1, 2]);\nz = undefined;\nhist(tokens);\nexit\nw = 1;\n");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, "x = [h, e, l, l, o]\nexample: [1, 2, 3]\ny = [2, 3, 4]\ns =\n  [0, 0, 0]\n  [1, 0, 0]\n  [1, 1, 0]\n"
                   "2\n<repl:7>:1:5: error: use of undefined name 'undefined'\nz = undefined;\n    ^\n[1, 1, 1]\n");
}

TEST(Cli, ReplJsonGivesEachStatementsLinesAndValues) {
  auto r = run(raspcBinary() + " repl --json", "set example \"ab\"\nx = tokens;\ndef f(a,\n b) { return a; }\n"
                                   "s = select(indices, indices, <);\n[1, 2.0, \"c\"];\ny = nope;\nset example [2, 1]\n"
                                   "x; examples off\nx;\n");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out,
            "{\"line\": 1, \"end_line\": 1, \"results\": [{\"kind\": \"example\", \"value\": [\"a\", \"b\"]}]}\n"
            "{\"line\": 2, \"end_line\": 2, \"results\": [{\"name\": \"x\", \"kind\": \"sop\", \"example\": [\"a\", \"b\"], "
            "\"value\": [\"a\", \"b\"], \"type\": \"strings\"}]}\n"
            "{\"line\": 3, \"end_line\": 4, \"results\": [{\"name\": \"f\", \"kind\": \"function\", \"params\": [\"a\", \"b\"]}]}\n"
            "{\"line\": 5, \"end_line\": 5, \"results\": [{\"name\": \"s\", \"kind\": \"selector\", \"example\": [\"a\", \"b\"], "
            "\"value\": [[0, 0], [1, 0]]}]}\n"
            "{\"line\": 6, \"end_line\": 6, \"results\": [{\"name\": null, \"kind\": \"value\", \"value\": [1, 2.0, \"c\"]}]}\n"
            "{\"line\": 7, \"end_line\": 7, \"results\": [{\"kind\": \"error\", \"message\": \"<repl:7>:1:5: error: use of "
            "undefined name 'nope'\\ny = nope;\\n    ^\"}]}\n"
            "{\"line\": 8, \"end_line\": 8, \"results\": [{\"kind\": \"example\", \"value\": [2, 1]}]}\n"
            "{\"line\": 9, \"end_line\": 9, \"results\": [{\"name\": null, \"kind\": \"sop\", \"example\": [2, 1], "
            "\"value\": [2, 1], \"type\": \"ints\"}]}\n" // two statements on one line: one record
            "{\"line\": 10, \"end_line\": 10, \"results\": [{\"name\": null, \"kind\": \"sop\"}]}\n");
  // As the original: `tokens` is `tokens_str` whatever the example.
  r = run(raspcBinary() + " repl --tokens-as-strings", "set example [3, 1]\ntokens;\ntokens_asis;\n");
  EXPECT_EQ(r.out, "example: [3, 1]\n[3, 1]\n[3, 1]\n");
  r = run(raspcBinary() + " repl --tokens-as-strings --json", "set example [3, 1]\ntokens == 3;\n");
  EXPECT_NE(r.out.find("\"value\": [false, false]"), std::string::npos) << r.out;
}

TEST(Cli, LoadLooksInTheWorkingDirectoryThenBesideTheFile) {
  std::string dir = raspc::test::tempPath("loads");
  std::string sub = dir + "/sub";
  ASSERT_EQ(system(("mkdir -p " + sub).c_str()), 0);
  std::ofstream(sub + "/lib.rasp") << "v = 1;\n";
  std::ofstream(dir + "/lib.rasp") << "v = 2;\n";
  std::ofstream(sub + "/main.rasp") << "load \"lib\";\nx = tokens + v;\n";
  // From dir, "lib" is dir/lib.rasp (the working directory wins, as in the original).
  auto r = run("cd " + dir + " && " + raspcBinary() + " eval sub/main.rasp --input \"1\"");
  EXPECT_EQ(r.out, "[3]\n");
  // From elsewhere, the file beside main.rasp.
  r = run("cd / && " + raspcBinary() + " eval " + sub + "/main.rasp --input \"1\"");
  EXPECT_EQ(r.out, "[2]\n");
  r = run("cd / && " + raspcBinary() + " eval " + tempFile("noload.rasp", "load \"nowhere\";\n") + " --input 1");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.out.find("cannot load \"nowhere\": no file 'nowhere.rasp' in the working directory or"),
            std::string::npos) << r.out;
}

TEST(Cli, HostileInputsFailCleanly) {
  std::string nest = tempFile("nest.rasp", "x = " + std::string(10000, '(') + "1" + std::string(10000, ')') + ";\n");
  auto r = run(raspcBinary() + " eval " + nest + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.out.find("nesting is too deep"), std::string::npos);
  std::string junk;
  for (int i = 0; i < 20000; ++i) junk += char((i * 7919) % 256);
  std::string jf = tempFile("junk.rasp", junk);
  r = run(raspcBinary() + " eval " + jf + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.out.find("too many errors, stopping"), std::string::npos);
  std::string longLine = "x = 1";
  while (longLine.size() < 1'000'000) longLine += " + 1";
  std::string lf = tempFile("long.rasp", longLine + ";\n");
  r = run(raspcBinary() + " eval " + lf + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_LT(r.out.size(), 1000u); // the 1 MB line is shown as a window around the caret
}

} // namespace

namespace {

TEST(CliCompile, CompileRunInspectVerify) {
  std::string out = raspc::test::tempPath("cli_sort.h5");
  std::remove(out.c_str());
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out);
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, "wrote " + out + ": 3 layers, 3 heads (at most 2 per layer), residual width 29, MLP width 22, 10933 parameters\n");
  // An existing file is kept unless --force.
  r = run(raspcBinary() + " compile " + example("sort") + " -o " + out);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: '" + out + "' exists; pass --force to overwrite it\n");
  r = run(raspcBinary() + " run " + out + " --input \"3 1 2 2\"");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, "[1, 2, 2, 3]\n");
  r = run(raspcBinary() + " run " + out + " --input \"3 1 2 2\" --json --precision f64");
  EXPECT_EQ(r.out, "{\"value\": [1, 2, 2, 3]}\n");
  std::string inputs = tempFile("inputs.txt", "3 1 2\n1\n2 2 1 3 3\n");
  r = run(raspcBinary() + " run " + out + " --inputs " + inputs + " --json");
  EXPECT_EQ(r.out, "{\"value\": [1, 2, 3]}\n{\"value\": [1]}\n{\"value\": [1, 2, 2, 3, 3]}\n");
  r = run(raspcBinary() + " run " + out + " --input \"3 9 2\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "<input>:1:3: error: sequence 0, position 1: token '9' is not in the model's vocabulary {1, 2, 3}\n"
                   "3 9 2\n  ^\n");
  r = run(raspcBinary() + " inspect " + out);
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_NE(r.out.find("attn head 0          out              aggregate"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("residual (29):\n  one tokens:<bos> tokens:1 tokens:2 tokens:3"), std::string::npos) << r.out;
  r = run(raspcBinary() + " run " + out + " --input \"2 1\" --trace");
  EXPECT_NE(r.out.find("layer 2 attn:\n  tokens = [2, 1]\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  out = [1, 2]\n"), std::string::npos) << r.out;
  r = run(raspcBinary() + " verify " + example("sort"));
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, sourceDir() + "/examples/sort.rasp: all 363 inputs, 0 mismatches (3 layers, 3 heads (at most 2 per layer), residual "
                                 "width 29, MLP width 22, 10933 parameters)\n");
  r = run(raspcBinary() + " verify " + example("hist") + " --max-len 20 --samples 300 --json");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out.rfind("{\"inputs\": 300, \"exhaustive\": false, \"mismatches\": 0, ", 0), 0u) << r.out;
}

// --device cuda: the same outputs on a GPU; where there is none, the reason and exit 1.
TEST(CliCompile, RunOnCudaOrSayWhyNot) {
  std::string out = raspc::test::tempPath("cli_sort_cuda.h5");
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --force");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  r = run(raspcBinary() + " run " + out + " --input \"3 1 2 2\" --device cuda");
  if (llvm::Error e = raspc::deviceError(raspc::Device::Cuda)) {
    EXPECT_EQ(r.exitCode, 1);
    EXPECT_EQ(r.out, "raspc: error: --device cuda: " + llvm::toString(std::move(e)) + "\n");
  } else {
    EXPECT_EQ(r.exitCode, 0);
    EXPECT_EQ(r.out, "[1, 2, 2, 3]\n");
  }
  r = run(raspcBinary() + " run " + out + " --input \"3 1 2 2\" --device cuda --precision f64");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: --precision f64 runs on the CPU only (the CUDA executor is float32)\n");
  r = run(raspcBinary() + " run " + out + " --input \"3 1 2 2\" --device tpu");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "--device: tpu not in {cpu,cuda}");
}

TEST(CliCompile, NeedsVocabularyAndLength) {
  std::string f = tempFile("novocab.rasp", "x = tokens;\n");
  auto r = run(raspcBinary() + " compile " + f + " -o /tmp/never.h5");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: no vocabulary: give --vocab \"a b c\" or a '# raspc: --vocab ...' header line in " +
                       f + "\n");
}

TEST(CliCompile, MalformedModelFile) {
  std::string f = tempFile("notmodel.h5", "this is not HDF5");
  auto r = run(raspcBinary() + " run " + f + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out.rfind("raspc: error: " + f + ": ", 0), 0u) << r.out;
}

} // namespace

// ------------------------------------------------------------------------------------
// Every file raspc writes follows one rule (support/Files.h; docs/cli.md "Files").

namespace {

std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(CliFiles, OutputsThatAreNeverWritten) {
  std::string lib = tempFile("lib.rasp", "def f(x) { return x + 1; }\n");
  std::string dir = lib.substr(0, lib.rfind('/'));
  std::string libName = lib.substr(dir.size() + 1, lib.size() - dir.size() - 1 - 5); // no ".rasp"
  std::string prog = tempFile("prog.rasp", "# raspc: --vocab \"1 2 3\" --max-len 4\nload \"" + libName +
                                               "\";\nout = f(tokens);\n");
  std::string before = slurp(prog), libBefore = slurp(lib);
  auto r = run(raspcBinary() + " compile " + prog + " -o ''");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: -o: empty file name\n");
  r = run(raspcBinary() + " compile " + prog + " -o /dev/null --force");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: /dev/null: is not a regular file (a character device)\n");
  struct stat st;
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  r = run(raspcBinary() + " compile " + prog + " -o " + dir + " --force");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + dir + ": is a directory\n");
  // The program, and a file it loads, are inputs.
  r = run(raspcBinary() + " compile " + prog + " -o " + prog + " --force");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + prog + ": is an input of this command\n");
  r = run("cd " + dir + " && " + raspcBinary() + " compile " + prog + " -o " + lib.substr(dir.size() + 1) + " --force");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + lib.substr(dir.size() + 1) + ": is an input of this command (the same file as '" +
                       lib + "')\n");
  EXPECT_EQ(slurp(prog), before);
  EXPECT_EQ(slurp(lib), libBefore);
  // A dangling symbolic link.
  std::string link = raspc::test::tempPath("dangling.h5");
  std::remove(link.c_str());
  ASSERT_EQ(::symlink((link + ".nowhere").c_str(), link.c_str()), 0);
  r = run(raspcBinary() + " compile " + prog + " -o " + link + " --force");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + link + ": is a dangling symbolic link\n");
  std::remove(link.c_str());
}

TEST(CliFiles, CrateOutputsNeverReplaceInputs) {
  std::string model = raspc::test::tempPath("synth.h5"), logits = raspc::test::tempPath("logits.h5");
  std::remove(model.c_str());
  std::remove(logits.c_str());
  auto r = run(raspcBinary() + " crate synth --depth 1 -o " + model);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  std::string before = slurp(model);
  r = run(raspcBinary() + " crate run " + model + " --logits " + model + " --force");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + model + ": is an input of this command\n");
  EXPECT_EQ(slurp(model), before);
  std::string svg = raspc::test::tempPath("both.svg");
  r = run(raspcBinary() + " crate run " + model + " --logits " + svg + " --plot " + svg);
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: --plot '" + svg + "' is the same file as --logits '" + svg + "'\n");
  r = run(raspcBinary() + " crate synth --depth 1 -o ''");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: -o: empty file name\n");
  EXPECT_FALSE(std::ifstream(logits).good());
}

// A program, or a file it loads, that is a FIFO or a directory: an error at once, not
// a wait for a writer that never comes.
TEST(CliFiles, ProgramsThatAreNotRegularFilesAreRefusedAtOnce) {
  std::string fifo = raspc::test::tempPath("fifo.rasp");
  std::remove(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r = run("timeout 20 " + raspcBinary() + " eval " + fifo + " --input 1");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + fifo + ": is not a regular file (a FIFO)\n");
  std::string dir = fifo.substr(0, fifo.rfind('/'));
  r = run("timeout 20 " + raspcBinary() + " eval " + dir + " --input 1");
  EXPECT_EQ(r.out, "raspc: error: " + dir + ": is a directory\n");
  std::string name = fifo.substr(dir.size() + 1, fifo.size() - dir.size() - 1 - 5);
  std::string prog = tempFile("loads_fifo.rasp", "load \"" + name + "\";\nout = tokens;\n");
  r = run("timeout 20 " + raspcBinary() + " eval " + prog + " --input 1");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.out.find(prog + ":1:6: error: cannot load \"" + name + "\": " + fifo + ": is not a regular file (a FIFO)"),
            std::string::npos)
      << r.out;
  std::remove(fifo.c_str());
}

// Two compiles racing for one file: both succeed and the file is one complete model.
TEST(CliFiles, ConcurrentCompilesLeaveAGoodModel) {
  std::string out = raspc::test::tempPath("race.h5");
  std::remove(out.c_str());
  std::string one = raspcBinary() + " compile " + example("sort") + " -o " + out + " --force >/dev/null";
  std::string two = raspcBinary() + " compile " + example("hist") + " -o " + out + " --force >/dev/null";
  for (int i = 0; i < 3; ++i) {
    auto r = run("(" + one + " & " + two + " & " + one + " & " + two + " & wait) && " + raspcBinary() + " inspect " +
                 out + " --json >/dev/null && echo ok");
    EXPECT_EQ(r.out, "ok\n");
  }
  std::string dir = out.substr(0, out.rfind('/'));
  auto r = run("ls -a " + dir + " | grep -c 'race.h5.raspc-' || true");
  EXPECT_EQ(r.out, "0\n");
}

// A full disk: a 16 KiB tmpfs (needs root; skipped, saying so, otherwise). The error
// names the reason, the old file stays, no temporary file is left.
TEST(CliFiles, FullDisk) {
  std::string mnt = raspc::test::tempPath("tmpfs");
  ::mkdir(mnt.c_str(), 0700);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=16k") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs to fill (needs root): " << std::strerror(errno);
  std::string out = mnt + "/sort.h5";
  std::ofstream(out) << "old";
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --force");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + out + ": cannot write: No space left on device\n");
  EXPECT_EQ(slurp(out), "old");
  auto ls = run("ls -A " + mnt);
  EXPECT_EQ(ls.out, "sort.h5\n");
  ::umount(mnt.c_str());
  ::rmdir(mnt.c_str());
}

} // namespace

namespace {

// Bounded resources: a model over --max-params is refused before it is built, and no
// file is written; eval --all prints selector matrices only for short inputs.
TEST(CliLimits, CompileRefusesAModelOverMaxParams) {
  std::string out = raspc::test::tempPath("big.h5");
  std::remove(out.c_str());
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --max-params 1000");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: the model would have about 2957 parameters, more than the limit of 1000 (raise it "
                   "with --max-params)\n");
  EXPECT_FALSE(llvm::sys::fs::exists(out));
  r = run(raspcBinary() + " verify " + example("sort") + " --max-params 1000");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: the model would have about 2957 parameters, more than the limit of 1000 (raise it "
                   "with --max-params)\n");
  r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --max-params 0");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_FALSE(llvm::sys::fs::exists(out));
}

// The reader's limit is the compiler's, raised or lowered by the same flag.
TEST(CliLimits, RunAndInspectReadUnderMaxParams) {
  std::string out = raspc::test::tempPath("limit.h5");
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --force --max-params 10933");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  std::string refused = "raspc: error: " + out +
                        ": the configuration asks for 10933 parameters, more than the limit of 10932 (raise it with "
                        "--max-params)\n";
  r = run(raspcBinary() + " run " + out + " --input \"3 1 2\" --max-params 10932");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, refused);
  r = run(raspcBinary() + " inspect " + out + " --max-params 10932");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, refused);
  r = run(raspcBinary() + " run " + out + " --input \"3 1 2\" --max-params 10933");
  EXPECT_EQ(r.out, "[1, 2, 3]\n");
}

TEST(CliLimits, EvalAllRefusesToPrintHugeSelectors) {
  std::string f = tempFile("allbig.rasp", "s = select(indices, indices, <);\nw = selector_width(s);\n");
  std::string input;
  for (int i = 0; i < 1001; ++i) input += "a ";
  auto r = run(raspcBinary() + " eval " + f + " --input \"" + input + "\" --all");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: --all prints selectors as matrices, for inputs of at most 1000 tokens (this one "
                   "has 1001); print an s-op with --sop NAME\n");
  r = run(raspcBinary() + " eval " + f + " --input \"" + input + "\" --sop w");
  EXPECT_EQ(r.exitCode, 0);
}

} // namespace

namespace {

std::string compiledSort(const std::string &name, const std::string &flags = "") {
  std::string out = raspc::test::tempPath(name);
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --force " + flags);
  EXPECT_EQ(r.exitCode, 0) << r.out;
  return out;
}

// --inputs: every line is one input; outputs do not depend on the batch size, and a
// last line without a newline counts.
TEST(CliInputs, OutputsDoNotDependOnTheBatchSize) {
  std::string model = compiledSort("sort.h5");
  std::string inputs = tempFile("in.txt", "3 1 2\n\n1\n2 2 1 3 3\n1 3");
  std::string want = "[1, 2, 3]\n[]\n[1]\n[1, 2, 2, 3, 3]\n[1, 3]\n";
  for (std::string batch : {"1", "2", "4", "5", "256"}) {
    auto r = run(raspcBinary() + " run " + model + " --inputs " + inputs + " --batch " + batch);
    EXPECT_EQ(r.exitCode, 0) << batch;
    EXPECT_EQ(r.out, want) << batch;
  }
  // The trace numbers sequences across batches.
  auto r = run(raspcBinary() + " run " + model + " --inputs " + inputs + " --batch 2 --trace");
  EXPECT_NE(r.out.find("[4] embedding:\n  tokens = [1, 3]\n"), std::string::npos) << r.out;
  r = run(raspcBinary() + " run " + model + " --inputs " + inputs + " --batch 0");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "--batch: Value 0 not in range 1 to 65536");
}

TEST(CliInputs, ErrorsNameTheFileAndLine) {
  std::string model = compiledSort("sort.h5");
  std::string bad = tempFile("bad.txt", "3 1 2\n1\n1  x 2\n");
  auto r = run(raspcBinary() + " run " + model + " --inputs " + bad);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + bad + ":3:4: token 'x' is not in the model's vocabulary {1, 2, 3}\n");
  // Batches before the failing line have been printed.
  r = run(raspcBinary() + " run " + model + " --inputs " + bad + " --batch 2");
  EXPECT_EQ(r.out, "[1, 2, 3]\n[1]\nraspc: error: " + bad + ":3:4: token 'x' is not in the model's vocabulary {1, "
                   "2, 3}\n");
  std::string longer = tempFile("long.txt", "1\n1 2 3 1 2 3\n");
  r = run(raspcBinary() + " run " + model + " --inputs " + longer);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + longer + ":2: 6 tokens, more than the model's maximum length 5\n");
  std::string huge = tempFile("huge.txt", "1\n" + std::string(2 << 20, ' ') + "1\n");
  r = run(raspcBinary() + " run " + model + " --inputs " + huge);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + huge + ":2: the line is longer than 1048576 bytes\n");
  r = run(raspcBinary() + " run " + model + " --inputs " + ::testing::TempDir());
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.out.find(": is a directory\n"), std::string::npos) << r.out;
  std::string fifo = raspc::test::tempPath("fifo");
  std::remove(fifo.c_str());
  if (mkfifo(fifo.c_str(), 0600) != 0) GTEST_SKIP() << "cannot make a FIFO here";
  r = run(raspcBinary() + " run " + model + " --inputs " + fifo); // would block reading a FIFO
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + fifo + ": is not a regular file (a FIFO)\n");
  std::remove(fifo.c_str());
}

// Runs raspc with `args`, stdout and stderr to /dev/null; its exit code and peak
// resident memory in KiB (wait4 reports the child's own).
std::pair<int, long> runMeasured(const std::vector<std::string> &args) {
  std::vector<char *> argv;
  std::string bin = raspcBinary();
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (std::string &a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  if (posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ) != 0) return {-1, 0};
  posix_spawn_file_actions_destroy(&fa);
  int status = 0;
  struct rusage ru {};
  if (wait4(pid, &status, 0, &ru) != pid) return {-1, 0};
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ru.ru_maxrss};
}

// --inputs streams: memory stays bounded by the batch, not the number of lines
// (20,000 lines of 20 tokens took 840 MB when the whole file ran as one batch).
TEST(CliInputs, MemoryIsBoundedByTheBatch) {
  std::string model = compiledSort("sort20.h5", "--max-len 20");
  std::string text;
  for (int i = 0; i < 20000; ++i) {
    for (int j = 0; j < 20; ++j) text += char('1' + (i * 7 + j * 13) % 3) + std::string(j < 19 ? " " : "");
    text += "\n";
  }
  std::string inputs = tempFile("many.txt", text);
  auto [rc, kib] = runMeasured({"run", model, "--inputs", inputs});
  EXPECT_EQ(rc, 0);
  EXPECT_LT(kib, 300 * 1024) << "peak resident memory " << kib << " KiB";
}

// An allocation that fails anyway is an error, not an abort. 65,536 sequences of 40
// tokens in one batch need about 400 MB (their tokens, ids, logits and outputs; the
// forward pass itself runs in chunks); under a 300 MB address-space limit they fail.
TEST(CliInputs, OutOfMemoryIsAnError) {
  auto probe = run("ulimit -v 300000 && " + raspcBinary() + " --version");
  if (probe.exitCode != 0) GTEST_SKIP() << "raspc does not start under a 300 MB address-space limit: " << probe.out;
  std::string model = compiledSort("sort40.h5", "--max-len 40");
  std::string line;
  for (int j = 0; j < 40; ++j) line += std::string(j ? " " : "") + char('1' + j % 3);
  std::string text;
  for (int i = 0; i < 65536; ++i) text += line + "\n";
  std::string inputs = tempFile("many.txt", text);
  auto r = run("ulimit -v 300000 && " + raspcBinary() + " run " + model + " --inputs " + inputs + " --batch 65536");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: out of memory (an allocation failed; try smaller inputs or options)\n");
}

// A weight of 3e38 squared overflows float32 in layer 0's MLP at the position with
// index 2 (the second token): an error naming the sublayer and position, whatever the
// output format.
TEST(CliInputs, NonFiniteActivationIsAnError) {
  raspc::Model m = raspc::test::mapModel();
  m.tensors.at("blocks.0.mlp.W_in").at(7, 0) = 3e38f; // reads indices:2
  m.tensors.at("blocks.0.mlp.W_out").at(0, 14) = 3e38f;
  std::string model = raspc::test::tempPath("huge.h5");
  std::remove(model.c_str());
  ASSERT_FALSE(bool(raspc::writeModel(m, model)));
  auto r = run(raspcBinary() + " run " + model + " --input \"2 1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + model + ": layer 0 mlp produced a non-finite value at position 1\n");
  r = run(raspcBinary() + " run " + model + " --input \"2 1\" --json");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + model + ": layer 0 mlp produced a non-finite value at position 1\n");
  std::string inputs = tempFile("in.txt", "2\n3 2 1\n");
  r = run(raspcBinary() + " run " + model + " --inputs " + inputs + " --json --batch 1");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "{\"value\": [null]}\nraspc: error: " + inputs + ":2: " + model +
                       ": layer 0 mlp produced a non-finite value at position 1\n");
  // In float64 the same weights are finite.
  r = run(raspcBinary() + " run " + model + " --input \"2 1\" --precision f64");
  EXPECT_EQ(r.exitCode, 0) << r.out;
}

bool validUtf8(const std::string &s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += n;
  }
  return true;
}

// Names from a weight file are bytes in any encoding; --json output stays valid JSON
// in valid UTF-8, and such a byte reads back as itself.
TEST(CliInputs, JsonIsValidForAnyBytesInMetadata) {
  raspc::Model m = raspc::test::mapModel();
  m.outputName = std::string("out\xff\x01", 5);
  m.residualLabels[0] = std::string("one\xc3\x28", 5);
  m.residualLabels[1] = "tokens:\xe2\x82\xac"; // a real euro sign stays as it is
  m.outputValues = {std::string("x\xfe"), std::string("y")};
  m.nodes.back().valueSet = m.outputValues;
  std::string model = raspc::test::tempPath("bytes.h5");
  std::remove(model.c_str());
  auto err = raspc::writeModel(m, model);
  ASSERT_FALSE(bool(err)) << llvm::toString(std::move(err));
  auto r = run(raspcBinary() + " inspect " + model + " --json");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_TRUE(validUtf8(r.out)) << r.out;
  auto v = raspc::json::parse(r.out);
  ASSERT_TRUE(bool(v)) << llvm::toString(v.takeError()) << "\n" << r.out;
  EXPECT_EQ(v->get("output")->s, m.outputName);
  EXPECT_EQ(v->get("residual")->array[0].s, m.residualLabels[0]);
  EXPECT_NE(r.out.find("\"out\\udcff\\u0001\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"tokens:\xe2\x82\xac\""), std::string::npos) << r.out;
  r = run(raspcBinary() + " run " + model + " --input \"1 3\" --json");
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(r.out, "{\"value\": [null, \"x\\udcfe\"]}\n");
  if (std::system("python3 -c 'import json' >/dev/null 2>&1") == 0) {
    std::string py = tempFile("out.json", r.out);
    EXPECT_EQ(run("python3 -c 'import json,sys; json.loads(open(sys.argv[1], encoding=\"utf-8\").read())' " + py)
                  .exitCode,
              0);
  }
}

} // namespace

// Issue 10's command-line gaps: --sop, eval --inputs, the trace's attention and JSON,
// one head count, locations at the user's call.
TEST(CliGaps, OutputFlagIsNowSop) {
  auto r = run(raspcBinary() + " eval " + example("sort") + " --input \"2 1\" --output out");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: --output is now --sop NAME (the s-op to show or compile); the file a command "
                   "writes is -o/--out\n");
  std::string f = tempFile("old_header.rasp", "# raspc: --output x\nx = tokens;\n");
  r = run(raspcBinary() + " eval " + f + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out.rfind(f + ":1:10: error: header option --output is now --sop NAME (the s-op to show or compile)\n", 0),
            0u)
      << r.out;
  r = run(raspcBinary() + " eval " + example("sort") + " --input \"2 1\" --sop smaller");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, "[1, 0]\n");
}

TEST(CliGaps, EvalInputsFile) {
  std::string in = tempFile("eval_inputs.txt", "3 1 2\n1\n\n2 2 1\n");
  auto r = run(raspcBinary() + " eval " + example("sort") + " --inputs " + in);
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, "[1, 2, 3]\n[1]\n[]\n[1, 2, 2]\n");
  r = run(raspcBinary() + " eval " + example("sort") + " --inputs " + in + " --json");
  EXPECT_EQ(r.out, "{\"output\": \"out\", \"value\": [1, 2, 3]}\n{\"output\": \"out\", \"value\": [1]}\n"
                   "{\"output\": \"out\", \"value\": []}\n{\"output\": \"out\", \"value\": [1, 2, 2]}\n");
  std::string bad = tempFile("eval_bad.txt", "1 2\n3  9 1\n");
  r = run(raspcBinary() + " eval " + example("sort") + " --inputs " + bad);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "[1, 2]\nraspc: error: " + bad + ":2:4: input token '9' is not in the vocabulary {1 2 3}\n");
  std::string longLine = tempFile("eval_long.txt", "1\n1 2 3 1 2 3\n");
  r = run(raspcBinary() + " eval " + example("sort") + " --inputs " + longLine);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "[1]\nraspc: error: " + longLine + ":2: 6 tokens, more than the maximum length 5\n");
  r = run(raspcBinary() + " eval " + example("sort") + " --inputs " + in + " --input \"1\"");
  EXPECT_EQ(r.exitCode, 2);
  r = run(raspcBinary() + " eval " + example("sort"));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc eval: give --input \"...\" or --inputs FILE\n");
}

TEST(CliGaps, TraceShowsAttentionAndHasJson) {
  std::string out = raspc::test::tempPath("gaps_sort.h5");
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --force");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  // Layer 2's head moves each token to its place: "2 1" -> out = [1, 2]; query 0 reads key 1.
  r = run(raspcBinary() + " run " + out + " --input \"2 1\" --trace");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_NE(r.out.find("  head 0 (out) attends:\n    BOS: BOS 1.00\n    0: 1 1.00\n    1: 0 1.00\n"), std::string::npos)
      << r.out;
  r = run(raspcBinary() + " run " + out + " --input \"2 1\" --trace --json");
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out.rfind("{\"value\": [1, 2], \"trace\": [{\"layer\": -1, \"sublayer\": \"embed\", \"values\": "
                        "{\"tokens\": [2, 1], ", 0), 0u) << r.out;
  auto j = raspc::json::parse(r.out);
  ASSERT_TRUE(bool(j)) << r.out;
  const auto &trace = j->get("trace")->array;
  ASSERT_EQ(trace.size(), 7u); // embed, then attn and mlp of 3 layers
  const auto &l2 = trace[5];   // layer 2 attn
  EXPECT_EQ(l2.get("layer")->i, 2);
  EXPECT_EQ(l2.get("sublayer")->s, "attn");
  const auto &outValues = l2.get("values")->get("out")->array;
  ASSERT_EQ(outValues.size(), 2u);
  EXPECT_EQ(outValues[0].i, 1);
  EXPECT_EQ(outValues[1].i, 2);
  const auto &head = l2.get("attention")->array.at(0);
  EXPECT_EQ(head.get("node")->s, "out");
  const auto &pattern = head.get("pattern")->array;
  ASSERT_EQ(pattern.size(), 3u); // BOS and 2 tokens
  EXPECT_NEAR(pattern[1].array.at(2).d, 1.0, 1e-4); // position 0 (row 1) reads position 1 (column 2)
  EXPECT_EQ(trace[0].get("attention"), nullptr);     // the embedding has no heads
}

TEST(CliGaps, OneHeadCountAndUserCallSites) {
  std::string prog = tempFile("gaps_hist.rasp", "# raspc: --vocab \"a b\" --max-len 4\nx = hist(tokens);\n");
  std::string out = raspc::test::tempPath("gaps_hist.h5");
  auto r = run(raspcBinary() + " compile " + prog + " -o " + out + " --force --json");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto c = raspc::json::parse(r.out);
  ASSERT_TRUE(bool(c)) << r.out;
  r = run(raspcBinary() + " inspect " + out + " --json");
  auto i = raspc::json::parse(r.out);
  ASSERT_TRUE(bool(i)) << r.out;
  EXPECT_EQ(c->get("heads")->i, 1);
  EXPECT_EQ(i->get("heads")->i, 1);
  EXPECT_EQ(c->get("n_heads")->i, i->get("n_heads")->i);
  // hist is defined in the prelude; its head is located at the user's call.
  EXPECT_EQ(i->get("layers")->array.at(0).array.at(0).get("location")->s, prog + ":2:5");
  r = run(raspcBinary() + " inspect " + out);
  EXPECT_EQ(r.out.rfind(out + ": 1 layer, 1 head (n_heads 1 per layer, d_head", 0), 0u) << r.out;
}

// --threads changes only the speed: the same outputs with 1, 2 and one per core (the
// default), over 40 lines: 3 chunks of sequences at N = 16.
TEST(CliGaps, ThreadsDoNotChangeOutputs) {
  std::string out = raspc::test::tempPath("threads_sort.h5");
  auto r = run(raspcBinary() + " compile " + example("sort") + " --max-len 16 -o " + out + " --force");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  std::string text, want;
  for (int i = 0; i < 10; ++i) {
    text += "3 1 2 2 3 1 1 2 3 3 2 1 2 3 1 2\n2 1\n\n3 3 3\n";
    want += "[1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]\n[1, 2]\n[]\n[3, 3, 3]\n";
  }
  std::string in = tempFile("threads_in.txt", text);
  r = run(raspcBinary() + " run " + out + " --inputs " + in);
  EXPECT_EQ(r.exitCode, 0);
  EXPECT_EQ(r.out, want) << "default threads";
  for (const char *t : {"1", "2", "0"}) {
    r = run(raspcBinary() + " run " + out + " --inputs " + in + " --threads " + t);
    EXPECT_EQ(r.exitCode, 0);
    EXPECT_EQ(r.out, want) << "--threads " << t;
  }
  r = run(raspcBinary() + " run " + out + " --inputs " + in + " --threads -1");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_NE(r.out.find("--threads"), std::string::npos) << r.out;
}

// A CUDA plugin that cannot be opened is named with the loader's reason.
TEST(CliGaps, CudaPluginThatCannotLoadIsNamed) {
  std::string out = raspc::test::tempPath("plugin_sort.h5");
  auto r = run(raspcBinary() + " compile " + example("sort") + " -o " + out + " --force");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  r = run("RASPC_CUDA_PLUGIN=/nonexistent/libraspc_cuda.so " + raspcBinary() + " run " + out +
          " --input \"1\" --device cuda");
  EXPECT_EQ(r.exitCode, 1);
  std::string why;
  if (llvm::Error e = raspc::deviceError(raspc::Device::Cuda)) why = llvm::toString(std::move(e));
  if (why.find("built without CUDA") != std::string::npos)
    EXPECT_EQ(r.out, "raspc: error: --device cuda: " + why + "\n");
  else
    EXPECT_EQ(r.out, "raspc: error: --device cuda: cannot load the CUDA plugin (/nonexistent/libraspc_cuda.so: "
                     "cannot open shared object file: No such file or directory)\n");
}

namespace {

// verify never skips an input silently: the inputs the interpreter rejects are
// counted, the first is named with its error, and verify fails. Here the program
// fails only on the one input of ten b's, which the compile-time check (short
// inputs, then a few random long ones) does not meet.
TEST(CliVerify, RejectedInputsAreCountedAndNamed) {
  std::string f = tempFile("rejects.rasp", "# raspc: --vocab \"a b\" --max-len 10\n"
                                           "nb = selector_width(select(tokens, \"b\", ==));\n"
                                           "r = 10 / (10 - nb);\n");
  auto r = run(raspcBinary() + " verify " + f);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.out.find("the interpreter rejects 1 input, first \"b b b b b b b b b b\": " + f +
                       ":3:8: division by zero (at position 0)\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(f + ": all 2046 inputs, 0 mismatches, 1 rejected by the interpreter ("), std::string::npos)
      << r.out;
  r = run(raspcBinary() + " verify " + f + " --json");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.out.find("{\"inputs\": 2046, \"exhaustive\": true, \"mismatches\": 0, \"rejected\": 1, "),
            std::string::npos)
      << r.out;
}

// A program that fails on a short allowed input is not compiled at all.
TEST(CliVerify, FailureOnAShortInputIsACompileError) {
  std::string f = tempFile("fails.rasp", "# raspc: --vocab \"0 1 2\" --max-len 3\nr = 6 / tokens;\n");
  auto r = run(raspcBinary() + " verify " + f);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, f + ":2:7: error: division by zero (at position 0) on the allowed input \"0\", where a compiled "
                       "model would have no value; guard it with a conditional (`x if c else y` computes only the "
                       "chosen branch) or narrow the vocabulary\nr = 6 / tokens;\n      ^\n");
  std::string g = tempFile("guarded.rasp", "# raspc: --vocab \"0 1 2\" --max-len 3\nr = 6 / tokens if tokens != 0 else 0;\n");
  r = run(raspcBinary() + " verify " + g);
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_NE(r.out.find(g + ": all 39 inputs, 0 mismatches ("), std::string::npos) << r.out;
}

} // namespace

namespace {
// The classics of "Thinking Like Transformers" exactly as the original's
// paper_examples.rasp writes them (no annotations, aggregates without defaults) compile
// and verify exact on every input, in the layers stated.
TEST(CliCompile, PaperExamplesCompileUnannotatedAndVerifyExact) {
  const std::string paper = sourceDir() + "/tests/conformance/original/paper_examples.rasp";
  struct Case {
    const char *sop, *vocab;
    int maxLen;
    const char *want;
  };
  for (const Case &c : {Case{"hist_bos", "§ a b", 5, "all 363 inputs, 0 mismatches (2 layers"},
                        Case{"hist_nobos", "§ a b", 5, "all 363 inputs, 0 mismatches (1 layer,"},
                        Case{"reverse", "§ a b", 5, "all 363 inputs, 0 mismatches (3 layers"},
                        Case{"sort_bos", "§ a b", 5, "all 363 inputs, 0 mismatches (4 layers"},
                        Case{"hist2_bos", "§ a b", 5, "all 363 inputs, 0 mismatches (4 layers"},
                        Case{"sort_by_most_freq", "§ a b", 5, "all 363 inputs, 0 mismatches (7 layers"},
                        Case{"dyck1_ptf", "( ) a", 6, "all 1092 inputs, 0 mismatches (3 layers"},
                        Case{"dyck2_ptf", "( ) { } [ ]", 5, "all 9330 inputs, 0 mismatches (5 layers"},
                        Case{"dyck3_ptf", "( ) { } [ ]", 5, "all 9330 inputs, 0 mismatches (5 layers"}}) {
    auto r = run(raspcBinary() + " verify " + paper + " --sop " + c.sop + " --vocab \"" + c.vocab + "\" --max-len " +
                 std::to_string(c.maxLen));
    EXPECT_EQ(r.exitCode, 0) << c.sop << ": " << r.out;
    EXPECT_EQ(r.out.rfind(paper + ": " + c.want, 0), 0u) << c.sop << ": " << r.out;
  }
}
} // namespace

namespace {

// raspc suite build / index / list as a user runs them: a failed model is named, the
// others build, the exit code says so; reruns need --force.
TEST(CliSuite, BuildIndexList) {
  std::string dir = raspc::test::tempPath("suite");
  llvm::sys::fs::remove_directories(dir);
  llvm::sys::fs::create_directories(dir + "/src");
  std::ofstream(dir + "/src/sort.rasp") << "# description: sort\n# category: classic\n# difficulty: easy\n"
                                        << slurp(example("sort"));
  std::ofstream(dir + "/src/rejects.rasp") << "# raspc: --vocab \"a b\" --max-len 10\n"
                                              "nb = selector_width(select(tokens, \"b\", ==));\nr = 10 / (10 - nb);\n";
  const std::string out = dir + "/out";
  auto r = run(raspcBinary() + " suite build " + out + " --programs '" + dir + "/src/*.rasp' --jobs 2");
  EXPECT_EQ(r.exitCode, 1) << r.out;
  EXPECT_NE(r.out.find("raspc: error: rejects: not exact: 0 mismatches in 2046 inputs; the interpreter rejects 1 "
                       "input, first \"b b b b b b b b b b\": " + dir + "/src/rejects.rasp:3:8: division by zero"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("built 1 model into " + out + " in "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" s; 1 failed: rejects\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("[1/2]"), std::string::npos) << "no progress when piped: " << r.out;
  EXPECT_TRUE(llvm::sys::fs::exists(out + "/models/sort/model.safetensors"));

  r = run(raspcBinary() + " suite build " + out + " --programs '" + dir + "/src/*.rasp'");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: '" + out + "/models/rejects' exists (and 1 more model folder); pass --force to rebuild\n");
  r = run(raspcBinary() + " suite build " + out + " --programs '" + dir + "/src/sort.rasp' --force --json");
  EXPECT_EQ(r.exitCode, 0) << r.out;
  auto j = raspc::json::parse(r.out);
  ASSERT_TRUE(bool(j)) << llvm::toString(j.takeError()) << r.out;
  EXPECT_EQ(j->get("built")->i, 1);
  EXPECT_EQ(j->get("models")->array[0].get("name")->s, "sort");
  EXPECT_TRUE(j->get("models")->array[0].get("exact")->b);

  r = run(raspcBinary() + " suite index " + out + " --json");
  EXPECT_EQ(r.exitCode, 0) << r.out;
  auto index = raspc::json::parse(r.out);
  ASSERT_TRUE(bool(index)) << llvm::toString(index.takeError()) << r.out;
  ASSERT_EQ(index->get("models")->array.size(), 2u);
  EXPECT_EQ(index->get("models")->array[0].get("status")->s, "failed");
  EXPECT_EQ(slurp(out + "/index.json"), r.out);

  r = run(raspcBinary() + " suite build " + out + " --shard 3/2");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: --shard 3/2: give I/N with 1 <= I <= N, e.g. 3/10\n");
  r = run(raspcBinary() + " suite index " + dir + "/nowhere");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: " + dir + "/nowhere/models: no such folder (is " + dir + "/nowhere a built suite?)\n");

  r = run(raspcBinary() + " suite list --json");
  EXPECT_EQ(r.exitCode, 0) << r.out;
  auto list = raspc::json::parse(r.out);
  ASSERT_TRUE(bool(list)) << llvm::toString(list.takeError()) << r.out;
  EXPECT_EQ(list->kind, raspc::json::Value::Array);
  for (auto &p : list->array) {
    EXPECT_FALSE(p.get("vocab")->array.empty()) << p.get("name")->s;
    EXPECT_GT(p.get("max_len")->i, 0) << p.get("name")->s;
  }
}

// raspc show on sort: the heads titled by their nodes, the decoded values, well-formed SVG.
TEST(CliShow, SortAsSvgAndHtml) {
  std::string model = raspc::test::tempPath("sort.h5"), svg = raspc::test::tempPath("sort.svg"),
              html = raspc::test::tempPath("sort.html");
  for (auto &f : {model, svg, html}) std::remove(f.c_str());
  ASSERT_EQ(run(raspcBinary() + " compile " + example("sort") + " -o " + model).exitCode, 0);
  auto r = run(raspcBinary() + " show " + model + " --input \"3 1 2 2\" -o " + svg);
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(r.out, "wrote " + svg + ": 3 heads, 7 steps\n");
  // Every <text> in document order, '|'-separated, by a real XML parser.
  r = run("/usr/bin/python3 -c \"import sys, xml.etree.ElementTree as E; "
          "print('|'.join(t.text or '' for t in E.parse(sys.argv[1]).iter('{http://www.w3.org/2000/svg}text')))\" " +
          svg);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  const std::string &t = r.out;
  EXPECT_EQ(t.rfind(example("sort") + " on \"3 1 2 2\": out = [1, 2, 2, 3]|", 0), 0u) << t;
  // The weights in the cells: row "3" of `smaller` attends to BOS and the three smaller tokens.
  EXPECT_NE(t.find("layer 0 head 0|smaller|BOS|3|1|2|2|BOS|1|3|.25|.25|.25|.25|"), std::string::npos) << t;
  for (const char *title : {"layer 0 head 0|smaller", "layer 0 head 1|", "layer 2 head 0|out"})
    EXPECT_NE(t.find(title), std::string::npos) << title << "\n" << t;
  // Heatmap axes: BOS and the tokens.
  EXPECT_NE(t.find("BOS|3|1|2|2|BOS|"), std::string::npos) << t;
  // The last table: after the last MLP, the output row holds the sorted tokens.
  size_t last = t.find("after layer 2 mlp");
  ASSERT_NE(last, std::string::npos) << t;
  EXPECT_NE(t.find("|out|1|2|2|3", last), std::string::npos) << t;
  EXPECT_NE(t.find("|tokens|3|1|2|2"), std::string::npos) << t;
  EXPECT_NE(t.find("after the embedding|input|3|1|2|2|"), std::string::npos) << t;

  r = run(raspcBinary() + " show " + model + " --input \"3 1 2 2\" -o " + html);
  EXPECT_EQ(r.exitCode, 0) << r.out;
  std::string page = slurp(html);
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(page.find("<svg xmlns="), std::string::npos);
  EXPECT_NE(page.find("<tr><td>out</td><td>1</td><td>2</td><td>2</td><td>3</td></tr>"), std::string::npos) << page;

  r = run(raspcBinary() + " show " + model + " --input \"3 1 2 2\" -o " + svg);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: '" + svg + "' exists; pass --force to overwrite it\n");
  r = run(raspcBinary() + " show " + model + " --input \"3 9\" -o " + svg + " --force");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.out.find("raspc: error: --input: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("'9'"), std::string::npos) << r.out;
  r = run(raspcBinary() + " show " + model + " --input \"3 1 2 2\" -o x.png");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_EQ(r.out, "raspc: error: -o x.png: name an .svg or .html file (the format follows the extension)\n");
}

} // namespace
