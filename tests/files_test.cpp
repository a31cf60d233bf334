// support/Files: the one rule every file raspc writes follows, and the reader of inputs.
// Fault injection: write errors (RLIMIT_FSIZE), a full disk (a small tmpfs, as root),
// concurrent writers, SIGTERM mid-write.
#include "support/Files.h"

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using raspc::files::AtomicFile;
using raspc::files::checkOutput;
using raspc::files::OutputRule;
using raspc::files::readRegularFile;
using raspc::files::writeFileAtomically;

namespace {

std::string errorText(llvm::Error e) { return e ? llvm::toString(std::move(e)) : "<success>"; }

std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put(const std::string &path, const std::string &text) { std::ofstream(path, std::ios::binary) << text; }

// A fresh directory private to the running test.
struct TempDir {
  std::string path;
  TempDir() {
    const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = ::testing::TempDir() + "files_" + info->test_suite_name() + "_" + info->name();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string &name) const { return path + "/" + name; }
  std::set<std::string> names() const {
    std::set<std::string> out;
    for (const auto &e : fs::directory_iterator(path)) out.insert(e.path().filename().string());
    return out;
  }
};

OutputRule force() { return OutputRule{true, {}}; }

// Runs `body` in a forked child, which reports through the pipe `fd`; returns once the
// child has closed it (by exiting, or closing it itself), with what it wrote.
struct Child {
  pid_t pid = -1;
  std::string said;
};
Child forkChild(const std::function<void(int fd)> &body) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    body(pipefd[1]);
    ::_exit(0);
  }
  ::close(pipefd[1]);
  Child c{pid, ""};
  char buf[512];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) c.said.append(buf, size_t(n));
  ::close(pipefd[0]);
  return c;
}

TEST(FilesWrite, RefusesAnExistingFileWithoutForce) {
  TempDir d;
  std::string p = d.file("out.bin");
  ASSERT_EQ(errorText(writeFileAtomically(p, "one", {})), "<success>");
  EXPECT_EQ(slurp(p), "one");
  EXPECT_EQ(errorText(writeFileAtomically(p, "two", {})), "'" + p + "' exists; pass --force to overwrite it");
  EXPECT_EQ(errorText(checkOutput(p, {})), "'" + p + "' exists; pass --force to overwrite it");
  EXPECT_EQ(slurp(p), "one");
  ASSERT_EQ(errorText(writeFileAtomically(p, "two", force())), "<success>");
  EXPECT_EQ(slurp(p), "two");
  EXPECT_EQ(d.names(), std::set<std::string>{"out.bin"});
}

TEST(FilesWrite, NewFilesGetTheUmaskModeAndReplacedFilesKeepTheirs) {
  TempDir d;
  std::string p = d.file("m.bin");
  mode_t old = ::umask(027);
  ASSERT_EQ(errorText(writeFileAtomically(p, "x", {})), "<success>");
  ::umask(old);
  struct stat st;
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  // The umask is read once per process; 0666 & ~umask of whichever was first.
  EXPECT_EQ(st.st_mode & 0111, 0u);
  ASSERT_EQ(::chmod(p.c_str(), 0604), 0);
  ASSERT_EQ(errorText(writeFileAtomically(p, "y", force())), "<success>");
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0604u);
}

TEST(FilesWrite, NeverTouchesAFileNamedLikeATemporary) {
  TempDir d;
  std::string p = d.file("model.h5");
  put(p + ".tmp", "the user's own file");
  ASSERT_EQ(errorText(writeFileAtomically(p, "model", {})), "<success>");
  EXPECT_EQ(slurp(p + ".tmp"), "the user's own file");
  EXPECT_EQ(slurp(p), "model");
  EXPECT_EQ(d.names(), (std::set<std::string>{"model.h5", "model.h5.tmp"}));
}

TEST(FilesWrite, RefusesWhatIsNotARegularFileEvenWithForce) {
  TempDir d;
  EXPECT_EQ(errorText(writeFileAtomically("", "x", force())), "'': empty output file name");
  EXPECT_EQ(errorText(writeFileAtomically(d.path, "x", force())), d.path + ": is a directory");
  std::string fifo = d.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(errorText(writeFileAtomically(fifo, "x", force())), fifo + ": is not a regular file (a FIFO)");
  struct stat st;
  ASSERT_EQ(::stat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  if (::stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode)) {
    EXPECT_EQ(errorText(writeFileAtomically("/dev/null", "x", force())),
              "/dev/null: is not a regular file (a character device)");
    ASSERT_EQ(::stat("/dev/null", &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
  }
  std::string dangling = d.file("dangling");
  fs::create_symlink(d.file("nowhere"), dangling);
  EXPECT_EQ(errorText(writeFileAtomically(dangling, "x", force())), dangling + ": is a dangling symbolic link");
  EXPECT_FALSE(fs::exists(d.file("nowhere")));
  std::string missing = d.file("no/such/dir/m.h5");
  EXPECT_EQ(errorText(writeFileAtomically(missing, "x", force())), missing + ": cannot write: No such file or directory");
  EXPECT_EQ(d.names(), (std::set<std::string>{"dangling", "fifo"}));
}

TEST(FilesWrite, NeverWritesAnInput) {
  TempDir d;
  std::string in = d.file("in.rasp");
  put(in, "program");
  OutputRule rule{true, {in}};
  EXPECT_EQ(errorText(writeFileAtomically(in, "x", rule)), in + ": is an input of this command");
  // Under another name: a symbolic link, a hard link.
  std::string sym = d.file("sym"), hard = d.file("hard");
  fs::create_symlink(in, sym);
  fs::create_hard_link(in, hard);
  EXPECT_EQ(errorText(writeFileAtomically(sym, "x", rule)),
            sym + ": is an input of this command (the same file as '" + in + "')");
  EXPECT_EQ(errorText(writeFileAtomically(hard, "x", rule)),
            hard + ": is an input of this command (the same file as '" + in + "')");
  EXPECT_EQ(slurp(in), "program");
}

TEST(FilesWrite, WritesThroughASymbolicLink) {
  TempDir d;
  std::string target = d.file("target.h5"), link = d.file("link.h5");
  put(target, "old");
  fs::create_symlink(target, link);
  ASSERT_EQ(errorText(writeFileAtomically(link, "new", force())), "<success>");
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(slurp(target), "new");
}

// A write error (here: the file size limit, EFBIG) in a child process: the error names
// the reason, the old file is intact, no temporary file remains.
TEST(FilesWrite, AWriteErrorLeavesTheOldFileAndNoTemporary) {
  TempDir d;
  std::string p = d.file("out.h5");
  put(p, "the old contents");
  Child c = forkChild([&](int fd) {
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &rl);
    std::string msg = errorText(writeFileAtomically(p, std::string(1 << 20, 'x'), force()));
    (void)!::write(fd, msg.data(), msg.size());
  });
  ASSERT_GE(c.pid, 0);
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  EXPECT_EQ(c.said, p + ": cannot write: File too large");
  EXPECT_EQ(slurp(p), "the old contents");
  EXPECT_EQ(d.names(), std::set<std::string>{"out.h5"});
}

// A full disk: a 64 KiB tmpfs (needs root; skipped, saying so, otherwise).
TEST(FilesWrite, AFullDiskLeavesTheOldFileAndNoTemporary) {
  TempDir d;
  std::string mnt = d.file("small");
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=64k") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs to fill (needs root): " << std::strerror(errno);
  std::string p = mnt + "/out.h5";
  put(p, "the old contents");
  EXPECT_EQ(errorText(writeFileAtomically(p, std::string(1 << 20, 'x'), force())),
            p + ": cannot write: No space left on device");
  EXPECT_EQ(slurp(p), "the old contents");
  std::set<std::string> names;
  for (const auto &e : fs::directory_iterator(mnt)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, std::set<std::string>{"out.h5"});
  ::umount(mnt.c_str());
}

// Writers racing for one name: each result is one writer's complete file; without
// --force exactly one wins and the others are told the file exists.
TEST(FilesWrite, ConcurrentWritersNeverCorruptTheFile) {
  TempDir d;
  std::string p = d.file("same.h5");
  constexpr int kWriters = 6;
  auto contents = [](int i) { return std::string(size_t(1) << 20, char('a' + i)); };
  for (bool forced : {true, false}) {
    std::remove(p.c_str());
    std::vector<pid_t> pids;
    for (int i = 0; i < kWriters; ++i) {
      pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        llvm::Error e = writeFileAtomically(p, contents(i), OutputRule{forced, {}});
        int rc = e ? 1 : 0;
        llvm::consumeError(std::move(e));
        ::_exit(rc);
      }
      pids.push_back(pid);
    }
    int wins = 0;
    for (pid_t pid : pids) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      wins += WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    EXPECT_EQ(wins, forced ? kWriters : 1);
    std::string got = slurp(p);
    ASSERT_EQ(got.size(), size_t(1) << 20);
    EXPECT_EQ(got, std::string(got.size(), got[0]));
    EXPECT_EQ(d.names(), std::set<std::string>{"same.h5"});
  }
}

// SIGTERM mid-write: the temporary file is removed, the target never appears.
TEST(FilesWrite, SigtermMidWriteLeavesNothing) {
  TempDir d;
  std::string p = d.file("out.h5");
  Child c = forkChild([&](int fd) {
    auto f = AtomicFile::create(p, {});
    if (!f) ::_exit(3);
    if (f->write("partial")) ::_exit(4);
    std::string tmp = f->tempPath();
    (void)!::write(fd, tmp.data(), tmp.size());
    ::close(fd);
    for (;;) ::pause();
  });
  ASSERT_GE(c.pid, 0);
  pid_t pid = c.pid;
  const std::string &tmp = c.said;
  EXPECT_FALSE(tmp.empty()); // not ASSERT: the child must be stopped either way
  EXPECT_TRUE(fs::exists(tmp));
  EXPECT_EQ(tmp.rfind(d.path + "/.out.h5.raspc-", 0), 0u) << tmp;
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_TRUE(d.names().empty());
}

TEST(FilesRead, RefusesWhatIsNotARegularFileAtOnce) {
  TempDir d;
  std::string fifo = d.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // No writer on the FIFO: a blocking open would hang here.
  EXPECT_EQ(errorText(readRegularFile(fifo).takeError()), fifo + ": is not a regular file (a FIFO)");
  EXPECT_EQ(errorText(readRegularFile(d.path).takeError()), d.path + ": is a directory");
  EXPECT_EQ(errorText(readRegularFile(d.file("none")).takeError()),
            d.file("none") + ": cannot open: No such file or directory");
  std::string p = d.file("f");
  put(p, "12345");
  auto r = readRegularFile(p);
  ASSERT_TRUE(bool(r));
  EXPECT_EQ(*r, "12345");
  EXPECT_EQ(errorText(readRegularFile(p, 4).takeError()), p + ": is 5 bytes, more than the 4 raspc reads");
}

} // namespace
