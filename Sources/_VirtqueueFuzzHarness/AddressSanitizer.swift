#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// AddressSanitizer's manual poisoning interface, found at run time: present when the harness
/// runs inside a fuzz target built with `-sanitize=address`, absent in `swift test`.
///
/// Poisoned bytes make every access — a read as much as a write — an immediate ASan report,
/// so a parser that reads one byte past its region is caught even where the heap allocation
/// itself continues.
enum AddressSanitizer {
    typealias Poisoning = @convention(c) (UnsafeRawPointer?, Int) -> Void

    static let poison: Poisoning? = lookUp("__asan_poison_memory_region")
    static let unpoison: Poisoning? = lookUp("__asan_unpoison_memory_region")

    /// Whether the process runs under AddressSanitizer.
    static var isActive: Bool { poison != nil && unpoison != nil }

    private static func lookUp(_ name: String) -> Poisoning? {
        // RTLD_DEFAULT: search the executable and everything it loaded.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(symbol, to: Poisoning.self)
    }
}
