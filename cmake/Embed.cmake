# Writes OUT, a C++ file defining `const char *const NAME` with the bytes of IN.
file(READ "${IN}" content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${content}")
file(WRITE "${OUT}" "// Generated from ${IN}; do not edit.\nnamespace raspc {\nstatic const char data[] = {${bytes} 0};\nextern const char *const ${NAME} = data;\n}\n")
