import Foundation
import PackagePlugin

/// `swift package --allow-writing-to-package-directory new-component-pair Foo`
///
/// Writes a driver and device pair named `Foo` into the package — a library target with the
/// device and a driver wrapper, a device-host executable for the process-based isolation levels,
/// and a test that runs the pair at every isolation level — and registers the targets at the end
/// of Package.swift. It never overwrites a file. The work is done by the `VirtqueueScaffold`
/// tool; this plugin only finds the package and the tool and passes the arguments on.
@main
struct NewComponentPair: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        let tool = try context.tool(named: "VirtqueueScaffold")
        let process = Process()
        process.executableURL = tool.url
        process.arguments = ["--package", context.package.directoryURL.path] + arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw ScaffoldFailed(status: process.terminationStatus)
        }
    }
}

struct ScaffoldFailed: Error, CustomStringConvertible {
    let status: Int32
    var description: String { "new-component-pair failed (VirtqueueScaffold exited with \(status))" }
}
