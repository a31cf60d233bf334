// `raspc repl`: the interactive loop of the original RASP. Statements run as they
// are typed; every value is shown on the current example input. The original's own
// commands (`set example ...`, `examples off`, ...) are RASP statements here (the
// parser knows them, so files may hold them too); the loop only has to know where
// they end, since they take no ';'.
#include "frontend/Program.h"
#include "tools/Commands.h"

#include <llvm/LineEditor/LineEditor.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/Regex.h>
#include <llvm/Support/raw_ostream.h>

#include <iostream>
#include <unistd.h>

namespace raspc::tools {
namespace {

// Brace/bracket balance of RASP text, skipping strings and comments.
int balance(llvm::StringRef text) {
  int depth = 0;
  bool inString = false, inComment = false;
  for (char c : text) {
    if (inComment) { inComment = c != '\n'; continue; }
    if (inString) { inString = c != '"' && c != '\n'; continue; }
    if (c == '#') inComment = true;
    else if (c == '"') inString = true;
    else if (c == '(' || c == '[' || c == '{') ++depth;
    else if (c == ')' || c == ']' || c == '}') --depth;
  }
  return depth;
}

// The text without comments, trimmed.
std::string code(llvm::StringRef text) {
  std::string out;
  for (llvm::StringRef line : llvm::split(text, '\n')) out += line.split('#').first.str() + "\n";
  return llvm::StringRef(out).trim().str();
}

// Whether `text` is a whole input: statements end with ';' or '}', the REPL's
// commands at the end of their line.
bool complete(llvm::StringRef text) {
  if (balance(text) > 0) return false;
  std::string t = code(text);
  // What follows the last ';' or '}' outside strings must be empty or a command.
  size_t end = 0;
  bool inString = false;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '"') inString = !inString;
    else if (!inString && (t[i] == ';' || t[i] == '}')) end = i + 1;
  }
  std::string tail = llvm::StringRef(t).drop_front(end).trim().str();
  if (tail.empty()) return true;
  static const llvm::Regex command(
      "^((set|show)[ \t]+((s-op|selector)[ \t]+)?example|full[ \t]+seq[ \t]+display[ \t]+(on|off)$|"
      "((s-op|selector)[ \t]+)?examples[ \t]+(on|off)$|(exit|quit)(\\(\\))?$|help$)");
  return command.match(tail);
}

const char *seqType(const std::vector<Scalar> &v) {
  const char *type = nullptr;
  for (auto &x : v) {
    if (isNone(x)) continue;
    const char *t = std::holds_alternative<bool>(x)      ? "bools"
                    : std::holds_alternative<int64_t>(x) ? "ints"
                    : std::holds_alternative<double>(x)  ? "floats"
                                                         : "strings";
    if (type && std::string(type) != t) return "mixed";
    type = t;
  }
  return type ? type : "none";
}

std::string jsonString(const std::string &s) { return "\"" + jsonEscape(s) + "\""; }

// Host values as JSON: dict keys become strings.
std::string jsonValue(const Value &v) {
  if (v.isScalar()) return jsonScalar(v.scalar());
  if (v.is(Value::List)) {
    std::string out = "[";
    for (size_t i = 0; i < v.asList().items.size(); ++i) out += (i ? ", " : "") + jsonValue(v.asList().items[i]);
    return out + "]";
  }
  if (v.is(Value::Dict)) {
    std::string out = "{";
    bool first = true;
    for (auto &[k, x] : v.asDict().items) {
      out += (first ? "" : ", ") + jsonString(formatScalar(k.scalar())) + ": " + jsonValue(x);
      first = false;
    }
    return out + "}";
  }
  // An s-op or selector inside a container has no single value to show: its kind.
  if (v.is(Value::SOp)) return "{\"kind\": \"sop\"}";
  if (v.is(Value::Sel)) return "{\"kind\": \"selector\"}";
  if (v.is(Value::Func)) {
    std::string params;
    for (auto &p : v.asFunc().def->params) params += (params.empty() ? "" : ", ") + jsonString(p);
    return "{\"kind\": \"function\", \"params\": [" + params + "]}";
  }
  return jsonString(typeName(v));
}

class Repl {
public:
  Repl(Program &p, bool json, std::string *diagText) : p_(p), json_(json), diagText_(diagText) {
    p_.evaluator().onTopLevel = [this](const std::string &name, const Value &v) { show(name, v); };
    p_.evaluator().onRepl = [this](const ast::Stmt &s) { command(s); };
    // As the original, a `load` lists what the file defined, s-ops and selectors without
    // their values (its `out` is its scratch name, not shown).
    p_.evaluator().onLoad = [this](const std::vector<std::pair<std::string, Value>> &defs) {
      for (auto &[name, v] : defs)
        if (name != "out") show(name, v, /*brief=*/true);
    };
  }

  const Evaluator::ReplState &state() { return p_.evaluator().repl; }

  std::vector<Scalar> exampleScalars() {
    std::vector<Scalar> out;
    for (auto &t : state().example)
      out.push_back(state().intExample ? Scalar(int64_t(std::stoll(t))) : Scalar(t));
    return out;
  }

  void show(const std::string &name, const Value &v, bool brief = false) {
    std::string prefix = name.empty() ? "" : name + " = ";
    std::string jname = name.empty() ? "null" : jsonString(name);
    if (v.is(Value::SOp) || v.is(Value::Sel)) {
      bool sop = v.is(Value::SOp);
      if (brief || !(sop ? state().showSOpExamples : state().showSelectorExamples)) {
        if (json_) result("{\"name\": " + jname + ", \"kind\": \"" + (sop ? "sop" : "selector") + "\"}");
        else std::cout << prefix << (sop ? "<s-op>" : "<selector>") << "\n";
        return;
      }
      InterpreterOptions opts;
      opts.intTokens = state().intExample;
      Interpreter interp(p_.graph(), opts);
      if (!p_.interpret(interp, state().example, {v.node()})) return;
      std::string example = formatSequence(exampleScalars(), true);
      if (sop) {
        const auto &vals = interp.sop(v.node());
        if (json_)
          result("{\"name\": " + jname + ", \"kind\": \"sop\", \"example\": " + example + ", \"value\": " +
                 formatSequence(vals, true) + ", \"type\": \"" + seqType(vals) + "\"}");
        else
          std::cout << prefix << formatSequence(vals, false) << "\n";
      } else if (json_) {
        result("{\"name\": " + jname + ", \"kind\": \"selector\", \"example\": " + example + ", \"value\": " +
               formatSelectorRows(interp.selector(v.node()), true, "") + "}");
      } else {
        std::cout << (name.empty() ? "selector" : name) << " =\n"
                  << formatSelectorRows(interp.selector(v.node()), false, "  ");
      }
      return;
    }
    if (v.is(Value::Func)) {
      const auto &params = v.asFunc().def->params;
      std::string list;
      for (size_t i = 0; i < params.size(); ++i) list += (i ? ", " : "") + (json_ ? jsonString(params[i]) : params[i]);
      if (json_) result("{\"name\": " + jname + ", \"kind\": \"function\", \"params\": [" + list + "]}");
      else std::cout << prefix << "<function(" << list << ")>\n";
      return;
    }
    // Like Python's REPL, an expression that gives None (a `draw(...)`) prints nothing.
    if (name.empty() && v.is(Value::None)) return;
    if (json_) result("{\"name\": " + jname + ", \"kind\": \"value\", \"value\": " + jsonValue(v) + "}");
    else std::cout << prefix << formatValue(v) << "\n";
  }

  void command(const ast::Stmt &s) {
    const std::string &what = s.names[0];
    if (what != "set_example" && what != "show_example") return;
    std::string example = formatSequence(exampleScalars(), json_);
    if (json_) result("{\"kind\": \"example\", \"value\": " + example + "}");
    else std::cout << "example: " << example << "\n";
  }

  // Runs one complete input (lines first..last); false once it asked to quit.
  bool handle(const std::string &chunk, unsigned first, unsigned last) {
    std::string t = code(chunk);
    if (t == "help") {
      std::cout << "RASP statements end with ';'. Commands: set example \"text\" | set example [1, 2] | "
                   "show example | examples on|off | full seq display on|off | exit\n";
      return true;
    }
    if (!t.empty()) {
      unsigned id = p_.sourceMgr().AddNewSourceBuffer(
          llvm::MemoryBuffer::getMemBufferCopy(chunk, "<repl:" + std::to_string(first) + ">"), llvm::SMLoc());
      p_.evaluator().runBuffer(id);
      p_.diags().flushRepeats(); // "this error occurred N more times", for this input
    }
    if (json_) {
      if (!diagText_->empty()) {
        result("{\"kind\": \"error\", \"message\": " + jsonString(llvm::StringRef(*diagText_).rtrim().str()) + "}");
        diagText_->clear();
      }
      std::cout << "{\"line\": " << first << ", \"end_line\": " << last << ", \"results\": [" << results_
                << "]}\n";
      results_.clear();
    }
    return !state().exitRequested;
  }

private:
  void result(const std::string &json) { results_ += (results_.empty() ? "" : ", ") + json; }

  Program &p_;
  bool json_;
  std::string *diagText_; // where diagnostics go in JSON mode
  std::string results_;
};

} // namespace

int runRepl(const std::optional<std::string> &file, bool json, bool tokensAsStrings) {
  std::string diagText;
  llvm::raw_string_ostream diagStream(diagText);
  diagStream.SetUnbuffered();
  Program p(json ? static_cast<llvm::raw_ostream &>(diagStream) : llvm::errs());
  if (tokensAsStrings) p.evaluator().bindTokensAsStrings();
  p.evaluator().reportPoisonUse = true;
  bool ok = file ? p.loadFile(*file) : p.loadSource("", "<repl>");
  if (!ok && file) llvm::errs() << "raspc: errors in '" << *file << "'; continuing\n";
  if (json && !diagText.empty()) {
    llvm::errs() << diagText;
    diagText.clear();
  }
  Repl repl(p, json, &diagText);
  std::unique_ptr<llvm::LineEditor> editor;
  if (!json && isatty(0)) {
    editor = std::make_unique<llvm::LineEditor>("raspc");
    std::cout << "raspc repl: RASP statements end with ';'. 'help' for commands, 'exit' to leave.\n";
  }
  std::string chunk;
  unsigned lineNo = 0, first = 1;
  for (;;) {
    std::optional<std::string> line;
    if (editor) {
      editor->setPrompt(chunk.empty() ? ">> " : ".. ");
      if (auto l = editor->readLine()) line = *l;
    } else {
      std::string l;
      if (std::getline(std::cin, l)) line = l;
    }
    if (!line) break;
    ++lineNo;
    if (chunk.empty()) first = lineNo;
    chunk += *line + "\n";
    if (!complete(chunk)) continue;
    bool go = repl.handle(chunk, first, lineNo);
    chunk.clear();
    std::cout.flush();
    if (!go) return 0;
  }
  if (!code(chunk).empty()) repl.handle(chunk, first, lineNo);
  return 0;
}

} // namespace raspc::tools
