// The CPU runtime on hand-made models: exact decoded outputs, PAD masking, causal
// attention, F32/F64 agreement, tracing and node decoding, input errors, and the
// same outputs from examples/python/forward.py (numpy + h5py only).
#include "TestModels.h"
#include "TestUtil.h"
#include "backend/Hdf5.h"
#include "runtime/Executor.h"

#include <gtest/gtest.h>

#include <fstream>

using namespace raspc;
using raspc::test::TempDir;

namespace {

using Batch = std::vector<std::vector<std::string>>;

std::vector<std::string> toks(const std::string &s) { return splitArgs(s); }

template <class T> std::string errorOf(llvm::Expected<T> v) {
  if (v) return "<no error>";
  return llvm::toString(v.takeError());
}

Executor executor(const Model &m, Precision p = Precision::F32) {
  auto e = Executor::create(m, p);
  if (!e) {
    ADD_FAILURE() << llvm::toString(e.takeError());
    std::abort();
  }
  return std::move(*e);
}

// The outputs of a batch rendered as "[..]" lines (Python-like).
std::string runText(Executor &ex, const Batch &batch) {
  auto out = ex.run(batch);
  if (!out) return llvm::toString(out.takeError());
  std::string s;
  for (auto &row : *out) s += formatSequence(row, false) + "\n";
  return s;
}

std::string run1(const Model &m, const std::string &input, Precision p = Precision::F32) {
  Executor ex = executor(m, p);
  std::string s = runText(ex, {toks(input)});
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

TEST(Cpu, PreviousTokenHead) {
  for (bool causal : {false, true})
    for (Precision p : {Precision::F32, Precision::F64}) {
      Model m = test::prevTokenModel(causal);
      EXPECT_EQ(run1(m, "3 1 2 2", p), "[None, 3, 1, 2]");
      EXPECT_EQ(run1(m, "1 2 3 1 2", p), "[None, 1, 2, 3, 1]");
      EXPECT_EQ(run1(m, "2", p), "[None]");
      EXPECT_EQ(run1(m, "", p), "[]");
    }
}

TEST(Cpu, MlpLookupTable) {
  Model m = test::mapModel();
  EXPECT_EQ(run1(m, "3 1 2 2"), "[None, x, x, y]");
  EXPECT_EQ(run1(m, "2 2 1"), "[None, y, y]");
  // Int tokens are matched by value.
  EXPECT_EQ(run1(m, "03 +1 2"), "[None, x, x]");
  auto out = executor(m).run({toks("1 2")});
  ASSERT_TRUE(bool(out));
  EXPECT_TRUE(std::holds_alternative<std::string>((*out)[0][1]));
}

TEST(Cpu, NumericalMeanIsSnapped) {
  Model m = test::meanModel(false);
  EXPECT_EQ(run1(m, "a b a"), "[0.5, 0.5, 0.5]");
  EXPECT_EQ(run1(m, "a a a a"), "[0.8, 0.8, 0.8, 0.8]");
  EXPECT_EQ(run1(m, "b"), "[0]"); // snapped to the int 0 of the value set
  Model c = test::meanModel(true);
  EXPECT_EQ(run1(c, "a b a"), "[0.5, 0.3333333333333333, 0.5]");
  EXPECT_EQ(run1(c, "b a b b"), "[0, 0.3333333333333333, 0.25, 0.2]");
  // Without a value set the raw number comes back.
  c.outputValues.clear();
  std::string raw = run1(c, "b a");
  EXPECT_EQ(raw.substr(0, 6), "[0.0, ") << raw;
  EXPECT_NE(raw.find("0.333333"), std::string::npos) << raw;
}

TEST(Cpu, PaddedBatchEqualsEachSequenceAlone) {
  std::vector<std::pair<Model, Batch>> cases = {
      {test::meanModel(false), {toks("a b a"), toks("a"), toks(""), toks("b b b a"), toks("b a")}},
      {test::meanModel(true), {toks("a b a"), toks("a"), toks(""), toks("b b b a"), toks("b a")}},
      {test::mapModel(), {toks("3 1 2 2 1"), toks("2"), toks("1 3"), toks("")}},
      {test::prevTokenModel(true), {toks("3"), toks("3 1 2 2 1"), toks("1 3")}},
  };
  for (auto &[m, batch] : cases) {
    for (Precision p : {Precision::F32, Precision::F64}) {
      Executor ex = executor(m, p);
      auto together = ex.run(batch);
      ASSERT_TRUE(bool(together));
      ASSERT_EQ(together->size(), batch.size());
      for (size_t b = 0; b < batch.size(); ++b) {
        auto alone = ex.run({batch[b]});
        ASSERT_TRUE(bool(alone));
        EXPECT_EQ(formatSequence((*together)[b], true), formatSequence((*alone)[0], true)) << b;
        EXPECT_EQ((*together)[b].size(), batch[b].size());
      }
    }
  }
  // The masking matters: "a" alone is 1/2; unmasked PAD keys would make it 1/5.
  Executor ex = executor(test::meanModel(false));
  auto out = ex.run({toks("a"), toks("b b b b")});
  ASSERT_TRUE(bool(out));
  EXPECT_EQ(formatSequence((*out)[0], false), "[0.5]");
  EXPECT_EQ(formatSequence((*out)[1], false), "[0, 0, 0, 0]");
}

TEST(Cpu, BuffersAreReusedAcrossBatchSizes) {
  Executor ex = executor(test::mapModel());
  Batch big(20, toks("3 1 2 2 1"));
  std::string first = runText(ex, {toks("1 2 3")});
  std::string bigOut = runText(ex, big);
  EXPECT_EQ(runText(ex, {toks("1 2 3")}), first);
  EXPECT_EQ(first, "[None, x, y]\n");
  std::string expect;
  for (int i = 0; i < 20; ++i) expect += "[None, x, x, y, y]\n";
  EXPECT_EQ(bigOut, expect);
  EXPECT_EQ(runText(ex, {}), "");
}

// A batch runs in chunks of sequences (256 rows each; the map model's sequences take 6),
// on several threads when asked: a batch of many chunks gives each sequence what it
// gives alone at any thread count, and a non-finite value is reported where a
// whole-batch pass finds it first (the earliest stage, then the first sequence).
TEST(Cpu, ChunksAndThreadsChangeNothing) {
  const std::vector<std::string> inputs = {"3 1 2 2 1", "2", "1 3", "", "1 1 1", "3 2"};
  Batch batch;
  for (int i = 0; i < 300; ++i) batch.push_back(toks(inputs[size_t(i) % inputs.size()]));
  for (Precision p : {Precision::F32, Precision::F64}) {
    Executor ex = executor(test::mapModel(), p);
    std::string expect;
    for (const auto &seq : batch) expect += runText(ex, {seq});
    EXPECT_EQ(expect.rfind("[None, x, x, y, y]\n[None]\n[None, x]\n[]\n", 0), 0u) << expect.substr(0, 60);
    for (int threads : {1, 2, 3, 0}) {
      ex.setThreads(threads);
      EXPECT_EQ(runText(ex, batch), expect) << "threads " << threads;
    }
  }
  Model m = test::mapModel();
  m.tensors.at("blocks.0.mlp.W_in").at(7, 0) = 3e38f; // indices:2: overflows from the second token on
  m.tensors.at("blocks.0.mlp.W_out").at(0, 14) = 3e38f;
  Batch failing(200, toks("2"));
  failing.push_back(toks("3 2 1"));
  failing.insert(failing.end(), 100, toks("1 3"));
  for (int threads : {1, 2}) {
    Executor ex = executor(m);
    ex.setThreads(threads);
    EXPECT_EQ(errorOf(ex.run(failing)), "layer 0 mlp produced a non-finite value at sequence 200, position 1");
  }
}

TEST(Cpu, F32AndF64Agree) {
  for (const Model &m : {test::mapModel(), test::meanModel(true), test::prevTokenModel()}) {
    Executor a = executor(m, Precision::F32), b = executor(m, Precision::F64);
    EXPECT_EQ(a.precision(), Precision::F32);
    EXPECT_EQ(b.precision(), Precision::F64);
    Batch batch = m.intTokens ? Batch{toks("3 1 2 2"), toks("1")} : Batch{toks("a b b a"), toks("b")};
    auto x = a.run(batch), y = b.run(batch);
    ASSERT_TRUE(bool(x));
    ASSERT_TRUE(bool(y));
    for (size_t i = 0; i < batch.size(); ++i) {
      EXPECT_EQ(formatSequence((*x)[i], true), formatSequence((*y)[i], true));
      Eigen::MatrixXd la = a.logits(int(i)), lb = b.logits(int(i));
      ASSERT_EQ(la.rows(), Eigen::Index(batch[i].size() + 1));
      ASSERT_EQ(la.rows(), lb.rows());
      ASSERT_EQ(la.cols(), lb.cols());
      EXPECT_LT((la - lb).cwiseAbs().maxCoeff(), 1e-5);
    }
  }
}

TEST(Cpu, InputErrors) {
  Executor ex = executor(test::prevTokenModel());
  EXPECT_EQ(ex.maxLength(), 5);
  EXPECT_EQ(errorOf(ex.run({toks("1 2"), toks("1 4 2")})),
            "sequence 1, position 1: token '4' is not in the model's vocabulary {1, 2, 3}");
  EXPECT_EQ(errorOf(ex.run({toks("<bos> 1")})),
            "sequence 0, position 0: token '<bos>' is reserved (the runtime adds BOS and PAD itself)");
  EXPECT_EQ(errorOf(ex.run({toks("1"), toks("1 2 3 1 2 3")})),
            "sequence 1 has 6 tokens, more than the model's maximum length 5");
  // The structured error carries the sequence, position and token.
  auto r = ex.run({toks("1 x")});
  ASSERT_FALSE(bool(r));
  bool seen = false;
  llvm::handleAllErrors(r.takeError(), [&](const InputError &e) {
    seen = true;
    EXPECT_EQ(e.seq, 0);
    EXPECT_EQ(e.pos, 1);
    EXPECT_EQ(e.token, "x");
  });
  EXPECT_TRUE(seen);
  // String tokens are not matched by value.
  Executor s = executor(test::meanModel());
  EXPECT_EQ(errorOf(s.run({toks("a A")})), "sequence 0, position 1: token 'A' is not in the model's vocabulary {a, b}");
  // The executor is usable after an error.
  EXPECT_EQ(runText(ex, {toks("1 2")}), "[None, 1]\n");
}

TEST(Cpu, CreateValidatesTheModel) {
  Model m = test::mapModel();
  m.tensors.erase("blocks.1.mlp.b_in");
  EXPECT_EQ(errorOf(Executor::create(m)), "map.rasp: missing tensor 'blocks.1.mlp.b_in'");
}

TEST(Cpu, TraceAndDecodeNodes) {
  Model m = test::mapModel();
  Executor ex = executor(m, Precision::F64);
  std::vector<std::string> calls;
  std::vector<std::string> decoded;
  TraceFn trace = [&](int layer, const std::string &sub, const Eigen::MatrixXd &res, int seq) {
    calls.push_back(std::to_string(layer) + " " + sub + " seq " + std::to_string(seq) + " rows " +
                    std::to_string(res.rows()) + " cols " + std::to_string(res.cols()));
    if (seq == 0 && (layer == -1 || (layer == 0 && sub == "mlp"))) {
      for (auto &[name, values] : decodeNodes(m, res)) decoded.push_back(name + " = " + formatSequence(values, false));
    }
  };
  auto out = ex.run({toks("3 1 2 2"), toks("1")}, &trace);
  ASSERT_TRUE(bool(out));
  EXPECT_EQ(calls, (std::vector<std::string>{
                       "-1 embed seq 0 rows 5 cols 16", "-1 embed seq 1 rows 2 cols 16",
                       "0 attn seq 0 rows 5 cols 16",   "0 attn seq 1 rows 2 cols 16",
                       "0 mlp seq 0 rows 5 cols 16",    "0 mlp seq 1 rows 2 cols 16",
                       "1 attn seq 0 rows 5 cols 16",   "1 attn seq 1 rows 2 cols 16",
                       "1 mlp seq 0 rows 5 cols 16",    "1 mlp seq 1 rows 2 cols 16",
                   }));
  EXPECT_EQ(decoded, (std::vector<std::string>{
                         // after the embedding: prev and out are still empty
                         "tokens = [3, 1, 2, 2]",
                         "indices = [1, 2, 3, 4]",
                         "prev = [None, None, None, None]",
                         "out = [None, None, None, None]",
                         // after layer 0
                         "tokens = [3, 1, 2, 2]",
                         "indices = [1, 2, 3, 4]",
                         "prev = [None, 3, 1, 2]",
                         "out = [None, x, x, y]",
                     }));
  // Numerical nodes read their one direction; unnamed nodes are called kind_id.
  Model mean = test::meanModel(true);
  mean.nodes[1].name = "";
  Eigen::MatrixXd res = Eigen::MatrixXd::Zero(3, 4);
  res(1, 0) = 1;
  res(1, 2) = 0.49999;
  res(2, 1) = 0.3;
  res(2, 2) = 0.7;
  auto nodes = decodeNodes(mean, res);
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].first, "tokens");
  EXPECT_EQ(formatSequence(nodes[0].second, false), "[a, None]");
  EXPECT_EQ(nodes[1].first, "aggregate_1");
  EXPECT_EQ(formatSequence(nodes[1].second, false), "[0.5, 0.7]");
  // A None in a categorical value set has no direction: writes[i] holds the i-th
  // other value.
  mean.nodes[0].valueSet = {Scalar(), std::string("a"), std::string("b")};
  nodes = decodeNodes(mean, res);
  EXPECT_EQ(formatSequence(nodes[0].second, false), "[a, None]");
  res(2, 1) = 0.9;
  nodes = decodeNodes(mean, res);
  EXPECT_EQ(formatSequence(nodes[0].second, false), "[a, b]");
}

TEST(Cpu, DecodingRules) {
  Model m = test::mapModel();
  double row[2] = {0.7, 0.7};
  EXPECT_EQ(formatScalar(decodeOutput(m, row, 2)), "x"); // the first maximum
  row[0] = 0.49;
  row[1] = 0.2;
  EXPECT_EQ(formatScalar(decodeOutput(m, row, 2)), "None");
  row[1] = 0.5;
  EXPECT_EQ(formatScalar(decodeOutput(m, row, 2)), "y");
  std::vector<Scalar> values = {int64_t(1), 2.5, std::string("s"), true};
  EXPECT_EQ(formatScalar(snapNumber(1.0009, values)), "1");
  EXPECT_EQ(formatScalar(snapNumber(1.0011, values)), "1.0011");
  EXPECT_EQ(formatScalar(snapNumber(2.5024, values)), "2.5"); // 1e-3 relative to |2.5|
  EXPECT_EQ(formatScalar(snapNumber(2.5026, values)), "2.5026");
  EXPECT_EQ(formatScalar(snapNumber(-7, {})), "-7.0");
}

// ----------------------------------------------------------------------------------
// examples/python/forward.py gives the same outputs from the same file.

bool havePythonH5py() {
  static int ok = -1;
  if (ok < 0) ok = test::run("/usr/bin/python3 -c 'import h5py, numpy'").exitCode == 0;
  return ok == 1;
}

std::string forwardPy() { return "/usr/bin/python3 " + test::sourceDir() + "/examples/python/forward.py "; }

TEST(PythonForward, MatchesTheCppRuntime) {
  if (!havePythonH5py()) GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy is not available";
  TempDir dir;
  struct Case {
    Model m;
    std::vector<std::string> inputs;
  };
  std::vector<Case> cases = {
      {test::prevTokenModel(true), {"3 1 2 2", "1", ""}},
      {test::mapModel(), {"3 1 2 2", "2 2 1 3 3", "03 +1 2"}},
      {test::meanModel(false), {"a b a", "b", "a a a a"}},
      {test::meanModel(true), {"a b a", "b a b b"}},
  };
  int k = 0;
  for (auto &c : cases) {
    std::string path = dir.file("m" + std::to_string(k++) + ".h5");
    ASSERT_EQ(llvm::toString(writeModel(c.m, path, {true, {}})), "");
    auto read = readModel(path);
    ASSERT_TRUE(bool(read));
    Executor ex = executor(*read);
    Batch batch;
    std::string lines;
    for (auto &in : c.inputs) {
      batch.push_back(toks(in));
      lines += in + "\n";
      auto out = ex.run({toks(in)});
      ASSERT_TRUE(bool(out));
      auto py = test::run(forwardPy() + path + " --input \"" + in + "\"");
      EXPECT_EQ(py.exitCode, 0) << py.out;
      EXPECT_EQ(py.out, formatSequence((*out)[0], false) + "\n") << in;
      py = test::run(forwardPy() + path + " --input \"" + in + "\" --json");
      EXPECT_EQ(py.out, "{\"value\": " + formatSequence((*out)[0], true) + "}\n") << in;
    }
    // Batch mode: one line per sequence, padded together.
    std::string inputs = dir.file("inputs.txt");
    std::ofstream(inputs) << lines;
    auto py = test::run(forwardPy() + path + " --inputs " + inputs);
    EXPECT_EQ(py.exitCode, 0) << py.out;
    EXPECT_EQ(py.out, runText(ex, batch));
  }
}

TEST(PythonForward, ExactOutputsAndErrors) {
  if (!havePythonH5py()) GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy is not available";
  TempDir dir;
  std::string path = dir.file("map.h5");
  ASSERT_EQ(llvm::toString(writeModel(test::mapModel(), path, {true, {}})), "");
  auto py = test::run(forwardPy() + path + " --input \"3 1 2 2\"");
  EXPECT_EQ(py.out, "[None, x, x, y]\n");
  py = test::run(forwardPy() + path + " --input \"3 1 2 2\" --json");
  EXPECT_EQ(py.out, "{\"value\": [null, \"x\", \"x\", \"y\"]}\n");
  py = test::run(forwardPy() + path + " --input \"3 9\"");
  EXPECT_EQ(py.exitCode, 1);
  EXPECT_EQ(py.out, "error: sequence 0, position 1: token '9' is not in the model's vocabulary\n");
  // As a module from another script.
  std::string script = dir.file("use.py");
  std::ofstream(script) << "import sys\nsys.path.insert(0, sys.argv[1])\nimport forward\n"
                           "m = forward.load(sys.argv[2])\n"
                           "print(forward.forward(m, [3, 1, 2, 2]), forward.forward_batch(m, [['1'], []]))\n";
  py = test::run("/usr/bin/python3 " + script + " " + test::sourceDir() + "/examples/python " + path);
  EXPECT_EQ(py.exitCode, 0) << py.out;
  EXPECT_EQ(py.out, "[None, 'x', 'x', 'y'] [[None], []]\n");
}

} // namespace

namespace {

// The CUDA executor where no GPU can be used: a clear error, never a crash.
TEST(Cuda, UnavailableDeviceSaysWhy) {
  llvm::Error err = deviceError(Device::Cuda);
  if (!err) GTEST_SKIP() << "a GPU is usable here; the no-GPU error cannot be reached";
  const std::string why = llvm::toString(std::move(err));
  EXPECT_TRUE(why.rfind("no usable CUDA device (", 0) == 0 || why == "no CUDA device found" ||
              why.rfind("this raspc was built without CUDA (", 0) == 0)
      << why;
  EXPECT_EQ(errorOf(Executor::create(test::mapModel(), Precision::F32, Device::Cuda)), "cannot run on cuda: " + why);
}

TEST(Cuda, F64RunsOnTheCpuOnly) {
  EXPECT_EQ(errorOf(Executor::create(test::mapModel(), Precision::F64, Device::Cuda)),
            "the CUDA executor runs float32 only");
}

// On a GPU: the hand-made models give the CPU's outputs, padded batches included, and
// the traces the CPU's residual streams (float32 on both sides).
TEST(Cuda, HandModelsPaddingAndTracesMatchTheCpu) {
  RASPC_SKIP_WITHOUT_CUDA();
  std::vector<std::pair<Model, Batch>> cases = {
      {test::meanModel(false), {toks("a b a"), toks("a"), toks(""), toks("b b b a"), toks("b a")}},
      {test::meanModel(true), {toks("a b a"), toks("a"), toks(""), toks("b b b a"), toks("b a")}},
      {test::mapModel(), {toks("3 1 2 2 1"), toks("2"), toks("1 3"), toks("")}},
      {test::prevTokenModel(true), {toks("3"), toks("3 1 2 2 1"), toks("1 3")}},
      {test::prevTokenModel(false), {toks("3 1 2 2"), toks("1 2 3 1 2"), toks("2")}},
  };
  for (auto &[m, batch] : cases) {
    auto gpu = Executor::create(m, Precision::F32, Device::Cuda);
    ASSERT_TRUE(bool(gpu)) << llvm::toString(gpu.takeError());
    EXPECT_EQ(gpu->device(), Device::Cuda);
    Executor cpu = executor(m);
    std::vector<std::pair<std::string, Eigen::MatrixXd>> traces[2];
    auto collect = [&](int which) {
      return TraceFn([&traces, which](int layer, const std::string &sub, const Eigen::MatrixXd &r, int seq) {
        traces[which].emplace_back(std::to_string(layer) + sub + std::to_string(seq), r);
      });
    };
    TraceFn tc = collect(0), tg = collect(1);
    EXPECT_EQ(runText(*gpu, batch), runText(cpu, batch));
    ASSERT_TRUE(cpu.run(batch, &tc) && gpu->run(batch, &tg));
    ASSERT_EQ(traces[0].size(), traces[1].size());
    for (size_t i = 0; i < traces[0].size(); ++i) {
      EXPECT_EQ(traces[0][i].first, traces[1][i].first);
      const Eigen::MatrixXd &a = traces[0][i].second, &b = traces[1][i].second;
      ASSERT_EQ(a.rows(), b.rows());
      EXPECT_LE((a - b).cwiseAbs().maxCoeff(), 1e-4 * std::max(1.0, a.cwiseAbs().maxCoeff())) << traces[0][i].first;
    }
  }
}

} // namespace

namespace {

// Values too large for float32 are an error naming where they first appeared (here
// layer 0's MLP at the second token, whose index direction the huge weight reads),
// never NaN or inf decoded as an output; float64 computes the same model.
TEST(Cpu, NonFiniteActivationIsAnError) {
  Model m = test::mapModel();
  m.tensors.at("blocks.0.mlp.W_in").at(7, 0) = 3e38f; // indices:2
  m.tensors.at("blocks.0.mlp.W_out").at(0, 14) = 3e38f;
  Executor ex = executor(m);
  auto r = ex.run({toks("2"), toks("3 2 1")});
  ASSERT_FALSE(bool(r));
  bool seen = false;
  llvm::handleAllErrors(r.takeError(), [&](const NonFiniteError &e) {
    seen = true;
    EXPECT_EQ(e.layer, 0);
    EXPECT_EQ(e.sublayer, "mlp");
    EXPECT_EQ(e.seq, 1);
    EXPECT_EQ(e.pos, 1);
    EXPECT_EQ(e.where(), "layer 0 mlp");
  });
  EXPECT_TRUE(seen);
  EXPECT_EQ(errorOf(ex.run({toks("1 1")})), "layer 0 mlp produced a non-finite value at sequence 0, position 1");
  EXPECT_EQ(runText(ex, {toks("2")}), "[None]\n"); // usable after the error
  Executor wide = executor(m, Precision::F64);
  EXPECT_EQ(runText(wide, {toks("1 1")}).substr(0, 1), "[");
}

} // namespace
