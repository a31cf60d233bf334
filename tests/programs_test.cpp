// The classic programs of examples/, run through `raspc eval --json` exactly as a
// user runs them, against the hand-worked outputs in tests/programs/cases.txt.
#include "TestUtil.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace {

struct Case {
  std::string file, input, expect;
  int line = 0;
};

std::vector<Case> loadCases() {
  std::ifstream in(raspc::test::sourceDir() + "/tests/programs/cases.txt");
  std::vector<Case> cases;
  Case c;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    auto value = [&](const char *key) { return line.substr(std::string(key).size()); };
    if (line.rfind("file: ", 0) == 0) {
      c = Case{value("file: "), "", "", n};
    } else if (line.rfind("input: ", 0) == 0) {
      c.input = value("input: ");
    } else if (line.rfind("input:", 0) == 0) {
      c.input = "";
    } else if (line.rfind("expect: ", 0) == 0) {
      c.expect = value("expect: ");
      cases.push_back(c);
    }
  }
  return cases;
}

TEST(Programs, CasesFileIsComplete) {
  auto cases = loadCases();
  EXPECT_GE(cases.size(), 80u);
  // Every classic program of the issue is covered.
  for (const char *f : {"reverse", "hist", "sort", "double_hist", "sort_freq", "dyck1", "dyck2", "frac_prevs",
                        "shift", "length", "count", "max", "min"}) {
    std::string path = std::string("examples/") + f + ".rasp";
    bool found = false;
    for (auto &c : cases) found = found || c.file == path;
    EXPECT_TRUE(found) << path;
  }
}

TEST(Programs, EvalJsonMatchesHandWorkedOutputs) {
  int failures = 0;
  for (auto &c : loadCases()) {
    auto r = raspc::test::run(raspc::test::raspcBinary() + " eval " + raspc::test::sourceDir() + "/" + c.file +
                              " --json --input \"" + c.input + "\"");
    std::string want = "\"value\": " + c.expect + "}\n";
    bool ok = r.exitCode == 0 && r.out.size() >= want.size() &&
              r.out.compare(r.out.size() - want.size(), want.size(), want) == 0;
    if (!ok) ++failures;
    EXPECT_TRUE(ok) << "cases.txt:" << c.line << ": " << c.file << " on \"" << c.input << "\"\n  expected "
                    << c.expect << "\n  got (exit " << r.exitCode << ") " << r.out;
  }
  EXPECT_EQ(failures, 0);
}

} // namespace
