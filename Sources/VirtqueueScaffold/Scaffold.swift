import ArgumentParser
import Foundation

/// Writes a new component pair into a package: the tool behind the `new-component-pair`
/// command plugin.
@main
struct Scaffold: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtqueue-scaffold",
        abstract: "Write a virtqueue driver and device pair, a device host and a test into a package."
    )

    @Option(help: "The package's root directory.")
    var package: String = FileManager.default.currentDirectoryPath

    @Argument(help: "The pair's name: an UpperCamelCase Swift identifier, such as BlockStore.")
    var name: String

    @Flag(help: "List the files that would be written, and write nothing.")
    var dryRun = false

    func run() throws {
        try PairName.validate(name)
        let root = URL(fileURLWithPath: package, isDirectory: true)
        let manifestURL = root.appendingPathComponent("Package.swift")
        guard let manifest = try? String(contentsOf: manifestURL, encoding: .utf8) else {
            throw ValidationError("no Package.swift in \(root.path)")
        }
        let templates = Templates(name: name, insideSwiftVirtqueue: manifest.contains("name: \"swift-virtqueue\""))
        guard !manifest.contains(templates.manifestMarker) else {
            throw ValidationError("Package.swift already registers a component pair named \(name)")
        }
        let files = templates.files
        let existing = files.map(\.path).filter {
            FileManager.default.fileExists(atPath: root.appendingPathComponent($0).path)
        }
        guard existing.isEmpty else {
            throw ValidationError(
                "refusing to overwrite existing files: \(existing.joined(separator: ", ")); choose another name"
            )
        }
        for directory in templates.directories
        where FileManager.default.fileExists(atPath: root.appendingPathComponent(directory).path) {
            throw ValidationError("refusing to write into existing directory \(directory); choose another name")
        }
        if dryRun {
            for file in files { print("would write \(file.path)") }
            print("would append the targets \(templates.targetNames.joined(separator: ", ")) to Package.swift")
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
        print("next: swift test --filter \(name)PairTests")
    }
}

/// The rules a pair name must follow to make valid, unambiguous module and type names.
enum PairName {
    static let reserved: Set<String> = [
        "Any", "Self", "Type", "Protocol", "Virtqueue", "Swift", "Foundation", "Testing", "Glibc",
    ]

    static func validate(_ name: String) throws {
        guard !name.isEmpty else { throw ValidationError("the pair needs a name, such as BlockStore") }
        guard name.count <= 64 else { throw ValidationError("name \"\(name)\" is longer than 64 characters") }
        guard let first = name.unicodeScalars.first, ("A"..."Z").contains(first) else {
            throw ValidationError("name \"\(name)\" must start with an uppercase ASCII letter (UpperCamelCase)")
        }
        guard
            name.unicodeScalars.allSatisfy({
                ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0)
            })
        else {
            throw ValidationError("name \"\(name)\" may contain only ASCII letters and digits")
        }
        guard !reserved.contains(name), !name.hasPrefix("Virtqueue") else {
            throw ValidationError("name \"\(name)\" is reserved; choose another")
        }
    }
}
