// The suite library (suite/Suite.h): program headers, selection, a built folder's
// files and index, failures, reruns, shards, and the embedded programs.
#include "TestUtil.h"
#include "backend/Hdf5.h"
#include "backend/Json.h"
#include "suite/Suite.h"

#include <gtest/gtest.h>

#include <llvm/Support/FileSystem.h>

#include <fstream>
#include <set>
#include <sstream>

using namespace raspc;
using raspc::test::sourceDir;
using raspc::test::tempPath;

namespace {

std::string header(const std::string &vocab, int maxLen, const std::string &desc, const std::string &cat,
                   const std::string &diff) {
  return "# raspc: --vocab \"" + vocab + "\" --max-len " + std::to_string(maxLen) + "\n# description: " + desc +
         "\n# category: " + cat + "\n# difficulty: " + diff + "\n";
}

// The suite's own header lines, without '# raspc:'.
std::string meta(const std::string &desc, const std::string &cat, const std::string &diff) {
  return "# description: " + desc + "\n# category: " + cat + "\n# difficulty: " + diff + "\n";
}

std::string readFile(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string errorText(llvm::Error e) { return llvm::toString(std::move(e)); }

// A fresh folder private to the test, with `files` (name -> text) under src/.
std::string makeDir(const std::string &name, const std::vector<std::pair<std::string, std::string>> &files) {
  std::string dir = tempPath(name);
  llvm::sys::fs::remove_directories(dir);
  llvm::sys::fs::create_directories(dir + "/src");
  for (auto &[f, text] : files) std::ofstream(dir + "/src/" + f) << text;
  return dir;
}

const std::string kSort = readFile(sourceDir() + "/examples/sort.rasp");
const std::string kReverse = readFile(sourceDir() + "/examples/reverse.rasp");

TEST(SuiteHeaders, StrictProgramsNeedEveryHeaderLine) {
  auto p = suite::parseProgram("x", "x.rasp", header("1 2", 3, "sort them", "classic", "easy") + "y = tokens;\n", true);
  ASSERT_TRUE(bool(p)) << errorText(p.takeError());
  EXPECT_EQ(p->description, "sort them");
  EXPECT_EQ(p->category, "classic");
  EXPECT_EQ(p->difficulty, "easy");

  auto missing = suite::parseProgram("x", "x.rasp", "# raspc: --vocab \"1\" --max-len 2\n# description: d\n"
                                                    "# difficulty: easy\ny = tokens;\n", true);
  ASSERT_FALSE(bool(missing));
  EXPECT_EQ(errorText(missing.takeError()), "x.rasp:1: no '# category:' header line (docs/suite.md)");

  auto unknown = suite::parseProgram("x", "x.rasp", header("1", 2, "d", "classics", "easy"), true);
  ASSERT_FALSE(bool(unknown));
  EXPECT_EQ(errorText(unknown.takeError()),
            "x.rasp:3: unknown category 'classics' (one of: classic, arithmetic-map, string-map, sequence-map, "
            "selector-width, numerical-aggregate, causal, composite-selector)");

  auto badDiff = suite::parseProgram("x", "x.rasp", header("1", 2, "d", "causal", "trivial"), true);
  ASSERT_FALSE(bool(badDiff));
  EXPECT_EQ(errorText(badDiff.takeError()), "x.rasp:4: unknown difficulty 'trivial' (one of: easy, medium, hard)");

  auto twice = suite::parseProgram("x", "x.rasp", header("1", 2, "d", "causal", "easy") + "# category: classic\n", true);
  ASSERT_FALSE(bool(twice));
  EXPECT_EQ(errorText(twice.takeError()), "x.rasp:5: a second '# category:' header line (the first is line 3)");

  // Only the leading comment block is the header.
  auto late = suite::parseProgram("x", "x.rasp", "# description: d\n# difficulty: easy\ny = tokens;\n# category: classic\n",
                                  true);
  ASSERT_FALSE(bool(late));
  EXPECT_EQ(errorText(late.takeError()), "x.rasp:1: no '# category:' header line (docs/suite.md)");
}

TEST(SuiteHeaders, UserProgramsDefaultButAreStillChecked) {
  auto p = suite::parseProgram("s", "s.rasp", kSort, false);
  ASSERT_TRUE(bool(p)) << errorText(p.takeError());
  EXPECT_EQ(p->description, "");
  EXPECT_EQ(p->category, "user");
  EXPECT_EQ(p->difficulty, "");
  auto bad = suite::parseProgram("s", "s.rasp", "# category: nope\n" + kSort, false);
  ASSERT_FALSE(bool(bad));
  EXPECT_NE(errorText(bad.takeError()).find("s.rasp:1: unknown category 'nope'"), std::string::npos);
}

// Every program compiled into the library has its header lines and a valid, unique name.
TEST(SuiteHeaders, EmbeddedProgramsParse) {
  auto progs = suite::embeddedPrograms();
  ASSERT_TRUE(bool(progs)) << errorText(progs.takeError());
  std::set<std::string> names;
  for (auto &p : *progs) {
    EXPECT_TRUE(names.insert(p.name).second) << p.name;
    EXPECT_FALSE(p.description.empty()) << p.name;
    EXPECT_EQ(p.fileName, "suite/programs/" + p.name + ".rasp");
    // The embedded text is the file's, byte for byte.
    EXPECT_EQ(p.source, readFile(sourceDir() + "/" + p.fileName)) << p.name;
  }
  // And every file in suite/programs/ is embedded.
  std::error_code ec;
  size_t files = 0;
  for (llvm::sys::fs::directory_iterator it(sourceDir() + "/suite/programs", ec), end; it != end && !ec;
       it.increment(ec))
    if (llvm::StringRef(it->path()).endswith(".rasp")) ++files;
  EXPECT_EQ(files, progs->size());
}

TEST(SuiteSelect, PatternsAndFiles) {
  std::string dir = makeDir("select", {{"a_sort.rasp", kSort}, {"b_rev.rasp", kReverse}, {"Bad-Name.rasp", kSort}});
  auto none = suite::selectPrograms(dir + "/src/zzz*.rasp");
  ASSERT_FALSE(bool(none));
  EXPECT_EQ(errorText(none.takeError()), "--programs '" + dir + "/src/zzz*.rasp': no file matches");
  auto two = suite::selectPrograms(dir + "/src/[ab]_*.rasp");
  ASSERT_TRUE(bool(two)) << errorText(two.takeError());
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].name, "a_sort");
  EXPECT_EQ((*two)[1].name, "b_rev");
  EXPECT_EQ((*two)[1].source, kReverse);
  auto bad = suite::selectPrograms(dir + "/src/*.rasp");
  ASSERT_FALSE(bool(bad));
  EXPECT_NE(errorText(bad.takeError()).find("Bad-Name.rasp: a suite model's name is the file's name without .rasp"),
            std::string::npos);
  auto noName = suite::selectPrograms(std::string("no_such_program_*"));
  ASSERT_FALSE(bool(noName));
  auto embedded = suite::embeddedPrograms();
  ASSERT_TRUE(bool(embedded));
  EXPECT_NE(errorText(noName.takeError())
                .find(embedded->empty() ? "this raspc has no suite programs (suite/programs/ was empty when it was built)"
                                        : "--programs 'no_such_program_*': no suite program matches"),
            std::string::npos);
}

// A suite of three user programs: two build exact, one the interpreter rejects on an
// input (not exact), which fails without stopping the others.
TEST(SuiteBuild, FilesIndexAndFailures) {
  std::string rejects = header("a b", 10, "fails on ten b's", "numerical-aggregate", "hard") +
                        "nb = selector_width(select(tokens, \"b\", ==));\nr = 10 / (10 - nb);\n";
  std::string dir = makeDir("build", {{"sort.rasp", meta("sort | ascending", "classic", "medium") + kSort},
                                      {"rev.rasp", kReverse},
                                      {"rejects.rasp", rejects}});
  suite::BuildOptions o;
  o.dir = dir + "/out";
  o.programs = dir + "/src/*.rasp";
  o.jobs = 2;
  std::vector<std::string> seen;
  auto r = suite::build(o, [&](const suite::ModelSummary &s, size_t done, size_t total) {
    seen.push_back(s.name);
    EXPECT_EQ(done, seen.size());
    EXPECT_EQ(total, 3u);
  });
  ASSERT_TRUE(bool(r)) << errorText(r.takeError());
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(r->failed(), 1);
  const std::string m = o.dir + "/models/sort/";
  for (const char *f : {"program.rasp", "model.h5", "model.safetensors", "tl_config.json", "encoders.json",
                        "ground_truth.json", "checks.json", "card.md", "summary.json"})
    EXPECT_TRUE(llvm::sys::fs::exists(m + f)) << f;
  EXPECT_EQ(readFile(m + "program.rasp"), meta("sort | ascending", "classic", "medium") + kSort);

  // The weights are the model compile writes, its ground truth included.
  auto model = readModel(m + "model.h5");
  ASSERT_TRUE(bool(model)) << errorText(model.takeError());
  EXPECT_EQ(model->cfg.n_ctx, 6);
  auto gt = json::parse(readFile(m + "ground_truth.json"));
  ASSERT_TRUE(bool(gt)) << errorText(gt.takeError());
  ASSERT_EQ(gt->get("residual_labels")->array.size(), size_t(model->cfg.d_model));
  EXPECT_EQ(gt->get("residual_labels")->array[0].s, model->residualLabels[0]);
  EXPECT_EQ(gt->get("nodes")->array.size(), model->nodes.size());

  auto enc = json::parse(readFile(m + "encoders.json"));
  ASSERT_TRUE(bool(enc)) << errorText(enc.takeError());
  const json::Value *in = enc->get("input");
  ASSERT_EQ(in->get("vocab")->array.size(), model->vocab.size());
  EXPECT_EQ(in->get("vocab")->array[size_t(model->bosId)].s, "<bos>");
  EXPECT_EQ(in->get("bos_id")->i, model->bosId);
  EXPECT_EQ(in->get("pad_id")->i, model->padId);
  EXPECT_EQ(in->get("max_len")->i, 5);
  EXPECT_TRUE(in->get("int_tokens")->b);
  EXPECT_EQ(enc->get("output")->get("encoding")->s, "categorical");
  EXPECT_EQ(enc->get("output")->get("values")->array.size(), model->outputValues.size());

  auto tl = json::parse(readFile(m + "tl_config.json"));
  ASSERT_TRUE(bool(tl)) << errorText(tl.takeError());
  std::vector<std::string> keys = tl->keys;
  EXPECT_EQ(keys, (std::vector<std::string>{"n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab",
                                            "d_vocab_out", "act_fn", "normalization_type", "attention_dir",
                                            "positional_embedding_type", "attn_scale", "use_attn_scale", "attn_only",
                                            "final_rms", "gated_mlp", "original_architecture", "architecture",
                                            "model_name", "init_weights", "use_attn_result", "use_split_qkv_input"}));
  EXPECT_EQ(tl->get("n_layers")->i, model->cfg.n_layers);
  EXPECT_EQ(tl->get("attention_dir")->s, "bidirectional");
  EXPECT_TRUE(tl->get("use_attn_result")->b);

  // Exhaustive: 3 + 9 + 27 + 81 + 243 inputs.
  auto checks = json::parse(readFile(m + "checks.json"));
  ASSERT_TRUE(bool(checks)) << errorText(checks.takeError());
  const json::Value *exact = checks->get("exact");
  ASSERT_NE(exact, nullptr);
  EXPECT_EQ(exact->get("inputs")->i, 363);
  EXPECT_EQ(exact->get("equal")->i, 363);
  EXPECT_TRUE(exact->get("exhaustive")->b);

  std::string card = readFile(m + "card.md");
  EXPECT_NE(card.find("# sort\n\nsort | ascending\n"), std::string::npos) << card;
  EXPECT_NE(card.find("| category | classic |"), std::string::npos) << card;
  EXPECT_NE(card.find("- exact: 363 of 363 inputs (every input up to the maximum length) decode to the interpreter's output"), std::string::npos) << card;
  EXPECT_NE(card.find("| out | aggregate |"), std::string::npos) << card; // the node table
  EXPECT_NE(card.find("```python\n# description: sort | ascending\n"), std::string::npos) << card;

  // The failed model: reported with why, its files still written, marked in the index.
  auto failed = std::find_if(r->built.begin(), r->built.end(), [](auto &s) { return s.name == "rejects"; });
  ASSERT_NE(failed, r->built.end());
  EXPECT_EQ(failed->status, "failed");
  EXPECT_FALSE(failed->exact);
  EXPECT_NE(failed->error.find("not exact: 0 mismatches in 2046 inputs; the interpreter rejects 1 input, first \"b b b "
                               "b b b b b b b\""),
            std::string::npos)
      << failed->error;
  EXPECT_TRUE(llvm::sys::fs::exists(o.dir + "/models/rejects/checks.json"));

  auto index = json::parse(r->indexJson);
  ASSERT_TRUE(bool(index)) << errorText(index.takeError());
  EXPECT_EQ(index->get("raspc_version")->s, RASPC_TEST_VERSION);
  const auto &models = index->get("models")->array;
  ASSERT_EQ(models.size(), 3u);
  EXPECT_EQ(models[0].get("name")->s, "rejects"); // sorted by name
  EXPECT_EQ(models[0].get("status")->s, "failed");
  EXPECT_EQ(models[1].get("name")->s, "rev");
  EXPECT_EQ(models[1].get("category")->s, "user");
  EXPECT_EQ(models[2].get("name")->s, "sort");
  EXPECT_EQ(models[2].get("status")->s, "ok");
  EXPECT_TRUE(models[2].get("exact")->b);
  EXPECT_EQ(models[2].get("path")->s, "models/sort");
  EXPECT_EQ(models[2].get("n_layers")->i, model->cfg.n_layers);
  EXPECT_EQ(models[2].get("d_model")->i, model->cfg.d_model);
  EXPECT_EQ(models[2].get("nodes")->i, int64_t(model->nodes.size()));
  EXPECT_EQ(models[2].get("vocab")->array.size(), 3u);
  EXPECT_EQ(readFile(o.dir + "/index.json"), r->indexJson);

  std::string csv = readFile(o.dir + "/index.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "name,description,category,difficulty,causal,vocab,max_len,n_layers,d_model,"
                                           "n_heads,d_mlp,params,nodes,exact,nodes_checked,nodes_passed,edges,edges_necessary,rotated_exact,"
            "compressed_d_model,compressed_exact,path,status,error");
  EXPECT_NE(csv.find("\nsort,sort | ascending,classic,medium,false,1 2 3,5,"), std::string::npos) << csv;
  std::string readme = readFile(o.dir + "/README.md");
  EXPECT_NE(readme.find("3 models: 2 built and exact against the RASP interpreter, 1 failed."), std::string::npos);
  EXPECT_NE(readme.find("| [sort](models/sort/card.md) | classic | medium | sort \\| ascending |"), std::string::npos)
      << readme;

  // A rerun refuses existing models unless forced; the index is rebuilt from the summaries.
  auto again = suite::build(o);
  ASSERT_FALSE(bool(again));
  EXPECT_EQ(errorText(again.takeError()),
            "'" + o.dir + "/models/rejects' exists (and 2 more model folders); pass --force to rebuild");
  llvm::sys::fs::remove(o.dir + "/index.json");
  auto reindexed = suite::writeIndex(o.dir);
  ASSERT_TRUE(bool(reindexed)) << errorText(reindexed.takeError());
  EXPECT_EQ(*reindexed, r->indexJson);
  // A folder without a summary, or with a damaged one, is listed as failed, with why.
  llvm::sys::fs::create_directories(o.dir + "/models/unfinished");
  const std::string revSummary = readFile(o.dir + "/models/rev/summary.json");
  std::ofstream(o.dir + "/models/rev/summary.json") << "{\"name\": ";
  auto damaged = suite::writeIndex(o.dir);
  ASSERT_TRUE(bool(damaged)) << errorText(damaged.takeError());
  auto dj = json::parse(*damaged);
  ASSERT_TRUE(bool(dj));
  const auto &dm = dj->get("models")->array;
  ASSERT_EQ(dm.size(), 4u);
  EXPECT_EQ(dm[1].get("name")->s, "rev");
  EXPECT_EQ(dm[1].get("status")->s, "failed");
  EXPECT_NE(dm[1].get("error")->s.find(o.dir + "/models/rev/summary.json: invalid JSON at offset"), std::string::npos)
      << dm[1].get("error")->s;
  EXPECT_EQ(dm[3].get("name")->s, "unfinished");
  EXPECT_EQ(dm[3].get("error")->s, "no summary.json: its build did not finish");
  llvm::sys::fs::remove(o.dir + "/models/unfinished");
  std::ofstream(o.dir + "/models/rev/summary.json") << revSummary;
  o.force = true;
  o.programs = dir + "/src/sort.rasp";
  auto forced = suite::build(o);
  ASSERT_TRUE(bool(forced)) << errorText(forced.takeError());
  EXPECT_EQ(forced->built.size(), 1u);
  EXPECT_EQ(forced->failed(), 0);
}

// Shards split the programs by position; each model is the same whether built alone or
// among others, on one thread or several (the compiler and executor share no state).
TEST(SuiteBuild, ShardsAndThreadsGiveTheSameModels) {
  std::string dir = makeDir("shards", {{"a.rasp", kSort}, {"b.rasp", kReverse}, {"c.rasp", kSort}});
  suite::BuildOptions o;
  o.programs = dir + "/src/*.rasp";
  o.dir = dir + "/s2";
  o.shardIndex = 2;
  o.shardCount = 2;
  auto r = suite::build(o);
  ASSERT_TRUE(bool(r)) << errorText(r.takeError());
  ASSERT_EQ(r->built.size(), 1u);
  EXPECT_EQ(r->built[0].name, "b");
  o.shardIndex = 1;
  r = suite::build(o); // the other shard into the same folder
  ASSERT_TRUE(bool(r)) << errorText(r.takeError());
  ASSERT_EQ(r->built.size(), 2u);
  auto index = json::parse(r->indexJson);
  ASSERT_TRUE(bool(index));
  EXPECT_EQ(index->get("models")->array.size(), 3u);

  o.shardIndex = 3;
  auto bad = suite::build(o);
  ASSERT_FALSE(bool(bad));
  EXPECT_EQ(errorText(bad.takeError()), "--shard 3/2: give I/N with 1 <= I <= N");

  suite::BuildOptions one = o, four = o;
  one.shardIndex = four.shardIndex = 1;
  one.shardCount = four.shardCount = 1;
  one.dir = dir + "/one";
  one.jobs = 1;
  four.dir = dir + "/four";
  four.jobs = 4;
  ASSERT_TRUE(bool(suite::build(one)));
  ASSERT_TRUE(bool(suite::build(four)));
  for (const char *name : {"a", "b", "c"})
    for (const char *f : {"model.h5", "model.safetensors", "ground_truth.json", "checks.json"})
      EXPECT_EQ(readFile(one.dir + "/models/" + name + "/" + f), readFile(four.dir + "/models/" + name + "/" + f))
          << name << "/" << f;
  for (const char *name : {"a", "b", "c"})
    EXPECT_EQ(readFile(one.dir + "/models/" + name + "/model.h5"), readFile(dir + "/s2/models/" + name + "/model.h5"));
}

TEST(SuiteBuild, SummaryRoundTrips) {
  suite::ModelSummary s;
  s.name = "x";
  s.description = "a \"quoted\", odd\ndescription";
  s.category = "classic";
  s.vocab = {"a", "b"};
  s.maxLen = 3;
  s.params = 1234567890123;
  s.status = "failed";
  s.error = "x.rasp:1:2: error: oops";
  auto back = suite::ModelSummary::fromJson(s.json(), "summary.json");
  ASSERT_TRUE(bool(back)) << errorText(back.takeError());
  EXPECT_EQ(back->json(), s.json());
  EXPECT_EQ(back->nLayers, -1);
  auto bad = suite::ModelSummary::fromJson("{\"name\": 3}", "m/summary.json");
  ASSERT_FALSE(bool(bad));
  EXPECT_EQ(errorText(bad.takeError()), "m/summary.json: 'name' is missing or not a string");
}

} // namespace
