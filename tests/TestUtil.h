// Helpers shared by the test suites: run RASP source through the front end and
// capture diagnostics, evaluate s-ops on inputs, and run the raspc binary.
#pragma once
#include "frontend/Program.h"
#include "runtime/Device.h"

#include <gtest/gtest.h>

#include <llvm/Support/raw_ostream.h>

#include <array>
#include <cstdio>
#include <memory>
#include <string>
#include <sys/wait.h>
#include <vector>

namespace raspc::test {

// GPU tests run where a CUDA device is usable and otherwise skip, saying why.
#define RASPC_SKIP_WITHOUT_CUDA()                                                                                    \
  if (auto cudaError_ = ::raspc::deviceError(::raspc::Device::Cuda))                                                  \
  GTEST_SKIP() << "no GPU to test on: " << llvm::toString(std::move(cudaError_))

// A program loaded from source text, with its diagnostics captured as text.
struct Loaded {
  std::string diags;
  llvm::raw_string_ostream os{diags};
  Program program{os};
  bool ok = false;

  explicit Loaded(const std::string &source, const std::string &name = "test.rasp") {
    ok = program.loadSource(source, name);
    os.flush();
  }
  std::string errors() {
    os.flush();
    return diags;
  }
  // The value of top-level s-op `name` on space-separated input tokens, rendered as
  // JSON (or the located error text when interpretation fails).
  std::string eval(const std::string &name, const std::string &input, InterpreterOptions opts = {}) {
    const Value *v = program.evaluator().lookup(name);
    if (!v || !(v->is(Value::SOp) || v->is(Value::Sel))) return "<no s-op or selector '" + name + "'>";
    std::vector<std::string> toks = splitArgs(input);
    Interpreter interp(program.graph(), opts);
    if (auto err = interp.run(toks, {v->node()})) {
      diags.clear();
      program.diags().report(std::move(err));
      return errors();
    }
    if (v->is(Value::Sel)) return formatSelectorRows(interp.selector(v->node()), true, "");
    return formatSequence(interp.sop(v->node()), true);
  }
  // A host value rendered with formatValue.
  std::string host(const std::string &name) {
    const Value *v = program.evaluator().lookup(name);
    return v ? formatValue(*v) : "<undefined>";
  }
};

struct CommandResult {
  int exitCode = -1;
  std::string out; // stdout and stderr together
};

// Runs a shell command, capturing stdout and stderr.
inline CommandResult run(const std::string &cmd, const std::string &stdinText = "") {
  std::string full = cmd + " 2>&1";
  std::string inFile;
  if (!stdinText.empty()) {
    char tmpl[] = "/tmp/raspc-test-stdin-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd >= 0) {
      FILE *f = fdopen(fd, "w");
      fputs(stdinText.c_str(), f);
      fclose(f);
      inFile = tmpl;
      full += " < " + inFile;
    }
  } else {
    full += " < /dev/null";
  }
  CommandResult r;
  FILE *p = popen(full.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (!inFile.empty()) std::remove(inFile.c_str());
  return r;
}

inline std::string raspcBinary() { return RASPC_BINARY; }

// A temporary file path private to the running test: ctest runs tests in parallel
// processes, so two tests must never share a file.
inline std::string tempPath(const std::string &name) {
  const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + (info ? std::string(info->test_suite_name()) + "_" + info->name() + "_" : "") + name;
}
inline std::string sourceDir() { return RASPC_SOURCE_DIR; }

} // namespace raspc::test
