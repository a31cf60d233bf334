// Files as raspc reads and writes them. Every input goes through readRegularFile (or
// checkRegularFile before a library opens it): a directory, a FIFO, a device or a file
// over the size limit is a clear error at once, never a hang or a huge allocation.
// Every error is an llvm::StringError that starts with the path.
#pragma once
#include <llvm/Support/Error.h>

#include <llvm/ADT/StringRef.h>

#include <cstdint>
#include <string>
#include <vector>

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

// ------------------------------------------------------------------------------------
// Writing. One rule for every file raspc writes (models, images, logits, plots):
//   - an existing file is replaced only with `force`:
//       'PATH' exists; pass --force to overwrite it
//   - never, even with `force`, a directory, a device or another non-regular file, a
//     dangling symbolic link, or a file that is one of the command's `inputs`:
//       PATH: is a directory
//       PATH: is not a regular file (a character device)
//       PATH: is a dangling symbolic link
//       PATH: is an input of this command (INPUT)
//   - a symbolic link to a regular file is written through: the file it names is replaced;
//   - the bytes go to a new, uniquely named temporary file beside the target (created
//     exclusively: no existing file is ever touched), are made durable (fsync), then
//     renamed onto the target. Without `force` the rename refuses to replace a file that
//     appeared meanwhile. Any error (a full disk included) names the reason, removes the
//     temporary file and leaves the old file as it was:
//       PATH: cannot write: No space left on device
//   - killed by SIGTERM, SIGINT or SIGHUP mid-write, the temporary file is removed; the
//     target is untouched (by SIGKILL too, which leaves only the hidden temporary file).
struct OutputRule {
  bool force = false;
  std::vector<std::string> inputs; // files the command reads
};

// Checks `path` against the rule without writing: call it before the work, so that a
// refused output costs nothing.
llvm::Error checkOutput(const std::string &path, const OutputRule &rule);

// An output file in the making: write() appends, commit() publishes it under the target
// name; destroyed uncommitted, it leaves nothing behind.
class AtomicFile {
public:
  static llvm::Expected<AtomicFile> create(const std::string &path, const OutputRule &rule);
  AtomicFile(AtomicFile &&o) noexcept;
  AtomicFile &operator=(AtomicFile &&) = delete;
  AtomicFile(const AtomicFile &) = delete;
  ~AtomicFile();

  llvm::Error write(llvm::StringRef bytes);
  llvm::Error commit();
  // The temporary file's path (for tests).
  const std::string &tempPath() const { return tmp_; }

private:
  AtomicFile() = default;
  void discard();
  std::string path_, target_, tmp_;
  OutputRule rule_;
  int fd_ = -1;
  int slot_ = -1; // in the signal handler's list of files to remove
};

// create + write + commit.
llvm::Error writeFileAtomically(const std::string &path, llvm::StringRef bytes, const OutputRule &rule);

} // namespace raspc::files
