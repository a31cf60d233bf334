// `raspc repl`: the interactive loop of the original RASP. Statements run as they
// are typed; every value is shown on the current example input.
#include "frontend/Program.h"
#include "tools/Commands.h"

#include <llvm/LineEditor/LineEditor.h>
#include <llvm/Support/MemoryBuffer.h>
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

bool complete(llvm::StringRef text) {
  if (balance(text) > 0) return false;
  std::string code;
  for (llvm::StringRef line : llvm::split(text, '\n')) code += line.split('#').first.str() + "\n";
  llvm::StringRef t = llvm::StringRef(code).rtrim();
  return t.empty() || t.endswith(";") || t.endswith("}");
}

// "set example" accepts: 3 1 2  |  "hello" (its characters)  |  [1, 2, 3]
std::vector<std::string> parseExample(llvm::StringRef text) {
  text = text.trim();
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
    std::vector<std::string> chars;
    for (char c : text.drop_front().drop_back()) chars.emplace_back(1, c);
    return chars;
  }
  std::string cleaned;
  for (char c : text) cleaned += (c == '[' || c == ']' || c == ',') ? ' ' : c;
  std::vector<std::string> out;
  for (auto &t : splitArgs(cleaned)) out.push_back(t);
  return out;
}

class Repl {
public:
  explicit Repl(Program &p) : p_(p) {
    p_.evaluator().onTopLevel = [this](const std::string &name, const Value &v) { show(name, v); };
  }

  void show(const std::string &name, const Value &v) {
    std::string prefix = name.empty() ? "" : name + " = ";
    if (v.is(Value::SOp) || v.is(Value::Sel)) {
      Interpreter interp(p_.graph());
      if (!p_.interpret(interp, example_, {v.node()})) return;
      if (v.is(Value::SOp)) {
        std::cout << prefix << formatSequence(interp.sop(v.node()), false) << "\n";
      } else {
        std::cout << (name.empty() ? "selector" : name) << " =\n"
                  << formatSelectorRows(interp.selector(v.node()), false, "  ");
      }
      return;
    }
    if (v.is(Value::Func)) {
      std::cout << prefix << "<function>\n";
      return;
    }
    std::cout << prefix << formatValue(v) << "\n";
  }

  // Returns false to quit.
  bool handle(const std::string &chunk) {
    llvm::StringRef t = llvm::StringRef(chunk).trim();
    llvm::StringRef bare = t;
    bare.consume_back(";");
    bare = bare.trim();
    if (bare == "exit" || bare == "quit" || bare == "exit()" || bare == "quit()") return false;
    if (bare == "help") {
      std::cout << "RASP statements end with ';'. Commands: set example TOKENS | set example \"text\" | "
                   "show example | exit\n";
      return true;
    }
    if (bare == "show example") {
      std::cout << "example: " << formatSequence(toScalars(example_), false) << "\n";
      return true;
    }
    if (bare.consume_front("set example")) {
      example_ = parseExample(bare);
      std::cout << "example: " << formatSequence(toScalars(example_), false) << "\n";
      return true;
    }
    if (t.empty()) return true;
    unsigned id = p_.sourceMgr().AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(chunk, "<repl:" + std::to_string(++count_) + ">"), llvm::SMLoc());
    p_.evaluator().runBuffer(id);
    p_.diags().flushRepeats(); // "this error occurred N more times", for this input
    return true;
  }

  static std::vector<Scalar> toScalars(const std::vector<std::string> &toks) {
    bool ints = allIntTokens(toks);
    std::vector<Scalar> out;
    for (auto &t : toks) out.push_back(ints ? Scalar(int64_t(std::stoll(t))) : Scalar(t));
    return out;
  }

private:
  Program &p_;
  std::vector<std::string> example_ = {"h", "e", "l", "l", "o"};
  unsigned count_ = 0;
};

} // namespace

int runRepl(const std::optional<std::string> &file) {
  Program p(llvm::errs());
  bool ok = file ? p.loadFile(*file) : p.loadSource("", "<repl>");
  if (!ok && file) llvm::errs() << "raspc: errors in '" << *file << "'; continuing\n";
  Repl repl(p);
  bool tty = isatty(0);
  std::unique_ptr<llvm::LineEditor> editor;
  if (tty) {
    editor = std::make_unique<llvm::LineEditor>("raspc");
    std::cout << "raspc repl: RASP statements end with ';'. 'help' for commands, 'exit' to leave.\n";
  }
  std::string chunk;
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
    chunk += *line + "\n";
    llvm::StringRef t = llvm::StringRef(chunk).trim();
    bool command = t.startswith("set example") || t.startswith("show example") || t == "exit" || t == "quit" ||
                   t == "exit()" || t == "quit()" || t == "help";
    if (!command && !complete(chunk)) continue;
    bool go = repl.handle(chunk);
    chunk.clear();
    std::cout.flush();
    if (!go) break;
  }
  if (!llvm::StringRef(chunk).trim().empty()) repl.handle(chunk);
  return 0;
}

} // namespace raspc::tools
