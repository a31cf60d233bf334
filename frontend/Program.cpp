#include "frontend/Program.h"

#include <llvm/Support/MemoryBuffer.h>

#include <algorithm>
#include <set>
#include <cstdlib>

namespace raspc {

void ProgramOptions::inheritFrom(const ProgramOptions &d) {
  if (!vocab) vocab = d.vocab;
  if (!maxLen) maxLen = d.maxLen;
  if (!output) output = d.output;
  causal = causal || d.causal;
}

Program::Program(llvm::raw_ostream &diagOut) : diags_(sm_, diagOut), eval_(diags_, graph_) {}

bool Program::start() { return eval_.loadPrelude(); }

bool Program::loadFile(const std::string &path) {
  if (!start()) return false;
  return eval_.runFile(path, &mainBuffer_);
}

bool Program::loadSource(llvm::StringRef source, llvm::StringRef name) {
  if (!start()) return false;
  mainBuffer_ = sm_.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(source, name), llvm::SMLoc());
  return eval_.runBuffer(mainBuffer_);
}

std::optional<ProgramOptions> Program::loadFileWithOptions(const std::string &path, ProgramOptions flags) {
  if (!loadFile(path)) return std::nullopt;
  auto header = headerOptions();
  if (!header) return std::nullopt;
  flags.inheritFrom(*header);
  return flags;
}

std::string vocabularyProblem(const std::vector<std::string> &vocab) {
  std::set<std::string> seen;
  for (const std::string &tok : vocab) {
    if (tok == "<bos>" || tok == "<pad>") return "'" + tok + "' is reserved (the runtime adds BOS and PAD itself)";
    if (!seen.insert(tok).second) return "'" + tok + "' appears twice";
  }
  return "";
}

std::vector<std::string> splitArgs(llvm::StringRef text, std::string *error) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i >= text.size()) break;
    std::string arg;
    while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) {
      if (text[i] == '"') {
        size_t close = text.find('"', i + 1);
        if (close == llvm::StringRef::npos) {
          if (error) *error = "unterminated quote";
          close = text.size();
        }
        arg += text.substr(i + 1, close - i - 1).str();
        i = std::min(close + 1, text.size());
      } else {
        arg += text[i++];
      }
    }
    out.push_back(arg);
  }
  return out;
}

std::optional<ProgramOptions> Program::headerOptions() {
  ProgramOptions opts;
  if (mainBuffer_ == 0) return opts;
  llvm::StringRef src = sm_.getMemoryBuffer(mainBuffer_)->getBuffer();
  bool ok = true;
  // Only the leading block of comment lines counts as the header.
  while (!src.empty()) {
    llvm::StringRef line = src.take_until([](char c) { return c == '\n'; });
    src = src.drop_front(std::min(src.size(), line.size() + 1));
    llvm::StringRef t = line.trim();
    if (t.empty()) continue;
    if (!t.startswith("#")) break;
    llvm::StringRef body = t.drop_front().ltrim();
    if (!body.consume_front("raspc:")) continue;
    auto at = [&](llvm::StringRef s) { return llvm::SMLoc::getFromPointer(s.data()); };
    std::string splitError;
    std::vector<std::string> args = splitArgs(body, &splitError);
    if (!splitError.empty()) {
      diags_.error(at(body), "in the raspc: header: " + splitError);
      ok = false;
      continue;
    }
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string &a = args[i];
      size_t pos = body.find(a);
      llvm::SMLoc loc = at(pos == llvm::StringRef::npos ? body : body.substr(pos));
      auto value = [&]() -> std::optional<std::string> {
        if (i + 1 >= args.size()) {
          diags_.error(loc, "header option '" + a + "' needs a value");
          ok = false;
          return std::nullopt;
        }
        return args[++i];
      };
      if (a == "--vocab") {
        if (auto v = value()) {
          opts.vocab = splitArgs(*v);
          if (std::string why = vocabularyProblem(*opts.vocab); !why.empty()) {
            diags_.error(loc, "--vocab: " + why);
            ok = false;
          }
        }
      } else if (a == "--max-len") {
        if (auto v = value()) {
          char *end = nullptr;
          long n = std::strtol(v->c_str(), &end, 10);
          if (v->empty() || *end || n < 1 || n > 100000) {
            diags_.error(loc, "header option --max-len needs a positive integer, got '" + *v + "'");
            ok = false;
          } else {
            opts.maxLen = int(n);
          }
        }
      } else if (a == "--sop") {
        if (auto v = value()) opts.output = *v;
      } else if (a == "--output") {
        diags_.error(loc, "header option --output is now --sop NAME (the s-op to show or compile)");
        ok = false;
      } else if (a == "--causal") {
        opts.causal = true;
      } else {
        diags_.error(loc, "unknown header option '" + a + "' (known: --vocab, --max-len, --sop, --causal)");
        ok = false;
      }
    }
  }
  if (!ok) return std::nullopt;
  return opts;
}

std::optional<ir::NodeId> Program::resolveOutput(const std::optional<std::string> &name) {
  std::string n;
  if (name) {
    n = *name;
  } else if (eval_.lastSOpName()) {
    n = *eval_.lastSOpName();
  } else {
    diags_.error(llvm::SMLoc(), "the program assigns no s-op at the top level; name the output with --sop");
    return std::nullopt;
  }
  const Value *v = eval_.lookup(n);
  if (!v) {
    diags_.error(llvm::SMLoc(), "output '" + n + "' is not defined by the program");
    return std::nullopt;
  }
  if (!v->is(Value::SOp)) {
    diags_.error(llvm::SMLoc(), "output '" + n + "' is " + aTypeName(*v) + ", not an s-op");
    return std::nullopt;
  }
  return v->node();
}

std::optional<std::vector<std::string>> Program::parseInput(const std::string &text, const ProgramOptions &opts) {
  unsigned id = sm_.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(text, "<input>"), llvm::SMLoc());
  llvm::StringRef buf = sm_.getMemoryBuffer(id)->getBuffer();
  std::vector<std::string> tokens;
  bool ok = true;
  size_t i = 0;
  while (i < buf.size()) {
    while (i < buf.size() && std::isspace(static_cast<unsigned char>(buf[i]))) ++i;
    size_t b = i;
    while (i < buf.size() && !std::isspace(static_cast<unsigned char>(buf[i]))) ++i;
    if (b == i) break;
    std::string tok = buf.substr(b, i - b).str();
    if (opts.vocab && std::find(opts.vocab->begin(), opts.vocab->end(), tok) == opts.vocab->end()) {
      std::string vocab;
      for (auto &v : *opts.vocab) vocab += (vocab.empty() ? "" : " ") + v;
      diags_.error(llvm::SMLoc::getFromPointer(buf.data() + b),
                   "input token '" + tok + "' is not in the vocabulary {" + vocab + "}");
      ok = false;
    }
    tokens.push_back(std::move(tok));
  }
  if (opts.maxLen && int(tokens.size()) > *opts.maxLen) {
    diags_.error(llvm::SMLoc::getFromPointer(buf.data()), "input has " + std::to_string(tokens.size()) +
                                                              " tokens, more than the maximum length " +
                                                              std::to_string(*opts.maxLen));
    ok = false;
  }
  if (!ok) return std::nullopt;
  return tokens;
}

InterpreterOptions Program::interpreterOptions(const ProgramOptions &opts) const {
  InterpreterOptions io;
  io.causal = opts.causal;
  if (opts.vocab && !opts.vocab->empty())
    io.intTokens = allIntTokens(*opts.vocab);
  return io;
}

bool Program::interpret(Interpreter &interp, const std::vector<std::string> &tokens,
                        const std::vector<ir::NodeId> &roots) {
  if (auto err = interp.run(tokens, roots)) {
    diags_.report(std::move(err));
    return false;
  }
  return true;
}

std::string formatSequence(const std::vector<Scalar> &v, bool json) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + (json ? jsonScalar(v[i]) : formatScalar(v[i]));
  return s + "]";
}

std::string formatSelectorRows(const SelectorValue &s, bool json, const std::string &indent) {
  std::string out = json ? "[" : "";
  for (size_t q = 0; q < s.n; ++q) {
    std::string row = "[";
    for (size_t k = 0; k < s.n; ++k) row += std::string(k ? ", " : "") + (s.at(q, k) ? "1" : "0");
    row += "]";
    if (json) out += (q ? ", " : "") + row;
    else out += indent + row + "\n";
  }
  return json ? out + "]" : out;
}

} // namespace raspc
