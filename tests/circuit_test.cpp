// Circuits (runtime/Circuit.h): the component forward pass against the executor, the
// edge lists against what the weights say, interchange interventions checked by hand,
// every example's nodes passing their intervention checks, and `raspc verify --circuit`.
#include "TestCompile.h"
#include "TestUtil.h"
#include "backend/Json.h"
#include "backend/Variants.h"
#include "passes/Compiler.h"
#include "runtime/Circuit.h"
#include "runtime/Executor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <fstream>
#include <memory>
#include <random>
#include <optional>
#include <set>

using namespace raspc;
using namespace raspc::test;

namespace {

using test::Built;

std::unique_ptr<Built> build(const std::string &path) { return test::buildFile(path); }

std::unique_ptr<Built> buildSource(const std::string &name, const std::string &source) {
  std::string path = testing::TempDir() + name;
  {
    std::ofstream f(path);
    f << source;
  }
  return build(path);
}

std::vector<std::string> examples() {
  std::vector<std::string> out;
  for (auto &e : std::filesystem::directory_iterator(std::string(RASPC_SOURCE_DIR) + "/examples"))
    if (e.path().extension() == ".rasp") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string edgeText(const CircuitEdge &e) {
  return e.parentRef.hook + indexJson(e.parentRef) + " -> " + e.childRef.hook + indexJson(e.childRef);
}

const CircuitNode *nodeNamed(const Circuit &c, const std::string &name) {
  for (auto &n : c.nodes)
    if (n.name == name) return &n;
  return nullptr;
}

} // namespace

// With nothing patched the component forward pass decodes what the executor decodes,
// on every example and on many inputs of each.
TEST(ComponentForward, MatchesExecutorOnExamples) {
  for (const std::string &path : examples()) {
    SCOPED_TRACE(path);
    auto b = build(path);
    ASSERT_TRUE(b->model) << b->diags;
    auto fwd = ComponentForward::create(*b->model);
    ASSERT_TRUE(bool(fwd)) << llvm::toString(fwd.takeError());
    auto exec = Executor::create(*b->model);
    ASSERT_TRUE(bool(exec));
    std::vector<std::string> vocab = *b->opts.vocab;
    auto inputs = allInputs(vocab, *b->opts.maxLen, 400);
    auto outs = exec->run(inputs);
    ASSERT_TRUE(bool(outs)) << llvm::toString(outs.takeError());
    for (size_t i = 0; i < inputs.size(); ++i) {
      auto ids = exec->encode(inputs[i]);
      ASSERT_TRUE(bool(ids));
      ForwardResult r = fwd->run(*ids);
      ASSERT_EQ(formatSequence(r.output, true), formatSequence((*outs)[i], true)) << "input " << i;
    }
  }
}

// sort.rasp's components and its edges at head granularity, written out from its
// ground truth (raspc inspect): layer 0 heads 0 and 1 compute smaller's and ties's
// 1/(w+1) from tokens and indices (and BOS), layer 0's MLP turns both into widths,
// layer 1's MLP adds them into place, layer 2 head 0 aggregates tokens where place ==
// indices, and layer 2's MLP (BOS cleanup) writes out's first direction. Edges follow the
// weights, not the ground truth's `reads`: the cleanup neuron's only nonzero row of W_in
// is the BOS token (it fires at BOS alone), so it hangs off the embedding, not off head 0.
TEST(Circuit, SortHeadEdges) {
  auto b = build(std::string(RASPC_SOURCE_DIR) + "/examples/sort.rasp");
  ASSERT_TRUE(b->model) << b->diags;
  Circuit c = circuitOf(*b->model);
  EXPECT_EQ(c.nLayers, 3);
  std::vector<std::string> comps;
  for (auto &x : c.components) comps.push_back(x.ref.hook + indexJson(x.ref));
  EXPECT_EQ(comps, (std::vector<std::string>{"blocks.0.attn.hook_result[null, null, 0]",
                                             "blocks.0.attn.hook_result[null, null, 1]", "blocks.0.hook_mlp_outnull",
                                             "blocks.1.hook_mlp_outnull", "blocks.2.attn.hook_result[null, null, 0]",
                                             "blocks.2.hook_mlp_outnull"}));
  std::vector<std::string> edges;
  for (auto &e : c.headEdges) edges.push_back(edgeText(e));
  const std::string H00 = "blocks.0.attn.hook_result[null, null, 0]",
                    H01 = "blocks.0.attn.hook_result[null, null, 1]", M0 = "blocks.0.hook_mlp_outnull",
                    M1 = "blocks.1.hook_mlp_outnull", H20 = "blocks.2.attn.hook_result[null, null, 0]",
                    M2 = "blocks.2.hook_mlp_outnull", OUT = "blocks.2.hook_resid_postnull";
  std::set<std::string> got(edges.begin(), edges.end());
  std::set<std::string> want = {
      "blocks.0.hook_resid_prenull -> " + H00, "blocks.0.hook_resid_prenull -> " + H01,
      "blocks.0.hook_resid_prenull -> " + M0,  "blocks.0.hook_resid_prenull -> " + M1,
      "blocks.0.hook_resid_prenull -> " + H20, "blocks.0.hook_resid_prenull -> " + M2,
      H00 + " -> " + M0, H01 + " -> " + M0, M0 + " -> " + M1, M1 + " -> " + H20,
      H20 + " -> " + OUT, M2 + " -> " + OUT};
  EXPECT_EQ(got, want);
  EXPECT_EQ(edges.size(), got.size()); // no duplicates
}

// The interpreter's overrides: an s-op's values and a selector's matrix replace what
// it would compute, and everything downstream is recomputed from them.
TEST(Interpreter, Overrides) {
  Loaded l("prev = select(indices, indices - 1, ==);\n"
           "shifted = aggregate(prev, tokens);\n"
           "out = shifted + 1;\n"
           "w = selector_width(select(indices, indices, <=) and prev);\n");
  ASSERT_TRUE(l.ok) << l.errors();
  ir::NodeId prev = l.program.evaluator().lookup("prev")->node(),
             shifted = l.program.evaluator().lookup("shifted")->node(),
             out = l.program.evaluator().lookup("out")->node();
  std::vector<std::string> in = {"1", "2", "3"};
  {
    InterpreterOptions o;
    o.sopOverrides[shifted] = {int64_t(7), int64_t(8), int64_t(9)};
    Interpreter interp(l.program.graph(), o);
    ASSERT_FALSE(bool(interp.run(in, {out})));
    EXPECT_EQ(formatSequence(interp.sop(out), true), "[8, 9, 10]");
  }
  {
    // Every query selects key 2: shifted is [3, 3, 3].
    InterpreterOptions o;
    o.selectorOverrides[prev] = SelectorValue{3, {0, 0, 1, 0, 0, 1, 0, 0, 1}};
    Interpreter interp(l.program.graph(), o);
    ASSERT_FALSE(bool(interp.run(in, {out})));
    EXPECT_EQ(formatSequence(interp.sop(out), true), "[4, 4, 4]");
    EXPECT_EQ(formatSelectorRows(interp.selector(prev), true, ""), formatSelectorRows(o.selectorOverrides[prev], true, ""));
    // Inside a composite: (k <= q) and (k == 2) holds at query 2 alone; without the
    // override prev (k == q - 1) gives [0, 1, 1].
    ir::NodeId w = l.program.evaluator().lookup("w")->node();
    ASSERT_FALSE(bool(interp.run(in, {w})));
    EXPECT_EQ(formatSequence(interp.sop(w), true), "[0, 0, 1]");
    Interpreter clean(l.program.graph());
    ASSERT_FALSE(bool(clean.run(in, {w})));
    EXPECT_EQ(formatSequence(clean.sop(w), true), "[0, 1, 1]");
  }
  {
    // A size that does not match the input is an error naming the node.
    InterpreterOptions o;
    o.sopOverrides[shifted] = {int64_t(7)};
    Interpreter interp(l.program.graph(), o);
    auto err = interp.run(in, {out});
    ASSERT_TRUE(bool(err));
    EXPECT_EQ(llvm::toString(std::move(err)),
              "override of node " + std::to_string(shifted) + ": 1 values for an input of length 3");
  }
}

// An interchange on sort.rasp worked out by hand: a = 3 1 2, b = 2 3 1. smaller taken
// from b is [1, 2, 0] (b's tokens have 1, 2 and 0 smaller ones); ties on a are [0, 0,
// 0]; so place is [1, 2, 0] and out puts a's token at position k into place[k]:
// out = [2, 3, 1] (position 0 gets a[2] = 2, position 1 gets a[0] = 3, position 2 gets
// a[1] = 1). The model with smaller's head and neurons patched from b says the same.
TEST(Circuit, SortInterchangeByHand) {
  auto b = build(std::string(RASPC_SOURCE_DIR) + "/examples/sort.rasp");
  ASSERT_TRUE(b->model) << b->diags;
  Circuit c = circuitOf(*b->model);
  const CircuitNode *smaller = nodeNamed(c, "smaller");
  ASSERT_TRUE(smaller);
  // Its head (layer 0 head 0) and its neurons (layer 0, 0-10).
  ASSERT_EQ(smaller->components.size(), 2u);
  EXPECT_EQ(smaller->components[0].hook + indexJson(smaller->components[0]), "blocks.0.attn.hook_result[null, null, 0]");
  EXPECT_EQ(smaller->components[1].hook + indexJson(smaller->components[1]), "blocks.0.mlp.hook_post[null, null, [0, 11]]");
  auto fwd = ComponentForward::create(*b->model);
  auto exec = Executor::create(*b->model);
  ASSERT_TRUE(fwd && exec);
  std::vector<std::string> a = {"3", "1", "2"}, bb = {"2", "3", "1"};
  auto ia = exec->encode(a), ib = exec->encode(bb);
  ASSERT_TRUE(ia && ib);
  ForwardResult rb = fwd->run(*ib);
  EXPECT_EQ(formatSequence(fwd->run(*ia).output, true), "[1, 2, 3]");
  Patch p;
  for (const Site &s : smaller->sites)
    p.replace.push_back({s, s.kind == Site::Head ? rb.heads[0][size_t(s.head)] : rb.neurons[0]});
  EXPECT_EQ(formatSequence(fwd->run(*ia, &p).output, true), "[2, 3, 1]");
  InterpreterOptions o = b->program.interpreterOptions(b->opts);
  o.sopOverrides[ir::NodeId(smaller->id)] = {int64_t(1), int64_t(2), int64_t(0)};
  Interpreter interp(b->program.graph(), o);
  ASSERT_FALSE(bool(interp.run(a, {b->output})));
  EXPECT_EQ(formatSequence(interp.sop(b->output), true), "[2, 3, 1]");
  // The pattern of sort's last head, patched from b: place on a is [2, 0, 1] (sorted
  // positions of 3, 1, 2); b's place [1, 2, 0] selects for query i the key k with
  // place_b[k] == i, so out = [a[2], a[0], a[1]] = [2, 3, 1] again.
  Patch q;
  q.patterns.push_back({2, 0, rb.patterns[2][0]});
  EXPECT_EQ(formatSequence(fwd->run(*ia, &q).output, true), "[2, 3, 1]");
}

// The product claim: on every example, every node passes its interchange and cone
// checks, every component is necessary, and the JSON says so.
TEST(Circuit, EveryExamplePasses) {
  for (const std::string &path : examples()) {
    SCOPED_TRACE(path);
    auto b = build(path);
    ASSERT_TRUE(b->model) << b->diags;
    Circuit c = circuitOf(*b->model);
    CircuitCheckOptions o;
    o.pairs = 16;
    auto r = checkCircuit(b->program.graph(), b->output, b->program.interpreterOptions(b->opts), *b->model, c, o);
    ASSERT_TRUE(bool(r)) << llvm::toString(r.takeError());
    std::string json = circuitReportJson(*r);
    EXPECT_TRUE(r->passed) << json;
    int checked = 0;
    for (const NodeCheck &n : r->nodes) {
      if (n.check == "skipped") {
        EXPECT_FALSE(n.reason.empty());
        continue;
      }
      ++checked;
      EXPECT_GT(n.pairs, 0) << n.name;
      EXPECT_EQ(n.agree, n.pairs) << n.name;
      EXPECT_EQ(n.coneUnchanged, n.conePairs) << n.name;
    }
    EXPECT_GT(checked, 0);
    EXPECT_EQ(r->componentsTotal, int(c.components.size()));
    EXPECT_EQ(r->heads.total, int(c.headEdges.size()));
    EXPECT_EQ(r->qkv.total, int(c.qkvEdges.size()));
    EXPECT_EQ(r->heads.necessary + int(r->heads.unnecessary.size()), r->heads.total);
    EXPECT_EQ(int(r->heads.witness.size()), r->heads.necessary);
  }
}

// Edges the weights imply but no input pair needs are reported as unnecessary, with the
// reasons checkable by hand on sort.rasp: layers 0 and 1's MLPs and the BOS cleanup read
// from the embedding only the constant directions ("one", the BOS token), equal on a and
// b; the BOS cleanup writes only BOS's row, which nothing after it reads; layer 2 head 0's
// queries read only indices, equal on two inputs of one length; the selector widths'
// values read only BOS. Every other edge has a witness pair whose output differs.
TEST(Circuit, SortUnnecessaryEdges) {
  auto b = build(std::string(RASPC_SOURCE_DIR) + "/examples/sort.rasp");
  ASSERT_TRUE(b->model) << b->diags;
  Circuit c = circuitOf(*b->model);
  auto r = checkCircuit(b->program.graph(), b->output, b->program.interpreterOptions(b->opts), *b->model, c, {});
  ASSERT_TRUE(bool(r)) << llvm::toString(r.takeError());
  std::vector<std::string> heads, qkv;
  for (auto &e : r->heads.unnecessary) heads.push_back(edgeText(e));
  for (auto &e : r->qkv.unnecessary) qkv.push_back(edgeText(e));
  EXPECT_EQ(heads, (std::vector<std::string>{"blocks.0.hook_resid_prenull -> blocks.0.hook_mlp_outnull",
                                             "blocks.0.hook_resid_prenull -> blocks.1.hook_mlp_outnull",
                                             "blocks.0.hook_resid_prenull -> blocks.2.hook_mlp_outnull",
                                             "blocks.2.hook_mlp_outnull -> blocks.2.hook_resid_postnull"}));
  EXPECT_EQ(qkv, (std::vector<std::string>{
                     "blocks.0.hook_resid_prenull -> blocks.0.hook_v_input[null, null, 0]",
                     "blocks.0.hook_resid_prenull -> blocks.0.hook_v_input[null, null, 1]",
                     "blocks.0.hook_resid_prenull -> blocks.0.hook_mlp_innull",
                     "blocks.0.hook_resid_prenull -> blocks.1.hook_mlp_innull",
                     "blocks.0.hook_resid_prenull -> blocks.2.hook_q_input[null, null, 0]",
                     "blocks.0.hook_resid_prenull -> blocks.2.hook_k_input[null, null, 0]",
                     "blocks.0.hook_resid_prenull -> blocks.2.hook_mlp_innull",
                     "blocks.2.hook_mlp_outnull -> blocks.2.hook_resid_postnull"}));
  EXPECT_EQ(r->heads.necessary, 8);
  EXPECT_EQ(r->qkv.necessary, 10);
  // The BOS cleanup is the one unnecessary component.
  ASSERT_EQ(r->componentsUnnecessary.size(), 1u);
  EXPECT_EQ(r->componentsUnnecessary[0].ref.hook, "blocks.2.hook_mlp_out");
  // A witness's output really differs from the clean one: rerun it.
  auto fwd = ComponentForward::create(*b->model);
  auto exec = Executor::create(*b->model);
  ASSERT_TRUE(fwd && exec);
  for (auto &[e, w] : r->heads.witness) {
    ForwardResult fa = fwd->run(*exec->encode(w.a)), fb = fwd->run(*exec->encode(w.b));
    Patch p;
    p.deltas.push_back({e.child, e.input, fb.outputOf(e.parent) - fa.outputOf(e.parent)});
    ForwardResult r2 = fwd->run(*exec->encode(w.a), &p);
    EXPECT_EQ(formatSequence(r2.output, true), formatSequence(w.output, true)) << edgeText(e);
    EXPECT_NE(formatSequence(r2.output, true), formatSequence(fa.output, true)) << edgeText(e);
  }
}

// circuit.json and the report parse as JSON with the documented keys.
TEST(Circuit, JsonFormats) {
  auto b = build(std::string(RASPC_SOURCE_DIR) + "/examples/sort.rasp");
  ASSERT_TRUE(b->model) << b->diags;
  Circuit c = circuitOf(*b->model);
  auto cj = json::parse(circuitJson(c));
  ASSERT_TRUE(bool(cj)) << llvm::toString(cj.takeError()) << circuitJson(c);
  EXPECT_EQ(cj->get("format")->s, "raspc-circuit-1");
  EXPECT_EQ(cj->get("n_layers")->i, 3);
  ASSERT_EQ(cj->get("components")->array.size(), 6u);
  const json::Value &h = cj->get("components")->array[0];
  EXPECT_EQ(h.get("hook")->s, "blocks.0.attn.hook_result");
  ASSERT_EQ(h.get("index")->array.size(), 3u);
  EXPECT_TRUE(h.get("index")->array[0].isNull());
  EXPECT_EQ(h.get("index")->array[2].i, 0);
  EXPECT_EQ(h.get("layer")->i, 0);
  ASSERT_EQ(h.get("node_ids")->array.size(), 1u);
  EXPECT_EQ(h.get("node_ids")->array[0].i, 11); // smaller
  // out: its head and its BOS cleanup neuron; its cone holds the embedding and
  // everything before it.
  const json::Value *out = nullptr;
  for (auto &n : cj->get("nodes")->array)
    if (n.get("name")->s == "out") out = &n;
  ASSERT_TRUE(out);
  EXPECT_EQ(out->get("kind")->s, "aggregate");
  ASSERT_EQ(out->get("components")->array.size(), 2u);
  EXPECT_EQ(out->get("components")->array[1].get("hook")->s, "blocks.2.mlp.hook_post");
  EXPECT_EQ(out->get("components")->array[1].get("index")->array[2].array[1].i, 1);
  // The embedding, 3 heads and 4 neuron ranges (smaller, ties, place, the cleanup).
  EXPECT_EQ(out->get("cone")->array.size(), 8u);
  EXPECT_EQ(cj->get("edges")->get("heads")->array.size(), c.headEdges.size());
  EXPECT_EQ(cj->get("edges")->get("qkv")->array.size(), c.qkvEdges.size());
  const json::Value &e = cj->get("edges")->get("qkv")->array[0];
  for (const char *k : {"parent", "parent_index", "child", "child_index"}) EXPECT_TRUE(e.get(k)) << k;

  CircuitCheckOptions o;
  o.pairs = 8;
  auto r = checkCircuit(b->program.graph(), b->output, b->program.interpreterOptions(b->opts), *b->model, c, o);
  ASSERT_TRUE(bool(r));
  auto rj = json::parse(circuitReportJson(*r));
  ASSERT_TRUE(bool(rj)) << llvm::toString(rj.takeError());
  EXPECT_EQ(rj->get("pairs_per_node")->i, 8);
  EXPECT_EQ(rj->get("seed")->i, 1);
  EXPECT_TRUE(rj->get("passed")->b);
  const json::Value &n0 = rj->get("nodes")->array[0];
  EXPECT_EQ(n0.get("check")->s, "skipped");
  EXPECT_EQ(n0.get("reason")->s, "an input: the embedding computes it");
  for (auto &n : rj->get("nodes")->array) {
    if (n.get("check")->s == "skipped") continue;
    EXPECT_EQ(n.get("agree")->i, n.get("pairs")->i);
    EXPECT_EQ(n.get("cone_ablation")->get("unchanged")->i, n.get("cone_ablation")->get("pairs")->i);
    EXPECT_LE(n.get("examples")->array.size(), 3u);
    EXPECT_LE(n.get("differs")->i, n.get("pairs")->i);
    if (n.get("name")->s == "out") {
      EXPECT_GT(n.get("differs")->i, 0); // the output changes on some pair
    }
  }
  EXPECT_EQ(rj->get("components")->get("total")->i, 6);
  EXPECT_EQ(rj->get("edges")->get("heads")->get("total")->i, int64_t(c.headEdges.size()));
  EXPECT_EQ(rj->get("edges")->get("qkv")->get("total")->i, int64_t(c.qkvEdges.size()));
}

// `raspc verify --circuit`: the summary, exit 0 when every node passes; --json is
// checks.json's {"exact", "interventions"}; --pairs needs --circuit.
TEST(Circuit, VerifyCommand) {
  const std::string sort = std::string(RASPC_SOURCE_DIR) + "/examples/sort.rasp";
  auto r = run(raspcBinary() + " verify " + sort + " --circuit --pairs 8");
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_NE(r.out.find("circuit: 6 components, 12 edges (heads), 18 edges (qkv); 8 pairs per node, seed 1"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("  out                  interchange 8/8 agree ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("change it), cone ablation 8/8 unchanged\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("necessary: 5/6 components, 8/12 edges (heads), 10/18 edges (qkv)"), std::string::npos) << r.out;

  auto j = run(raspcBinary() + " verify " + sort + " --circuit --pairs 8 --json");
  EXPECT_EQ(j.exitCode, 0) << j.out;
  auto v = json::parse(j.out);
  ASSERT_TRUE(bool(v)) << llvm::toString(v.takeError()) << j.out;
  EXPECT_EQ(v->keys, (std::vector<std::string>{"exact", "interventions"}));
  EXPECT_EQ(v->get("exact")->get("inputs")->i, 363);
  EXPECT_EQ(v->get("exact")->get("equal")->i, 363);
  EXPECT_TRUE(v->get("exact")->get("exhaustive")->b);
  EXPECT_TRUE(v->get("interventions")->get("passed")->b);
  EXPECT_EQ(v->get("interventions")->get("pairs_per_node")->i, 8);

  auto bad = run(raspcBinary() + " verify " + sort + " --pairs 8");
  EXPECT_NE(bad.exitCode, 0);
  EXPECT_NE(bad.out.find("--pairs requires --circuit"), std::string::npos) << bad.out;
}

// A causal program with fused maps and constants: those nodes are skipped with their
// reasons, the rest pass, the causal mask included (the interpreter's causal meaning
// against the masked heads).
TEST(Circuit, CausalFusedAndConstants) {
  auto b = buildSource("circuit_causal.rasp", "# raspc: --vocab \"1 2 3\" --max-len 4 --causal\n"
                                              "x = tokens + 1;\n"
                                              "y = (x * 2) - 1;\n"
                                              "out = aggregate(select(indices, indices - 1, ==), y, 0);\n");
  ASSERT_TRUE(b->model) << b->diags;
  EXPECT_TRUE(b->model->cfg.causal);
  Circuit c = circuitOf(*b->model);
  auto r = checkCircuit(b->program.graph(), b->output, b->program.interpreterOptions(b->opts), *b->model, c, {});
  ASSERT_TRUE(bool(r)) << llvm::toString(r.takeError());
  EXPECT_TRUE(r->passed) << circuitReportJson(*r);
  std::map<std::string, std::string> checks;
  for (size_t i = 0; i < r->nodes.size(); ++i)
    checks[r->nodes[i].name.empty() ? c.nodes[i].kind + "_" + std::to_string(r->nodes[i].id) : r->nodes[i].name] =
        r->nodes[i].check == "skipped" ? r->nodes[i].reason : r->nodes[i].check;
  EXPECT_EQ(checks["x"], "a map folded into the MLP or the heads that read it: no component of its own");
  // The head reads y through tokens (its W_OV holds 2(t+1)-1 for each token t).
  EXPECT_EQ(checks["y"], "a map folded into the MLP or the heads that read it: no component of its own");
  EXPECT_EQ(checks["out"], "interchange");
  int constants = 0, patterns = 0;
  for (auto &[name, check] : checks) {
    constants += check == "a constant: no component computes it";
    patterns += check == "pattern";
  }
  EXPECT_EQ(constants, 2); // 1 and 2 of x's and y's maps
  EXPECT_EQ(patterns, 1);  // the select
  for (const NodeCheck &n : r->nodes)
    if (n.check != "skipped") {
      EXPECT_EQ(n.agree, n.pairs);
      EXPECT_EQ(n.pairs, 32) << n.name;
    }
}

// The checks can fail: a ground truth that puts smaller on ties's head (and ties on
// smaller's) is caught by both smaller's interchange (patching head 1 from b changes ties
// too, which the interpreter keeps) and its cone ablation (head 0, now outside its cone,
// takes b's output and smaller's neurons decode b's value), with the failing pair shown.
TEST(Circuit, WrongGroundTruthFails) {
  auto b = build(std::string(RASPC_SOURCE_DIR) + "/examples/sort.rasp");
  ASSERT_TRUE(b->model) << b->diags;
  Model m = *b->model;
  for (NodeInfo &n : m.nodes) {
    if (n.name == "smaller") n.heads = {1};
    if (n.name == "ties") n.heads = {0};
  }
  Circuit c = circuitOf(m);
  auto r = checkCircuit(b->program.graph(), b->output, b->program.interpreterOptions(b->opts), m, c, {});
  ASSERT_TRUE(bool(r)) << llvm::toString(r.takeError());
  EXPECT_FALSE(r->passed);
  const NodeCheck *smaller = nullptr;
  for (auto &n : r->nodes)
    if (n.name == "smaller") smaller = &n;
  ASSERT_TRUE(smaller);
  EXPECT_LT(smaller->agree, smaller->pairs);
  EXPECT_LT(smaller->coneUnchanged, smaller->conePairs);
  ASSERT_TRUE(smaller->failure);
  EXPECT_NE(formatSequence(smaller->failure->output, true), formatSequence(smaller->failureWant, true));
  auto j = json::parse(circuitReportJson(*r));
  ASSERT_TRUE(bool(j));
  EXPECT_FALSE(j->get("passed")->b);
}

// Two shapes that a first version got wrong, both now exact on every pair:
// - a selector that a head attends with and that is also inside a composite which reads
//   a value computed from it (cnt below): patching its head's pattern changes cnt, and
//   the composite follows; the interpreter overrides only what that head's node attends
//   with (InterpreterOptions::attendOverrides), not the selector everywhere;
// - two selectors comparing the same tuple share one tuple MLP, recorded on one of them:
//   both cones hold it (seq_max and seq_min below).
TEST(Circuit, SharedSelectorsAndTuples) {
  auto causal = buildSource("circuit_last_a.rasp", "# raspc: --vocab \"a b c\" --max-len 6 --causal\n"
                                                   "cnt = selector_width(select(tokens, \"a\", ==));\n"
                                                   "last_a = select(tokens, \"a\", ==) and select(cnt, cnt, ==);\n"
                                                   "out = aggregate(last_a, indices, -1);\n");
  auto range = buildSource("circuit_range.rasp", "# raspc: --vocab \"1 2 3 4 5\" --max-len 4\n"
                                                 "out = seq_max(tokens) - seq_min(tokens);\n");
  // Selectors heads attend with: select(tokens, "a", ==) and last_a; both beats and
  // the two selects of "the position holding the max/min".
  for (auto [b, wantPatterns] : {std::pair{causal.get(), 2}, std::pair{range.get(), 4}}) {
    ASSERT_TRUE(b->model) << b->diags;
    Circuit c = circuitOf(*b->model);
    auto r = checkCircuit(b->program.graph(), b->output, b->program.interpreterOptions(b->opts), *b->model, c, {});
    ASSERT_TRUE(bool(r)) << llvm::toString(r.takeError());
    EXPECT_TRUE(r->passed) << circuitReportJson(*r);
    int patterns = 0;
    for (const NodeCheck &n : r->nodes) {
      patterns += n.check == "pattern";
      if (n.check != "skipped") {
        EXPECT_GT(n.pairs, 8) << n.name;
      }
    }
    EXPECT_EQ(patterns, wantPatterns);
  }
  // Both "beats" selectors of the range program list the tuple MLP among their components.
  Circuit c = circuitOf(*range->model);
  int beats = 0;
  for (const CircuitNode &n : c.nodes)
    if (n.name == "beats") {
      ++beats;
      bool tuple = false;
      for (const ComponentRef &r : n.components) tuple = tuple || r.hook == "blocks.0.mlp.hook_post";
      EXPECT_TRUE(tuple) << n.id;
    }
  EXPECT_EQ(beats, 2);
}

// The interventions do not depend on the residual's basis: sort's rotated variant
// (backend/Variants.h: every writer times R, every reader times R^T, the basis recorded)
// has the same circuit, read through its basis, and the same results: every node passes
// (cone ablation decoding through the basis), the same components and edges necessary.
TEST(Circuit, RotationInvariant) {
  auto b = build(std::string(RASPC_SOURCE_DIR) + "/examples/sort.rasp");
  ASSERT_TRUE(b->model) << b->diags;
  const Model &m = *b->model;
  auto rot = rotateModel(m, 7);
  ASSERT_TRUE(bool(rot)) << llvm::toString(rot.takeError());
  ASSERT_EQ(residualBasisKind(*rot), "rotated");
  Circuit c = circuitOf(m), cr = circuitOf(*rot);
  std::vector<std::string> e1, e2;
  for (auto &e : c.qkvEdges) e1.push_back(edgeText(e));
  for (auto &e : cr.qkvEdges) e2.push_back(edgeText(e));
  EXPECT_EQ(e1, e2);
  EXPECT_EQ(circuitJson(c), circuitJson(cr));
  auto io = b->program.interpreterOptions(b->opts);
  auto orig = checkCircuit(b->program.graph(), b->output, io, m, c, {});
  auto r = checkCircuit(b->program.graph(), b->output, io, *rot, cr, {});
  ASSERT_TRUE(orig && r);
  EXPECT_TRUE(r->passed) << circuitReportJson(*r);
  ASSERT_EQ(r->nodes.size(), orig->nodes.size());
  for (size_t i = 0; i < r->nodes.size(); ++i) {
    EXPECT_EQ(r->nodes[i].check, orig->nodes[i].check);
    EXPECT_EQ(r->nodes[i].agree, r->nodes[i].pairs) << r->nodes[i].name;
    EXPECT_EQ(r->nodes[i].pairs, orig->nodes[i].pairs) << r->nodes[i].name;
    EXPECT_EQ(r->nodes[i].coneUnchanged, r->nodes[i].conePairs) << r->nodes[i].name;
  }
  EXPECT_EQ(r->componentsNecessary, orig->componentsNecessary);
  EXPECT_EQ(r->heads.necessary, orig->heads.necessary);
  EXPECT_EQ(r->qkv.necessary, orig->qkv.necessary);
}
