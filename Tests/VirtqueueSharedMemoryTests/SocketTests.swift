import CVirtqueueSystem
import Dispatch
import Foundation
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// Starts `path` with `arguments` (inheriting only 0, 1 and 2, and `descriptors` as 3, 4, …)
/// and returns its process id.
func spawnProcess(_ path: String, _ arguments: [String], descriptors: [CInt] = []) throws -> Int32 {
    var pid: pid_t = 0
    var pointers: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    let status = vq_spawn(&pid, path, pointers, nil, descriptors, CInt(descriptors.count))
    guard status == 0 else { throw Errno(rawValue: status) }
    return pid
}

/// A fresh notification channel's notify end, as a creator hands it over (the wait end is closed:
/// nobody will receive on it).
func notifyEnd() throws -> CInt {
    var fds: [CInt] = [-1, -1]
    guard vq_notification_pair(&fds) == 0 else { throw Errno(rawValue: errno) }
    close(fds[0])
    return fds[1]
}

/// Waits for `pid` and returns its exit code (or 128 + signal).
func exitCode(of pid: Int32) -> Int32 {
    var status: CInt = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return vq_wifexited(status) != 0 ? vq_wexitstatus(status) : 128 + vq_wtermsig(status)
}

/// An offer as docs/wire-format.md §9.1 lays it out, with every field settable.
func offerBytes(
    magic: UInt64 = 0x4F51_5654_4649_5753,
    version: UInt16 = 2,
    length: UInt16 = 64,
    role: UInt16 = 1,
    queue: UInt16 = 0,
    features: UInt64,
    regionSize: UInt64,
    descriptorCount: UInt32 = 2,
    byteCount: Int = 64
) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: max(byteCount, 64))
    bytes.withUnsafeMutableBytes { raw in
        raw.storeBytes(of: magic.littleEndian, toByteOffset: 0x00, as: UInt64.self)
        raw.storeBytes(of: version.littleEndian, toByteOffset: 0x08, as: UInt16.self)
        raw.storeBytes(of: length.littleEndian, toByteOffset: 0x0A, as: UInt16.self)
        raw.storeBytes(of: role.littleEndian, toByteOffset: 0x0C, as: UInt16.self)
        raw.storeBytes(of: queue.littleEndian, toByteOffset: 0x0E, as: UInt16.self)
        raw.storeBytes(of: features.littleEndian, toByteOffset: 0x10, as: UInt64.self)
        raw.storeBytes(of: regionSize.littleEndian, toByteOffset: 0x18, as: UInt64.self)
        raw.storeBytes(of: descriptorCount.littleEndian, toByteOffset: 0x20, as: UInt32.self)
    }
    return Array(bytes.prefix(byteCount))
}

/// An answer as docs/wire-format.md §9.2 lays it out.
func answerBytes(status: UInt16 = 0, version: UInt16 = 2) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 16)
    bytes.withUnsafeMutableBytes { raw in
        raw.storeBytes(of: UInt64(0x4151_5654_4649_5753).littleEndian, toByteOffset: 0x00, as: UInt64.self)
        raw.storeBytes(of: version.littleEndian, toByteOffset: 0x08, as: UInt16.self)
        raw.storeBytes(of: status.littleEndian, toByteOffset: 0x0A, as: UInt16.self)
    }
    return bytes
}

/// Descriptors that are not what an end of a notification channel must be (section 7), and what
/// the error says of each.
enum NotANotificationSocket: String, CaseIterable, Sendable {
    case pipe, eventfd, regionFile, streamSocket, datagramSocket, unconnectedSocket, inetSocket, pathOfASocket

    var problem: String {
        switch self {
        case .pipe, .eventfd, .regionFile, .pathOfASocket: "is not a socket"
        case .inetSocket: "is not an AF_UNIX socket"
        case .streamSocket, .datagramSocket: "is not a SOCK_SEQPACKET socket"
        case .unconnectedSocket: "is not connected"
        }
    }

    /// Makes one: the descriptor to send, and the descriptors to close once it is sent.
    func make(_ file: SharedMemoryFile) throws -> (descriptor: CInt, toClose: [CInt]) {
        func check(_ fd: CInt) throws -> CInt {
            guard fd >= 0 else { throw Errno(rawValue: errno) }
            return fd
        }
        switch self {
        case .pipe:
            var fds: [CInt] = [-1, -1]
            _ = try check(Glibc.pipe(&fds))
            return (fds[1], fds)
        case .eventfd:
            let fd = try check(vq_eventfd())
            return (fd, [fd])
        case .regionFile:
            return (file.fileDescriptor.rawValue, [])
        case .streamSocket, .datagramSocket:
            var fds: [CInt] = [-1, -1]
            let type = self == .streamSocket ? SOCK_STREAM : SOCK_DGRAM
            _ = try check(socketpair(AF_UNIX, Int32(type.rawValue), 0, &fds))
            return (fds[1], fds)
        case .unconnectedSocket:
            let fd = try check(socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0))
            return (fd, [fd])
        case .inetSocket:
            let fd = try check(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0))
            return (fd, [fd])
        case .pathOfASocket:
            let path = temporarySocketPath("opath").string
            let listening = try check(vq_unix_listen(path, 1))
            defer { unlink(path) }
            let pathOnly: CInt = 0o1000_0000  // O_PATH (asm-generic), which Glibc does not export
            let fd = try check(open(path, pathOnly | O_CLOEXEC))
            return (fd, [fd, listening])
        }
    }
}

/// What a receiver that accepts can send with its answer instead of one notify end of its own.
enum WrongAnswerDescriptors: String, CaseIterable, Sendable {
    case none, two, pipe, streamSocket, theCreatorsOwnNotifyEnd

    /// The descriptors to send (`offered` came with the offer), and those to close afterwards.
    func make(offered: [CInt]) throws -> (send: [CInt], toClose: [CInt]) {
        switch self {
        case .none:
            return ([], [])
        case .two:
            let first = try notifyEnd()
            let second = try notifyEnd()
            return ([first, second], [first, second])
        case .pipe:
            var fds: [CInt] = [-1, -1]
            guard Glibc.pipe(&fds) == 0 else { throw Errno(rawValue: errno) }
            return ([fds[1]], fds)
        case .streamSocket:
            var fds: [CInt] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw Errno(rawValue: errno) }
            return ([fds[1]], fds)
        case .theCreatorsOwnNotifyEnd:
            return ([offered[1]], [])
        }
    }
}

/// A hand-made creator: one end of a socket pair, speaking raw bytes.
struct RawCreator: ~Copyable {
    let own: CInt
    let peer: CInt

    init() throws {
        var fds: [CInt] = [-1, -1]
        guard vq_socketpair(&fds) == 0 else { throw Errno(rawValue: errno) }
        own = fds[0]
        peer = fds[1]
    }

    deinit { close(own) }

    func send(_ bytes: [UInt8], descriptors: [CInt]) {
        let sent = bytes.withUnsafeBytes {
            vq_send_with_fds(own, $0.baseAddress, $0.count, descriptors, CInt(descriptors.count))
        }
        #expect(sent == bytes.count)
    }

    /// The answer's status, or nil if none came; closes any descriptor that came with it.
    func answerStatus() -> UInt16? {
        var bytes = [UInt8](repeating: 0, count: 64)
        var fds = [CInt](repeating: -1, count: 4)
        var received: CInt = 0
        var flags: CInt = 0
        let count = vq_receive_with_fds(own, &bytes, 64, &fds, 4, &received, &flags)
        for fd in fds.prefix(Int(min(received, 4))) { close(fd) }
        guard count == 16 else { return nil }
        #expect(bytes[0..<8] == [0x53, 0x57, 0x49, 0x46, 0x54, 0x56, 0x51, 0x41])
        return UInt16(bytes[10]) | UInt16(bytes[11]) << 8
    }
}

extension SharedMemoryTests {
    @Suite("Socket attach")
    struct SocketTests {
        static let layout = try! RegionLayout(queueSizes: [64], dataAreaSize: 256 * 256, features: .all)

        /// The C peer, written from docs/wire-format.md alone, serves the Swift driver: each
        /// reply is the request reversed. Every feature combination, so both suppression schemes
        /// and indirect tables are exercised.
        @Test(arguments: [Features.all, [], [.eventIndex], [.indirectDescriptors]])
        func theCPeerServesTheSwiftDriver(features: Features) throws {
            let layout = try RegionLayout(queueSizes: [64], dataAreaSize: 256 * 256, features: features)
            let file = try SharedMemoryFile.create(layout: layout)
            let path = temporarySocketPath("cpeer")
            let listener = try SharedMemoryListener(path: path)
            let pid = try spawnProcess(TestExecutables.cPeer, [path.string])
            let connection = try listener.accept(offering: file, peerRole: .device, timeout: .seconds(60))
            #expect(connection.role == .driver)
            #expect(connection.peerProcessID == pid)
            var driver = try DriverQueue(
                region: try connection.makeRegion(),
                notifier: connection.notifier,
                bufferSize: 256,
                indirectThreshold: 2
            )
            // Batches of 8 chains, each kicked once: 1 to 3 readable segments of up to 200 bytes
            // and 3 writable ones of 256 (an indirect table when negotiated, 4 to 6 descriptors if not).
            var sent = 0
            var checked = 0
            var wrong = 0
            var expected: [Int: [UInt8]] = [:]
            for batch in 0..<80 {
                for index in 0..<8 {
                    let number = batch * 8 + index
                    let message = (0..<(1 + (number * 37) % 600)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ number) }
                    var chain = driver.makeChain()
                    for start in stride(from: 0, to: message.count, by: 200) {
                        try driver.appendReadable(
                            to: &chain,
                            copying: Array(message[start..<min(start + 200, message.count)])
                        )
                    }
                    for _ in 0..<3 { try driver.appendWritable(to: &chain, capacity: 256) }
                    let id = try driver.submit(chain)
                    expected[Int(id)] = Array(message.reversed())
                    sent += 1
                }
                try driver.notifyIfNeeded()
                while checked < sent {
                    try driver.waitForUsed()
                    while let used = try driver.takeUsed() {
                        var reply = [UInt8](repeating: 0, count: used.writtenByteCount)
                        _ = try reply.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
                        if reply != expected[Int(used.id)] { wrong += 1 }
                        try driver.free(used)
                        checked += 1
                    }
                }
            }
            #expect(checked == 640)
            #expect(wrong == 0)
            connection.close()
            #expect(exitCode(of: pid) == 0)
        }

        /// The C peer as the driver (`--driver`): it drives a Swift device and checks that every
        /// chain comes back echoed; every feature combination.
        @Test(arguments: [Features.all, [], [.eventIndex], [.indirectDescriptors]])
        func theCPeerDrivesTheSwiftDevice(features: Features) throws {
            let layout = try RegionLayout(queueSizes: [32], dataAreaSize: 32 * 512, features: features)
            let file = try SharedMemoryFile.create(layout: layout)
            let path = temporarySocketPath("cdriver")
            let listener = try SharedMemoryListener(path: path)
            let pid = try spawnProcess(TestExecutables.cPeer, [path.string, "--driver", "--chains", "2000"])
            let connection = try listener.accept(offering: file, peerRole: .driver, timeout: .seconds(60))
            #expect(connection.role == .device)
            try withinBound("serving the C driver") {
                var device = try DeviceQueue(region: try connection.makeRegion(), notifier: connection.notifier)
                var echo = EchoDevice(configuration: DeviceConfiguration())
                try device.serve(&echo)  // until the C driver hangs up, having checked every reply
            }
            #expect(exitCode(of: pid) == 0)
        }

        /// A receiver that accepts but sends back something other than one notify end of its own
        /// (section 9.4): the creator refuses with a typed error, hangs up, and keeps nothing.
        @Test(arguments: WrongAnswerDescriptors.allCases)
        func anAnswerWithoutItsNotifyEndIsRefused(_ wrong: WrongAnswerDescriptors) throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let before = openDescriptors()
            var sockets: [CInt] = [-1, -1]
            try #require(vq_socketpair(&sockets) == 0)
            let receiverSocket = sockets[1]
            let receiver = startThread {
                var bytes = [UInt8](repeating: 0, count: 128)
                var fds = [CInt](repeating: -1, count: 8)
                var received: CInt = 0
                var flags: CInt = 0
                _ = vq_receive_with_fds(receiverSocket, &bytes, 128, &fds, 8, &received, &flags)
                let offered = Array(fds.prefix(Int(received)))
                if let made = try? wrong.make(offered: offered) {
                    let answer = answerBytes()
                    _ = answer.withUnsafeBytes { raw in
                        made.send.withUnsafeBufferPointer {
                            vq_send_with_fds(receiverSocket, raw.baseAddress, raw.count, $0.baseAddress, CInt($0.count))
                        }
                    }
                    for fd in made.toClose { close(fd) }
                }
                // Waits for the creator's hang-up before closing what it got.
                var byte: UInt8 = 0
                _ = recv(receiverSocket, &byte, 1, 0)
                for fd in offered { close(fd) }
                close(receiverSocket)
            }
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryConnection.offer(
                    file,
                    over: FileDescriptor(rawValue: sockets[0]),
                    timeout: .seconds(60)
                )
            }
            #expect(error?.code == .handshakeFileDescriptors, "\(String(describing: error))")
            // The receiver closes what it got once it sees the hang-up.
            #expect(receiver.wait(timeout: .now() + .seconds(60)) == .success, "the receiver did not see the hang-up")
            #expect(Set(openDescriptors().keys) == Set(before.keys))
        }

        @Test func aPeerThatRefusesTheRoleIsAHandshakeRefusal() throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let path = temporarySocketPath("refuse")
            let listener = try SharedMemoryListener(path: path)
            let pid = try spawnProcess(TestExecutables.cPeer, [path.string])
            let before = openDescriptors()
            let error = #expect(throws: SharedMemoryError.self) {
                // The C peer is a device only: offered the driver's end, it answers status 5.
                _ = try listener.accept(offering: file, peerRole: .driver, timeout: .seconds(60))
            }
            #expect(error?.code == .handshakeRefused)
            #expect(exitCode(of: pid) == 3)
            #expect(Set(openDescriptors().keys) == Set(before.keys))
        }

        @Test func aSwiftDeviceAttachesOverASocketPair() throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            var sockets: [CInt] = [-1, -1]
            try #require(vq_socketpair(&sockets) == 0)
            let creatorSocket = sockets[0]
            let receiverSocket = sockets[1]
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var deviceOutcome: (any Error)?
            let thread = Thread {
                do {
                    let connection = try SharedMemoryConnection.receive(over: FileDescriptor(rawValue: receiverSocket))
                    #expect(connection.role == .device)
                    var device = try DeviceQueue(region: try connection.makeRegion(), notifier: connection.notifier)
                    var echo = EchoDevice(configuration: DeviceConfiguration())
                    try device.serve(&echo)
                } catch {
                    deviceOutcome = error
                }
                done.signal()
            }
            thread.start()
            let connection = try SharedMemoryConnection.offer(file, over: FileDescriptor(rawValue: creatorSocket))
            var driver = try DriverQueue(
                region: try connection.makeRegion(),
                notifier: connection.notifier,
                bufferSize: 256
            )
            let messages = (1...50).map { Array("over a socket \($0)".utf8) }
            #expect(try roundTrip(&driver, messages, replyCapacity: 256) == messages)
            connection.close()
            done.wait()
            #expect(deviceOutcome == nil)
        }

        /// Offers with the wrong number of descriptors, or descriptors of the wrong kind: the
        /// receiver refuses with a typed error, tells the creator, and keeps none of them.
        @Test(arguments: [0, 1, 3, 4, 9])
        func anOfferWithTheWrongNumberOfDescriptorsIsRefused(count: Int) throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let before = openDescriptors()
            let creator = try RawCreator()
            var descriptors: [CInt] = []
            for index in 0..<count {
                descriptors.append(index == 0 ? file.fileDescriptor.rawValue : try notifyEnd())
            }
            creator.send(
                offerBytes(features: Self.layout.features.rawValue, regionSize: UInt64(file.byteCount)),
                descriptors: descriptors
            )
            for fd in descriptors.dropFirst() { close(fd) }
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryConnection.receive(over: FileDescriptor(rawValue: creator.peer))
            }
            #expect(error?.code == .handshakeFileDescriptors)
            #expect(creator.answerStatus() == 2)
            _ = consume creator
            #expect(Set(openDescriptors().keys) == Set(before.keys))
        }

        /// An offer whose second descriptor is not a connected `AF_UNIX`, `SOCK_SEQPACKET` socket
        /// (section 9.3) is refused with status 2, and the error names what it is.
        @Test(arguments: NotANotificationSocket.allCases)
        func anOfferWhoseNotificationSocketIsNotOneIsRefused(kind: NotANotificationSocket) throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let before = openDescriptors()
            let creator = try RawCreator()
            let made = try kind.make(file)
            creator.send(
                offerBytes(features: Self.layout.features.rawValue, regionSize: UInt64(file.byteCount)),
                descriptors: [file.fileDescriptor.rawValue, made.descriptor]
            )
            for fd in made.toClose { close(fd) }
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryConnection.receive(over: FileDescriptor(rawValue: creator.peer))
            }
            #expect(error?.code == .handshakeFileDescriptors)
            #expect(error?.message.contains(kind.problem) == true, "\(String(describing: error))")
            #expect(creator.answerStatus() == 2)
            _ = consume creator
            #expect(Set(openDescriptors().keys) == Set(before.keys))
        }

        @Test(arguments: [
            offerBytes(magic: 0x4F51_5654_4649_5754, features: 0, regionSize: 0),
            offerBytes(version: 1, features: 0, regionSize: 0),  // the eventfd handshake of before
            offerBytes(version: 3, features: 0, regionSize: 0),
            offerBytes(length: 63, features: 0, regionSize: 0),
            offerBytes(role: 3, features: 0, regionSize: 0),
            offerBytes(features: 0, regionSize: 0, byteCount: 10),
            offerBytes(features: 0, regionSize: 0, byteCount: 65),
            offerBytes(features: 0, regionSize: 0, byteCount: 300),
            offerBytes(features: 0, regionSize: 0) + [],
        ])
        func aMalformedOfferIsRefused(message: [UInt8]) throws {
            var message = message
            if message.count == 64 && message[0x24...].allSatisfy({ $0 == 0 }) && message[0x0C] == 1
                && message[0x08] == 2 && message[0x0A] == 64 && message[0] == 0x53 && message[7] == 0x4F
            {
                message[0x30] = 1  // the last case: a non-zero reserved byte
            }
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let before = openDescriptors()
            let creator = try RawCreator()
            let notify = try notifyEnd()
            creator.send(message, descriptors: [file.fileDescriptor.rawValue, notify])
            close(notify)
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryConnection.receive(over: FileDescriptor(rawValue: creator.peer))
            }
            #expect(error?.code == .handshakeMalformed)
            #expect(creator.answerStatus() == 1)
            _ = consume creator
            #expect(Set(openDescriptors().keys) == Set(before.keys))
        }

        @Test func anUnsealedRegionInAnOfferIsRefused() throws {
            let unsealed = vq_memfd_create("unsealed", VQ_MFD_CLOEXEC)
            try #require(unsealed >= 0)
            defer { close(unsealed) }
            try #require(ftruncate(unsealed, off_t(Self.layout.regionSize)) == 0)
            let before = openDescriptors()
            let creator = try RawCreator()
            let notify = try notifyEnd()
            creator.send(
                offerBytes(features: Self.layout.features.rawValue, regionSize: UInt64(Self.layout.regionSize)),
                descriptors: [unsealed, notify]
            )
            close(notify)
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryConnection.receive(over: FileDescriptor(rawValue: creator.peer))
            }
            #expect(error?.code == .regionNotSealed)
            #expect(creator.answerStatus() == 3)
            _ = consume creator
            #expect(Set(openDescriptors().keys) == Set(before.keys))
        }

        @Test func aCreatorThatHangsUpBeforeItsOfferIsAHangUp() throws {
            let before = openDescriptors()
            let creator = try RawCreator()
            let receiver = creator.peer
            _ = consume creator
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryConnection.receive(over: FileDescriptor(rawValue: receiver))
            }
            #expect(error?.code == .handshakeHangUp)
            #expect(Set(openDescriptors().keys) == Set(before.keys))
        }

        @Test func aReceiverThatHangsUpBeforeAnsweringIsAHangUp() throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let before = openDescriptors()
            var sockets: [CInt] = [-1, -1]
            try #require(vq_socketpair(&sockets) == 0)
            // The receiver reads the offer, closes what it got, and hangs up without answering.
            let receiverSocket = sockets[1]
            let receiver = startThread {
                var bytes = [UInt8](repeating: 0, count: 128)
                var fds = [CInt](repeating: -1, count: 8)
                var received: CInt = 0
                var flags: CInt = 0
                _ = vq_receive_with_fds(receiverSocket, &bytes, 128, &fds, 8, &received, &flags)
                for fd in fds.prefix(Int(received)) { close(fd) }
                close(receiverSocket)
            }
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryConnection.offer(
                    file,
                    over: FileDescriptor(rawValue: sockets[0]),
                    timeout: .seconds(60)
                )
            }
            #expect(error?.code == .handshakeHangUp)
            #expect(receiver.wait(timeout: .now() + .seconds(60)) == .success)
            #expect(Set(openDescriptors().keys) == Set(before.keys))
        }

        /// A client that connects and never answers the offer does not stall the listener: it is
        /// hung up on after the handshake bound, and the next client is served (issue 18, item 11).
        @Test func aSilentPeerDoesNotStallTheListener() throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let path = temporarySocketPath("silent")
            let listener = try SharedMemoryListener(path: path)
            let silent = vq_unix_connect(path.string)
            try #require(silent >= 0)
            defer { close(silent) }
            let pid = try spawnProcess(TestExecutables.cPeer, [path.string])
            let connection = try listener.accept(
                offering: file,
                peerRole: .device,
                timeout: .seconds(60),
                handshakeTimeout: .milliseconds(300)
            )
            #expect(connection.peerProcessID == pid)
            // The silent client got the offer, then a hang-up.
            var message = [UInt8](repeating: 0, count: 256)
            var sawEnd = false
            for _ in 0..<4 where !sawEnd {
                sawEnd = recv(silent, &message, message.count, 0) == 0
            }
            #expect(sawEnd)
            var driver = try DriverQueue(
                region: try connection.makeRegion(),
                notifier: connection.notifier,
                bufferSize: 256
            )
            let messages = [Array("after a silent peer".utf8)]
            #expect(try roundTrip(&driver, messages, replyCapacity: 256) == messages.map { Array($0.reversed()) })
            connection.close()
            #expect(exitCode(of: pid) == 0)
        }

        @Test func acceptWithoutAPeerTimesOut() throws {
            let file = try SharedMemoryFile.create(layout: Self.layout)
            let listener = try SharedMemoryListener(path: temporarySocketPath("lonely"))
            let error = #expect(throws: SharedMemoryError.self) {
                _ = try listener.accept(offering: file, timeout: .milliseconds(20))
            }
            #expect(error?.code == .timedOut)
        }

        @Test func theListenerRemovesItsSocketFile() throws {
            let path = temporarySocketPath("unlink")
            var listener: SharedMemoryListener? = try SharedMemoryListener(path: path)
            #expect(access(path.string, F_OK) == 0)
            let taken = #expect(throws: SharedMemoryError.self) { _ = try SharedMemoryListener(path: path) }
            #expect(taken?.underlyingError == .addressInUse)
            listener = nil
            #expect(listener == nil)
            #expect(access(path.string, F_OK) == -1)
            let tooLong = #expect(throws: SharedMemoryError.self) {
                _ = try SharedMemoryListener(path: FilePath("/tmp/" + String(repeating: "x", count: 200)))
            }
            #expect(tooLong?.code == .invalidArgument)
        }
    }
}
