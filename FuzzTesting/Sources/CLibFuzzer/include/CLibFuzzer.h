#ifndef C_LIBFUZZER_H
#define C_LIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt FuzzerDriver.cpp), available since LLVM 13: parses the
/// libFuzzer command line in argc/argv and fuzzes `callback`. SwiftPM links an executable
/// target with `--defsym main=<Target>_main`, so each fuzz target defines that symbol and
/// hands control to libFuzzer through this function.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
