// Rotated and compressed variants (backend/Variants.h, runtime/VariantCheck.h): the
// residual basis in the files, decoding through it, the measured compression, and
// `raspc transform`.
#include "TestUtil.h"
#include "backend/Hdf5.h"
#include "backend/Json.h"
#include "backend/Safetensors.h"
#include "backend/Variants.h"
#include "passes/Compiler.h"
#include "runtime/Executor.h"
#include "runtime/VariantCheck.h"

#include <fmt/format.h>
#include <hdf5.h>

#include <cmath>
#include <cstring>

using namespace raspc;

namespace {

struct Built {
  std::string diags;
  llvm::raw_string_ostream os{diags};
  Program program{os};
  ProgramOptions opts;
  ir::NodeId output = 0;
  Model model;
};

// Compiles an example with its header's vocabulary and maximum length.
std::unique_ptr<Built> build(const std::string &example) {
  auto b = std::make_unique<Built>();
  const std::string path = test::sourceDir() + "/examples/" + example;
  EXPECT_TRUE(b->program.loadFile(path)) << b->diags;
  auto header = b->program.headerOptions();
  EXPECT_TRUE(header.has_value());
  b->opts.inheritFrom(*header);
  auto out = b->program.resolveOutput(std::nullopt);
  EXPECT_TRUE(out.has_value());
  b->output = *out;
  CompileOptions co;
  co.vocab = *b->opts.vocab;
  co.maxLen = *b->opts.maxLen;
  co.outputName = *b->program.evaluator().lastSOpName();
  co.sourceName = example;
  auto m = compileProgram(b->program.graph(), *out, co, b->program.sourceMgr());
  EXPECT_TRUE(bool(m)) << (m ? "" : llvm::toString(m.takeError()));
  if (m) b->model = std::move(*m);
  return b;
}

std::string errorOf(llvm::Error e) { return e ? llvm::toString(std::move(e)) : ""; }
template <class T> std::string errorOf(llvm::Expected<T> v) { return v ? "" : llvm::toString(v.takeError()); }

// Every decoded node value at every sublayer of one run, as text.
std::vector<std::string> trace(Executor &exec, const Model &m, const std::vector<std::string> &input) {
  std::vector<std::string> out;
  TraceFn fn = [&](int layer, const std::string &sub, const Eigen::MatrixXd &res, int) {
    for (auto &[name, values] : decodeNodes(m, res))
      out.push_back(std::to_string(layer) + " " + sub + " " + name + " = " + formatSequence(values, true));
  };
  auto r = exec.run({input}, &fn);
  EXPECT_TRUE(bool(r));
  if (!r) llvm::consumeError(r.takeError());
  return out;
}

size_t nonzeros(const Tensor &t) {
  size_t n = 0;
  for (float x : t.data) n += x != 0;
  return n;
}

// Runs `edit` on the HDF5 file at `path` opened read-write.
void editFile(const std::string &path, const std::function<void(hid_t)> &edit) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  edit(f);
  H5Fclose(f);
}

// Replaces dataset `name` of `f` by a checksummed float32 one of `shape` holding `values`.
void replaceFloats(hid_t f, const std::string &name, std::vector<hsize_t> shape, std::vector<float> values) {
  ASSERT_GE(H5Ldelete(f, name.c_str(), H5P_DEFAULT), 0);
  hid_t sp = H5Screate_simple(int(shape.size()), shape.data(), nullptr);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, int(shape.size()), shape.data());
  H5Pset_fletcher32(dcpl);
  hid_t d = H5Dcreate2(f, name.c_str(), H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  ASSERT_GE(d, 0);
  ASSERT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(sp);
}

} // namespace

TEST(Variants, RandomOrthogonalIsOrthogonalSeededAndNotOneHot) {
  const int n = 13;
  auto q = randomOrthogonal(n, 5);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double dot = 0;
      for (int r = 0; r < n; ++r) dot += q[size_t(r * n + i)] * q[size_t(r * n + j)];
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-12) << i << " " << j;
    }
  EXPECT_EQ(randomOrthogonal(n, 5), q);
  EXPECT_NE(randomOrthogonal(n, 6), q);
  // Dense: a rotation that kept one-hot directions would not hide the labels.
  size_t small = 0;
  for (double x : q) small += std::fabs(x) < 1e-3;
  EXPECT_LT(small, size_t(n));
  // A compression onto k axes: V R, orthonormal columns within V's span.
  Tensor c = subspaceMap(q, n, n, 4, 9);
  ASSERT_EQ(c.shape, (std::vector<int64_t>{n, 4}));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      double dot = 0;
      for (int r = 0; r < n; ++r) dot += double(c.at(r, i)) * c.at(r, j);
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-6);
    }
  for (int j = 0; j < 4; ++j) { // orthogonal to the axes left out
    double dot = 0;
    for (int r = 0; r < n; ++r) dot += double(c.at(r, j)) * q[size_t(r * n + 6)];
    EXPECT_NEAR(dot, 0.0, 1e-6);
  }
}

// Compressed onto `k` principal axes of `m`'s states on every input (test helper).
Model compressed(const Model &m, int k, uint64_t seed) {
  bool exhaustive;
  auto axes = residualAxes(m, variantInputs(m, 2000, 1, exhaustive));
  EXPECT_TRUE(bool(axes));
  auto c = compressModel(m, *axes, k, seed);
  EXPECT_TRUE(bool(c));
  return std::move(*c);
}

// A rotation changes every weight and no decoded value: the output and every traced
// node at every sublayer, on every input up to the maximum length.
void expectRotationInvisible(const std::string &example, size_t wantInputs) {
  auto b = build(example);
  const Model &m = b->model;
  auto rotated = rotateModel(m, 7);
  ASSERT_TRUE(bool(rotated)) << errorOf(rotated.takeError());
  EXPECT_EQ(residualBasisKind(*rotated), "rotated");
  EXPECT_EQ(residualBasisKind(m), "");
  // A label's vector is its row of the basis: the rotated embedding of token t is the
  // original's one-hot rows mapped through the basis.
  EXPECT_EQ(labelVector(m, 1), [&] {
    std::vector<float> v(size_t(m.cfg.d_model), 0.0f);
    v[1] = 1.0f;
    return v;
  }());
  {
    const Tensor &E0 = m.tensors.at("embed.W_E"), &E1 = rotated->tensors.at("embed.W_E");
    for (int64_t t = 0; t < E0.shape[0]; ++t)
      for (int64_t j = 0; j < E1.shape[1]; ++j) {
        double want = 0;
        for (int64_t l = 0; l < E0.shape[1]; ++l)
          want += double(E0.at(t, l)) * labelVector(*rotated, int(l))[size_t(j)];
        EXPECT_NEAR(E1.at(t, j), want, 1e-5);
      }
  }
  EXPECT_TRUE(labelVector(*rotated, int(m.cfg.d_model)).empty());
  EXPECT_EQ(rotated->cfg.d_model, m.cfg.d_model);
  EXPECT_EQ(rotated->residualBasis.shape, (std::vector<int64_t>{m.cfg.d_model, m.cfg.d_model}));
  EXPECT_GT(nonzeros(rotated->tensors.at("embed.W_E")), 3 * nonzeros(m.tensors.at("embed.W_E")));
  bool exhaustive = false;
  auto inputs = variantInputs(m, 100000, 1, exhaustive);
  ASSERT_TRUE(exhaustive);
  ASSERT_EQ(inputs.size(), wantInputs);
  auto e0 = Executor::create(m), e1 = Executor::create(*rotated);
  ASSERT_TRUE(e0 && e1);
  Interpreter interp(b->program.graph(), b->program.interpreterOptions(b->opts));
  for (const auto &in : inputs) {
    auto a = e0->run({in}), r = e1->run({in});
    ASSERT_TRUE(a && r);
    ASSERT_FALSE(bool(interp.run(in, {b->output})));
    EXPECT_TRUE(matchesInterpreter((*r)[0], interp.sop(b->output))) << formatSequence((*r)[0], false);
    EXPECT_EQ(formatSequence((*r)[0], true), formatSequence((*a)[0], true));
  }
  // Traces on a sample of the inputs (every sublayer, every node with directions).
  for (size_t i = 0; i < inputs.size(); i += 17) {
    auto t0 = trace(*e0, m, inputs[i]), t1 = trace(*e1, *rotated, inputs[i]);
    ASSERT_FALSE(t0.empty());
    EXPECT_EQ(t1, t0);
  }
  // The figures makeRotated reports are those.
  auto v = makeRotated(m, {7, 100000, nullptr});
  ASSERT_TRUE(bool(v));
  EXPECT_EQ(v->report.result.inputs, wantInputs);
  EXPECT_EQ(v->report.result.exactInputs, wantInputs);
  EXPECT_EQ(v->report.result.accuracy, 1.0);
  EXPECT_TRUE(v->report.exhaustive);
  EXPECT_LT(v->report.result.maxLogitError, 1e-2);
}

TEST(Variants, RotationLeavesSortUnchanged) { expectRotationInvisible("sort.rasp", 3 + 9 + 27 + 81 + 243); }

TEST(Variants, RotationLeavesNumericalFracPrevsUnchanged) {
  expectRotationInvisible("frac_prevs.rasp", 2 + 4 + 8 + 16 + 32);
}

TEST(Variants, RotationComposesWithACompression) {
  auto b = build("sort.rasp");
  auto c = std::optional<Model>(compressed(b->model, b->model.cfg.d_model - 6, 3));
  auto rc = rotateModel(*c, 4);
  ASSERT_TRUE(bool(rc));
  EXPECT_EQ(residualBasisKind(*rc), "compressed");
  EXPECT_EQ(rc->residualBasis.shape, (std::vector<int64_t>{b->model.cfg.d_model, b->model.cfg.d_model - 6}));
  bool exhaustive;
  auto inputs = variantInputs(b->model, 2000, 1, exhaustive);
  auto once = measureVariant(b->model, *c, inputs), twice = measureVariant(b->model, *rc, inputs);
  ASSERT_TRUE(once && twice);
  // Rotating the compressed stream loses nothing more.
  EXPECT_EQ(twice->exactInputs, once->exactInputs);
  EXPECT_GT(once->exactInputs, 0u);
}

TEST(Variants, BasisRoundTripsThroughHdf5) {
  auto b = build("sort.rasp");
  auto rotated = rotateModel(b->model, 11);
  ASSERT_TRUE(bool(rotated));
  const std::string plain = test::tempPath("plain.h5"), path = test::tempPath("rotated.h5");
  ASSERT_EQ(errorOf(writeModel(b->model, plain, {true, {}})), "");
  ASSERT_EQ(errorOf(writeModel(*rotated, path, {true, {}})), "");
  // A model without a basis is written as before: no dataset.
  editFile(plain, [](hid_t f) { EXPECT_EQ(H5Lexists(f, "metadata/residual_basis", H5P_DEFAULT), 0); });
  auto back = readModel(path);
  ASSERT_TRUE(bool(back)) << errorOf(back.takeError());
  EXPECT_EQ(back->residualBasis.shape, rotated->residualBasis.shape);
  EXPECT_EQ(std::memcmp(back->residualBasis.data.data(), rotated->residualBasis.data.data(),
                        rotated->residualBasis.data.size() * sizeof(float)),
            0);
  EXPECT_EQ(back->residualLabels, b->model.residualLabels);
  for (auto &[name, t] : rotated->tensors) EXPECT_EQ(back->tensors.at(name).data, t.data) << name;
  auto plainBack = readModel(plain);
  ASSERT_TRUE(bool(plainBack));
  EXPECT_FALSE(hasResidualBasis(*plainBack));
  // The basis is checksummed like every dataset.
  editFile(path, [](hid_t f) {
    hid_t d = H5Dopen2(f, "metadata/residual_basis", H5P_DEFAULT);
    ASSERT_GE(d, 0);
    hid_t dcpl = H5Dget_create_plist(d);
    EXPECT_GT(H5Pget_nfilters(dcpl), 0);
    bool fletcher = false;
    for (int i = 0; i < H5Pget_nfilters(dcpl); ++i) {
      unsigned flags;
      size_t n = 0;
      unsigned cd[1];
      fletcher |= H5Pget_filter2(dcpl, unsigned(i), &flags, &n, cd, 0, nullptr, nullptr) == H5Z_FILTER_FLETCHER32;
    }
    EXPECT_TRUE(fletcher);
    H5Pclose(dcpl);
    H5Dclose(d);
  });
}

TEST(Variants, BasisRoundTripsThroughSafetensors) {
  auto b = build("sort.rasp");
  auto rotated = rotateModel(b->model, 11);
  ASSERT_TRUE(bool(rotated));
  auto bytes = safetensorsBytes(*rotated, "r.safetensors");
  ASSERT_TRUE(bool(bytes));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t((*bytes)[size_t(i)])) << (8 * i);
  auto header = json::parse(std::string_view(*bytes).substr(8, n));
  ASSERT_TRUE(bool(header));
  // Not a tensor: the tensors stay TransformerLens's state dict.
  EXPECT_EQ(header->get("residual_basis"), nullptr);
  const json::Value *md = header->get("__metadata__");
  ASSERT_NE(md, nullptr);
  const json::Value *text = md->get("residual_basis");
  ASSERT_NE(text, nullptr);
  auto rows = json::parse(text->s);
  ASSERT_TRUE(bool(rows));
  const Tensor &B = rotated->residualBasis;
  ASSERT_EQ(int64_t(rows->array.size()), B.shape[0]);
  for (int64_t i = 0; i < B.shape[0]; ++i) {
    ASSERT_EQ(int64_t(rows->array[size_t(i)].array.size()), B.shape[1]);
    for (int64_t j = 0; j < B.shape[1]; ++j) {
      const json::Value &x = rows->array[size_t(i)].array[size_t(j)];
      EXPECT_EQ(float(x.kind == json::Value::Int ? double(x.i) : x.d), B.at(i, j)) << i << " " << j; // bit for bit
    }
  }
  // The embedding's bytes are the rotated ones.
  const json::Value *we = header->get("embed.W_E");
  ASSERT_NE(we, nullptr);
  const size_t begin = size_t(we->get("data_offsets")->array[0].i);
  const Tensor &W = rotated->tensors.at("embed.W_E");
  EXPECT_EQ(std::memcmp(bytes->data() + 8 + n + begin, W.data.data(), W.data.size() * sizeof(float)), 0);
  // Without a basis, no key.
  EXPECT_EQ(safetensorsMetadata(b->model).count("residual_basis"), 0u);
}

TEST(Variants, DamagedBasisIsRefusedWithItsName) {
  auto b = build("sort.rasp");
  auto rotated = rotateModel(b->model, 11);
  ASSERT_TRUE(bool(rotated));
  const int64_t D = rotated->cfg.d_model;
  const std::string path = test::tempPath("damaged.h5");
  auto rewrite = [&] { ASSERT_EQ(errorOf(writeModel(*rotated, path, {true, {}})), ""); };

  rewrite();
  editFile(path, [&](hid_t f) {
    replaceFloats(f, "metadata/residual_basis", {hsize_t(D), hsize_t(D + 1)},
                  std::vector<float>(size_t(D * (D + 1)), 0.5f));
  });
  EXPECT_EQ(errorOf(readModel(path)),
            fmt::format("{}: dataset 'metadata/residual_basis' has shape [{}, {}], expected [{}, {}] (n_labels = {} "
                        "residual labels, d_model = {})",
                        path, D, D + 1, D, D, D, D));

  rewrite();
  editFile(path, [&](hid_t f) {
    replaceFloats(f, "metadata/residual_basis", {hsize_t(D * D)}, std::vector<float>(size_t(D * D)));
  });
  EXPECT_EQ(errorOf(readModel(path)),
            fmt::format("{}: dataset 'metadata/residual_basis' has shape [{}], expected 2 dimensions", path, D * D));

  rewrite();
  editFile(path, [&](hid_t f) {
    std::vector<float> v(rotated->residualBasis.data);
    v[size_t(D + 2)] = std::nanf("");
    replaceFloats(f, "metadata/residual_basis", {hsize_t(D), hsize_t(D)}, v);
  });
  EXPECT_EQ(errorOf(readModel(path)),
            path + ": dataset 'metadata/residual_basis' has a non-finite value (nan) at [1, 2]");

  // Sizes are checked before the basis is read: a declared basis over the limit.
  rewrite();
  EXPECT_NE(errorOf(readModel(path, 100)).find("parameters, more than the limit of 100"), std::string::npos);

  // In memory, validateModel says the same before anything is written.
  Model bad = *rotated;
  bad.residualBasis = Tensor({D, D - 1});
  EXPECT_EQ(errorOf(writeModel(bad, path, {true, {}})),
            fmt::format("{}: dataset 'metadata/residual_basis' has shape [{}, {}], expected [n_labels, d_model] with "
                        "d_model = {}",
                        path, D, D - 1, D));
  bad = *rotated;
  bad.residualLabels.push_back("extra");
  EXPECT_EQ(
      errorOf(validateModel(bad, "m")),
      fmt::format("m: residual_labels has {} entries, expected {} (the rows of 'metadata/residual_basis')", D + 1, D));
  // A compressed model's directions index labels, of which there are more than d_model.
  auto c = std::optional<Model>(compressed(b->model, int(D) - 3, 1));
  EXPECT_EQ(errorOf(validateModel(*c, "m")), "");
  Model far = *c;
  far.nodes.back().writes.back() = int(D);
  EXPECT_NE(errorOf(validateModel(far, "m"))
                .find(fmt::format("residual direction {} is out of range ({} residual labels)", D, D)),
            std::string::npos);
  far.nodes.back().writes.back() = int(D) - 1; // a label beyond d_model - 3: valid
  EXPECT_EQ(errorOf(validateModel(far, "m")), "");
}

// The compression's figures are measured: checked here against the interpreter, with
// the compressed model run independently of VariantCheck.
TEST(Variants, CompressionReportsMeasuredAccuracy) {
  auto b = build("sort.rasp");
  const Model &m = b->model;
  const int d = m.cfg.d_model;
  VariantOptions opts;
  opts.seed = 1;
  auto found = searchCompression(m, opts);
  ASSERT_TRUE(bool(found)) << errorOf(found.takeError());
  const VariantReport &r = found->report;
  const int k = r.result.dModel;
  EXPECT_EQ(found->model.cfg.d_model, k);
  EXPECT_LT(k, d);
  EXPECT_TRUE(r.exhaustive);
  EXPECT_EQ(r.result.inputs, 363u);
  EXPECT_EQ(r.result.exactInputs, 363u);
  EXPECT_EQ(r.result.accuracy, 1.0);
  ASSERT_TRUE(r.nextSmaller.has_value());
  EXPECT_EQ(r.nextSmaller->dModel, k - 1);
  EXPECT_LT(r.nextSmaller->accuracy, 1.0);
  EXPECT_EQ(residualBasisKind(found->model), "compressed");

  Interpreter interp(b->program.graph(), b->program.interpreterOptions(b->opts));
  auto independent = [&](const Model &v) {
    bool exhaustive;
    auto inputs = variantInputs(m, 2000, 1, exhaustive);
    auto exec = Executor::create(v);
    EXPECT_TRUE(bool(exec));
    uint64_t agree = 0;
    for (const auto &in : inputs) {
      auto out = exec->run({in});
      EXPECT_TRUE(bool(out));
      EXPECT_FALSE(bool(interp.run(in, {b->output})));
      agree += matchesInterpreter((*out)[0], interp.sop(b->output));
    }
    return agree;
  };
  EXPECT_EQ(independent(found->model), 363u);
  // makeCompressed at the widths the search found gives the same figures, and its model.
  auto at = makeCompressed(m, k, opts), below = makeCompressed(m, k - 1, opts);
  ASSERT_TRUE(at && below);
  EXPECT_EQ(at->report.result.exactInputs, 363u);
  EXPECT_EQ(at->model.tensors.at("embed.W_E").data, found->model.tensors.at("embed.W_E").data);
  EXPECT_EQ(below->report.result.exactInputs, r.nextSmaller->exactInputs);
  EXPECT_EQ(independent(below->model), below->report.result.exactInputs);
  EXPECT_FALSE(below->report.result.exact());
  // Far too small: measured, and not claimed exact.
  auto tiny = makeCompressed(m, 2, opts);
  ASSERT_TRUE(bool(tiny));
  EXPECT_LT(tiny->report.result.accuracy, 1.0);
  EXPECT_FALSE(tiny->report.result.exact());
  EXPECT_EQ(independent(tiny->model), tiny->report.result.exactInputs);
  EXPECT_GT(tiny->report.result.maxLogitError, 0.1);
  auto j = json::parse(tiny->report.json());
  ASSERT_TRUE(bool(j)) << tiny->report.json();
  EXPECT_EQ(j->get("exact")->b, false);
  EXPECT_EQ(j->get("d_model")->i, 2);
  EXPECT_EQ(j->get("from_d_model")->i, d);
  EXPECT_EQ(j->get("inputs")->i, 363);
  EXPECT_NE(tiny->report.text().find("NOT exact"), std::string::npos);
  // Measured on samples when there are more inputs than asked for.
  VariantOptions few;
  few.maxInputs = 50;
  auto sampled = makeCompressed(m, k, few);
  ASSERT_TRUE(bool(sampled));
  EXPECT_FALSE(sampled->report.exhaustive);
  EXPECT_EQ(sampled->report.result.inputs, 50u);
  EXPECT_EQ(errorOf(makeCompressed(m, d, opts)),
            fmt::format("cannot compress a residual of {} dimensions to {}", d, d));
}

TEST(Variants, TransformCommand) {
  const std::string raspc = test::raspcBinary(), src = test::sourceDir() + "/examples/sort.rasp";
  const std::string plain = test::tempPath("sort.h5"), rot = test::tempPath("sort_rot.h5"),
                    comp = test::tempPath("sort_comp.h5");
  std::remove(rot.c_str());
  std::remove(comp.c_str());
  ASSERT_EQ(test::run(raspc + " compile " + src + " -o " + plain + " --force").exitCode, 0);
  auto r = test::run(raspc + " transform " + plain + " --rotate --seed 3 -o " + rot + " --json");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  auto j = json::parse(r.out);
  ASSERT_TRUE(bool(j)) << r.out;
  EXPECT_EQ(j->get("file")->s, rot);
  EXPECT_EQ(j->get("kind")->s, "rotated");
  EXPECT_EQ(j->get("inputs")->i, 363);
  EXPECT_EQ(j->get("exact_inputs")->i, 363);
  EXPECT_EQ(j->get("exact")->b, true);
  EXPECT_EQ(j->get("seed")->i, 3);
  // The trace of the rotated model prints the original's values.
  const std::string in = " --input \"3 1 2 2 1\" --trace";
  auto t0 = test::run(raspc + " run " + plain + in), t1 = test::run(raspc + " run " + rot + in);
  ASSERT_EQ(t1.exitCode, 0) << t1.out;
  EXPECT_EQ(t1.out, t0.out);
  EXPECT_NE(t1.out.find("out = [1, 1, 2, 2, 3]"), std::string::npos) << t1.out;
  auto insp = test::run(raspc + " inspect " + rot);
  EXPECT_NE(insp.out.find("residual basis: rotated"), std::string::npos) << insp.out;
  // Never over an existing file without --force.
  auto again = test::run(raspc + " transform " + plain + " --rotate -o " + rot);
  EXPECT_EQ(again.exitCode, 1);
  EXPECT_NE(again.out.find("exists"), std::string::npos) << again.out;

  auto c = test::run(raspc + " transform " + plain + " --compress auto -o " + comp);
  ASSERT_EQ(c.exitCode, 0) << c.out;
  EXPECT_NE(c.out.find("exact on all 363 inputs"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("smallest exact width found"), std::string::npos) << c.out;
  auto ci = test::run(raspc + " inspect --json " + comp);
  auto cj = json::parse(ci.out);
  ASSERT_TRUE(bool(cj)) << ci.out;
  EXPECT_EQ(cj->get("residual_basis")->get("kind")->s, "compressed");

  auto both = test::run(raspc + " transform " + plain + " --rotate --compress 3 -o " + comp + " --force");
  EXPECT_EQ(both.exitCode, 2);
  EXPECT_NE(both.out.find("give one of --rotate and --compress"), std::string::npos) << both.out;
  auto zero = test::run(raspc + " transform " + plain + " --compress 0 -o " + comp + " --force");
  EXPECT_EQ(zero.exitCode, 2);
  EXPECT_NE(zero.out.find("--compress: expected a number of dimensions (at least 1) or 'auto', got '0'"),
            std::string::npos)
      << zero.out;
  auto wide = test::run(raspc + " transform " + plain + " --compress 999 -o " + comp + " --force");
  EXPECT_EQ(wide.exitCode, 1);
  EXPECT_NE(wide.out.find("a compression has fewer dimensions"), std::string::npos) << wide.out;
  auto tiny = test::run(raspc + " transform " + plain + " --compress 2 -o " + comp + " --force --json");
  ASSERT_EQ(tiny.exitCode, 0) << tiny.out;
  auto tj = json::parse(tiny.out);
  ASSERT_TRUE(bool(tj)) << tiny.out;
  EXPECT_EQ(tj->get("exact")->b, false);
  EXPECT_LT(tj->get("accuracy")->d, 1.0);
}
