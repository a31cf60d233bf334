#include "ir/Craft.h"

#include <algorithm>

namespace raspc::craft {

int Residual::add(const std::string &label) {
  auto it = index_.find(label);
  if (it != index_.end()) return it->second;
  int id = int(labels_.size());
  labels_.push_back(label);
  index_.emplace(label, id);
  return id;
}

int Residual::find(const std::string &label) const {
  auto it = index_.find(label);
  return it == index_.end() ? -1 : it->second;
}

static std::vector<int> sorted(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::vector<int> Block::reads() const {
  std::vector<int> r;
  for (auto &n : neurons)
    for (auto &[d, w] : n.in) r.push_back(d);
  for (auto &e : qk) {
    r.push_back(e.row);
    r.push_back(e.col);
  }
  for (auto &e : ov) r.push_back(e.row);
  return sorted(r);
}

std::vector<int> Block::writes() const {
  std::vector<int> w;
  for (auto &n : neurons)
    for (auto &[d, x] : n.out) w.push_back(d);
  for (auto &e : ov) w.push_back(e.col);
  return sorted(w);
}

} // namespace raspc::craft
