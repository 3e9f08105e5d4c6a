import CVirtqueueSystem
import Foundation
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueSharedMemory
import VirtqueueTestDevices

/// The C peer (`Tests/VirtqueueCPeer`) started as a hostile receiver: `--trap fill` or
/// `--trap shutdown`, with a control socket as its descriptor 3 (docs/wire-format.md section 7,
/// "What a peer may do").
struct HostileCPeer: Sendable {
    let processID: Int32
    let control: CInt

    static func start(path: FilePath, role: SharedMemoryConnection.Role, trap: String, chains: Int = 64) throws
        -> HostileCPeer
    {
        var sockets: [CInt] = [-1, -1]
        guard vq_socketpair(&sockets) == 0 else { throw Errno(rawValue: errno) }
        defer { close(sockets[1]) }
        var arguments = [path.string, "--trap", trap, "--chains", String(chains)]
        if role == .driver { arguments.append("--driver") }
        let pid = try spawnProcess(TestExecutables.cPeer, arguments, descriptors: [sockets[1]])
        return HostileCPeer(processID: pid, control: sockets[0])
    }

    /// Waits for the peer's word that its trap is set; `false` if it ended instead.
    func trapIsSet() -> Bool {
        var byte: UInt8 = 0
        return recv(control, &byte, 1, 0) == 1 && byte == UInt8(ascii: "T")
    }

    /// Lets the peer receive what is pending and work honestly from now on.
    func liftTrap() {
        var byte = UInt8(ascii: "D")
        _ = send(control, &byte, 1, CInt(MSG_NOSIGNAL))
    }

    /// Kills the peer with SIGKILL and reaps it: its descriptors are closed by then.
    func kill() {
        _ = Glibc.kill(processID, SIGKILL)
        _ = exitCode(of: processID)
        close(control)
    }

    /// Waits for the peer to exit on its own; its exit code.
    func exitStatus() -> Int32 {
        defer { close(control) }
        return exitCode(of: processID)
    }
}

/// Attaches a hostile C peer in `role` to a new region over the socket handshake, and waits
/// (bounded) until it has set its trap.
func attachHostilePeer(
    role: SharedMemoryConnection.Role,
    trap: String,
    features: Features = [],
    chains: Int = 64
) throws -> (SharedMemoryConnection, HostileCPeer) {
    let layout = try RegionLayout(queueSizes: [16], dataAreaSize: 16 * 1024, features: features.union(.version1))
    let file = try SharedMemoryFile.create(layout: layout)
    let path = temporarySocketPath("hostile")
    let listener = try SharedMemoryListener(path: path)
    let peer = try HostileCPeer.start(path: path, role: role, trap: trap, chains: chains)
    let connection = try listener.accept(offering: file, peerRole: role, timeout: .seconds(60))
    let trapped = try withinBound("the C peer setting its trap") { peer.trapIsSet() }
    try #require(trapped, "the C peer ended before it set its trap")
    return (connection, peer)
}

/// Issue 18, item 11, first bullet, on the notification sockets: a peer that makes the channel we
/// notify through as full and as blocking as it can — it clears `O_NONBLOCK` on every descriptor
/// it holds, keeps the notify end it handed us (so it shares our socket), shrinks its buffer and
/// fills it, floods our wait end and tries to pass us a descriptor — cannot make our `notify()`
/// or `wait()` block, on the driver's side or the device's. Staying alive, it lets the queue work
/// once it receives again; dying, it makes our next notification and our wait end with `peerDied`.
/// Every call that could hang runs under `withinBound`, so a hang fails the test.
extension SharedMemoryTests {
    @Suite("Hostile notification peers")
    struct NotificationAttackTests {
        static let messages = (0..<8).map { index in
            (0..<(1 + index * 29)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) }
        }

        /// A hostile device traps the kick channel and stays: the driver's notifications return,
        /// and once the device receives again it serves every chain.
        @Test func aDeviceThatTrapsTheKickChannelCannotBlockTheDriverAndTheQueueWorksOnceItDrains() throws {
            let (connection, peer) = try attachHostilePeer(role: .device, trap: "fill")
            let notifier = connection.notifier
            try withinBound("100,000 notifications into the channel the device filled") {
                for _ in 0..<100_000 { try notifier.notify() }
            }
            let replies = try withinBound("the driver's chains once the device drains") { () throws -> [[UInt8]] in
                var driver = try DriverQueue(region: try connection.makeRegion(), notifier: notifier, bufferSize: 256)
                var expected: [UInt16: Int] = [:]
                for (index, message) in Self.messages.enumerated() {
                    var chain = driver.makeChain()
                    try driver.appendReadable(to: &chain, copying: message)
                    try driver.appendWritable(to: &chain, capacity: 256)
                    expected[try driver.submit(chain)] = index
                }
                try driver.notifyIfNeeded()  // into the full channel: dropped, a wake-up is pending
                peer.liftTrap()
                var replies = [[UInt8]](repeating: [], count: Self.messages.count)
                var returned = 0
                while returned < Self.messages.count {
                    try driver.waitForUsed()
                    while let used = try driver.takeUsed() {
                        var reply = [UInt8](repeating: 0, count: used.writtenByteCount)
                        _ = try reply.withUnsafeMutableBytes { try driver.copyWrittenBytes(of: used, into: $0) }
                        if let index = expected[used.id] { replies[index] = reply }
                        try driver.free(used)
                        returned += 1
                    }
                }
                return replies
            }
            #expect(replies == Self.messages.map { Array($0.reversed()) })
            connection.close()
            #expect(peer.exitStatus() == 0)
        }

        /// A hostile device traps the kick channel and dies: the driver's next notification and
        /// its wait end with `peerDied`, the queue breaks and the chain in flight comes back.
        @Test func aDeviceThatTrapsTheKickChannelAndDiesEndsTheDriversNotifyAndWaitWithPeerDied() throws {
            let (connection, peer) = try attachHostilePeer(role: .device, trap: "fill")
            let notifier = connection.notifier
            try withinBound("notifications into the channel the device filled") {
                for _ in 0..<10_000 { try notifier.notify() }
            }
            peer.kill()
            let codes = try withinBound("the driver's notify and wait after the device died") {
                () throws -> [VirtqueueError.Code?] in
                var driver = try DriverQueue(region: try connection.makeRegion(), notifier: notifier, bufferSize: 256)
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, copying: Self.messages[3])
                try driver.appendWritable(to: &chain, capacity: 256)
                try driver.submit(chain)
                let notified = virtqueueError { try driver.notifyIfNeeded() }?.code
                let waited = waitUntilPeerDied(notifier)?.code
                let broken = driver.isBroken
                let abandoned = driver.takeAbandoned()?.status
                return [
                    notified, waited, broken ? .queueBroken : nil, abandoned == .abandoned(.peerDied) ? .peerDied : nil,
                ]
            }
            #expect(codes == [.peerDied, .peerDied, .queueBroken, .peerDied])
        }

        /// A hostile driver traps the call channel and stays: the device's notifications return,
        /// and once the driver receives again the device serves all its chains (the C driver
        /// checks every reply and exits 0).
        @Test func aDriverThatTrapsTheCallChannelCannotBlockTheDeviceAndTheQueueWorksOnceItDrains() throws {
            let (connection, peer) = try attachHostilePeer(role: .driver, trap: "fill", chains: 200)
            let notifier = connection.notifier
            try withinBound("100,000 notifications into the channel the driver filled") {
                for _ in 0..<100_000 { try notifier.notify() }
            }
            try withinBound("the device serving once the driver drains") {
                var device = try DeviceQueue(region: try connection.makeRegion(), notifier: notifier)
                peer.liftTrap()
                var echo = EchoDevice(configuration: DeviceConfiguration())
                try device.serve(&echo)  // returns when the driver hangs up
            }
            #expect(peer.exitStatus() == 0)
        }

        /// A hostile driver traps the call channel and dies: the device's next notification and
        /// its wait end with `peerDied`, and its serving loop returns as for a hang-up.
        @Test func aDriverThatTrapsTheCallChannelAndDiesEndsTheDevicesNotifyAndWaitWithPeerDied() throws {
            let (connection, peer) = try attachHostilePeer(role: .driver, trap: "fill")
            let notifier = connection.notifier
            try withinBound("notifications into the channel the driver filled") {
                for _ in 0..<10_000 { try notifier.notify() }
            }
            peer.kill()
            let codes = try withinBound("the device's notify, wait and serve after the driver died") {
                () throws -> [VirtqueueError.Code?] in
                let notified = virtqueueError { try notifier.notify() }?.code
                let waited = waitUntilPeerDied(notifier)?.code
                var device = try DeviceQueue(region: try connection.makeRegion(), notifier: notifier)
                var echo = EchoDevice(configuration: DeviceConfiguration())
                try device.serve(&echo)
                return [notified, waited]
            }
            #expect(codes == [.peerDied, .peerDied])
        }

        /// A hostile peer, in either role, shuts down every notification socket it holds and
        /// stays: our notify and our wait end with `peerDied` at once.
        @Test(arguments: [SharedMemoryConnection.Role.device, .driver])
        func aPeerThatShutsDownItsChannelsEndsNotifyAndWaitWithPeerDied(role: SharedMemoryConnection.Role) throws {
            let (connection, peer) = try attachHostilePeer(role: role, trap: "shutdown")
            defer { peer.kill() }
            let notifier = connection.notifier
            let codes = try withinBound("notify and wait on shut-down channels") {
                [virtqueueError { try notifier.notify() }?.code, waitUntilPeerDied(notifier)?.code]
            }
            #expect(codes == [.peerDied, .peerDied])
        }

        /// The child-process level (section 8): a device process that stops receiving kicks,
        /// clears `O_NONBLOCK` on its descriptors and floods the driver's wait end cannot block
        /// the driver's notifications; killed, it ends them with `peerDied`.
        @Test func aDeviceProcessThatTrapsItsChannelsCannotBlockTheDriverAndItsDeathEndsIt() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 8 * 256, features: .all)
            let device = try SharedMemoryBackend.launch(
                NotifierTrapDevice.self,
                layout: layout,
                options: TestExecutables.options()
            )
            let notifier = device.notifier
            let codes = try withinBound("the driver against a trapping device process") {
                () throws -> [VirtqueueError.Code?] in
                var driver = try DriverQueue(region: try device.makeRegion(), notifier: notifier, bufferSize: 256)
                var chain = driver.makeChain()
                try driver.appendReadable(to: &chain, copying: Array("trap".utf8))
                try driver.appendWritable(to: &chain, capacity: 16)
                try driver.submit(chain)
                try driver.notifyIfNeeded()
                try notifier.wait()  // the device's flood: it has taken the request and set its trap
                for _ in 0..<100_000 { try notifier.notify() }
                try device.kill()
                try device.waitForExit()
                let notified = virtqueueError { try notifier.notify() }?.code
                let waited = virtqueueError { try driver.waitForUsed() }?.code
                let abandoned = driver.takeAbandoned()?.status
                return [notified, waited, abandoned == .abandoned(.peerDied) ? .peerDied : nil]
            }
            #expect(codes == [.peerDied, .peerDied, .peerDied])
        }

        /// The receiver's side of the handshake against a hostile creator: the creator keeps the
        /// notify end it handed over, clears `O_NONBLOCK` on it and fills it, and floods the
        /// receiver's wait end. The Swift device's notifications return; when the creator's
        /// process ends, they and the device's wait end with `peerDied`.
        @Test func aCreatorThatTrapsTheCallChannelCannotBlockTheReceiversNotify() throws {
            let layout = try RegionLayout(queueSizes: [8], dataAreaSize: 8 * 256, features: .all)
            let file = try SharedMemoryFile.create(layout: layout)
            var sockets: [CInt] = [-1, -1]
            try #require(vq_socketpair(&sockets) == 0)
            let (creatorSocket, receiverSocket) = (sockets[0], sockets[1])
            var call: [CInt] = [-1, -1]
            try #require(vq_notification_pair(&call) == 0)
            let offer = offerBytes(features: layout.features.rawValue, regionSize: UInt64(file.byteCount))
            let sent = offer.withUnsafeBytes { raw in
                [file.fileDescriptor.rawValue, call[1]].withUnsafeBufferPointer {
                    vq_send_with_fds(creatorSocket, raw.baseAddress, raw.count, $0.baseAddress, 2)
                }
            }
            try #require(sent == offer.count)
            let connection = try SharedMemoryConnection.receive(over: FileDescriptor(rawValue: receiverSocket))
            // The answer carries the receiver's kick notify end.
            var answer = [UInt8](repeating: 0, count: 64)
            var fds = [CInt](repeating: -1, count: 4)
            var received: CInt = 0
            var flags: CInt = 0
            let count = vq_receive_with_fds(creatorSocket, &answer, 64, &fds, 4, &received, &flags)
            #expect(count == 16 && received == 1)
            #expect(answer[10] == 0 && answer[11] == 0)
            let kick = fds[0]
            #expect(vq_notification_socket_check(kick) == 0)
            // The trap: O_NONBLOCK off everywhere, the call channel full, the device's wait end flooded.
            for fd in [creatorSocket, call[0], call[1], kick] {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            }
            var byte: UInt8 = 1
            while send(call[1], &byte, 1, CInt(MSG_DONTWAIT) | CInt(MSG_NOSIGNAL)) == 1 {}
            while send(kick, &byte, 1, CInt(MSG_DONTWAIT) | CInt(MSG_NOSIGNAL)) == 1 {}
            let notifier = connection.notifier
            try withinBound("the receiver's notifications into the channel the creator filled") {
                for _ in 0..<100_000 { try notifier.notify() }
            }
            // The creator's process ends.
            for fd in [creatorSocket, call[0], call[1], kick] { close(fd) }
            let codes = try withinBound("the receiver's notify and wait after the creator died") {
                [virtqueueError { try notifier.notify() }?.code, waitUntilPeerDied(notifier)?.code]
            }
            #expect(codes == [.peerDied, .peerDied])
        }
    }
}
