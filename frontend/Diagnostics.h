// Diagnostics: every error carries a source location and is printed by LLVM's
// SourceMgr as `file:line:col: error: message`, the source line and a caret.
#pragma once
#include "support/LocatedError.h"

#include <llvm/ADT/Twine.h>
#include <llvm/Support/Error.h>
#include <llvm/Support/SMLoc.h>
#include <llvm/Support/SourceMgr.h>
#include <llvm/Support/raw_ostream.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace raspc {

class DiagnosticEngine {
public:
  explicit DiagnosticEngine(llvm::SourceMgr &sm, llvm::raw_ostream &os = llvm::errs())
      : sm_(sm), os_(os) {}
  ~DiagnosticEngine() { flushRepeats(); }

  void error(llvm::SMLoc loc, const llvm::Twine &msg);
  void warning(llvm::SMLoc loc, const llvm::Twine &msg);
  void note(llvm::SMLoc loc, const llvm::Twine &msg);
  // Prints an llvm::Error: located errors with their source line, others plainly.
  void report(llvm::Error err);

  // An error with the same location and text as one already shown (a loop that fails
  // the same way on every iteration) is counted, not printed again; this prints one
  // note per such error with the count ("file:1:5: note: this error occurred 49 more
  // times") and forgets them. Called on destruction, and by the repl after each input.
  void flushRepeats();

  unsigned errorCount() const { return errors_; }
  // The first error reported (its location and message, without the source line), for
  // callers that hand errors on as data (the Python package's RaspcError).
  const std::optional<std::pair<llvm::SMLoc, std::string>> &firstError() const { return first_; }
  // Past this many errors the rest are dropped (one line says so): junk input must
  // not produce megabytes of diagnostics.
  bool tooMany() const { return errors_ >= kMaxErrors; }
  llvm::SourceMgr &sourceMgr() { return sm_; }
  llvm::raw_ostream &stream() { return os_; }

  static constexpr unsigned kMaxErrors = 50;

private:
  void print(llvm::SMLoc loc, llvm::SourceMgr::DiagKind kind, const llvm::Twine &msg);
  llvm::SourceMgr &sm_;
  llvm::raw_ostream &os_;
  unsigned errors_ = 0;
  bool announcedLimit_ = false;
  // Errors shown, by location and text, with how often each was repeated since; and
  // the order they were first shown in (for the notes).
  std::map<std::pair<const char *, std::string>, unsigned> repeats_;
  std::vector<std::pair<const char *, std::string>> shown_;
  std::optional<std::pair<llvm::SMLoc, std::string>> first_;
};

} // namespace raspc
