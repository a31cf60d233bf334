// The standard library (frontend/stdlib/prelude.rasp), embedded at build time.
#pragma once

namespace raspc {
extern const char *const kPreludeSource;
}
