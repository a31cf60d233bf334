#include "frontend/Lexer.h"

#include <llvm/ADT/StringSwitch.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace raspc {

const char *tokSpelling(Tok t) {
  switch (t) {
  case Tok::Eof: return "end of file";
  case Tok::Int: return "integer";
  case Tok::Float: return "number";
  case Tok::String: return "string";
  case Tok::Ident: return "identifier";
  case Tok::KwDef: return "'def'";
  case Tok::KwReturn: return "'return'";
  case Tok::KwFor: return "'for'";
  case Tok::KwIn: return "'in'";
  case Tok::KwIf: return "'if'";
  case Tok::KwElse: return "'else'";
  case Tok::KwAnd: return "'and'";
  case Tok::KwOr: return "'or'";
  case Tok::KwNot: return "'not'";
  case Tok::KwLoad: return "'load'";
  case Tok::KwSelect: return "'select'";
  case Tok::LParen: return "'('";
  case Tok::RParen: return "')'";
  case Tok::LBracket: return "'['";
  case Tok::RBracket: return "']'";
  case Tok::LBrace: return "'{'";
  case Tok::RBrace: return "'}'";
  case Tok::Comma: return "','";
  case Tok::Semi: return "';'";
  case Tok::Colon: return "':'";
  case Tok::Assign: return "'='";
  case Tok::EqEq: return "'=='";
  case Tok::NotEq: return "'!='";
  case Tok::Less: return "'<'";
  case Tok::LessEq: return "'<='";
  case Tok::Greater: return "'>'";
  case Tok::GreaterEq: return "'>='";
  case Tok::Plus: return "'+'";
  case Tok::Minus: return "'-'";
  case Tok::Star: return "'*'";
  case Tok::Slash: return "'/'";
  case Tok::Percent: return "'%'";
  case Tok::Caret: return "'^'";
  }
  return "token";
}

static bool isIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
static bool isIdentChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
static bool isDigit(char c) { return c >= '0' && c <= '9'; }

std::vector<Token> lex(llvm::StringRef src, DiagnosticEngine &diags) {
  std::vector<Token> out;
  const char *p = src.begin(), *end = src.end();
  auto make = [&](Tok k, const char *b, const char *e) {
    Token t;
    t.kind = k;
    t.text = llvm::StringRef(b, e - b);
    out.push_back(t);
  };
  while (p < end) {
    char c = *p;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') { ++p; continue; }
    if (c == '#') {
      while (p < end && *p != '\n') ++p;
      continue;
    }
    const char *b = p;
    if (isIdentStart(c)) {
      while (p < end && isIdentChar(*p)) ++p;
      llvm::StringRef word(b, p - b);
      Tok k = llvm::StringSwitch<Tok>(word)
                  .Case("def", Tok::KwDef).Case("return", Tok::KwReturn).Case("for", Tok::KwFor)
                  .Case("in", Tok::KwIn).Case("if", Tok::KwIf).Case("else", Tok::KwElse)
                  .Case("and", Tok::KwAnd).Case("or", Tok::KwOr).Case("not", Tok::KwNot)
                  .Case("load", Tok::KwLoad).Case("select", Tok::KwSelect)
                  .Default(Tok::Ident);
      make(k, b, p);
      continue;
    }
    if (isDigit(c)) {
      while (p < end && isDigit(*p)) ++p;
      bool isFloat = false;
      if (p + 1 < end && *p == '.' && isDigit(p[1])) {
        isFloat = true;
        ++p;
        while (p < end && isDigit(*p)) ++p;
      }
      std::string digits(b, p - b);
      make(isFloat ? Tok::Float : Tok::Int, b, p);
      errno = 0;
      if (isFloat) {
        out.back().floatValue = std::strtod(digits.c_str(), nullptr);
      } else {
        out.back().intValue = std::strtoll(digits.c_str(), nullptr, 10);
        if (errno == ERANGE) {
          diags.error(llvm::SMLoc::getFromPointer(b), "integer literal is too large (the limit is 2^63-1)");
          out.back().intValue = 0;
        }
      }
      continue;
    }
    if (c == '"') {
      ++p;
      while (p < end && *p != '"' && *p != '\n') ++p;
      if (p >= end || *p != '"') {
        diags.error(llvm::SMLoc::getFromPointer(b), "unterminated string literal");
        continue; // resume after the line
      }
      ++p;
      make(Tok::String, b, p);
      continue;
    }
    auto two = [&](char next) { return p + 1 < end && p[1] == next; };
    Tok k;
    int len = 1;
    switch (c) {
    case '(': k = Tok::LParen; break;
    case ')': k = Tok::RParen; break;
    case '[': k = Tok::LBracket; break;
    case ']': k = Tok::RBracket; break;
    case '{': k = Tok::LBrace; break;
    case '}': k = Tok::RBrace; break;
    case ',': k = Tok::Comma; break;
    case ';': k = Tok::Semi; break;
    case ':': k = Tok::Colon; break;
    case '+': k = Tok::Plus; break;
    case '-': k = Tok::Minus; break;
    case '*': k = Tok::Star; break;
    case '/': k = Tok::Slash; break;
    case '%': k = Tok::Percent; break;
    case '^': k = Tok::Caret; break;
    case '=': if (two('=')) { k = Tok::EqEq; len = 2; } else k = Tok::Assign; break;
    case '<': if (two('=')) { k = Tok::LessEq; len = 2; } else k = Tok::Less; break;
    case '>': if (two('=')) { k = Tok::GreaterEq; len = 2; } else k = Tok::Greater; break;
    case '!':
      if (two('=')) { k = Tok::NotEq; len = 2; break; }
      [[fallthrough]];
    default: {
      unsigned char uc = static_cast<unsigned char>(c);
      if (std::isprint(uc))
        diags.error(llvm::SMLoc::getFromPointer(b), llvm::Twine("unexpected character '") + llvm::Twine(c) + "'");
      else
        diags.error(llvm::SMLoc::getFromPointer(b),
                    llvm::Twine("unexpected byte 0x") + llvm::Twine::utohexstr(uc));
      // Skip a run of junk so binary input yields one error, not thousands.
      ++p;
      while (p < end && !std::isspace(static_cast<unsigned char>(*p)) && *p != ';' &&
             !std::isprint(static_cast<unsigned char>(*p)))
        ++p;
      if (diags.tooMany()) p = end;
      continue;
    }
    }
    p += len;
    make(k, b, p);
  }
  Token eof;
  eof.kind = Tok::Eof;
  eof.text = llvm::StringRef(end, 0);
  out.push_back(eof);
  return out;
}

} // namespace raspc
