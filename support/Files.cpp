#include "support/Files.h"

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <mutex>
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

// ------------------------------------------------------------------------------------
// Writing

namespace {

// Temporary files to remove if a signal ends the process mid-write. Fixed storage, so
// that the handler touches nothing but these bytes and unlink(2) (async-signal-safe).
constexpr int kSlots = 16;
struct Slot {
  volatile sig_atomic_t used = 0;
  char path[4096] = {};
};
Slot gSlots[kSlots];
std::mutex gSlotsMutex;

extern "C" void removeTempsAndDie(int sig) {
  for (Slot &s : gSlots)
    if (s.used) ::unlink(s.path);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Installs the handler for the signals that end a process politely, unless the program
// already handles or ignores them (then that choice stands).
void installHandlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue;
      struct sigaction sa {};
      sa.sa_handler = removeTempsAndDie;
      sigemptyset(&sa.sa_mask);
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

int registerTemp(const std::string &path) {
  if (path.size() >= sizeof(Slot::path)) return -1;
  installHandlers();
  std::lock_guard<std::mutex> lock(gSlotsMutex);
  for (int i = 0; i < kSlots; ++i) {
    if (gSlots[i].used) continue;
    std::memcpy(gSlots[i].path, path.c_str(), path.size() + 1);
    std::atomic_signal_fence(std::memory_order_seq_cst); // the path before the flag
    gSlots[i].used = 1;
    return i;
  }
  return -1;
}

void unregisterTemp(int slot) {
  if (slot < 0) return;
  std::lock_guard<std::mutex> lock(gSlotsMutex);
  gSlots[slot].used = 0;
}

llvm::Error existsError(const std::string &path) {
  return llvm::make_error<llvm::StringError>("'" + path + "' exists; pass --force to overwrite it",
                                             llvm::inconvertibleErrorCode());
}

std::string parentOf(const std::string &path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string baseOf(const std::string &path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

mode_t processUmask() {
  // umask(2) can only be read by setting it; do that once.
  static const mode_t mask = [] {
    mode_t m = ::umask(022);
    ::umask(m);
    return m;
  }();
  return mask;
}

// The file the bytes will replace or create (a symbolic link's target), after the
// checks of the rule; `mode` is the mode the new file gets.
llvm::Expected<std::string> resolveTarget(const std::string &path, const OutputRule &rule, mode_t &mode) {
  if (path.empty()) return fail("''", "empty output file name");
  mode = 0666 & ~processUmask();
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err != ENOENT) return fail(path, "cannot write: " + errnoText(err));
    struct stat dir;
    std::string parent = parentOf(path);
    if (::stat(parent.c_str(), &dir) != 0) return fail(path, "cannot write: " + errnoText(errno));
    if (!S_ISDIR(dir.st_mode)) return fail(path, "cannot write: " + errnoText(ENOTDIR));
    return path;
  }
  std::string target = path;
  if (S_ISLNK(st.st_mode)) {
    if (::stat(path.c_str(), &st) != 0) {
      int err = errno;
      if (err == ENOENT) return fail(path, "is a dangling symbolic link");
      return fail(path, "cannot write: " + errnoText(err));
    }
    char *real = ::realpath(path.c_str(), nullptr);
    if (!real) return fail(path, "cannot write: " + errnoText(errno));
    target = real;
    std::free(real);
  }
  if (S_ISDIR(st.st_mode)) return fail(path, "is a directory");
  if (!S_ISREG(st.st_mode)) return fail(path, fmt::format("is not a regular file ({})", kindOf(st.st_mode)));
  for (const std::string &in : rule.inputs) {
    struct stat is;
    if (::stat(in.c_str(), &is) != 0 || is.st_dev != st.st_dev || is.st_ino != st.st_ino) continue;
    return fail(path, in == path ? "is an input of this command"
                                 : "is an input of this command (the same file as '" + in + "')");
  }
  if (!rule.force) return existsError(path);
  mode = st.st_mode & 07777; // a replaced file keeps its permissions
  return target;
}

} // namespace

llvm::Error checkOutput(const std::string &path, const OutputRule &rule) {
  mode_t mode;
  auto t = resolveTarget(path, rule, mode);
  return t ? llvm::Error::success() : t.takeError();
}

llvm::Expected<AtomicFile> AtomicFile::create(const std::string &path, const OutputRule &rule) {
  mode_t mode;
  auto target = resolveTarget(path, rule, mode);
  if (!target) return target.takeError();
  AtomicFile f;
  f.path_ = path;
  f.target_ = *target;
  f.rule_ = rule;
  // Hidden, beside the target (same file system, so the rename is atomic), and unique:
  // mkostemp creates it exclusively, so no other file, nor a concurrent raspc's
  // temporary file, is ever opened.
  std::string tmpl = parentOf(*target) + "/." + baseOf(*target) + ".raspc-XXXXXX";
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) return fail(path, "cannot write: " + errnoText(errno));
  f.fd_ = fd;
  f.tmp_ = tmpl;
  f.slot_ = registerTemp(tmpl);
  if (::fchmod(fd, mode) != 0) {
    int err = errno;
    f.discard();
    return fail(path, "cannot write: " + errnoText(err));
  }
  return f;
}

AtomicFile::AtomicFile(AtomicFile &&o) noexcept
    : path_(std::move(o.path_)), target_(std::move(o.target_)), tmp_(std::move(o.tmp_)), rule_(std::move(o.rule_)),
      fd_(o.fd_), slot_(o.slot_) {
  o.fd_ = -1;
  o.slot_ = -1;
  o.tmp_.clear();
}

AtomicFile::~AtomicFile() { discard(); }

void AtomicFile::discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  tmp_.clear();
  unregisterTemp(slot_);
  slot_ = -1;
}

llvm::Error AtomicFile::write(llvm::StringRef bytes) {
  if (fd_ < 0) return fail(path_, "cannot write: the file is closed");
  const char *p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t w = ::write(fd_, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = w < 0 ? errno : EIO;
      discard();
      return fail(path_, "cannot write: " + errnoText(err));
    }
    p += w;
    left -= size_t(w);
  }
  return llvm::Error::success();
}

llvm::Error AtomicFile::commit() {
  if (fd_ < 0) return fail(path_, "cannot write: the file is closed");
  // Durable before the rename makes it visible; a failed close can also report a lost
  // write (NFS, quotas).
  int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    discard();
    return fail(path_, "cannot write: " + errnoText(err));
  }
  int r;
  if (rule_.force) {
    r = ::rename(tmp_.c_str(), target_.c_str());
  } else {
    // Never replace a file that appeared since the check (another raspc, say).
    r = ::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, target_.c_str(), RENAME_NOREPLACE);
    if (r != 0 && (errno == EINVAL || errno == ENOSYS)) { // a file system without it
      r = ::link(tmp_.c_str(), target_.c_str());
      if (r == 0) ::unlink(tmp_.c_str());
    }
  }
  if (r != 0) {
    int err = errno;
    discard();
    if (err == EEXIST) return existsError(path_);
    return fail(path_, "cannot write: " + errnoText(err));
  }
  tmp_.clear();
  unregisterTemp(slot_);
  slot_ = -1;
  // The rename itself durable too.
  int dir = ::open(parentOf(target_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return llvm::Error::success();
}

llvm::Error writeFileAtomically(const std::string &path, llvm::StringRef bytes, const OutputRule &rule) {
  auto f = AtomicFile::create(path, rule);
  if (!f) return f.takeError();
  if (auto e = f->write(bytes)) return e;
  return f->commit();
}

} // namespace raspc::files
