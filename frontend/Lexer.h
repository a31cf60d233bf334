// The RASP lexer: turns one source buffer into tokens, reporting bad characters.
#pragma once
#include "frontend/Diagnostics.h"

#include <llvm/ADT/StringRef.h>

#include <cstdint>
#include <string>
#include <vector>

namespace raspc {

enum class Tok : uint8_t {
  Eof, Int, Float, String, Ident,
  // keywords
  KwDef, KwReturn, KwFor, KwIn, KwIf, KwElse, KwAnd, KwOr, KwNot, KwLoad, KwSelect,
  // punctuation
  LParen, RParen, LBracket, RBracket, LBrace, RBrace, Comma, Semi, Colon, Assign,
  EqEq, NotEq, Less, LessEq, Greater, GreaterEq, Plus, Minus, Star, Slash, Percent, Caret,
};

const char *tokSpelling(Tok t); // "'=='", "identifier", "end of file", ...

struct Token {
  Tok kind = Tok::Eof;
  llvm::StringRef text; // points into the source buffer
  int64_t intValue = 0;
  double floatValue = 0;
  llvm::SMLoc loc() const { return llvm::SMLoc::getFromPointer(text.data()); }
};

// Lexes the whole buffer. Errors (stray characters, unterminated strings, integers
// too large) are reported to `diags` and the offending characters skipped.
std::vector<Token> lex(llvm::StringRef source, DiagnosticEngine &diags);

} // namespace raspc
