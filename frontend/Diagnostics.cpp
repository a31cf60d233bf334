#include "frontend/Diagnostics.h"

#include <algorithm>

namespace raspc {

void DiagnosticEngine::print(llvm::SMLoc loc, llvm::SourceMgr::DiagKind kind,
                             const llvm::Twine &msg) {
  const char *what = kind == llvm::SourceMgr::DK_Error     ? "error"
                     : kind == llvm::SourceMgr::DK_Warning ? "warning"
                                                           : "note";
  unsigned buf = loc.isValid() ? sm_.FindBufferContainingLoc(loc) : 0;
  if (buf == 0) {
    os_ << "raspc: " << what << ": " << msg << "\n";
    return;
  }
  // SourceMgr prints the whole source line; a huge line (a 1 MB one-liner) would
  // flood the terminal, so show a window around the caret instead.
  llvm::StringRef text = sm_.getMemoryBuffer(buf)->getBuffer();
  size_t off = loc.getPointer() - text.data();
  size_t lineStart = text.rfind('\n', off == 0 ? 0 : off - 1);
  lineStart = (lineStart == llvm::StringRef::npos || off == 0) ? 0 : lineStart + 1;
  size_t lineEnd = text.find('\n', off);
  if (lineEnd == llvm::StringRef::npos) lineEnd = text.size();
  constexpr size_t kWindow = 70;
  if (lineEnd - lineStart <= 2 * kWindow) {
    sm_.PrintMessage(os_, loc, kind, msg);
    return;
  }
  size_t from = off > lineStart + kWindow ? off - kWindow : lineStart;
  size_t to = std::min(lineEnd, off + kWindow);
  os_ << describeLoc(sm_, loc) << ": " << what << ": " << msg << "\n";
  std::string prefix = from > lineStart ? "..." : "";
  std::string window = text.slice(from, to).str();
  for (char &c : window)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = ' ';
  os_ << prefix << window << (to < lineEnd ? "..." : "") << "\n";
  os_ << std::string(prefix.size() + (off - from), ' ') << "^\n";
}

void DiagnosticEngine::error(llvm::SMLoc loc, const llvm::Twine &msg) {
  if (!first_) first_.emplace(loc, msg.str());
  auto key = std::make_pair(loc.getPointer(), msg.str());
  if (auto it = repeats_.find(key); it != repeats_.end()) {
    ++it->second;
    return;
  }
  if (tooMany()) {
    if (!announcedLimit_) {
      os_ << "raspc: error: too many errors, stopping\n";
      announcedLimit_ = true;
    }
    ++errors_;
    return;
  }
  ++errors_;
  repeats_.emplace(key, 0);
  shown_.push_back(key);
  print(loc, llvm::SourceMgr::DK_Error, msg);
  if (tooMany()) {
    os_ << "raspc: error: too many errors, stopping\n";
    announcedLimit_ = true;
  }
}

void DiagnosticEngine::flushRepeats() {
  for (const auto &key : shown_) {
    unsigned n = repeats_[key];
    if (n == 0) continue;
    llvm::SMLoc loc = llvm::SMLoc::getFromPointer(key.first);
    std::string count = n == 1 ? "once more" : std::to_string(n) + " more times";
    unsigned buf = loc.isValid() ? sm_.FindBufferContainingLoc(loc) : 0;
    if (buf == 0)
      os_ << "raspc: note: the error '" << key.second << "' occurred " << count << "\n";
    else
      os_ << describeLoc(sm_, loc) << ": note: this error occurred " << count << "\n";
  }
  repeats_.clear();
  shown_.clear();
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

} // namespace raspc
