// The libFuzzer target for DeviceFuzzer on the packed ring. Build with -sanitize=fuzzer,address -parse-as-library
// (scripts/fuzz.sh); run with libFuzzer's usual flags, e.g. `FuzzDevicePacked Corpus/FuzzDevicePacked -runs=1000`.
import CLibFuzzer
import _VirtqueueFuzzHarness

/// Runs one input; an invariant violation traps, which libFuzzer reports as a crash and saves.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDevicePacked(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    do {
        try DeviceFuzzer.run(UnsafeRawBufferPointer(start: start, count: count), packed: true)
    } catch {
        fatalError("\(error)")
    }
    return 0
}

/// SwiftPM links executables with `--defsym main=FuzzDevicePacked_main`; hand over to libFuzzer's driver.
@_cdecl("FuzzDevicePacked_main")
public func fuzzDevicePackedMain(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { start, count in fuzzDevicePacked(start, count) }
}
