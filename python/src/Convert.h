// Conversions between Python objects and raspc values, and the error Python sees
// (raised as raspc.RaspcError by the translator registered in Module.cpp).
#pragma once
#include "frontend/Diagnostics.h"
#include "ir/Scalar.h"

#include <Eigen/Dense>
#include <llvm/Support/Error.h>
#include <nanobind/nanobind.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace raspc::py {

namespace nb = nanobind;

// What raspc.RaspcError carries: the text as the command line prints it, and where the
// first error is (file empty and line 0 when it has no place in a source).
struct Error : std::runtime_error {
  explicit Error(std::string text, std::string message = "", std::string file = "", unsigned line = 0,
                 unsigned col = 0)
      : std::runtime_error(text), text(std::move(text)), message(std::move(message)), file(std::move(file)),
        line(line), col(col) {
    if (this->message.empty()) this->message = this->text;
  }
  std::string text, message, file;
  unsigned line, col;
};

// The error for the diagnostics printed so far (`text`) and the engine's first error.
Error diagnosticsError(const DiagnosticEngine &d, const llvm::SourceMgr &sm, std::string text);
// An llvm::Error with no source location (a file's problem, an input's).
[[noreturn]] void throwError(llvm::Error e);

nb::object toPython(const Scalar &s);
nb::list toPython(const std::vector<Scalar> &v);
// A Python value as a RASP value: None, bool, int (64 bits), float, str, or a numpy
// scalar of those. False with `error` set for anything else.
bool fromPython(nb::handle h, Scalar &out, std::string &error);
// A token of an input or a vocabulary: a str as it is, an int, float or bool spelled as
// Python prints it.
std::string tokenOf(nb::handle h);
std::vector<std::string> tokensOf(nb::handle seq);

// A copy of a matrix as a new float64 numpy array (row-major).
nb::object toNumpy(const Eigen::MatrixXd &m);
// A copy of a tensor as a new float32 numpy array of its shape.
nb::object toNumpy(const std::vector<float> &data, const std::vector<int64_t> &shape);

} // namespace raspc::py
