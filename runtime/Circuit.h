// Circuits of compiled models in TransformerLens's vocabulary, and the intervention
// checks that prove them: what docs/runtime.md ("Circuits and interventions") describes.
//
//   Circuit c = circuitOf(model);                 // components, nodes, cones, edges
//   std::string j = circuitJson(c);               // circuit.json
//   auto r = checkCircuit(graph, output, interpreterOptions, model, c, {});
//   std::string k = circuitReportJson(*r);        // checks.json's "interventions"
//
// From a suite builder holding a Program `p`, its ProgramOptions `opts`, the output node
// `out` (Program::resolveOutput) and the compiled Model `m`, as `raspc verify --circuit`:
//
//   Circuit c = circuitOf(m);
//   auto r = checkCircuit(p.graph(), out, p.interpreterOptions(opts), m, c, CircuitCheckOptions{});
//   if (!r) ...;  // the model cannot run (its weights are invalid): llvm::Error
//   bool ok = r->passed;
//
// Components are the heads and MLP layers with a nonzero output weight; the embedding
// (`blocks.0.hook_resid_pre`) is a parent only and the final residual
// (`blocks.{n_layers-1}.hook_resid_post`, what the unembedding reads) a child only.
// Edges follow the weights: parent P -> child C when P writes a residual direction C
// reads and P comes before C.
#pragma once
#include "backend/Model.h"
#include "ir/Graph.h"
#include "semantics/Interpreter.h"

#include <Eigen/Dense>
#include <llvm/Support/Error.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace raspc {

// A TransformerLens hook point and an index into it (ACDC's TorchIndex): `hook` such as
// "blocks.0.attn.hook_result"; `head` >= 0 for [null, null, head] (hook_pattern:
// [null, head]); an MLP neuron slice [null, null, [begin, end)] of "blocks.L.mlp.hook_post";
// neither for the whole tensor (null).
struct ComponentRef {
  std::string hook;
  int head = -1;
  int begin = -1, end = -1;
  bool operator==(const ComponentRef &o) const {
    return hook == o.hook && head == o.head && begin == o.begin && end == o.end;
  }
};
// The JSON of the index: null, [null, null, 3], [null, 3], [null, null, [0, 11]].
std::string indexJson(const ComponentRef &r);

// Where something lives in the forward pass: the embedding, a head, an MLP (all its
// neurons, or [begin, end)), the final residual.
struct Site {
  enum Kind { Embed, Head, Mlp, Output } kind = Embed;
  int layer = -1, head = -1;
  int begin = -1, end = -1; // Mlp: a neuron range; -1: the whole layer
  // Order in the forward pass: embedding < layer L attn < layer L mlp < layer L+1 < output.
  int order() const { return kind == Embed ? -1 : kind == Output ? 1 << 30 : 2 * layer + (kind == Mlp); }
};

struct CircuitEdge {
  Site parent, child;
  // qkv granularity: 'q', 'k' or 'v' for a head child; 0 at head granularity or for an
  // MLP / output child (all of the head's inputs at head granularity).
  char input = 0;
  ComponentRef parentRef, childRef;
};

struct CircuitComponent {
  Site site; // Head or Mlp (whole layer)
  ComponentRef ref;
  std::vector<int> nodeIds; // the nodes whose own heads/neurons or helpers it holds
};

struct CircuitNode {
  int id = 0;
  std::string name, kind;
  // Own heads and MLP neurons plus the helpers that write the node's directions (BOS
  // cleanup); for a selector, the heads whose patterns it sets (hook_pattern) and the
  // MLP that builds its tuple.
  std::vector<Site> sites;
  std::vector<ComponentRef> components;
  // What the node's value depends on, its own components included: the embedding, heads
  // and MLP neuron ranges of every node it is computed from, transitively.
  std::vector<Site> coneSites;
  std::vector<ComponentRef> cone;
  // Heads whose attention pattern is this selector's matrix (aggregates and selector
  // widths that take it as their selector); empty unless a selector.
  std::vector<Site> patternHeads;
  std::vector<int> patternReaders; // their nodes (InterpreterOptions::attendOverrides)
  // Why no intervention applies ("" when one does).
  std::string skipReason;
  // Where its value can be read: after this layer's sublayer (-1: the embedding).
  int readLayer = -1;
  bool readAfterMlp = false;
};

struct Circuit {
  int nLayers = 0;
  std::vector<CircuitComponent> components;
  std::vector<CircuitNode> nodes; // in ground-truth (graph) order
  std::vector<CircuitEdge> headEdges, qkvEdges;
};

// The circuit of a compiled model, from its ground truth and its weights. Directions are
// residual labels, read through the model's residual basis when it has one, so a rotated
// variant has the original's circuit. Check a compressed variant (B B^T is not the
// identity) with the original's: checkCircuit(g, out, io, compressed, circuitOf(original)).
Circuit circuitOf(const Model &m);
// circuit.json ("raspc-circuit-1").
std::string circuitJson(const Circuit &c);

// ---- The component forward pass -------------------------------------------------

// What to change in one forward pass. Matrices are [len + 1, d_model] (rows: BOS then
// tokens) for the embedding's and heads' outputs and for input deltas; for an MLP site,
// its post-ReLU neurons [len + 1, d_mlp] (only the columns of the site's range, or all
// for a whole layer, are used: hook_post, and so hook_mlp_out); [len + 1, len + 1] for
// patterns (post-softmax, hook_pattern). Several changes combine.
struct Patch {
  struct Replace {
    Site site; // Embed, Head, Mlp (a neuron range or the whole layer): its output
    Eigen::MatrixXd value;
  };
  struct Pattern {
    int layer, head;
    Eigen::MatrixXd value;
  };
  struct Delta {
    Site child; // Head (input 'q' / 'k' / 'v', or 0 for all three), Mlp (whole layer), Output
    char input = 0;
    Eigen::MatrixXd value; // added to what the child reads
  };
  std::vector<Replace> replace;
  std::vector<Pattern> patterns;
  std::vector<Delta> deltas;
  bool empty() const { return replace.empty() && patterns.empty() && deltas.empty(); }
};

// Every intermediate of one forward pass (double precision).
struct ForwardResult {
  Eigen::MatrixXd embed;                           // W_E[ids] + W_pos
  std::vector<std::vector<Eigen::MatrixXd>> heads; // [layer][head]: z_h W_O[h] (hook_result)
  std::vector<std::vector<Eigen::MatrixXd>> patterns; // [layer][head]: [query, key]
  std::vector<Eigen::MatrixXd> neurons;            // [layer]: post-ReLU (hook_post)
  std::vector<Eigen::MatrixXd> mlp;                // [layer]: neurons W_out + b_out (hook_mlp_out)
  std::vector<Eigen::MatrixXd> residAttn, residMlp; // [layer]: residual after each sublayer
  Eigen::MatrixXd logits;
  std::vector<Scalar> output; // decoded, positions 1..len
  // The output of a parent: the embedding, a head's hook_result, an MLP layer's
  // hook_mlp_out (a neuron range counts as its whole layer). Edge deltas are
  // differences of these.
  Eigen::MatrixXd outputOf(const Site &s) const;
};

// The forward pass of a Model in double precision, component by component, as
// runtime/Executor.h describes it (one sequence, no padding), with patching.
class ComponentForward {
public:
  // Validates the model (validateModel); `m` must outlive the ComponentForward.
  static llvm::Expected<ComponentForward> create(const Model &m);
  // `ids`: BOS first (Executor::encode).
  ForwardResult run(const std::vector<int> &ids, const Patch *patch = nullptr) const;
  const Model &model() const { return *m_; }
  // The value of one node from a residual (rows: BOS then tokens), as decodeNodes does.
  std::vector<Scalar> decodeNode(const NodeInfo &n, const Eigen::MatrixXd &residual) const;

private:
  const Model *m_ = nullptr;
  struct Layer {
    std::vector<Eigen::MatrixXd> WQ, WK, WV, WO; // per head
    std::vector<Eigen::RowVectorXd> bQ, bK, bV;
    Eigen::RowVectorXd bO;
    Eigen::MatrixXd Win, Wout;
    Eigen::RowVectorXd bin, bout;
  };
  Eigen::MatrixXd WE_, Wpos_, WU_;
  Eigen::RowVectorXd bU_;
  std::vector<Layer> layers_;
};

// ---- The checks --------------------------------------------------------------------

struct CircuitCheckOptions {
  int pairs = 32;      // input pairs per node (and per component and edge)
  uint64_t seed = 1;
  int examples = 3;    // example pairs recorded per node
  // Called after each unit of work (done, total) for a progress bar; may be empty.
  std::function<void(uint64_t, uint64_t)> progress;
};

struct PairExample {
  std::vector<std::string> a, b;
  std::vector<Scalar> output; // the decoded patched output
};

struct NodeCheck {
  int id = 0;
  std::string name;
  std::string check; // "interchange" | "pattern" | "skipped"
  std::string reason; // skipped: why
  int pairs = 0, agree = 0, skippedPairs = 0;
  int differs = 0; // pairs on which the node's value on b differs from its value on a
  int conePairs = 0, coneUnchanged = 0;
  std::string coneReason; // why no cone ablation applies ("" when it does)
  std::vector<PairExample> examples;
  // The first disagreement: the pair, the model's and the interpreter's outputs.
  std::optional<PairExample> failure;
  std::vector<Scalar> failureWant;
  std::optional<PairExample> coneFailure;
  std::vector<Scalar> coneWant, coneGot;
  bool passed() const { return check == "skipped" || (agree == pairs && coneUnchanged == conePairs); }
};

struct EdgeCheck {
  int total = 0, necessary = 0;
  std::vector<CircuitEdge> unnecessary;
  std::vector<std::pair<CircuitEdge, PairExample>> witness;
};

struct CircuitReport {
  int pairsPerNode = 0;
  uint64_t seed = 0;
  bool passed = true; // every node's interchange and cone checks
  int skippedPairs = 0; // pairs the interpreter rejects on a or b
  std::vector<NodeCheck> nodes;
  int componentsTotal = 0, componentsNecessary = 0;
  std::vector<std::pair<CircuitComponent, PairExample>> componentWitness;
  std::vector<CircuitComponent> componentsUnnecessary;
  EdgeCheck heads, qkv;
  double seconds = 0;
};

// Runs every check on random pairs of equal-length inputs over the model's vocabulary
// (lengths 1..max length, seeded): node interchange (pattern interchange for selectors
// that set heads' patterns), cone ablation, component and edge necessity at both
// granularities. `output` is the program's output node, `io` the interpreter options
// the model was checked with (Program::interpreterOptions). A pair the interpreter
// rejects (an error on a, on b, or on a under the intervention) is skipped and counted.
// Errors: the model cannot run (invalid weights).
llvm::Expected<CircuitReport> checkCircuit(const ir::Graph &g, ir::NodeId output, const InterpreterOptions &io,
                                           const Model &m, const Circuit &c, const CircuitCheckOptions &opts = {});

// checks.json's "interventions" object.
std::string circuitReportJson(const CircuitReport &r);

} // namespace raspc
