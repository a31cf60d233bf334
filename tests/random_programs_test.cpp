// Differential testing of the compiler: random RASP programs (maps, selects with
// composite selectors, categorical and numerical aggregates, selector widths) are
// compiled and the model is compared with the interpreter on every input up to
// length 4. A program the compiler rejects must get a located error; a compiled one
// must be exact.
#include "TestUtil.h"

#include "passes/Compiler.h"
#include "runtime/Executor.h"

#include <gtest/gtest.h>

#include <iostream>
#include <random>

using namespace raspc;

namespace {

class Generator {
public:
  explicit Generator(unsigned seed) : rng_(seed) {}

  std::string program() {
    vars_ = {"tokens", "indices"};
    std::string src;
    int n = 3 + int(rng_() % 8);
    for (int i = 0; i < n; ++i) {
      std::string name = "v" + std::to_string(i);
      src += name + " = " + expr() + ";\n";
      vars_.push_back(name);
    }
    return src;
  }

private:
  std::mt19937 rng_;
  std::vector<std::string> vars_;

  std::string pick() { return vars_[rng_() % vars_.size()]; }
  std::string small() { return std::to_string(rng_() % 4); }
  std::string cmp() {
    static const char *ops[] = {"==", "<", ">", "<=", ">=", "!="};
    return ops[rng_() % 6];
  }
  std::string select() {
    std::string s = "select(" + pick() + ", " + (rng_() % 4 ? pick() : small()) + ", " + cmp() + ")";
    switch (rng_() % 6) {
    case 0: return "(" + s + " and select(" + pick() + ", " + pick() + ", " + cmp() + "))";
    case 1: return "(" + s + " or select(" + pick() + ", " + pick() + ", " + cmp() + "))";
    case 2: return "(not " + s + ")";
    default: return s;
    }
  }
  std::string expr() {
    switch (rng_() % 12) {
    case 0: return pick() + " + " + pick();
    case 1: return pick() + " - " + small();
    case 2: return pick() + " % 3";
    case 3: return "indicator(" + pick() + " == " + pick() + ")";
    case 4: return "indicator(" + pick() + " < " + small() + ")";
    case 5: return pick() + " if " + pick() + " > " + small() + " else " + pick();
    case 6: return "aggregate(" + select() + ", " + pick() + ")";
    case 7: return "aggregate(" + select() + ", " + pick() + ", " + small() + ")";
    case 8: return "numerical(aggregate(" + select() + ", numerical(indicator(" + pick() + " > " + small() + ")), 0))";
    case 9: return "selector_width(" + select() + ")";
    case 10: return "numerical(selector_width(" + select() + ")) + numerical(selector_width(" + select() + "))";
    default: return "-" + pick();
    }
  }
};


TEST(RandomPrograms, CompiledModelsMatchTheInterpreter) {
  const std::vector<std::string> vocab = {"1", "2", "3"};
  const int N = 4;
  auto inputs = allInputs(vocab, N);
  int compiled = 0, rejected = 0;
  // RASPC_RANDOM_PROGRAMS=N runs more (seeds 1..N) when hunting for bugs.
  const char *env = std::getenv("RASPC_RANDOM_PROGRAMS");
#ifdef RASPC_SANITIZED_BUILD
  unsigned count = env ? unsigned(std::atoi(env)) : 100;
#else
  unsigned count = env ? unsigned(std::atoi(env)) : 300;
#endif
  for (unsigned seed = 1; seed <= count; ++seed) {
    std::string src = Generator(seed).program();
    std::string diags;
    llvm::raw_string_ostream os(diags);
    Program p(os);
    ASSERT_TRUE(p.loadSource(src, "random.rasp")) << src << os.str();
    auto out = p.resolveOutput(std::nullopt);
    ASSERT_TRUE(out);
    CompileOptions co;
    co.vocab = vocab;
    co.maxLen = N;
    auto m = compileProgram(p.graph(), *out, co, p.sourceMgr());
    if (!m) {
      p.diags().report(m.takeError());
      os.flush();
      // Rejections are located at the program.
      EXPECT_EQ(diags.rfind("random.rasp:", 0), 0u) << "seed " << seed << "\n" << src << diags;
      ++rejected;
      if (std::getenv("RASPC_RANDOM_VERBOSE")) std::cout << diags.substr(0, diags.find('\n')) << "\n";
      continue;
    }
    ++compiled;
    auto exec = Executor::create(*m);
    ASSERT_TRUE(bool(exec)) << llvm::toString(exec.takeError());
    auto outs = exec->run(inputs);
    ASSERT_TRUE(bool(outs)) << llvm::toString(outs.takeError());
    InterpreterOptions io;
    io.intTokens = true;
    Interpreter interp(p.graph(), io);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (auto err = interp.run(inputs[i], {*out})) {
        llvm::consumeError(std::move(err)); // an input the program itself rejects
        continue;
      }
      const auto &want = interp.sop(*out);
      if (!matchesInterpreter((*outs)[i], want)) {
        std::string in;
        for (auto &t : inputs[i]) in += t + " ";
        ADD_FAILURE() << "seed " << seed << " on [" << in << "]: interpreter " << formatSequence(want, false)
                      << ", model " << formatSequence((*outs)[i], false) << "\n" << src;
        break;
      }
    }
  }
  std::cout << compiled << " compiled and checked, " << rejected << " rejected with a located error\n";
  // The generator must exercise the compiler, not only its error paths.
  EXPECT_GT(compiled, int(count / 2)) << rejected << " rejected";
}

} // namespace
