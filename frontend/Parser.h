// The RASP parser: a recursive-descent parser with the precedence of the original
// RASP grammar. Syntax errors are reported with their location; the parser then
// skips to the next statement, so independent errors are all reported.
#pragma once
#include "frontend/AST.h"
#include "frontend/Diagnostics.h"

#include <memory>

namespace raspc {

// Parses the buffer `bufferId` of the diagnostics' SourceMgr. Returns the statements
// that parsed; check diags.errorCount() for failures.
std::unique_ptr<ast::Module> parseBuffer(unsigned bufferId, DiagnosticEngine &diags);

// Limits that keep hostile input from exhausting the stack.
constexpr unsigned kMaxNesting = 200;     // brackets, calls, blocks inside each other
constexpr unsigned kMaxExprDepth = 1000;  // height of one expression tree

} // namespace raspc
