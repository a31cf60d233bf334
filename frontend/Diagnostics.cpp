#include "frontend/Diagnostics.h"

namespace raspc {

char LocatedError::ID = 0;

void DiagnosticEngine::print(llvm::SMLoc loc, llvm::SourceMgr::DiagKind kind,
                             const llvm::Twine &msg) {
  if (loc.isValid() && sm_.FindBufferContainingLoc(loc) != 0) {
    sm_.PrintMessage(os_, loc, kind, msg);
    return;
  }
  const char *what = kind == llvm::SourceMgr::DK_Error     ? "error"
                     : kind == llvm::SourceMgr::DK_Warning ? "warning"
                                                           : "note";
  os_ << "raspc: " << what << ": " << msg << "\n";
}

void DiagnosticEngine::error(llvm::SMLoc loc, const llvm::Twine &msg) {
  if (tooMany()) {
    if (!announcedLimit_) {
      os_ << "raspc: error: too many errors, stopping\n";
      announcedLimit_ = true;
    }
    ++errors_;
    return;
  }
  ++errors_;
  print(loc, llvm::SourceMgr::DK_Error, msg);
}

void DiagnosticEngine::warning(llvm::SMLoc loc, const llvm::Twine &msg) {
  print(loc, llvm::SourceMgr::DK_Warning, msg);
}

void DiagnosticEngine::note(llvm::SMLoc loc, const llvm::Twine &msg) {
  print(loc, llvm::SourceMgr::DK_Note, msg);
}

void DiagnosticEngine::report(llvm::Error err) {
  llvm::handleAllErrors(
      std::move(err), [&](const LocatedError &e) { error(e.loc(), e.message()); },
      [&](const llvm::ErrorInfoBase &e) { error(llvm::SMLoc(), e.message()); });
}

std::string describeLoc(const llvm::SourceMgr &sm, llvm::SMLoc loc) {
  unsigned buf = loc.isValid() ? sm.FindBufferContainingLoc(loc) : 0;
  if (buf == 0) return "<unknown>";
  auto [line, col] = sm.getLineAndColumn(loc, buf);
  return (sm.getMemoryBuffer(buf)->getBufferIdentifier() + ":" + llvm::Twine(line) + ":" +
          llvm::Twine(col))
      .str();
}

} // namespace raspc
