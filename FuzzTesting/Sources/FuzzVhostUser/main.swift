// The libFuzzer target for VhostUserFuzzer (the vhost-user message decoder). Build with
// -sanitize=fuzzer,address -parse-as-library (scripts/fuzz.sh); run with libFuzzer's usual flags,
// e.g. `FuzzVhostUser Corpus/FuzzVhostUser -runs=1000`.
import CLibFuzzer
import _VirtqueueFuzzHarness

/// Runs one input; an invariant violation traps, which libFuzzer reports as a crash and saves.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVhostUser(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    do {
        try VhostUserFuzzer.run(UnsafeRawBufferPointer(start: start, count: count))
    } catch {
        fatalError("\(error)")
    }
    return 0
}

/// SwiftPM links executables with `--defsym main=FuzzVhostUser_main`; hand over to libFuzzer's driver.
@_cdecl("FuzzVhostUser_main")
public func fuzzVhostUserMain(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { start, count in fuzzVhostUser(start, count) }
}
