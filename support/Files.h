// Files as raspc reads and writes them. Every input goes through readRegularFile (or
// checkRegularFile before a library opens it): a directory, a FIFO, a device or a file
// over the size limit is a clear error at once, never a hang or a huge allocation.
// Every error is an llvm::StringError that starts with the path.
#pragma once
#include <llvm/Support/Error.h>

#include <cstdint>
#include <string>

namespace raspc::files {

// The most bytes raspc reads from one input file (program, model, images, inputs).
constexpr uint64_t kMaxInputBytes = uint64_t(16) << 30;

// Fails unless `path` names (possibly through symbolic links) a regular file that can
// be opened for reading. Never blocks: a FIFO is refused without being opened for
// reading in blocking mode.
//   PATH: is a directory
//   PATH: is not a regular file (a FIFO)
//   PATH: cannot open: No such file or directory
llvm::Error checkRegularFile(const std::string &path);

// The whole contents of the regular file `path`, at most `maxBytes` of them:
//   PATH: is 5000000 bytes, more than the 1048576 raspc reads
llvm::Expected<std::string> readRegularFile(const std::string &path, uint64_t maxBytes = kMaxInputBytes);

} // namespace raspc::files
