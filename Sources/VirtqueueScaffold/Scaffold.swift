import Foundation

/// Writes a new component pair into a package: the tool behind the `new-component-pair`
/// command plugin.
///
/// It parses its few arguments by hand rather than with swift-argument-parser, so that a package
/// depending on swift-virtqueue does not resolve swift-argument-parser for the sake of this tool.
@main
struct Scaffold {
    static let usage = """
        USAGE: virtqueue-scaffold [--package <dir>] [--virtqueue-package <identity>] \
        [--system-package <identity>] [--dry-run] <name>

        Writes a virtqueue driver and device pair, a device host and a test into a package.

        ARGUMENTS:
          <name>                  The pair's name: an UpperCamelCase Swift identifier, such as BlockStore.

        OPTIONS:
          --package <dir>         The package's root directory (default: the current directory).
          --virtqueue-package <identity>
                                  The identity of the package dependency that provides the Virtqueue
                                  products, as `.product(name:package:)` needs it; omit it inside
                                  swift-virtqueue itself, where the targets are named directly.
          --system-package <identity>
                                  The identity of a package dependency that provides SystemPackage;
                                  omit it to add a dependency on https://github.com/apple/swift-system.
          --dry-run               List the files that would be written, and write nothing.
          -h, --help              Show this help.
        """

    /// The package's root directory.
    var package = FileManager.default.currentDirectoryPath
    /// The identity of the dependency that provides `Virtqueue`; `nil` inside swift-virtqueue.
    var virtqueuePackage: String?
    /// The identity of the dependency that provides `SystemPackage`; `nil` to add one.
    var systemPackage: String?
    /// Whether to list the files and write nothing.
    var dryRun = false
    /// The pair's name.
    var name = ""

    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.contains("--help") || arguments.contains("-h") {
            print(usage)
            return
        }
        do {
            try Scaffold(arguments: arguments).run()
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            exit(1)
        }
    }

    init(arguments: [String]) throws(ScaffoldError) {
        var names: [String] = []
        var remaining = arguments[...]
        func value(of option: String) throws(ScaffoldError) -> String {
            guard let value = remaining.popFirst(), !value.hasPrefix("--") else {
                throw ScaffoldError("\(option) needs a value\n\n\(Scaffold.usage)")
            }
            return value
        }
        while let argument = remaining.popFirst() {
            switch argument {
            case "--package": package = try value(of: argument)
            case "--virtqueue-package": virtqueuePackage = try value(of: argument)
            case "--system-package": systemPackage = try value(of: argument)
            case "--dry-run": dryRun = true
            case _ where argument.hasPrefix("-") && argument.count > 1:
                throw ScaffoldError("unknown option \(argument)\n\n\(Scaffold.usage)")
            default: names.append(argument)
            }
        }
        guard names.count <= 1 else {
            throw ScaffoldError("one pair at a time: got \(names.joined(separator: ", "))")
        }
        name = names.first ?? ""
    }

    func run() throws {
        try PairName.validate(name)
        let root = URL(fileURLWithPath: package, isDirectory: true)
        let manifestURL = root.appendingPathComponent("Package.swift")
        guard let manifest = try? String(contentsOf: manifestURL, encoding: .utf8) else {
            throw ScaffoldError("no Package.swift in \(root.path)")
        }
        let templates = Templates(name: name, virtqueuePackage: virtqueuePackage, systemPackage: systemPackage)
        guard !manifest.contains(templates.manifestMarker) else {
            throw ScaffoldError("Package.swift already registers a component pair named \(name)")
        }
        let files = templates.files
        let existing = files.map(\.path).filter {
            FileManager.default.fileExists(atPath: root.appendingPathComponent($0).path)
        }
        guard existing.isEmpty else {
            throw ScaffoldError(
                "refusing to overwrite existing files: \(existing.joined(separator: ", ")); choose another name"
            )
        }
        for directory in templates.directories
        where FileManager.default.fileExists(atPath: root.appendingPathComponent(directory).path) {
            throw ScaffoldError("refusing to write into existing directory \(directory); choose another name")
        }
        if dryRun {
            for file in files { print("would write \(file.path)") }
            print("would append the targets \(templates.targetNames.joined(separator: ", ")) to Package.swift")
            if systemPackage == nil { print("would add a dependency on \(Templates.systemPackageURL)") }
            return
        }
        for file in files {
            let url = root.appendingPathComponent(file.path)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(),
                withIntermediateDirectories: true
            )
            try file.contents.write(to: url, atomically: true, encoding: .utf8)
            print("wrote \(file.path)")
        }
        let updated = manifest + (manifest.hasSuffix("\n") ? "" : "\n") + templates.manifestAddition
        try updated.write(to: manifestURL, atomically: true, encoding: .utf8)
        print("registered \(templates.targetNames.joined(separator: ", ")) in Package.swift")
        if systemPackage == nil {
            print("added a dependency on \(Templates.systemPackageURL) (the test's FilePath) to Package.swift")
        }
        print("next: swift test --filter \(name)PairTests")
    }
}

/// Why the tool refused: printed as `error: …`, with exit status 1.
struct ScaffoldError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The rules a pair name must follow to make valid, unambiguous module and type names.
enum PairName {
    static let reserved: Set<String> = [
        "Any", "Self", "Type", "Protocol", "Virtqueue", "Swift", "Foundation", "Testing", "Glibc",
    ]

    static func validate(_ name: String) throws(ScaffoldError) {
        guard !name.isEmpty else { throw ScaffoldError("the pair needs a name, such as BlockStore") }
        guard name.count <= 64 else { throw ScaffoldError("name \"\(name)\" is longer than 64 characters") }
        guard let first = name.unicodeScalars.first, ("A"..."Z").contains(first) else {
            throw ScaffoldError("name \"\(name)\" must start with an uppercase ASCII letter (UpperCamelCase)")
        }
        guard
            name.unicodeScalars.allSatisfy({
                ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0)
            })
        else {
            throw ScaffoldError("name \"\(name)\" may contain only ASCII letters and digits")
        }
        guard !reserved.contains(name), !name.hasPrefix("Virtqueue") else {
            throw ScaffoldError("name \"\(name)\" is reserved; choose another")
        }
    }
}
