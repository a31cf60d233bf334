// Errors located in the RASP source. The passes and the interpreter report failures
// at a node's source location without knowing how they are printed (the frontend's
// DiagnosticEngine shows the line and a caret; the Python package hands them on).
#pragma once
#include <llvm/ADT/Twine.h>
#include <llvm/Support/Error.h>
#include <llvm/Support/SMLoc.h>
#include <llvm/Support/SourceMgr.h>
#include <llvm/Support/raw_ostream.h>

#include <string>
#include <utility>

namespace raspc {

// An llvm::Error that remembers where in the RASP source it arose.
class LocatedError : public llvm::ErrorInfo<LocatedError> {
public:
  static char ID;
  LocatedError(llvm::SMLoc loc, std::string message) : loc_(loc), message_(std::move(message)) {}
  void log(llvm::raw_ostream &os) const override { os << message_; }
  std::error_code convertToErrorCode() const override { return llvm::inconvertibleErrorCode(); }
  llvm::SMLoc loc() const { return loc_; }
  std::string message() const override { return message_; }

private:
  llvm::SMLoc loc_;
  std::string message_;
};

inline llvm::Error locatedError(llvm::SMLoc loc, const llvm::Twine &msg) {
  return llvm::make_error<LocatedError>(loc, msg.str());
}

// "file:line:col" for a location (or "<unknown>").
std::string describeLoc(const llvm::SourceMgr &sm, llvm::SMLoc loc);

} // namespace raspc
