// Subcommands of the raspc tool.
#pragma once
#include <optional>
#include <string>

namespace raspc::tools {
// Interactive loop: reads statements, shows each value on the example input.
int runRepl(const std::optional<std::string> &file);
} // namespace raspc::tools
