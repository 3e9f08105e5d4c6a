// The libFuzzer target for HeaderFuzzer. Build with -sanitize=fuzzer,address -parse-as-library
// (scripts/fuzz.sh); run with libFuzzer's usual flags, e.g. `FuzzDevice Corpus/FuzzDevice -runs=1000`.
import CLibFuzzer
import _VirtqueueFuzzHarness

/// Runs one input; an invariant violation traps, which libFuzzer reports as a crash and saves.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHeader(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    do {
        try HeaderFuzzer.run(UnsafeRawBufferPointer(start: start, count: count))
    } catch {
        fatalError("\(error)")
    }
    return 0
}

/// SwiftPM links executables with `--defsym main=FuzzHeader_main`; hand over to libFuzzer's driver.
@_cdecl("FuzzHeader_main")
public func fuzzHeaderMain(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { start, count in fuzzHeader(start, count) }
}
