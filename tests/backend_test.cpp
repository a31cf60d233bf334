// The weight file: JSON reader, write/read round trip, h5py compatibility, and the
// exact errors for malformed files.
#include "TestModels.h"
#include "TestUtil.h"
#include "backend/Hdf5.h"
#include "backend/Hdf5Util.h"
#include "backend/Json.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace raspc;
using raspc::test::TempDir;

namespace {

std::string errorText(llvm::Error e) { return llvm::toString(std::move(e)); }

template <class T> std::string errorOf(llvm::Expected<T> v) {
  if (v) return "<no error>";
  return llvm::toString(v.takeError());
}

// ----------------------------------------------------------------------------------
// JSON

TEST(Json, Scalars) {
  auto s = parseJsonScalar("1");
  ASSERT_TRUE(bool(s));
  EXPECT_EQ(std::get<int64_t>(*s), 1);
  s = parseJsonScalar(" -0.5 ");
  ASSERT_TRUE(bool(s));
  EXPECT_EQ(std::get<double>(*s), -0.5);
  s = parseJsonScalar("2.0");
  ASSERT_TRUE(bool(s));
  EXPECT_TRUE(std::holds_alternative<double>(*s)); // a float stays a float
  s = parseJsonScalar("1e3");
  ASSERT_TRUE(bool(s));
  EXPECT_EQ(std::get<double>(*s), 1000.0);
  s = parseJsonScalar("true");
  ASSERT_TRUE(bool(s));
  EXPECT_EQ(std::get<bool>(*s), true);
  s = parseJsonScalar("null");
  ASSERT_TRUE(bool(s));
  EXPECT_TRUE(isNone(*s));
  s = parseJsonScalar("\"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\"");
  ASSERT_TRUE(bool(s));
  EXPECT_EQ(std::get<std::string>(*s), "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
  // Beyond int64: a float, as Python's json would give an int we cannot hold.
  s = parseJsonScalar("123456789012345678901234567890");
  ASSERT_TRUE(bool(s));
  EXPECT_TRUE(std::holds_alternative<double>(*s));
  s = parseJsonScalar("-9223372036854775808");
  ASSERT_TRUE(bool(s));
  EXPECT_EQ(std::get<int64_t>(*s), INT64_MIN);
  EXPECT_EQ(errorOf(parseJsonScalar("[1]")), "expected a scalar (null, boolean, number or string), got an array");
}

TEST(Json, RoundTripsJsonScalar) {
  std::vector<Scalar> values = {Scalar(), Scalar(true), Scalar(false), Scalar(int64_t(-7)), Scalar(0.1),
                                Scalar(2.0), Scalar(1e-300), Scalar(std::string("q\"\\\t\x01 \xe2\x9c\x93"))};
  for (const Scalar &v : values) {
    auto back = parseJsonScalar(jsonScalar(v));
    ASSERT_TRUE(bool(back)) << jsonScalar(v);
    EXPECT_EQ(back->index(), v.index()) << jsonScalar(v);
    EXPECT_TRUE(scalarEquals(*back, v)) << jsonScalar(v);
  }
}

TEST(Json, Structures) {
  auto v = json::parse(R"( {"a": [1, 2.5, {"b": null}], "c": "d", "a": false} )");
  ASSERT_TRUE(bool(v));
  EXPECT_EQ(v->kind, json::Value::Object);
  ASSERT_NE(v->get("a"), nullptr);
  EXPECT_EQ(v->get("a")->kind, json::Value::Bool); // the last duplicate wins
  EXPECT_EQ(v->members[0].array.size(), 3u);
  EXPECT_EQ(v->get("c")->s, "d");
  EXPECT_EQ(v->get("zz"), nullptr);
  auto e = json::parse("[]");
  ASSERT_TRUE(bool(e));
  EXPECT_TRUE(e->array.empty());
}

TEST(Json, RejectsMalformedInput) {
  struct Case {
    const char *text, *error;
  } cases[] = {
      {"", "invalid JSON at offset 0: unexpected end of input"},
      {"[1, 2", "invalid JSON at offset 5: unexpected end of input in an array"},
      {"[1 2]", "invalid JSON at offset 3: expected ',' or ']' in an array"},
      {"{\"a\" 1}", "invalid JSON at offset 5: expected ':' after an object key"},
      {"{1: 2}", "invalid JSON at offset 1: expected a string key in an object"},
      {"{\"a\": 1,}", "invalid JSON at offset 8: expected a string key in an object"},
      {"\"abc", "invalid JSON at offset 4: unterminated string"},
      {"\"a\nb\"", "invalid JSON at offset 2: control character in a string"},
      {"\"\\x\"", "invalid JSON at offset 2: invalid escape '\\x'"},
      {"\"\\u12\"", "invalid JSON at offset 3: truncated \\u escape"},
      {"\"\\u12x4\"", "invalid JSON at offset 5: invalid hex digit in a \\u escape"},
      {"\"\\ud800\"", "invalid JSON at offset 7: unpaired surrogate in a \\u escape"},
      {"01", "invalid JSON at offset 1: unexpected text after the JSON value"},
      {"-", "invalid JSON at offset 1: invalid number"},
      {"1.", "invalid JSON at offset 2: invalid number: digits expected after '.'"},
      {"1e+", "invalid JSON at offset 3: invalid number: digits expected in the exponent"},
      {"tru", "invalid JSON at offset 0: invalid literal"},
      {"nul1", "invalid JSON at offset 0: invalid literal"},
      {"NaN", "invalid JSON at offset 0: unexpected character 'N'"},
      {"[1] x", "invalid JSON at offset 4: unexpected text after the JSON value"},
      {"\x01", "invalid JSON at offset 0: unexpected character '\\x01'"},
  };
  for (auto &c : cases) EXPECT_EQ(errorOf(json::parse(c.text)), c.error) << c.text;
}

TEST(Json, NestingIsCapped) {
  std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_EQ(errorOf(json::parse(ok)), "<no error>");
  std::string deep = std::string(65, '[') + std::string(65, ']');
  EXPECT_EQ(errorOf(json::parse(deep)), "invalid JSON at offset 64: nesting deeper than 64 levels");
  // Very deep input neither recurses without bound nor crashes.
  std::string hostile(1000000, '[');
  EXPECT_EQ(errorOf(json::parse(hostile)), "invalid JSON at offset 64: nesting deeper than 64 levels");
  std::string objs;
  for (int i = 0; i < 100000; ++i) objs += "{\"a\":";
  EXPECT_EQ(errorOf(json::parse(objs)), "invalid JSON at offset 320: nesting deeper than 64 levels");
}

TEST(Json, NeverCrashesOnGarbage) {
  std::mt19937 gen(7);
  const std::string alphabet = "[]{},:\"\\u0123456789.eE+-truefalsn \t\n\x01\xff";
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    int n = int(gen() % 40);
    for (int k = 0; k < n; ++k) s += alphabet[gen() % alphabet.size()];
    auto v = json::parse(s);
    if (!v) llvm::consumeError(v.takeError());
  }
}

// ----------------------------------------------------------------------------------
// Ground truth

void expectSameNodes(const std::vector<NodeInfo> &a, const std::vector<NodeInfo> &b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const NodeInfo &x = a[i], &y = b[i];
    EXPECT_EQ(x.id, y.id);
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.kind, y.kind);
    EXPECT_EQ(x.op, y.op);
    EXPECT_EQ(x.encoding, y.encoding);
    ASSERT_EQ(x.valueSet.size(), y.valueSet.size());
    for (size_t k = 0; k < x.valueSet.size(); ++k) {
      EXPECT_EQ(x.valueSet[k].index(), y.valueSet[k].index());
      EXPECT_TRUE(scalarEquals(x.valueSet[k], y.valueSet[k]));
    }
    EXPECT_EQ(x.location, y.location);
    EXPECT_EQ(x.layer, y.layer);
    EXPECT_EQ(x.sublayer, y.sublayer);
    EXPECT_EQ(x.heads, y.heads);
    EXPECT_EQ(x.mlpBegin, y.mlpBegin);
    EXPECT_EQ(x.mlpEnd, y.mlpEnd);
    EXPECT_EQ(x.reads, y.reads);
    EXPECT_EQ(x.writes, y.writes);
    EXPECT_EQ(x.args, y.args);
    ASSERT_EQ(x.helpers.size(), y.helpers.size());
    for (size_t k = 0; k < x.helpers.size(); ++k) {
      const HelperBlock &p = x.helpers[k], &q = y.helpers[k];
      EXPECT_EQ(p.role, q.role);
      EXPECT_EQ(p.layer, q.layer);
      EXPECT_EQ(p.sublayer, q.sublayer);
      EXPECT_EQ(p.heads, q.heads);
      EXPECT_EQ(p.mlpBegin, q.mlpBegin);
      EXPECT_EQ(p.mlpEnd, q.mlpEnd);
      EXPECT_EQ(p.reads, q.reads);
      EXPECT_EQ(p.writes, q.writes);
    }
  }
}

TEST(GroundTruth, JsonRoundTrip) {
  Model m = test::mapModel();
  m.nodes[0].valueSet = {Scalar(), Scalar(true), Scalar(int64_t(2)), Scalar(2.0), Scalar(std::string("\"s\"\n"))};
  m.nodes[0].name = "we\\ird \"name\"";
  HelperBlock h;
  h.role = "BOS cleanup";
  h.layer = 0;
  h.sublayer = "mlp";
  h.mlpBegin = 3;
  h.mlpEnd = 4;
  h.reads = {0, 2};
  h.writes = {5};
  m.nodes[1].helpers = {h};
  std::string text = groundTruthJson(m.nodes);
  EXPECT_NE(text.find("\"helpers\": [{\"role\": \"BOS cleanup\", \"layer\": 0, \"sublayer\": \"mlp\", \"heads\": [], "
                      "\"mlp\": [3, 4], \"reads\": [0, 2], \"writes\": [5]}]"),
            std::string::npos)
      << text;
  auto back = parseGroundTruth(text);
  ASSERT_TRUE(bool(back)) << errorOf(std::move(back));
  expectSameNodes(m.nodes, *back);
  EXPECT_EQ(groundTruthJson({}), "[]");
  // Files written before helpers were recorded have no "helpers" key: none.
  std::string old = groundTruthJson(test::mapModel().nodes);
  for (size_t at; (at = old.find(", \"helpers\": []")) != std::string::npos;) old.erase(at, 15);
  ASSERT_EQ(old.find("helpers"), std::string::npos);
  auto fromOld = parseGroundTruth(old);
  ASSERT_TRUE(bool(fromOld)) << errorOf(std::move(fromOld));
  expectSameNodes(test::mapModel().nodes, *fromOld);
  // A helper out of range is named.
  Model bad = test::mapModel();
  h.mlpEnd = bad.cfg.d_mlp + 1;
  bad.nodes[1].helpers = {h};
  std::string why = errorText(validateModel(bad, "m.h5"));
  EXPECT_NE(why.find("helper 'BOS cleanup': MLP neuron range [3, " + std::to_string(bad.cfg.d_mlp + 1) +
                     "] is out of range"),
            std::string::npos)
      << why;
  h.mlpEnd = 4;
  h.sublayer = "embed";
  bad.nodes[1].helpers = {h};
  why = errorText(validateModel(bad, "m.h5"));
  EXPECT_NE(why.find("helper 'BOS cleanup': sublayer 'embed', expected 'attn' or 'mlp'"), std::string::npos) << why;
}

TEST(GroundTruth, RejectsBadEntries) {
  EXPECT_EQ(errorOf(parseGroundTruth("{}")), "expected a JSON array of nodes");
  EXPECT_EQ(errorOf(parseGroundTruth("[1]")), "entry 0: expected an object");
  std::string good = groundTruthJson(test::prevTokenModel().nodes);
  auto replace = [&](const std::string &from, const std::string &to) {
    std::string s = good;
    size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"kind\": \"tokens\"", "\"kynd\": \"tokens\""))),
            "entry 0: missing key 'kind'");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"layer\": -1", "\"layer\": \"-1\""))),
            "entry 0: key 'layer' is a string, expected an integer");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"layer\": -1", "\"layer\": 1e400"))),
            "entry 0: key 'layer' is a number, expected an integer");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"layer\": -1", "\"layer\": 99999999999"))),
            "entry 0: key 'layer' is out of range");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"writes\": [2, 3, 4]", "\"writes\": [2, \"3\"]"))),
            "entry 0: key 'writes' must hold integers");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"mlp\": null", "\"mlp\": [1]"))),
            "entry 0: key 'mlp' must be null or [begin, end]");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"value_set\": [1, 2, 3]", "\"value_set\": [[1], 2, 3]"))),
            "entry 0: key 'value_set' holds an array, expected scalars");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"helpers\": []", "\"helpers\": {}"))),
            "entry 0: key 'helpers' must be an array");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"helpers\": []", "\"helpers\": [3]"))),
            "entry 0: key 'helpers' must hold objects");
  EXPECT_EQ(errorOf(parseGroundTruth(replace("\"helpers\": []", "\"helpers\": [{\"role\": \"tuple\", \"layer\": 0}]"))),
            "entry 0: missing key 'sublayer'");
}

// ----------------------------------------------------------------------------------
// Round trip

void expectSameModel(const Model &a, const Model &b) {
  EXPECT_EQ(a.cfg.n_layers, b.cfg.n_layers);
  EXPECT_EQ(a.cfg.d_model, b.cfg.d_model);
  EXPECT_EQ(a.cfg.n_heads, b.cfg.n_heads);
  EXPECT_EQ(a.cfg.d_head, b.cfg.d_head);
  EXPECT_EQ(a.cfg.d_mlp, b.cfg.d_mlp);
  EXPECT_EQ(a.cfg.d_vocab, b.cfg.d_vocab);
  EXPECT_EQ(a.cfg.d_vocab_out, b.cfg.d_vocab_out);
  EXPECT_EQ(a.cfg.n_ctx, b.cfg.n_ctx);
  EXPECT_EQ(a.cfg.causal, b.cfg.causal);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (auto &[name, t] : a.tensors) {
    auto it = b.tensors.find(name);
    ASSERT_NE(it, b.tensors.end()) << name;
    EXPECT_EQ(t.shape, it->second.shape) << name;
    EXPECT_EQ(t.data, it->second.data) << name; // bit-exact float32
  }
  EXPECT_EQ(a.vocab, b.vocab);
  EXPECT_EQ(a.bosId, b.bosId);
  EXPECT_EQ(a.padId, b.padId);
  EXPECT_EQ(a.intTokens, b.intTokens);
  EXPECT_EQ(a.outputName, b.outputName);
  EXPECT_EQ(a.outputEncoding, b.outputEncoding);
  ASSERT_EQ(a.outputValues.size(), b.outputValues.size());
  for (size_t i = 0; i < a.outputValues.size(); ++i) {
    EXPECT_EQ(a.outputValues[i].index(), b.outputValues[i].index());
    EXPECT_TRUE(scalarEquals(a.outputValues[i], b.outputValues[i]));
  }
  EXPECT_EQ(a.residualLabels, b.residualLabels);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.sourceName, b.sourceName);
  expectSameNodes(a.nodes, b.nodes);
}

// The map model with awkward strings and values everywhere they can go.
Model awkwardModel() {
  Model m = test::mapModel();
  m.vocab[1] = "\xc3\xa9t\xc3\xa9"; // "été"
  m.vocab[2] = "a \"quoted\" \\ token";
  m.source = "# caf\xc3\xa9 \xe2\x9c\x93\nout = map(lambda x: \"\\\\\", prev);\n\ttabs\r\n";
  m.sourceName = "dir/na me.rasp";
  m.outputName = "out\xe2\x9c\x93";
  m.outputValues = {Scalar(std::string("")), Scalar(std::string("\xe2\x9c\x93 \"q\""))};
  m.nodes[3].valueSet = {Scalar(), Scalar(true), Scalar(int64_t(-3)), Scalar(2.0), Scalar(0.1),
                         Scalar(std::string("s"))};
  m.nodes[3].writes = {11, 12, 13, 0, 1}; // one per value other than None
  m.nodes[3].name = "p\"r\\ev";
  m.tensors["embed.W_E"].at(4, 15) = -1.25e-30f;
  m.tensors["blocks.1.mlp.b_out"].at(3) = std::numeric_limits<float>::max();
  m.tensors["blocks.1.mlp.b_out"].at(4) = std::numeric_limits<float>::denorm_min();
  return m;
}

TEST(Hdf5, RoundTripsEveryField) {
  TempDir dir;
  for (const Model &m : {test::prevTokenModel(true), test::mapModel(), test::meanModel(), awkwardModel()}) {
    std::string path = dir.file("model.h5");
    ASSERT_EQ(errorText(writeModel(m, path, {true, {}})), "");
    auto back = readModel(path);
    ASSERT_TRUE(bool(back)) << errorOf(std::move(back));
    expectSameModel(m, *back);
  }
}

TEST(Hdf5, EmptyNumericalOutputValuesAndNoNodes) {
  TempDir dir;
  Model m = test::meanModel();
  m.outputValues.clear();
  m.nodes.clear();
  m.source = "";
  std::string path = dir.file("m.h5");
  // No node places anything on the head that the weights use.
  EXPECT_EQ(errorText(writeModel(m, path)),
            path + ": dataset 'metadata/ground_truth' places no node on head 0 of layer 0, whose weights are nonzero");
  m.tensors["blocks.0.attn.W_V"].at(0, 0, 0) = 0;
  m.tensors["blocks.0.attn.W_O"].at(0, 0, 2) = 0;
  ASSERT_EQ(errorText(writeModel(m, path)), "");
  auto back = readModel(path);
  ASSERT_TRUE(bool(back)) << errorOf(std::move(back));
  expectSameModel(m, *back);
}

// The same model gives the same bytes (no timestamps): files can be compared and
// cached by content.
TEST(Hdf5, WritingIsDeterministic) {
  TempDir dir;
  std::string a = dir.file("a.h5"), b = dir.file("b.h5");
  ASSERT_EQ(errorText(writeModel(test::prevTokenModel(true), a)), "");
  ASSERT_EQ(errorText(writeModel(test::prevTokenModel(true), b)), "");
  auto bytes = [](const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  EXPECT_GT(bytes(a).size(), 1000u);
  EXPECT_EQ(bytes(a), bytes(b));
}

// A tensor over 1 GiB is split into chunks of at most 1 GiB (a chunk holds at most
// 4 GiB), so that it keeps its checksum.
TEST(Hdf5, ChunksOfLargeTensors) {
  EXPECT_EQ(raspc::h5::chunkShape({10, 7}, 4, 1000), (std::vector<hsize_t>{10, 7}));
  EXPECT_EQ(raspc::h5::chunkShape({10, 7}, 4, 80), (std::vector<hsize_t>{5, 4}));
  EXPECT_EQ(raspc::h5::chunkShape({1, 1}, 4, 1), (std::vector<hsize_t>{1, 1}));
  EXPECT_EQ(raspc::h5::chunkShape({50257, 768 * 40}, 4, hsize_t(1) << 30), (std::vector<hsize_t>{12565, 15360}));
}

TEST(Hdf5, WriteIsAtomicAndValidates) {
  TempDir dir;
  std::string path = dir.file("model.h5");
  ASSERT_EQ(errorText(writeModel(test::prevTokenModel(), path, {true, {}})), "");
  // An invalid model is refused and the existing file is left untouched.
  Model bad = test::mapModel();
  bad.tensors.erase("blocks.1.attn.W_K");
  EXPECT_EQ(errorText(writeModel(bad, path)), path + ": missing tensor 'blocks.1.attn.W_K'");
  auto back = readModel(path);
  ASSERT_TRUE(bool(back));
  EXPECT_EQ(back->outputName, "prev");
  // Overwriting replaces the file, with force only.
  EXPECT_EQ(errorText(writeModel(test::mapModel(), path)), "'" + path + "' exists; pass --force to overwrite it");
  ASSERT_EQ(errorText(writeModel(test::mapModel(), path, {true, {}})), "");
  back = readModel(path);
  ASSERT_TRUE(bool(back));
  EXPECT_EQ(back->outputName, "out");
  // An unwritable place.
  std::string nowhere = dir.file("no/such/dir/m.h5");
  EXPECT_EQ(errorText(writeModel(test::mapModel(), nowhere)), nowhere + ": cannot write: No such file or directory");
}

TEST(Hdf5, ValidateModelNamesTheProblem) {
  auto check = [](const std::function<void(Model &)> &edit, const std::string &error) {
    Model m = test::mapModel();
    edit(m);
    EXPECT_EQ(errorText(validateModel(m, "m.h5")), error);
  };
  check([](Model &) {}, "");
  check([](Model &m) { m.tensors["blocks.0.attn.W_Q"] = Tensor({2, 10, 6}); },
        "m.h5: tensor 'blocks.0.attn.W_Q' has shape [2, 10, 6], expected [2, 16, 6]");
  check([](Model &m) { m.tensors["blocks.0.mlp.W_in"].at(3, 2) = std::nanf(""); },
        "m.h5: tensor 'blocks.0.mlp.W_in' has a non-finite value (nan) at [3, 2]");
  check([](Model &m) { m.tensors["extra"] = Tensor({1}); }, "m.h5: unexpected tensor 'extra'");
  check([](Model &m) { m.tensors["unembed.b_U"].data.pop_back(); },
        "m.h5: tensor 'unembed.b_U' has 1 values for shape [2]");
  check([](Model &m) { m.cfg.d_model = 0; }, "m.h5: config d_model is 0, expected a value in [1, 16777216]");
  check([](Model &m) { m.vocab.pop_back(); }, "m.h5: vocab has 4 entries, expected d_vocab = 5");
  check([](Model &m) { m.vocab[2] = "1"; }, "m.h5: vocab has '1' twice");
  check([](Model &m) { m.bosId = 1; }, "m.h5: vocab entry 1 (bos_id) is '1', expected '<bos>'");
  check([](Model &m) { m.padId = 7; }, "m.h5: pad_id 7 is out of range");
  check([](Model &m) { m.residualLabels.pop_back(); },
        "m.h5: residual_labels has 15 entries, expected d_model = 16");
  check([](Model &m) { m.outputValues.pop_back(); }, "m.h5: output_values has 1 entries, expected d_vocab_out = 2");
  check([](Model &m) { m.outputEncoding = "onehot"; },
        "m.h5: output_encoding is 'onehot', expected 'categorical' or 'numerical'");
  check([](Model &m) { m.nodes[1].id = 0; }, "m.h5: ground truth has node id 0 twice");
  check([](Model &m) { m.nodes[3].args = {2, 17}; }, "m.h5: ground truth node 3 ('prev'): argument 17 is not a node");
  check([](Model &m) { m.nodes[3].layer = 2; },
        "m.h5: ground truth node 3 ('prev'): layer 2 is out of range (n_layers = 2)");
  check([](Model &m) { m.nodes[2].heads = {2}; }, "m.h5: ground truth node 2: head 2 is out of range (n_heads = 2)");
  check([](Model &m) { m.nodes[4].mlpEnd = 5; },
        "m.h5: ground truth node 4 ('out'): MLP neuron range [0, 5] is out of range (d_mlp = 4)");
  check([](Model &m) { m.nodes[4].writes = {14, 16}; },
        "m.h5: ground truth node 4 ('out'): residual direction 16 is out of range (d_model = 16)");
  check([](Model &m) { m.nodes[4].writes = {14}; }, "m.h5: ground truth node 4 ('out'): 1 written directions for 2 values");
  check([](Model &m) { m.nodes[4].sublayer = "ffn"; }, "m.h5: ground truth node 4 ('out'): unknown sublayer 'ffn'");
  // Metadata that contradicts the tensors.
  check([](Model &m) { m.outputEncoding = "numerical"; },
        "m.h5: attribute 'metadata/d_vocab_out' is 2, expected 1 for output_encoding 'numerical'");
  check([](Model &m) { m.nodes.clear(); },
        "m.h5: dataset 'metadata/ground_truth' places no node on head 0 of layer 0, whose weights are nonzero");
  check([](Model &m) { m.nodes[4].mlpEnd = 2; },
        "m.h5: dataset 'metadata/ground_truth' places no node on MLP neuron 2 of layer 0, whose weights are nonzero");
  Model mean = test::meanModel();
  mean.nodes[1].encoding = "categorical";
  EXPECT_EQ(errorText(validateModel(mean, "m.h5")),
            "m.h5: attribute 'metadata/output_encoding' is 'numerical' but the output node 1 ('frac') is categorical");
}

// ----------------------------------------------------------------------------------
// h5py reads the file with nothing of ours

bool havePythonH5py() {
  static int ok = -1;
  if (ok < 0) ok = test::run("/usr/bin/python3 -c 'import h5py, numpy'").exitCode == 0;
  return ok == 1;
}

TEST(Hdf5, H5pyReadsTheFile) {
  if (!havePythonH5py()) GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy is not available";
  TempDir dir;
  std::string path = dir.file("model.h5");
  ASSERT_EQ(errorText(writeModel(awkwardModel(), path, {true, {}})), "");
  std::string script = dir.file("read.py");
  std::ofstream(script) << R"(import sys, json, h5py
f = h5py.File(sys.argv[1], "r")
print(sorted(k for k in f.keys() if k != "metadata")[:3])
q = f["blocks.0.attn.W_Q"]
print(q.dtype, q.shape, round(float(q[0, 5, 0]), 3), f["embed.W_E"][4, 15], f["blocks.1.mlp.W_in"].shape)
md = f["metadata"]
print(sorted(md.attrs.keys()))
print(md.attrs["d_model"], md.attrs["n_ctx"], md.attrs["causal"], md.attrs["bos_id"], md.attrs["pad_id"],
      md.attrs["format_version"], md.attrs["output_encoding"].decode(), md.attrs["output_name"].decode())
print([v.decode() for v in md["vocab"][()]])
print(md["vocab"].asstr()[()].tolist() == [v.decode() for v in md["vocab"][()]])
print(len(md["residual_labels"][()]), md["residual_labels"][14].decode())
print([json.loads(v) for v in md["output_values"][()]])
gt = json.loads(md["ground_truth"][0])
print(len(gt), gt[3]["name"], gt[3]["value_set"], gt[4]["mlp"], gt[3]["mlp"], gt[4]["writes"], gt[3]["location"])
print(md["source"].shape, md["source"].asstr()[0] == md["source"][0].decode(), md["source"][0].decode().splitlines()[0])
)";
  auto r = test::run("/usr/bin/python3 " + script + " " + path);
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(r.out,
            "['blocks.0.attn.W_K', 'blocks.0.attn.W_O', 'blocks.0.attn.W_Q']\n"
            "float32 (2, 16, 6) 244.949 -1.25e-30 (16, 4)\n"
            "['bos_id', 'causal', 'd_head', 'd_mlp', 'd_model', 'd_vocab', 'd_vocab_out', 'format_version', "
            "'int_tokens', 'n_ctx', 'n_heads', 'n_layers', 'output_encoding', 'output_name', 'pad_id', "
            "'source_name']\n"
            "16 6 0 0 4 2 categorical out\xe2\x9c\x93\n"
            "['<bos>', '\xc3\xa9t\xc3\xa9', 'a \"quoted\" \\\\ token', '3', '<pad>']\n"
            "True\n"
            "16 out:x\n"
            "['', '\xe2\x9c\x93 \"q\"']\n"
            "5 p\"r\\ev [None, True, -3, 2.0, 0.1, 's'] [0, 3] None [14, 15] prev.rasp:1:8\n"
            "(1,) True # caf\xc3\xa9 \xe2\x9c\x93\n");
}

// ----------------------------------------------------------------------------------
// Malformed files

// Opens `path` read-write with the HDF5 C API and runs `edit` on it.
void editFile(const std::string &path, const std::function<void(hid_t)> &edit) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  edit(f);
  ASSERT_GE(H5Fclose(f), 0);
}

// A dataset creation property list as raspc's writer makes them (the reader requires a
// checksum): one chunk of `shape` with fletcher32, or the default for no elements.
hid_t checksummed(const std::vector<hsize_t> &shape) {
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  size_t n = 1;
  for (hsize_t x : shape) n *= x;
  if (n > 0 && !shape.empty()) {
    H5Pset_chunk(dcpl, int(shape.size()), shape.data());
    H5Pset_fletcher32(dcpl);
  }
  return dcpl;
}

// Replaces dataset `name` by one of `type` and `shape`, filled with zeros (checksummed
// unless `checksum` is false).
void replaceDataset(hid_t f, const std::string &name, hid_t type, const std::vector<hsize_t> &shape,
                    bool checksum = true) {
  if (H5Lexists(f, name.c_str(), H5P_DEFAULT) > 0) {
    ASSERT_GE(H5Ldelete(f, name.c_str(), H5P_DEFAULT), 0);
  }
  hid_t sp = H5Screate_simple(int(shape.size()), shape.data(), nullptr);
  hid_t dcpl = checksum ? checksummed(shape) : H5Pcreate(H5P_DATASET_CREATE);
  hid_t d = H5Dcreate2(f, name.c_str(), type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  ASSERT_GE(d, 0);
  size_t n = 1;
  for (hsize_t x : shape) n *= x;
  std::vector<double> zeros(n, 0.0);
  if (n) {
    ASSERT_GE(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data()), 0);
  }
  H5Dclose(d);
  H5Sclose(sp);
}

void setFloat(hid_t f, const std::string &name, size_t index, float value) {
  hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
  ASSERT_GE(d, 0);
  hid_t sp = H5Dget_space(d);
  std::vector<float> data(size_t(H5Sget_simple_extent_npoints(sp)));
  ASSERT_GE(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()), 0);
  data.at(index) = value;
  ASSERT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()), 0);
  H5Sclose(sp);
  H5Dclose(d);
}

void replaceStringDataset(hid_t g, const std::string &name, const std::vector<std::string> &values, bool scalar) {
  ASSERT_GE(H5Ldelete(g, name.c_str(), H5P_DEFAULT), 0);
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  hsize_t n = values.size();
  hid_t sp = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr);
  hid_t d = H5Dcreate2(g, name.c_str(), t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(d, 0);
  std::vector<const char *> p;
  for (auto &s : values) p.push_back(s.c_str());
  if (!p.empty()) {
    ASSERT_GE(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()), 0);
  }
  H5Dclose(d);
  H5Sclose(sp);
  H5Tclose(t);
}

void setIntAttr(hid_t g, const std::string &name, hid_t type, double value) {
  if (H5Aexists(g, name.c_str()) > 0) {
    ASSERT_GE(H5Adelete(g, name.c_str()), 0);
  }
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(g, name.c_str(), type, sp, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(a, 0);
  ASSERT_GE(H5Awrite(a, H5T_NATIVE_DOUBLE, &value), 0);
  H5Aclose(a);
  H5Sclose(sp);
}

class Malformed : public ::testing::Test {
protected:
  TempDir dir;
  std::string path = dir.file("model.h5");
  void SetUp() override { ASSERT_EQ(errorText(writeModel(test::mapModel(), path, {true, {}})), ""); }
  std::string readError() { return errorOf(readModel(path)); }
  void withMetadata(const std::function<void(hid_t)> &edit) {
    editFile(path, [&](hid_t f) {
      hid_t g = H5Gopen2(f, "metadata", H5P_DEFAULT);
      ASSERT_GE(g, 0);
      edit(g);
      H5Gclose(g);
    });
  }
};

TEST_F(Malformed, MissingTensor) {
  editFile(path, [](hid_t f) { ASSERT_GE(H5Ldelete(f, "blocks.1.mlp.W_out", H5P_DEFAULT), 0); });
  EXPECT_EQ(readError(), path + ": missing tensor 'blocks.1.mlp.W_out'");
}

TEST_F(Malformed, WrongShape) {
  editFile(path, [](hid_t f) { replaceDataset(f, "blocks.0.attn.W_Q", H5T_IEEE_F32LE, {2, 10, 6}); });
  EXPECT_EQ(readError(), path + ": tensor 'blocks.0.attn.W_Q' has shape [2, 10, 6], expected [2, 16, 6]");
  editFile(path, [](hid_t f) { replaceDataset(f, "unembed.b_U", H5T_IEEE_F32BE, {2, 1}); });
  EXPECT_EQ(readError(), path + ": tensor 'blocks.0.attn.W_Q' has shape [2, 10, 6], expected [2, 16, 6]");
  editFile(path, [](hid_t f) { replaceDataset(f, "blocks.0.attn.W_Q", H5T_IEEE_F32BE, {2, 16, 6}); });
  EXPECT_EQ(readError(), path + ": tensor 'unembed.b_U' has shape [2, 1], expected [2]");
}

TEST_F(Malformed, WrongDtype) {
  editFile(path, [](hid_t f) { replaceDataset(f, "embed.W_E", H5T_STD_I64LE, {5, 16}); });
  EXPECT_EQ(readError(), path + ": tensor 'embed.W_E' is int64, expected float32");
  editFile(path, [](hid_t f) { replaceDataset(f, "embed.W_E", H5T_IEEE_F64LE, {5, 16}); });
  EXPECT_EQ(readError(), path + ": tensor 'embed.W_E' is float64, expected float32");
  editFile(path, [](hid_t f) { replaceDataset(f, "embed.W_E", H5T_STD_U8LE, {5, 16}); });
  EXPECT_EQ(readError(), path + ": tensor 'embed.W_E' is uint8, expected float32");
  // Big-endian float32 is float32.
  editFile(path, [](hid_t f) { replaceDataset(f, "embed.W_E", H5T_IEEE_F32BE, {5, 16}); });
  EXPECT_EQ(readError(), "<no error>");
  // A group where a tensor should be.
  editFile(path, [](hid_t f) {
    ASSERT_GE(H5Ldelete(f, "embed.W_E", H5P_DEFAULT), 0);
    H5Gclose(H5Gcreate2(f, "embed.W_E", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  });
  EXPECT_EQ(readError(), path + ": tensor 'embed.W_E' is not a dataset");
}

TEST_F(Malformed, NonFiniteWeights) {
  editFile(path, [](hid_t f) { setFloat(f, "embed.W_E", 2 * 16 + 3, std::nanf("")); });
  EXPECT_EQ(readError(), path + ": tensor 'embed.W_E' has a non-finite value (nan) at [2, 3]");
  editFile(path, [](hid_t f) {
    setFloat(f, "embed.W_E", 2 * 16 + 3, 0);
    setFloat(f, "blocks.1.attn.W_O", 1 * 6 * 16 + 5 * 16 + 15, -std::numeric_limits<float>::infinity());
  });
  EXPECT_EQ(readError(), path + ": tensor 'blocks.1.attn.W_O' has a non-finite value (-inf) at [1, 5, 15]");
}

TEST_F(Malformed, TruncatedFile) {
  auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  EXPECT_EQ(readError(), path + ": truncated HDF5 file");
  std::filesystem::resize_file(path, 100);
  EXPECT_EQ(readError(), path + ": truncated HDF5 file");
  std::filesystem::resize_file(path, 4);
  EXPECT_EQ(readError(), path + ": not an HDF5 file");
}

TEST_F(Malformed, NotHdf5) {
  std::ofstream(path, std::ios::trunc) << "# raspc: --vocab \"1 2 3\"\nout = tokens;\n";
  EXPECT_EQ(readError(), path + ": not an HDF5 file");
  std::ofstream(path, std::ios::trunc);
  EXPECT_EQ(readError(), path + ": not an HDF5 file");
  std::string missing = dir.file("missing.h5");
  EXPECT_EQ(errorOf(readModel(missing)), missing + ": cannot open: No such file or directory");
  EXPECT_EQ(errorOf(readModel(dir.file(""))), dir.file("") + ": is a directory");
}

TEST_F(Malformed, MissingMetadataAttribute) {
  withMetadata([](hid_t g) { ASSERT_GE(H5Adelete(g, "d_model"), 0); });
  EXPECT_EQ(readError(), path + ": missing attribute 'metadata/d_model'");
}

TEST_F(Malformed, BadMetadataAttributes) {
  withMetadata([](hid_t g) { setIntAttr(g, "n_ctx", H5T_IEEE_F64LE, 6); });
  EXPECT_EQ(readError(), path + ": attribute 'metadata/n_ctx' is float64, expected an integer");
  withMetadata([](hid_t g) { setIntAttr(g, "n_ctx", H5T_STD_I32LE, -6); });
  EXPECT_EQ(readError(), path + ": attribute 'metadata/n_ctx' is -6, expected a value in [1, 16777216]");
  withMetadata([](hid_t g) {
    setIntAttr(g, "n_ctx", H5T_STD_U8LE, 6); // any integer type will do
    setIntAttr(g, "format_version", H5T_STD_I64LE, 1);
  });
  EXPECT_EQ(readError(), path + ": unsupported format_version 1 (this raspc reads version 2)");
  withMetadata([](hid_t g) {
    setIntAttr(g, "format_version", H5T_STD_I64LE, 2);
    setIntAttr(g, "output_encoding", H5T_STD_I64LE, 1);
  });
  EXPECT_EQ(readError(), path + ": attribute 'metadata/output_encoding' is int64, expected a string");
  withMetadata([](hid_t g) { ASSERT_GE(H5Adelete(g, "output_encoding"), 0); });
  EXPECT_EQ(readError(), path + ": missing attribute 'metadata/output_encoding'");
}

TEST_F(Malformed, HugeDeclaredSizes) {
  withMetadata([](hid_t g) { setIntAttr(g, "d_mlp", H5T_STD_I64LE, 1 << 24); });
  EXPECT_EQ(readError(), path + ": the configuration asks for 1107298138 parameters, more than the limit of "
                                "268435456 (raise it with --max-params)");
  withMetadata([](hid_t g) { setIntAttr(g, "d_mlp", H5T_STD_I64LE, 1 << 20); });
  EXPECT_EQ(readError(), path + ": tensor 'blocks.0.mlp.W_in' has shape [16, 4], expected [16, 1048576]");
}

TEST_F(Malformed, BadMetadataDatasets) {
  withMetadata([](hid_t g) { replaceStringDataset(g, "vocab", {"<bos>", "1", "2", "<pad>"}, false); });
  EXPECT_EQ(readError(), path + ": dataset 'metadata/vocab' has 4 entries, expected 5");
  withMetadata([](hid_t g) { replaceStringDataset(g, "vocab", {"<bos>", "1", "2", "2", "<pad>"}, false); });
  EXPECT_EQ(readError(), path + ": vocab has '2' twice");
  withMetadata([](hid_t g) {
    replaceStringDataset(g, "vocab", {"<bos>", "1", "2", "3", "<pad>"}, false);
    replaceStringDataset(g, "output_values", {"\"x\"", "[1]"}, false);
  });
  EXPECT_EQ(readError(), path + ": dataset 'metadata/output_values' entry 1: expected a scalar (null, boolean, "
                                "number or string), got an array");
  withMetadata([](hid_t g) {
    replaceStringDataset(g, "output_values", {"\"x\"", "\"y\""}, false);
    replaceStringDataset(g, "ground_truth", {"[{\"id\": 1,]"}, true);
  });
  EXPECT_EQ(readError(),
            path + ": metadata/ground_truth: invalid JSON at offset 10: expected a string key in an object");
  withMetadata([](hid_t g) { ASSERT_GE(H5Ldelete(g, "ground_truth", H5P_DEFAULT), 0); });
  EXPECT_EQ(readError(), path + ": missing dataset 'metadata/ground_truth'");
  withMetadata([](hid_t g) { replaceDataset(g, "ground_truth", H5T_IEEE_F64LE, {1}); });
  EXPECT_EQ(readError(), path + ": dataset 'metadata/ground_truth' is float64, expected strings");
  withMetadata([](hid_t g) { replaceStringDataset(g, "ground_truth", {"[]", "[]"}, false); });
  EXPECT_EQ(readError(), path + ": dataset 'metadata/ground_truth' is not a single string");
  // An empty ground truth does not describe a model whose heads have weights.
  withMetadata([](hid_t g) { replaceStringDataset(g, "ground_truth", {"[]"}, false); });
  EXPECT_EQ(readError(),
            path + ": dataset 'metadata/ground_truth' places no node on head 0 of layer 0, whose weights are nonzero");
  withMetadata([](hid_t g) {
    replaceStringDataset(g, "ground_truth", {groundTruthJson(test::mapModel().nodes)}, false);
  });
  EXPECT_EQ(readError(), "<no error>"); // a one-element array of variable-length strings will do
}

TEST_F(Malformed, MissingMetadataGroup) {
  editFile(path, [](hid_t f) { ASSERT_GE(H5Ldelete(f, "metadata", H5P_DEFAULT), 0); });
  EXPECT_EQ(readError(), path + ": missing group 'metadata'");
}

// Fixed-length strings (as some writers produce) are read too.
TEST_F(Malformed, FixedLengthStringsAreAccepted) {
  withMetadata([](hid_t g) {
    ASSERT_GE(H5Ldelete(g, "vocab", H5P_DEFAULT), 0);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 6);
    hsize_t n = 5;
    hid_t sp = H5Screate_simple(1, &n, nullptr);
    hid_t dcpl = checksummed({n});
    hid_t d = H5Dcreate2(g, "vocab", t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    char buf[30] = {};
    const char *v[] = {"<bos>", "1", "2", "3", "<pad>"};
    for (int i = 0; i < 5; ++i) std::strncpy(buf + 6 * i, v[i], 6);
    ASSERT_GE(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
  });
  auto m = readModel(path);
  ASSERT_TRUE(bool(m)) << errorOf(std::move(m));
  EXPECT_EQ(m->vocab, (std::vector<std::string>{"<bos>", "1", "2", "3", "<pad>"}));
}

// A file cut short anywhere is an error, never a crash.
TEST_F(Malformed, TruncatedAnywhere) {
  auto size = std::filesystem::file_size(path);
  std::string good;
  {
    std::ifstream in(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (size_t cut = 0; cut < size; cut += 1 + size / 97) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << good.substr(0, cut);
    std::string e = readError();
    EXPECT_TRUE(e == path + ": truncated HDF5 file" || e == path + ": not an HDF5 file") << cut << ": " << e;
  }
}

// Corrupting bytes anywhere never crashes the reader: it either reads a valid model
// or reports an error naming the file. The reads run in a child process: libhdf5 leaks
// a little memory on some of its error paths, which LeakSanitizer would report (our
// own error paths are leak-checked by the other Malformed tests).
TEST_F(Malformed, CorruptedBytesNeverCrash) {
  std::string good;
  {
    std::ifstream in(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(good.size(), 1000u);
  const char *env = std::getenv("RASPC_CORRUPT_ITERATIONS");
  const int iterations = env ? std::atoi(env) : 300;
  std::fflush(nullptr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::mt19937 gen(1234);
    int errors = 0;
    for (int i = 0; i < iterations; ++i) {
      std::string bad = good;
      int flips = 1 + int(gen() % 4);
      for (int k = 0; k < flips; ++k) bad[gen() % bad.size()] ^= char(1 + gen() % 255);
      std::ofstream(path, std::ios::binary | std::ios::trunc) << bad;
      auto m = readModel(path);
      if (!m) {
        std::string e = llvm::toString(m.takeError());
        if (e.rfind(path + ": ", 0) != 0) {
          std::fprintf(stderr, "error without the file name: %s\n", e.c_str());
          _exit(2);
        }
        ++errors;
      }
    }
    _exit(errors > 0 ? 0 : 3);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_FALSE(WIFSIGNALED(status)) << "the reader died of signal " << WTERMSIG(status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

// ----------------------------------------------------------------------------------
// Validate before allocating; checksums; files opened from memory

// Replaces tensor `name` by a chunked, checksummed float32 dataset of `shape` with
// chunks of `chunk`, writing only the first chunk when `writeFirst` (else nothing: the
// dataset holds fill values only).
void declareTensor(hid_t f, const std::string &name, const std::vector<hsize_t> &shape,
                   const std::vector<hsize_t> &chunk, bool writeFirst) {
  ASSERT_GE(H5Ldelete(f, name.c_str(), H5P_DEFAULT), 0);
  hid_t sp = H5Screate_simple(int(shape.size()), shape.data(), nullptr);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, int(chunk.size()), chunk.data());
  H5Pset_fletcher32(dcpl);
  hid_t d = H5Dcreate2(f, name.c_str(), H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  ASSERT_GE(d, 0);
  if (writeFirst) {
    std::vector<hsize_t> start(shape.size(), 0);
    size_t n = 1;
    for (hsize_t x : chunk) n *= x;
    std::vector<float> ones(n, 1.0f);
    hid_t mem = H5Screate_simple(int(chunk.size()), chunk.data(), nullptr);
    ASSERT_GE(H5Sselect_hyperslab(sp, H5S_SELECT_SET, start.data(), nullptr, chunk.data(), nullptr), 0);
    ASSERT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, mem, sp, H5P_DEFAULT, ones.data()), 0);
    H5Sclose(mem);
  }
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(sp);
}

// A file whose metadata declares big sizes and whose datasets hold fill values (or one
// chunk) is refused before the tensors are allocated, naming the tensor.
TEST_F(Malformed, DeclaredSizesBeyondTheStoredBytes) {
  withMetadata([](hid_t g) { setIntAttr(g, "d_mlp", H5T_STD_I64LE, 1 << 20); });
  editFile(path, [](hid_t f) { declareTensor(f, "blocks.0.mlp.W_in", {16, 1 << 20}, {16, 1 << 16}, false); });
  EXPECT_EQ(readError(), path + ": tensor 'blocks.0.mlp.W_in' has no stored data (never written)");
  editFile(path, [](hid_t f) { declareTensor(f, "blocks.0.mlp.W_in", {16, 1 << 20}, {1, 1024}, true); });
  EXPECT_EQ(readError(), path + ": tensor 'blocks.0.mlp.W_in' declares 67108864 bytes but stores only 4100 (more "
                                "than 1100:1 compression is not genuine)");
}

// The reader requires a checksum on every dataset it reads.
TEST_F(Malformed, DatasetsWithoutChecksum) {
  editFile(path, [](hid_t f) { replaceDataset(f, "embed.W_E", H5T_IEEE_F32LE, {5, 16}, false); });
  EXPECT_EQ(readError(), path + ": tensor 'embed.W_E' has no checksum");
  editFile(path, [](hid_t f) { replaceDataset(f, "embed.W_E", H5T_IEEE_F32LE, {5, 16}); });
  EXPECT_EQ(readError(), "<no error>");
  // Format 1 wrote the source as an unchecksummed scalar.
  withMetadata([](hid_t g) {
    ASSERT_GE(H5Ldelete(g, "source", H5P_DEFAULT), 0);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 4);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(g, "source", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, "out\0"), 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
  });
  EXPECT_EQ(readError(), path + ": dataset 'metadata/source' has no checksum");
}

std::string fileBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void writeBytes(const std::string &path, const std::string &bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// One flipped bit in the ground truth or the source is a checksum error, never a
// silently different model.
TEST_F(Malformed, FlippedBitInGroundTruthOrSource) {
  const std::string good = fileBytes(path);
  size_t at = good.find("prev.rasp:1:8"); // a node's location: only in the ground truth
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(good.find("prev.rasp:1:8", at + 1), std::string::npos);
  std::string bad = good;
  bad[at] ^= 0x02; // "prev" -> "rrev"
  writeBytes(path, bad);
  EXPECT_EQ(readError(), path + ": dataset 'metadata/ground_truth' fails its checksum (corrupt data)");
  at = good.find("out = map(lambda x");
  ASSERT_NE(at, std::string::npos);
  bad = good;
  bad[at] ^= 0x01;
  writeBytes(path, bad);
  EXPECT_EQ(readError(), path + ": dataset 'metadata/source' fails its checksum (corrupt data)");
}

// Files are read whole through files::readRegularFile: a FIFO is refused at once.
TEST(Hdf5, ReadsRegularFilesOnlyAndFromMemory) {
  TempDir dir;
  std::string fifo = dir.file("fifo.h5");
  if (::mkfifo(fifo.c_str(), 0600) != 0) GTEST_SKIP() << "cannot create a FIFO here";
  EXPECT_EQ(errorOf(readModel(fifo)), fifo + ": is not a regular file (a FIFO)");
  std::string path = dir.file("m.h5");
  ASSERT_EQ(errorText(writeModel(test::mapModel(), path)), "");
  auto m = readModelFromImage(fileBytes(path), "bytes");
  ASSERT_TRUE(bool(m)) << errorOf(std::move(m));
  EXPECT_EQ(m->outputName, "out");
  EXPECT_EQ(errorOf(readModelFromImage("not hdf5", "bytes")), "bytes: not an HDF5 file");
  EXPECT_EQ(errorOf(readModelFromImage(fileBytes(path).substr(0, 2000), "bytes")), "bytes: truncated HDF5 file");
  // The reader's limit on parameters is an argument (mapModel has 2146).
  EXPECT_EQ(errorOf(readModel(path, 1000)),
            path + ": the configuration asks for 2146 parameters, more than the limit of 1000 (raise it with "
                   "--max-params)");
}

// Rewrites a raspc model file with h5py: variable-length strings (h5py's default for
// str) in every string attribute and dataset, checksummed tensors, the 1.10 format
// (or h5py's default format with "earliest").
const char *kH5pyRewrite = R"(import sys, h5py, numpy as np
src, dst, libver = sys.argv[1], sys.argv[2], sys.argv[3]
with h5py.File(src, "r") as f, h5py.File(dst, "w", libver=("earliest" if libver == "earliest" else (libver, libver))) as g:
    for k in f:
        if k != "metadata":
            a = f[k][()]
            g.create_dataset(k, data=a, chunks=a.shape if a.size else None, fletcher32=bool(a.size))
    md, gm = f["metadata"], g.create_group("metadata")
    for k, v in md.attrs.items():
        gm.attrs[k] = v.decode() if isinstance(v, bytes) else v
    for k in md:
        gm.create_dataset(k, data=[x.decode() for x in md[k][()]], dtype=h5py.string_dtype())
)";

// Variable-length strings as h5py writes them are read; a damaged global heap is an
// error naming the attribute, never a crash (libhdf5 1.10 follows a heap reference
// unchecked: SIGSEGV in H5HG_read).
TEST(Hdf5, H5pyVariableLengthStrings) {
  if (!havePythonH5py()) GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy is not available";
  TempDir dir;
  std::string ours = dir.file("ours.h5"), theirs = dir.file("theirs.h5"), script = dir.file("rewrite.py");
  ASSERT_EQ(errorText(writeModel(test::mapModel(), ours)), "");
  std::ofstream(script) << kH5pyRewrite;
  auto r = test::run("/usr/bin/python3 " + script + " " + ours + " " + theirs + " v110");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto m = readModel(theirs);
  ASSERT_TRUE(bool(m)) << errorOf(std::move(m));
  Model want = test::mapModel();
  EXPECT_EQ(m->outputName, want.outputName);
  EXPECT_EQ(m->vocab, want.vocab);
  EXPECT_EQ(m->source, want.source);
  EXPECT_EQ(groundTruthJson(m->nodes), groundTruthJson(want.nodes));

  // The attributes' strings are the first objects of the first heap collection.
  const std::string good = fileBytes(theirs);
  size_t gcol = good.find("GCOL");
  ASSERT_NE(gcol, std::string::npos);
  size_t obj = gcol + 16;
  ASSERT_EQ(good[obj], 1); // object 1
  std::string bad = good;
  bad[obj + 8 + 5] = 1; // object 1's size: 2^40 bytes (the crash: a 2^40-byte memcpy)
  writeBytes(theirs, bad);
  EXPECT_EQ(errorOf(readModel(theirs)),
            theirs + fmt::format(": attribute 'metadata/output_name' has a damaged variable-length string (entry 0: "
                                 "heap collection at {} has an object past its end)",
                                 gcol));
  bad = good;
  bad[obj] = 7; // object 1 is gone (libhdf5 indexes its object table with it unchecked)
  writeBytes(theirs, bad);
  EXPECT_EQ(errorOf(readModel(theirs)),
            theirs + fmt::format(": attribute 'metadata/output_encoding' has a damaged variable-length string (entry "
                                 "0: no object 1 in the heap collection at {})",
                                 gcol));

  // h5py's default format has no metadata checksums: refused with the way out.
  r = test::run("/usr/bin/python3 " + script + " " + ours + " " + theirs + " earliest");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(errorOf(readModel(theirs)), theirs + ": the file has no metadata checksums (HDF5 superblock version 0): "
                                                 "write it with libver 'v110'");
}

} // namespace
