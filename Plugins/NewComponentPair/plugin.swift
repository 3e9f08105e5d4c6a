import Foundation
import PackagePlugin

/// `swift package --allow-writing-to-package-directory new-component-pair Foo`
///
/// Writes a driver and device pair named `Foo` into the package — a library target with the
/// device and a driver wrapper, a device-host executable for the process-based isolation levels,
/// and a test that runs the pair at every isolation level on every ring format — and registers
/// the targets at the end of Package.swift. It never overwrites a file. The work is done by the `VirtqueueScaffold`
/// tool; this plugin finds the package, the tool, and the names under which the package's
/// dependencies provide the `Virtqueue` and `SystemPackage` products, and passes them on.
@main
struct NewComponentPair: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        let tool = try context.tool(named: "VirtqueueScaffold")
        let process = Process()
        process.executableURL = tool.url
        process.arguments =
            ["--package", context.package.directoryURL.path]
            + (try Self.virtqueueArguments(context.package))
            + Self.systemArguments(context.package)
            + arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw PluginFailure(
                "new-component-pair failed (VirtqueueScaffold exited with \(process.terminationStatus))"
            )
        }
    }

    /// Where the `Virtqueue` products come from: nothing inside swift-virtqueue itself (targets
    /// are named directly), otherwise the identity of the direct dependency that provides them —
    /// `swift-virtqueue` for a URL, the folder's name for a path — which is what
    /// `.product(name:package:)` needs.
    static func virtqueueArguments(_ package: Package) throws -> [String] {
        if providesVirtqueue(package) { return [] }
        if let dependency = package.dependencies.first(where: { providesVirtqueue($0.package) }) {
            return ["--virtqueue-package", dependency.package.id]
        }
        if let indirect = findTransitively(from: package, where: providesVirtqueue) {
            throw PluginFailure(
                "\(package.displayName) reaches swift-virtqueue only through \(indirect.displayName)'s dependencies; "
                    + "add it to Package.swift's dependencies, for example "
                    + ".package(url: \"https://github.com/<owner>/swift-virtqueue\", from: \"<version>\")"
            )
        }
        throw PluginFailure("\(package.displayName) does not depend on swift-virtqueue")
    }

    /// Where `SystemPackage` comes from: the identity of a direct dependency (or this package)
    /// that provides it, or nothing, in which case the tool adds a dependency on swift-system.
    static func systemArguments(_ package: Package) -> [String] {
        func providesSystem(_ package: Package) -> Bool {
            package.products.contains { $0.name == "SystemPackage" }
        }
        if providesSystem(package) { return ["--system-package", package.id] }
        if let dependency = package.dependencies.first(where: { providesSystem($0.package) }) {
            return ["--system-package", dependency.package.id]
        }
        return []
    }

    /// Whether `package` is swift-virtqueue (whatever its folder or identity): it provides the
    /// products the generated targets use.
    static func providesVirtqueue(_ package: Package) -> Bool {
        let names = Set(package.products.map(\.name))
        return ["Virtqueue", "VirtqueueHeap", "VirtqueueSharedMemory", "VirtqueueSandbox"].allSatisfy(names.contains)
    }

    /// A package somewhere below `package` that matches, searching breadth first.
    static func findTransitively(from package: Package, where matches: (Package) -> Bool) -> Package? {
        var seen: Set<String> = [package.id]
        var queue = package.dependencies.map(\.package)
        while !queue.isEmpty {
            let next = queue.removeFirst()
            guard seen.insert(next.id).inserted else { continue }
            if matches(next) { return next }
            queue += next.dependencies.map(\.package)
        }
        return nil
    }
}

struct PluginFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
