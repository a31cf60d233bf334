// raspc._core.Graph: builds an ir::Graph node by node from Python (the low-level
// interface under raspc.tracr), with maps given as Python callables (MapOp::Func).
#pragma once
#include "Convert.h"

#include "ir/Graph.h"

#include <llvm/Support/SourceMgr.h>

#include <string>

namespace raspc::py {

struct PyGraph {
  llvm::SourceMgr sm;
  ir::Graph g;
  size_t located = 0; // nodes [0, located) have a line in a "<graph>" buffer
  std::string listing; // those lines, for the model's metadata/source
  // The Python callables of its Func nodes, by index. Held here, not in the nodes, so
  // that the garbage collector sees them (tp_traverse): a lambda whose globals hold
  // the graph is a cycle through C++ otherwise never freed.
  std::vector<nb::object> callables;

  ir::NodeId add(ir::Node n);
  ir::NodeId node(int64_t id, const char *what) const;
  ir::NodeId sop(int64_t id, const char *what) const;      // an s-op, else an error
  ir::NodeId selector(int64_t id, const char *what) const; // a selector, else an error
  // Gives every node without a location a line of its own in a new "<graph>" buffer
  // ("frac = aggregate(n3, n5)"), so that compile and interpreter errors at a node
  // say which node, with file:line:col as for a RASP file.
  void locate();
  std::string text() const { return listing; }
  // Raises an llvm::Error as raspc.RaspcError, located at its node's line.
  [[noreturn]] void fail(llvm::Error e);
};

void bindGraph(nb::module_ &m);

} // namespace raspc::py
