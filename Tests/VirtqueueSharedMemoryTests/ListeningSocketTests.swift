import CVirtqueueSystem
import Foundation
import Glibc
import SystemPackage
import Testing

/// A listening UNIX socket's path appears only once it accepts connections (it is bound under a
/// temporary name and renamed), and an existing path is never replaced.
@Suite("Listening sockets")
struct ListeningSocketTests {
    enum Kind: String, CaseIterable, Sendable {
        case seqpacket, stream

        func listen(_ path: String) -> CInt {
            self == .seqpacket ? vq_unix_listen(path, 1) : vq_unix_listen_stream(path, 1)
        }

        func connect(_ path: String) -> CInt {
            self == .seqpacket ? vq_unix_connect(path) : vq_unix_connect_stream(path)
        }
    }

    /// Entries of `/tmp` that start with `path`'s name and are not `path` itself: a temporary
    /// name left behind.
    func leftovers(of path: String) throws -> [String] {
        let name = (path as NSString).lastPathComponent
        return try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix(name) && $0 != name }
    }

    @Test(arguments: Kind.allCases)
    func thePathAcceptsAsSoonAsItExists(_ kind: Kind) throws {
        let path = temporarySocketPath("listen-\(kind)").string
        defer { unlink(path) }
        let listening = kind.listen(path)
        try #require(listening >= 0, "listen failed: errno \(errno)")
        defer { close(listening) }
        let connected = kind.connect(path)
        #expect(connected >= 0, "connect failed: errno \(errno)")
        if connected >= 0 { close(connected) }
        #expect(try leftovers(of: path).isEmpty)
    }

    @Test(arguments: Kind.allCases)
    func anExistingPathIsNotReplaced(_ kind: Kind) throws {
        let path = temporarySocketPath("taken-\(kind)").string
        defer { unlink(path) }
        try Data("not a socket".utf8).write(to: URL(fileURLWithPath: path))
        let listening = kind.listen(path)
        let error = errno
        if listening >= 0 { close(listening) }
        #expect(listening == -1)
        #expect(error == EADDRINUSE, "errno \(error)")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "not a socket")
        #expect(try leftovers(of: path).isEmpty)
    }
}
