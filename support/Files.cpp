#include "support/Files.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace raspc::files {

namespace {

llvm::Error fail(const std::string &path, const std::string &msg) {
  return llvm::make_error<llvm::StringError>(path + ": " + msg, llvm::inconvertibleErrorCode());
}

std::string errnoText(int err) { return std::strerror(err); }

const char *kindOf(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

// Opens `path` for reading without blocking (O_NONBLOCK: a FIFO with no writer would
// block a plain open), and checks that it is a regular file.
llvm::Expected<int> openRegular(const std::string &path, struct stat &st) {
  if (path.empty()) return fail("''", "empty file name");
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == EISDIR) return fail(path, "is a directory");
    return fail(path, "cannot open: " + errnoText(err));
  }
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return fail(path, "cannot read: " + errnoText(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    if (S_ISDIR(st.st_mode)) return fail(path, "is a directory");
    return fail(path, fmt::format("is not a regular file ({})", kindOf(st.st_mode)));
  }
  return fd;
}

} // namespace

llvm::Error checkRegularFile(const std::string &path) {
  struct stat st;
  auto fd = openRegular(path, st);
  if (!fd) return fd.takeError();
  ::close(*fd);
  return llvm::Error::success();
}

llvm::Expected<std::string> readRegularFile(const std::string &path, uint64_t maxBytes) {
  struct stat st;
  auto fd = openRegular(path, st);
  if (!fd) return fd.takeError();
  uint64_t size = uint64_t(st.st_size);
  if (size > maxBytes) {
    ::close(*fd);
    return fail(path, fmt::format("is {} bytes, more than the {} raspc reads", size, maxBytes));
  }
  std::string out(size_t(size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t r = ::read(*fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      ::close(*fd);
      return fail(path, "cannot read: " + errnoText(err));
    }
    if (r == 0) break; // shrank while we read: keep what is there
    got += size_t(r);
  }
  out.resize(got);
  ::close(*fd);
  return out;
}

} // namespace raspc::files
