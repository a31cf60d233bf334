// Progress of long commands on stderr: drawn only on a terminal, silent when piped
// (machine output stays clean). One line, redrawn in place.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unistd.h>

namespace raspc::tools {

class Progress {
public:
  Progress(uint64_t total, bool enabled) : total_(total), enabled_(enabled && isatty(2)) {}

  // A bar: "[#########                     ]  30% 300/1000", redrawn when the percentage changes.
  void update(uint64_t done) {
    if (!enabled_) return;
    int pct = int(100 * done / std::max<uint64_t>(1, total_));
    if (pct == last_ && done != total_) return;
    last_ = pct;
    int bar = pct * 30 / 100;
    fprintf(stderr, "\r[%s%s] %3d%% %llu/%llu", std::string(size_t(bar), '#').c_str(),
            std::string(size_t(30 - bar), ' ').c_str(), pct, (unsigned long long)done, (unsigned long long)total_);
    if (done == total_) fprintf(stderr, "\n");
  }

  // A counter with the item just finished: "[37/150] classic_sort".
  void step(uint64_t done, const std::string &label) {
    if (!enabled_) return;
    line_ = "[" + std::to_string(done) + "/" + std::to_string(total_) + "] " + label;
    fprintf(stderr, "\r\033[K%s", line_.c_str());
    if (done == total_) {
      fprintf(stderr, "\n");
      line_.clear();
    }
    fflush(stderr);
  }

  // A line of its own (an error, a note) that the progress line does not overwrite:
  // printed whether or not progress is shown.
  void message(const std::string &text) {
    if (enabled_ && !line_.empty()) fprintf(stderr, "\r\033[K");
    fprintf(stderr, "%s\n", text.c_str());
    if (enabled_ && !line_.empty()) fprintf(stderr, "%s", line_.c_str());
    fflush(stderr);
  }

private:
  uint64_t total_;
  bool enabled_;
  int last_ = -1;
  std::string line_;
};

} // namespace raspc::tools
