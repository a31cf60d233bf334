// The safetensors export: the file's layout as the format defines it (read back here
// with the JSON reader, byte by byte), the tensors equal to the model's, the metadata
// equal to the HDF5 file's, and the output rules of every file raspc writes.
#include "TestModels.h"
#include "TestUtil.h"
#include "backend/Hdf5.h"
#include "backend/Json.h"
#include "backend/Safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

using namespace raspc;
using raspc::test::TempDir;

namespace {

std::string errorText(llvm::Error e) { return llvm::toString(std::move(e)); }

std::string readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct Parsed {
  json::Value header;
  std::string data; // the bytes after the header
  size_t headerLen = 0;
};

// Splits a safetensors file as its specification says: a little-endian u64, that many
// bytes of JSON, the data.
Parsed parse(const std::string &bytes) {
  Parsed p;
  EXPECT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
  EXPECT_LE(8 + n, bytes.size());
  p.headerLen = size_t(n);
  auto v = json::parse(std::string_view(bytes).substr(8, size_t(n)));
  EXPECT_TRUE(bool(v)) << (v ? "" : llvm::toString(v.takeError()));
  if (v) p.header = std::move(*v);
  p.data = bytes.substr(size_t(8 + n));
  return p;
}

std::string metadata(const Parsed &p, const std::string &key) {
  const json::Value *md = p.header.get("__metadata__");
  if (!md) return "<no __metadata__>";
  const json::Value *v = md->get(key);
  if (!v) return "<no key " + key + ">";
  if (v->kind != json::Value::String) return "<not a string>";
  return v->s;
}

void expectMatchesModel(const Model &m, const std::string &bytes) {
  Parsed p = parse(bytes);
  EXPECT_EQ((8 + p.headerLen) % 8, 0u); // data 8-byte aligned
  ASSERT_EQ(p.header.kind, json::Value::Object);
  // Every key is a tensor of the model or __metadata__, every tensor is there.
  EXPECT_EQ(p.header.keys.size(), m.tensors.size() + 1);
  // The tensors lie back to back in expectedTensors order, covering the data exactly.
  uint64_t next = 0;
  for (const auto &[name, shape] : expectedTensors(m.cfg)) {
    SCOPED_TRACE(name);
    const json::Value *t = p.header.get(name);
    ASSERT_NE(t, nullptr);
    ASSERT_NE(t->get("dtype"), nullptr);
    EXPECT_EQ(t->get("dtype")->s, "F32");
    const json::Value *s = t->get("shape");
    ASSERT_NE(s, nullptr);
    std::vector<int64_t> got;
    for (const json::Value &d : s->array) got.push_back(d.i);
    EXPECT_EQ(got, shape);
    const json::Value *off = t->get("data_offsets");
    ASSERT_TRUE(off && off->array.size() == 2);
    uint64_t b = uint64_t(off->array[0].i), e = uint64_t(off->array[1].i);
    EXPECT_EQ(b, next);
    const Tensor &want = m.tensors.at(name);
    ASSERT_EQ(e - b, want.data.size() * 4);
    ASSERT_LE(e, p.data.size());
    std::vector<float> vals(want.data.size());
    if (!vals.empty()) std::memcpy(vals.data(), p.data.data() + b, e - b);
    EXPECT_EQ(vals, want.data); // bit for bit (no NaN in a valid model)
    next = e;
  }
  EXPECT_EQ(next, p.data.size());

  // The metadata is the HDF5 file's, as strings.
  EXPECT_EQ(metadata(p, "format"), "raspc");
  EXPECT_EQ(metadata(p, "format_version"), std::to_string(Model::kFormatVersion));
  EXPECT_EQ(metadata(p, "d_model"), std::to_string(m.cfg.d_model));
  EXPECT_EQ(metadata(p, "n_ctx"), std::to_string(m.cfg.n_ctx));
  EXPECT_EQ(metadata(p, "causal"), m.cfg.causal ? "1" : "0");
  EXPECT_EQ(metadata(p, "bos_id"), std::to_string(m.bosId));
  EXPECT_EQ(metadata(p, "pad_id"), std::to_string(m.padId));
  EXPECT_EQ(metadata(p, "output_name"), m.outputName);
  EXPECT_EQ(metadata(p, "output_encoding"), m.outputEncoding);
  EXPECT_EQ(metadata(p, "source"), m.source);
  auto vocab = json::parse(metadata(p, "vocab"));
  ASSERT_TRUE(bool(vocab));
  std::vector<std::string> v;
  for (const json::Value &x : vocab->array) v.push_back(x.s);
  EXPECT_EQ(v, m.vocab);
  auto outs = json::parse(metadata(p, "output_values"));
  ASSERT_TRUE(bool(outs));
  ASSERT_EQ(outs->array.size(), m.outputValues.size());
  for (size_t i = 0; i < m.outputValues.size(); ++i) {
    auto s = json::toScalar(outs->array[i]);
    ASSERT_TRUE(bool(s));
    EXPECT_EQ(scalarKey(*s), scalarKey(m.outputValues[i]));
  }
  auto nodes = parseGroundTruth(metadata(p, "ground_truth"));
  ASSERT_TRUE(bool(nodes)) << llvm::toString(nodes.takeError());
  EXPECT_EQ(groundTruthJson(*nodes), groundTruthJson(m.nodes));
  auto cfg = json::parse(metadata(p, "hooked_transformer_config"));
  ASSERT_TRUE(bool(cfg));
  EXPECT_EQ(cfg->get("n_heads")->i, m.cfg.n_heads);
  EXPECT_EQ(cfg->get("d_head")->i, m.cfg.d_head);
  EXPECT_EQ(cfg->get("d_mlp")->i, m.cfg.d_mlp);
  EXPECT_EQ(cfg->get("d_vocab_out")->i, m.cfg.d_vocab_out);
  EXPECT_EQ(cfg->get("act_fn")->s, "relu");
  EXPECT_TRUE(cfg->get("normalization_type")->isNull());
  EXPECT_EQ(cfg->get("attention_dir")->s, m.cfg.causal ? "causal" : "bidirectional");
}

TEST(Safetensors, LayoutTensorsAndMetadata) {
  for (const Model &m : {test::prevTokenModel(true), test::prevTokenModel(false), test::mapModel(), test::meanModel()}) {
    auto bytes = safetensorsBytes(m, "m.safetensors");
    ASSERT_TRUE(bool(bytes)) << llvm::toString(bytes.takeError());
    expectMatchesModel(m, *bytes);
  }
}

TEST(Safetensors, EmptyTensorsHaveEmptyRanges) {
  // A model without MLP neurons: d_mlp 0, its MLP tensors have a zero dimension and an
  // empty byte range, and TransformerLens is told there is no MLP.
  Model m = test::prevTokenModel();
  ASSERT_EQ(m.cfg.d_mlp, 0);
  auto bytes = safetensorsBytes(m, "m.safetensors");
  ASSERT_TRUE(bool(bytes));
  Parsed p = parse(*bytes);
  const json::Value *t = p.header.get("blocks.0.mlp.W_in");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->get("data_offsets")->array[0].i, t->get("data_offsets")->array[1].i);
  EXPECT_EQ(t->get("shape")->array[1].i, 0);
  EXPECT_EQ(metadata(p, "d_mlp"), "0");
  auto cfg = json::parse(metadata(p, "hooked_transformer_config"));
  ASSERT_TRUE(bool(cfg));
  EXPECT_TRUE(cfg->get("attn_only")->b);
  cfg = json::parse(hookedTransformerConfigJson(test::mapModel()));
  ASSERT_TRUE(bool(cfg));
  EXPECT_FALSE(cfg->get("attn_only")->b);
}

TEST(Safetensors, WritesAtomicallyUnderTheOutputRule) {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  ASSERT_EQ(errorText(writeSafetensors(test::prevTokenModel(), path)), "");
  auto want = safetensorsBytes(test::prevTokenModel(), path);
  ASSERT_TRUE(bool(want));
  EXPECT_EQ(readBytes(path), *want);
  // Never over an existing file without force; the file stays as it was.
  EXPECT_EQ(errorText(writeSafetensors(test::mapModel(), path)), "'" + path + "' exists; pass --force to overwrite it");
  EXPECT_EQ(readBytes(path), *want);
  ASSERT_EQ(errorText(writeSafetensors(test::mapModel(), path, {true, {}})), "");
  EXPECT_EQ(metadata(parse(readBytes(path)), "output_name"), "out");
  // Never over an input, even with force.
  EXPECT_EQ(errorText(writeSafetensors(test::mapModel(), path, {true, {path}})),
            path + ": is an input of this command");
  // An invalid model is refused before anything is written.
  Model bad = test::mapModel();
  bad.tensors.erase("blocks.1.attn.W_K");
  std::string other = dir.file("bad.safetensors");
  EXPECT_EQ(errorText(writeSafetensors(bad, other)), other + ": missing tensor 'blocks.1.attn.W_K'");
  EXPECT_FALSE(std::filesystem::exists(other));
}

TEST(Safetensors, RefusesMetadataThatIsNotUtf8) {
  Model m = test::prevTokenModel();
  m.source = "a = \xff;\n";
  auto bytes = safetensorsBytes(m, "m.safetensors");
  ASSERT_FALSE(bool(bytes));
  EXPECT_EQ(llvm::toString(bytes.takeError()),
            "m.safetensors: metadata 'source' is not valid UTF-8 (safetensors requires UTF-8 text)");
}

// The command line: --format safetensors writes the bytes of the model that --format
// hdf5 writes, and follows the same --force rule.
TEST(Safetensors, CompileFormatFlag) {
  TempDir dir;
  std::string src = test::sourceDir() + "/examples/sort.rasp";
  std::string h5 = dir.file("sort.h5"), st = dir.file("sort.safetensors");
  auto r = test::run(test::raspcBinary() + " compile " + src + " -o " + h5);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  r = test::run(test::raspcBinary() + " compile " + src + " --format safetensors -o " + st);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_NE(r.out.find("wrote " + st + ": "), std::string::npos) << r.out;
  auto m = readModel(h5);
  ASSERT_TRUE(bool(m)) << llvm::toString(m.takeError());
  std::string bytes = readBytes(st);
  expectMatchesModel(*m, bytes);
  auto want = safetensorsBytes(*m, st);
  ASSERT_TRUE(bool(want));
  EXPECT_EQ(bytes, *want);

  r = test::run(test::raspcBinary() + " compile " + src + " --format safetensors -o " + st);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_EQ(r.out, "raspc: error: '" + st + "' exists; pass --force to overwrite it\n");
  r = test::run(test::raspcBinary() + " compile " + src + " --format safetensors --force -o " + st);
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(readBytes(st), bytes); // deterministic

  r = test::run(test::raspcBinary() + " compile " + src + " --format onnx -o " + dir.file("x"));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_NE(r.out.find("--format"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir.file("x")));
}

} // namespace
