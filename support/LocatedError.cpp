#include "support/LocatedError.h"

namespace raspc {

char LocatedError::ID = 0;

std::string describeLoc(const llvm::SourceMgr &sm, llvm::SMLoc loc) {
  unsigned buf = loc.isValid() ? sm.FindBufferContainingLoc(loc) : 0;
  if (buf == 0) return "<unknown>";
  auto [line, col] = sm.getLineAndColumn(loc, buf);
  return (sm.getMemoryBuffer(buf)->getBufferIdentifier() + ":" + llvm::Twine(line) + ":" +
          llvm::Twine(col))
      .str();
}

} // namespace raspc
