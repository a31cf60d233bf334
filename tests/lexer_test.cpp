#include "frontend/Lexer.h"

#include <gtest/gtest.h>
#include <llvm/Support/MemoryBuffer.h>

using namespace raspc;

namespace {

struct Lexed {
  llvm::SourceMgr sm;
  std::string diags;
  llvm::raw_string_ostream os{diags};
  DiagnosticEngine engine{sm, os};
  std::vector<Token> toks;
  explicit Lexed(const std::string &src) {
    unsigned id = sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(src, "lex.rasp"), llvm::SMLoc());
    toks = lex(sm.getMemoryBuffer(id)->getBuffer(), engine);
    os.flush();
  }
  std::vector<Tok> kinds() const {
    std::vector<Tok> k;
    for (auto &t : toks) k.push_back(t.kind);
    return k;
  }
};

TEST(Lexer, NumbersStringsIdentifiers) {
  Lexed l("12 1.5 \"a b\" _x9 tokens 3");
  ASSERT_EQ(l.diags, "");
  EXPECT_EQ(l.kinds(), (std::vector<Tok>{Tok::Int, Tok::Float, Tok::String, Tok::Ident, Tok::Ident, Tok::Int,
                                          Tok::Eof}));
}

TEST(Lexer, Values) {
  Lexed l("12 1.5 \"hi there\"");
  EXPECT_EQ(l.toks[0].intValue, 12);
  EXPECT_DOUBLE_EQ(l.toks[1].floatValue, 1.5);
  EXPECT_EQ(l.toks[2].text, "\"hi there\"");
}

TEST(Lexer, KeywordsAndOperators) {
  Lexed l("def return for in if else and or not load select == != <= >= < > = + - * / % ^ ( ) [ ] { } , ; :");
  EXPECT_EQ(l.diags, "");
  EXPECT_EQ(l.kinds(),
            (std::vector<Tok>{Tok::KwDef, Tok::KwReturn, Tok::KwFor, Tok::KwIn, Tok::KwIf, Tok::KwElse, Tok::KwAnd,
                              Tok::KwOr, Tok::KwNot, Tok::KwLoad, Tok::KwSelect, Tok::EqEq, Tok::NotEq, Tok::LessEq,
                              Tok::GreaterEq, Tok::Less, Tok::Greater, Tok::Assign, Tok::Plus, Tok::Minus, Tok::Star,
                              Tok::Slash, Tok::Percent, Tok::Caret, Tok::LParen, Tok::RParen, Tok::LBracket,
                              Tok::RBracket, Tok::LBrace, Tok::RBrace, Tok::Comma, Tok::Semi, Tok::Colon, Tok::Eof}));
}

TEST(Lexer, CommentsAndNewlinesAreWhitespace) {
  Lexed l("a # comment with \"quote\" and ; \n  b\n#last");
  EXPECT_EQ(l.kinds(), (std::vector<Tok>{Tok::Ident, Tok::Ident, Tok::Eof}));
}

TEST(Lexer, TrueFalseAreIdentifiers) {
  Lexed l("True False None");
  EXPECT_EQ(l.kinds(), (std::vector<Tok>{Tok::Ident, Tok::Ident, Tok::Ident, Tok::Eof}));
}

TEST(Lexer, FloatNeedsDigitsAfterPoint) {
  Lexed l("1.x");
  EXPECT_EQ(l.diags, "lex.rasp:1:2: error: unexpected character '.'\n1.x\n ^\n");
}

TEST(Lexer, UnterminatedString) {
  Lexed l("x = \"abc\ny");
  EXPECT_EQ(l.diags, "lex.rasp:1:5: error: unterminated string literal\nx = \"abc\n    ^\n");
  EXPECT_EQ(l.kinds(), (std::vector<Tok>{Tok::Ident, Tok::Assign, Tok::Ident, Tok::Eof}));
}

TEST(Lexer, StrayCharacterAndBinaryJunk) {
  Lexed l("a $ b \x01\x02\x03 c");
  EXPECT_EQ(l.diags,
            "lex.rasp:1:3: error: unexpected character '$'\na $ b \x01\x02\x03 c\n  ^\n"
            "lex.rasp:1:7: error: unexpected byte 0x1\na $ b \x01\x02\x03 c\n      ^\n");
  EXPECT_EQ(l.kinds(), (std::vector<Tok>{Tok::Ident, Tok::Ident, Tok::Ident, Tok::Eof}));
}

TEST(Lexer, IntegerTooLarge) {
  Lexed l("99999999999999999999");
  EXPECT_EQ(l.diags,
            "lex.rasp:1:1: error: integer literal is too large (the limit is 2^63-1)\n99999999999999999999\n^\n");
}

TEST(Lexer, TooManyErrorsStops) {
  std::string junk(5000, '$');
  for (size_t i = 1; i < junk.size(); i += 2) junk[i] = ' ';
  Lexed l(junk);
  EXPECT_NE(l.diags.find("too many errors, stopping"), std::string::npos);
  EXPECT_LT(l.diags.size(), 30000u);
}

} // namespace
