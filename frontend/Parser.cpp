#include "frontend/Parser.h"

namespace raspc {
namespace {

using namespace ast;

// Unwinds to the statement level after a diagnostic; `recovered` when the parser
// already skipped to a statement boundary.
struct SyntaxError {
  bool recovered = false;
};

class Parser {
public:
  Parser(std::vector<Token> toks, DiagnosticEngine &diags) : toks_(std::move(toks)), diags_(diags) {}

  std::vector<StmtPtr> parseProgram() {
    std::vector<StmtPtr> out;
    while (!at(Tok::Eof) && !diags_.tooMany()) {
      if (at(Tok::RBrace)) {
        // Not error(): its SyntaxError would escape, no statement to unwind to here.
        diags_.error(cur().loc(), "unmatched '}'");
        ++pos_;
        continue;
      }
      if (StmtPtr s = parseStatementRecovering()) out.push_back(std::move(s));
    }
    return out;
  }

private:
  std::vector<Token> toks_;
  size_t pos_ = 0;
  DiagnosticEngine &diags_;
  unsigned nesting_ = 0;
  unsigned functions_ = 0; // function bodies we are inside

  const Token &cur() const { return toks_[pos_]; }
  const Token &peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  bool at(Tok k) const { return cur().kind == k; }
  Token take() {
    Token t = cur();
    if (t.kind != Tok::Eof) ++pos_;
    return t;
  }
  bool accept(Tok k) {
    if (!at(k)) return false;
    ++pos_;
    return true;
  }

  [[noreturn]] void error(llvm::SMLoc loc, const llvm::Twine &msg) {
    diags_.error(loc, msg);
    throw SyntaxError{};
  }
  [[noreturn]] void unexpected(const char *what) {
    const Token &t = cur();
    std::string found = t.kind == Tok::Eof ? "end of file" : "'" + t.text.str() + "'";
    if (t.kind == Tok::String || t.kind == Tok::Ident || t.kind == Tok::Int || t.kind == Tok::Float)
      found = std::string(tokSpelling(t.kind)) + " '" + t.text.str() + "'";
    error(t.loc(), llvm::Twine("expected ") + what + ", found " + found);
  }
  Token expect(Tok k, const char *context = nullptr) {
    if (!at(k)) {
      std::string what = tokSpelling(k);
      if (context) what += std::string(" ") + context;
      unexpected(what.c_str());
    }
    return take();
  }

  struct NestGuard {
    Parser &p;
    NestGuard(Parser &p, llvm::SMLoc loc) : p(p) {
      if (++p.nesting_ > kMaxNesting) {
        --p.nesting_;
        p.error(loc, llvm::Twine("nesting is too deep (more than ") + llvm::Twine(kMaxNesting) + " levels)");
      }
    }
    ~NestGuard() { --p.nesting_; }
  };

  // Skip past the '}' that closes the block we are in.
  void skipPastCloseBrace() {
    int depth = 0;
    while (!at(Tok::Eof)) {
      Tok k = take().kind;
      if (k == Tok::LBrace) ++depth;
      if (k == Tok::RBrace && depth-- == 0) return;
    }
  }

  // Skip to just after the next ';' (or to a '}' / end of file) at this nesting level.
  void synchronize() {
    int depth = 0;
    while (!at(Tok::Eof)) {
      Tok k = cur().kind;
      if (depth == 0 && k == Tok::Semi) { ++pos_; return; }
      if (depth == 0 && k == Tok::RBrace) return;
      if (k == Tok::LParen || k == Tok::LBracket || k == Tok::LBrace) ++depth;
      if ((k == Tok::RParen || k == Tok::RBracket || k == Tok::RBrace) && depth > 0) --depth;
      ++pos_;
    }
  }

  StmtPtr parseStatementRecovering() {
    size_t start = pos_;
    unsigned nesting = nesting_;
    try {
      return parseStatement();
    } catch (SyntaxError &e) {
      nesting_ = nesting;
      if (e.recovered) return nullptr;
      if (pos_ == start) ++pos_; // always make progress
      synchronize();
      return nullptr;
    }
  }

  // statements until '}' (not consumed); for function bodies stops at 'return'.
  std::vector<StmtPtr> parseBlock(bool stopAtReturn) {
    std::vector<StmtPtr> body;
    while (!at(Tok::RBrace) && !at(Tok::Eof) && !(stopAtReturn && at(Tok::KwReturn))) {
      if (diags_.tooMany()) throw SyntaxError{};
      if (StmtPtr s = parseStatementRecovering()) body.push_back(std::move(s));
    }
    return body;
  }

  StmtPtr parseStatement() {
    const Token &t = cur();
    switch (t.kind) {
    case Tok::KwDef: return parseDef();
    case Tok::KwFor: return parseFor();
    case Tok::KwLoad: {
      auto s = std::make_unique<Stmt>(StmtKind::Load, take().loc());
      Token path = expect(Tok::String, "after 'load'");
      s->path = path.text.drop_front().drop_back().str();
      s->values.clear();
      s->nameLocs.push_back(path.loc());
      expect(Tok::Semi, "after load statement");
      return s;
    }
    case Tok::KwReturn:
      error(t.loc(), functions_ ? "'return' inside a loop body: a function returns once, at its end"
                                : "'return' outside a function");
    default: break;
    }
    if (StmtPtr r = parseReplStatement()) return r;
    if (t.kind == Tok::Ident && (peek().kind == Tok::Assign || peek().kind == Tok::Comma)) {
      auto s = std::make_unique<Stmt>(StmtKind::Assign, t.loc());
      do {
        Token name = expect(Tok::Ident, "in assignment target list");
        s->names.push_back(name.text.str());
        s->nameLocs.push_back(name.loc());
      } while (accept(Tok::Comma));
      expect(Tok::Assign, "after assignment targets");
      s->values = parseExprList();
      expect(Tok::Semi, "at end of statement");
      return s;
    }
    auto s = std::make_unique<Stmt>(StmtKind::Expr, t.loc());
    s->values.push_back(parseExpr());
    if (at(Tok::Assign)) error(cur().loc(), "can only assign to names");
    expect(Tok::Semi, "at end of statement");
    return s;
  }

  bool atWord(size_t k, llvm::StringRef w) const { return peek(k).kind == Tok::Ident && peek(k).text == w; }

  // The original REPL's commands, which its files may contain too (without ';'):
  //   set [s-op|selector] example EXPR | show [s-op|selector] example
  //   full seq display on|off | [s-op|selector] examples on|off | exit | quit
  // Each is recognised only in a form no RASP statement can take, so names like `set`
  // or `show` stay usable as variables.
  StmtPtr parseReplStatement() {
    if (!at(Tok::Ident)) return nullptr;
    llvm::SMLoc loc = cur().loc();
    // Width of a subset word at offset k: "selector" (1 token), "s-op" (3 tokens), or 0.
    auto subset = [&](size_t k, std::string &name) -> size_t {
      if (atWord(k, "selector")) { name = "selector"; return 1; }
      if (atWord(k, "s") && peek(k + 1).kind == Tok::Minus && atWord(k + 2, "op")) { name = "s-op"; return 3; }
      return 0;
    };
    auto make = [&](const char *what, std::string sub, size_t tokens) {
      auto s = std::make_unique<Stmt>(StmtKind::Repl, loc);
      s->names = {what, std::move(sub)};
      pos_ += tokens;
      return s;
    };
    auto onOff = [&](StmtPtr s) {
      if (!atWord(0, "on") && !atWord(0, "off")) unexpected("'on' or 'off'");
      s->path = take().text.str();
      accept(Tok::Semi);
      return s;
    };
    std::string sub;
    llvm::StringRef w = cur().text;
    if (w == "set" || w == "show") {
      size_t k = subset(1, sub);
      if (!atWord(1 + k, "example")) return nullptr;
      auto s = make(w == "set" ? "set_example" : "show_example", sub, 2 + k);
      if (w == "set") s->values.push_back(parseExpr());
      accept(Tok::Semi);
      return s;
    }
    if (w == "full" && atWord(1, "seq") && atWord(2, "display")) return onOff(make("full_seq", "", 3));
    size_t k = subset(0, sub);
    if (atWord(k, "examples") && (atWord(k + 1, "on") || atWord(k + 1, "off")))
      return onOff(make("examples", sub, k + 1));
    if (w == "exit" || w == "quit") {
      bool call = peek().kind == Tok::LParen && peek(2).kind == Tok::RParen;
      Tok next = peek(call ? 3 : 1).kind;
      if (next != Tok::Semi && next != Tok::Eof && next != Tok::Ident && next != Tok::KwDef && next != Tok::KwFor &&
          next != Tok::KwLoad)
        return nullptr;
      auto s = make("exit", "", call ? 3 : 1);
      accept(Tok::Semi);
      return s;
    }
    return nullptr;
  }

  StmtPtr parseDef() {
    auto s = std::make_unique<Stmt>(StmtKind::Def, take().loc());
    NestGuard g(*this, s->loc);
    Token name = expect(Tok::Ident, "after 'def'");
    s->names.push_back(name.text.str());
    s->nameLocs.push_back(name.loc());
    expect(Tok::LParen, "after function name");
    if (!at(Tok::RParen)) {
      do {
        Token p = expect(Tok::Ident, "as parameter name");
        for (auto &q : s->params)
          if (q == p.text) error(p.loc(), "duplicate parameter '" + p.text + "'");
        s->params.push_back(p.text.str());
        s->paramLocs.push_back(p.loc());
      } while (accept(Tok::Comma));
    }
    expect(Tok::RParen, "after parameters");
    expect(Tok::LBrace, "to open the function body");
    ++functions_;
    struct Leave {
      unsigned &n;
      ~Leave() { --n; }
    } leave{functions_};
    s->body = parseBlock(/*stopAtReturn=*/true);
    if (!at(Tok::KwReturn)) {
      if (at(Tok::RBrace)) {
        llvm::SMLoc loc = take().loc(); // the body is over: recover after it
        diags_.error(loc, "function '" + name.text + "' has no return statement (it must end with one)");
        throw SyntaxError{true};
      }
      unexpected("'return'");
    }
    s->returnLoc = take().loc();
    s->values = parseExprList();
    expect(Tok::Semi, "after return value");
    if (!at(Tok::RBrace)) {
      if (at(Tok::Eof)) unexpected("'}' to close the function body");
      llvm::SMLoc loc = cur().loc();
      skipPastCloseBrace();
      diags_.error(loc, "'return' must be the last statement of function '" + name.text + "'");
      throw SyntaxError{true};
    }
    take();
    return s;
  }

  StmtPtr parseFor() {
    auto s = std::make_unique<Stmt>(StmtKind::For, take().loc());
    NestGuard g(*this, s->loc);
    do {
      Token name = expect(Tok::Ident, "as loop variable");
      s->names.push_back(name.text.str());
      s->nameLocs.push_back(name.loc());
    } while (accept(Tok::Comma));
    expect(Tok::KwIn, "after loop variables");
    s->values.push_back(parseExpr());
    expect(Tok::LBrace, "to open the loop body");
    s->body = parseBlock(/*stopAtReturn=*/false);
    expect(Tok::RBrace, "to close the loop body");
    return s;
  }

  std::vector<ExprPtr> parseExprList() {
    std::vector<ExprPtr> out;
    out.push_back(parseExpr());
    while (accept(Tok::Comma)) out.push_back(parseExpr());
    return out;
  }

  ExprPtr node(ExprKind k, llvm::SMLoc loc) { return std::make_unique<Expr>(k, loc); }

  ExprPtr finish(ExprPtr e) {
    unsigned d = 0;
    for (Expr *c : {e->a.get(), e->b.get(), e->c.get()})
      if (c) d = std::max(d, c->depth);
    for (auto &c : e->items) d = std::max(d, c->depth);
    e->depth = d + 1;
    if (e->depth > kMaxExprDepth)
      error(e->loc, llvm::Twine("expression is too deeply nested (more than ") +
                        llvm::Twine(kMaxExprDepth) + " levels)");
    return e;
  }

  ExprPtr binary(Tok op, llvm::SMLoc loc, ExprPtr l, ExprPtr r) {
    auto e = node(ExprKind::Binary, loc);
    e->op = op;
    e->a = std::move(l);
    e->b = std::move(r);
    return finish(std::move(e));
  }

  // Precedence, loosest first: in < ternary < and/or < select (an atom here) <
  // comparisons < + - < % < * / < ^ < prefix < postfix < primary.
  ExprPtr parseExpr() {
    NestGuard g(*this, cur().loc());
    ExprPtr l = parseTernary();
    while (at(Tok::KwIn)) {
      llvm::SMLoc loc = take().loc();
      l = binary(Tok::KwIn, loc, std::move(l), parseTernary());
    }
    return l;
  }

  ExprPtr parseTernary() {
    ExprPtr l = parseLogic();
    while (at(Tok::KwIf)) {
      auto e = node(ExprKind::Ternary, take().loc());
      e->a = std::move(l);
      e->b = parseExpr();
      expect(Tok::KwElse, "in conditional expression");
      e->c = parseLogic();
      l = finish(std::move(e));
    }
    return l;
  }

  ExprPtr parseLogic() {
    ExprPtr l = parseComparison();
    while (at(Tok::KwAnd) || at(Tok::KwOr)) {
      Token op = take();
      l = binary(op.kind, op.loc(), std::move(l), parseComparison());
    }
    return l;
  }

  static bool isComparison(Tok k) {
    return k == Tok::EqEq || k == Tok::NotEq || k == Tok::Less || k == Tok::LessEq ||
           k == Tok::Greater || k == Tok::GreaterEq;
  }

  ExprPtr parseComparison() {
    ExprPtr l = parseAdditive();
    while (isComparison(cur().kind)) {
      Token op = take();
      l = binary(op.kind, op.loc(), std::move(l), parseAdditive());
    }
    return l;
  }

  ExprPtr parseAdditive() {
    ExprPtr l = parseModulo();
    while (at(Tok::Plus) || at(Tok::Minus)) {
      Token op = take();
      l = binary(op.kind, op.loc(), std::move(l), parseModulo());
    }
    return l;
  }

  ExprPtr parseModulo() {
    ExprPtr l = parseMultiplicative();
    while (at(Tok::Percent)) {
      Token op = take();
      l = binary(op.kind, op.loc(), std::move(l), parseMultiplicative());
    }
    return l;
  }

  ExprPtr parseMultiplicative() {
    ExprPtr l = parsePower();
    while (at(Tok::Star) || at(Tok::Slash)) {
      Token op = take();
      l = binary(op.kind, op.loc(), std::move(l), parsePower());
    }
    return l;
  }

  ExprPtr parsePower() {
    ExprPtr l = parsePrefix();
    while (at(Tok::Caret)) {
      Token op = take();
      l = binary(op.kind, op.loc(), std::move(l), parsePrefix());
    }
    return l;
  }

  ExprPtr parsePrefix() {
    if (at(Tok::KwNot) || at(Tok::Minus) || at(Tok::Plus)) {
      Token op = take();
      NestGuard g(*this, op.loc());
      auto e = node(ExprKind::Unary, op.loc());
      e->op = op.kind;
      e->a = parsePrefix();
      return finish(std::move(e));
    }
    return parsePostfix();
  }

  ExprPtr parsePostfix() {
    ExprPtr e = parsePrimary();
    for (;;) {
      if (at(Tok::LBracket)) {
        auto ix = node(ExprKind::Index, take().loc());
        ix->a = std::move(e);
        ix->b = parseExpr();
        expect(Tok::RBracket, "to close the index");
        e = finish(std::move(ix));
      } else if (at(Tok::LParen)) {
        auto call = node(ExprKind::Call, take().loc());
        call->a = std::move(e);
        if (!at(Tok::RParen)) call->items = parseExprList();
        expect(Tok::RParen, "to close the argument list");
        e = finish(std::move(call));
      } else {
        return e;
      }
    }
  }

  static bool isSelectOp(Tok k) { return isComparison(k); }

  // [e for vars in iterable] / {k: v for vars in iterable}: parses "for vars in it".
  void parseComprehensionTail(Expr &e) {
    expect(Tok::KwFor);
    do {
      Token v = expect(Tok::Ident, "as comprehension variable");
      e.vars.push_back(v.text.str());
      e.varLocs.push_back(v.loc());
    } while (accept(Tok::Comma));
    expect(Tok::KwIn, "after comprehension variables");
    e.b = parseExpr();
  }

  ExprPtr parsePrimary() {
    const Token &t = cur();
    switch (t.kind) {
    case Tok::Int: {
      auto e = node(ExprKind::Int, t.loc());
      e->intValue = take().intValue;
      return e;
    }
    case Tok::Float: {
      auto e = node(ExprKind::Float, t.loc());
      e->floatValue = take().floatValue;
      return e;
    }
    case Tok::String: {
      auto e = node(ExprKind::String, t.loc());
      e->text = take().text.drop_front().drop_back().str();
      return e;
    }
    case Tok::Ident: {
      auto e = node(ExprKind::Name, t.loc());
      e->text = take().text.str();
      return e;
    }
    case Tok::LParen: {
      take();
      ExprPtr e = parseExpr();
      expect(Tok::RParen, "to close '('");
      return e;
    }
    case Tok::KwSelect: {
      auto e = node(ExprKind::Select, take().loc());
      expect(Tok::LParen, "after 'select'");
      e->a = parseExpr();
      expect(Tok::Comma, "after the keys of select");
      e->b = parseExpr();
      expect(Tok::Comma, "after the queries of select");
      // A comparison written bare, or a function of (key, query) by its name (or an
      // expression starting with one: fns[i]).
      if (isSelectOp(cur().kind)) e->op = take().kind;
      else if (cur().kind == Tok::Ident) e->c = parseExpr();
      else unexpected("a comparison (== != < <= > >=) or a function of (key, query) as the third argument of select");
      expect(Tok::RParen, "to close select(...)");
      return finish(std::move(e));
    }
    case Tok::LBracket: {
      auto e = node(ExprKind::List, take().loc());
      if (accept(Tok::RBracket)) return e;
      ExprPtr first = parseExpr();
      if (at(Tok::KwFor)) {
        e->kind = ExprKind::ListComp;
        e->a = std::move(first);
        parseComprehensionTail(*e);
        expect(Tok::RBracket, "to close the list comprehension");
        return finish(std::move(e));
      }
      e->items.push_back(std::move(first));
      while (accept(Tok::Comma)) {
        if (at(Tok::RBracket)) break; // trailing comma
        e->items.push_back(parseExpr());
      }
      expect(Tok::RBracket, "to close the list");
      return finish(std::move(e));
    }
    case Tok::LBrace: {
      auto e = node(ExprKind::Dict, take().loc());
      if (accept(Tok::RBrace)) return e;
      ExprPtr k = parseExpr();
      expect(Tok::Colon, "after dictionary key");
      ExprPtr v = parseExpr();
      if (at(Tok::KwFor)) {
        e->kind = ExprKind::DictComp;
        e->a = std::move(k);
        e->c = std::move(v);
        parseComprehensionTail(*e);
        expect(Tok::RBrace, "to close the dictionary comprehension");
        return finish(std::move(e));
      }
      e->items.push_back(std::move(k));
      e->items.push_back(std::move(v));
      while (accept(Tok::Comma)) {
        if (at(Tok::RBrace)) break;
        e->items.push_back(parseExpr());
        expect(Tok::Colon, "after dictionary key");
        e->items.push_back(parseExpr());
      }
      expect(Tok::RBrace, "to close the dictionary");
      return finish(std::move(e));
    }
    default:
      unexpected("an expression");
    }
  }
};

} // namespace

std::unique_ptr<ast::Module> parseBuffer(unsigned bufferId, DiagnosticEngine &diags) {
  auto module = std::make_unique<ast::Module>();
  module->bufferId = bufferId;
  llvm::StringRef src = diags.sourceMgr().getMemoryBuffer(bufferId)->getBuffer();
  Parser p(lex(src, diags), diags);
  module->statements = p.parseProgram();
  return module;
}

} // namespace raspc
