import CVirtqueueSystem
import Dispatch
import Foundation
import Glibc
import Synchronization
import SystemPackage
import Testing
import Virtqueue
import VirtqueueSharedMemory

/// One notifier of ours and, as raw descriptors, everything its peer holds — so a test can do to
/// them whatever a hostile peer can (docs/wire-format.md section 7, "What a peer may do").
final class NotifierWithRawPeer: Sendable {
    /// Our side.
    let notifier: EventNotifier
    /// The peer's wait end of the channel we notify through.
    let peerWaitEnd: CInt
    /// The peer's notify end of the channel we wait on.
    let peerNotifyEnd: CInt
    /// The peer's copy of our notify end: it made that channel and kept both ends, as the
    /// receiver of the socket handshake can. It shares that socket — and its file status flags —
    /// with us.
    let peerCopyOfOurNotifyEnd: CInt
    let peerOpen = Mutex(true)

    init() throws {
        let ours = try EventNotifier.makeChannel()
        let theirs = try EventNotifier.makeChannel()
        peerCopyOfOurNotifyEnd = vq_dup_cloexec(theirs.notifyEnd.rawValue, 0)
        peerWaitEnd = theirs.waitEnd.rawValue
        peerNotifyEnd = ours.notifyEnd.rawValue
        notifier = EventNotifier(waitingOn: ours.waitEnd, notifying: theirs.notifyEnd, liveness: .none)
    }

    deinit { die() }

    var peerDescriptors: [CInt] { [peerWaitEnd, peerNotifyEnd, peerCopyOfOurNotifyEnd] }

    /// The trap of issue 18, on sockets: clears `O_NONBLOCK` on everything the peer holds (our
    /// notify end among them), shrinks the shared socket's send buffer, and fills the channel we
    /// notify through until it is full. Returns how many messages it took.
    @discardableResult
    func fillOurChannel() -> Int {
        for fd in peerDescriptors { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) }
        var smallest: CInt = 0
        _ = setsockopt(peerCopyOfOurNotifyEnd, SOL_SOCKET, SO_SNDBUF, &smallest, socklen_t(MemoryLayout<CInt>.size))
        var count = 0
        var byte: UInt8 = 1
        while send(peerCopyOfOurNotifyEnd, &byte, 1, CInt(MSG_DONTWAIT) | CInt(MSG_NOSIGNAL)) == 1 { count += 1 }
        return count
    }

    /// Receives, without blocking, every message waiting on the peer's wait end; returns how many.
    func peerDrains() -> Int {
        var count = 0
        var byte: UInt8 = 0
        while recv(peerWaitEnd, &byte, 1, CInt(MSG_DONTWAIT)) > 0 { count += 1 }
        return count
    }

    /// Sends one message of `byteCount` bytes to our wait end, without blocking; whether it went.
    @discardableResult
    func peerNotifies(byteCount: Int = 1) -> Bool {
        let bytes = [UInt8](repeating: 7, count: byteCount)
        return bytes.withUnsafeBytes {
            send(peerNotifyEnd, $0.baseAddress, byteCount, CInt(MSG_DONTWAIT) | CInt(MSG_NOSIGNAL)) == byteCount
        }
    }

    /// The peer's process ends: the kernel closes every descriptor it held.
    func die() {
        peerOpen.withLock { open in
            guard open else { return }
            open = false
            for fd in peerDescriptors { close(fd) }
        }
    }
}

/// What a peer can shut down, and which of our calls must then report `peerDied`.
enum PeerShutdown: String, CaseIterable, Sendable {
    /// Its wait end, for reading: what we send can never be received.
    case waitEndForReading
    /// Its copy of our notify end: the socket we send on.
    case sharedNotifyEnd
    /// Its notify end, for writing: nothing can wake us any more.
    case notifyEndForWriting
    /// Everything it holds.
    case everything

    func apply(_ pair: NotifierWithRawPeer) {
        switch self {
        case .waitEndForReading: _ = shutdown(pair.peerWaitEnd, CInt(SHUT_RD))
        case .sharedNotifyEnd: _ = shutdown(pair.peerCopyOfOurNotifyEnd, CInt(SHUT_RDWR))
        case .notifyEndForWriting: _ = shutdown(pair.peerNotifyEnd, CInt(SHUT_WR))
        case .everything: for fd in pair.peerDescriptors { _ = shutdown(fd, CInt(SHUT_RDWR)) }
        }
    }

    var endsNotify: Bool { self != .notifyEndForWriting }
    var endsWait: Bool { self == .notifyEndForWriting || self == .everything }
}

/// Waits until `notifier` reports `peerDied`; the notifications still pending come first, each
/// wake-up taking a bounded batch. Returns the error, or `nil` if it never came.
func waitUntilPeerDied(_ notifier: EventNotifier, wakeUps: Int = 1000) -> VirtqueueError? {
    for _ in 0..<wakeUps {
        do {
            try notifier.wait()
        } catch {
            return error
        }
    }
    return nil
}

extension SharedMemoryTests {
    @Suite("Socket notifier")
    struct EventNotifierTests {
        @Test func aNotificationSentBeforeTheWaitIsNotLost() throws {
            let (driver, device) = try EventNotifier.makePair()
            try driver.notify()
            try driver.notify()
            try device.wait()  // merged: returns once, at once
            try device.notify()
            try driver.wait()
        }

        @Test func closingOneEndEndsThePeersWait() throws {
            let (driver, device) = try EventNotifier.makePair()
            driver.close()
            let error = #expect(throws: VirtqueueError.self) { try device.wait() }
            #expect(error?.code == .peerDied)
            let notified = #expect(throws: VirtqueueError.self) { try device.notify() }
            #expect(notified?.code == .peerDied)
        }

        @Test func aPendingNotificationIsDeliveredBeforeThePeerDeath() throws {
            let (driver, device) = try EventNotifier.makePair()
            try driver.notify()
            driver.close()
            try device.wait()
            let error = #expect(throws: VirtqueueError.self) { try device.wait() }
            #expect(error?.code == .peerDied)
        }

        @Test func theLastCopyGoingAwayHangsUp() throws {
            var pair: (driver: EventNotifier, device: EventNotifier)? = try EventNotifier.makePair()
            let device = try #require(pair?.device)
            pair = nil
            let error = #expect(throws: VirtqueueError.self) { try device.wait() }
            #expect(error?.code == .peerDied)
        }

        @Test func aWaitingThreadWakesWhenThePeerNotifies() async throws {
            let (driver, device) = try EventNotifier.makePair()
            let waiter = Task.detached { () throws in try device.wait() }
            try driver.notify()
            try await waiter.value
        }

        /// `close()` from another thread ends a wait already blocked on this side, and the
        /// notifications after it report the hang-up.
        @Test func closeFromAnotherThreadEndsThisSidesWait() throws {
            let (driver, device) = try EventNotifier.makePair()
            let waited = Slot<VirtqueueError.Code>()
            let ended = startThread {
                let code = virtqueueError { try device.wait() }?.code
                waited.value.withLock { $0 = code }
            }
            usleep(10_000)  // time for the thread to block in its wait (it need not have, to pass)
            device.close()
            #expect(ended.wait(timeout: .now() + .seconds(60)) == .success, "the blocked wait did not end")
            #expect(waited.value.withLock { $0 } == .peerDied)
            let after = try withinBound("notify and the peer's wait after close()") {
                [virtqueueError { try device.notify() }?.code, virtqueueError { try driver.wait() }?.code]
            }
            #expect(after == [.peerDied, .peerDied])
        }

        /// The peer never waits: the channel fills, and every later notification is dropped at
        /// once — a wake-up is already pending. The peer's one wait takes them all; then the
        /// channel works as before.
        @Test func notifyNeverBlocksOnAFullChannel() throws {
            let (driver, device) = try EventNotifier.makePair()
            try withinBound("100,000 notifications nobody receives") {
                for _ in 0..<100_000 { try driver.notify() }
            }
            try withinBound("the wait that takes them") { try device.wait() }
            try withinBound("a round trip afterwards") {
                try driver.notify()
                try device.wait()
                try device.notify()
                try driver.wait()
            }
        }

        /// Issue 18's hang, tried on sockets: the peer clears `O_NONBLOCK` on everything it
        /// holds — our notify end too, which it shares — and fills the channel. Our `notify()`
        /// still returns; once the peer receives, notifications reach it again.
        @Test func aPeerThatClearsONonblockAndFillsASharedChannelCannotBlockNotify() throws {
            let pair = try NotifierWithRawPeer()
            let filled = pair.fillOurChannel()
            #expect(filled > 0)
            #expect(fcntl(pair.peerCopyOfOurNotifyEnd, F_GETFL) & O_NONBLOCK == 0)
            try withinBound("notifications into a channel the peer made blocking and full") {
                for _ in 0..<10_000 { try pair.notifier.notify() }
            }
            #expect(pair.peerDrains() >= filled)
            try withinBound("a notification once the peer receives again") { try pair.notifier.notify() }
            #expect(pair.peerDrains() == 1)
            #expect(pair.peerNotifies())
            try withinBound("our wait") { try pair.notifier.wait() }
        }

        /// The same trap, then the peer dies: our next notification and our wait end with
        /// `peerDied`.
        @Test func aPeerThatFillsTheChannelAndDiesEndsNotifyAndWaitWithPeerDied() throws {
            let pair = try NotifierWithRawPeer()
            pair.fillOurChannel()
            for _ in 0..<300 { pair.peerNotifies() }  // and floods our wait end
            try withinBound("notifications into the full channel") {
                for _ in 0..<10_000 { try pair.notifier.notify() }
            }
            pair.die()
            let codes = try withinBound("notify and wait after the peer died") {
                [virtqueueError { try pair.notifier.notify() }?.code, waitUntilPeerDied(pair.notifier)?.code]
            }
            #expect(codes == [.peerDied, .peerDied])
        }

        /// Whatever end the peer shuts down, the call that can no longer work reports `peerDied`
        /// instead of blocking.
        @Test(arguments: PeerShutdown.allCases)
        func aPeerThatShutsDownEndsNotifyOrWaitWithPeerDied(_ what: PeerShutdown) throws {
            let pair = try NotifierWithRawPeer()
            what.apply(pair)
            let notified = try withinBound("notify after the peer shut down \(what)") {
                virtqueueError { try pair.notifier.notify() }?.code
            }
            #expect(notified == (what.endsNotify ? .peerDied : nil))
            if what.endsWait {
                let waited = try withinBound("wait after the peer shut down \(what)") {
                    waitUntilPeerDied(pair.notifier)?.code
                }
                #expect(waited == .peerDied)
            }
        }

        /// A peer that floods our wait end with messages of any size, empty ones included: each
        /// wait returns after a bounded batch, and once the peer dies the waits end.
        @Test func aFloodOfMessagesWakesBoundedWaitsAndEndsWithThePeer() throws {
            let pair = try NotifierWithRawPeer()
            var sent = 0
            for size in [0, 1, 4096, 0, 1] {
                for _ in 0..<100 where pair.peerNotifies(byteCount: size) { sent += 1 }
            }
            #expect(sent > 0)
            try withinBound("a wait on a flooded channel") { try pair.notifier.wait() }
            pair.die()
            let waited = try withinBound("the waits after the flooding peer died") {
                waitUntilPeerDied(pair.notifier)?.code
            }
            #expect(waited == .peerDied)
        }

        /// A lone empty message is a notification like any other.
        @Test func anEmptyMessageWakesTheWait() throws {
            let pair = try NotifierWithRawPeer()
            #expect(pair.peerNotifies(byteCount: 0))
            try withinBound("a wait on an empty message") { try pair.notifier.wait() }
        }

        /// A descriptor the peer passes through the channel never stays open in our process:
        /// the wait end refuses it (`SO_PASSRIGHTS`, Linux 6.16) or receiving discards it.
        @Test func aDescriptorPassedThroughTheChannelIsNotKept() throws {
            let pair = try NotifierWithRawPeer()
            let passed = vq_eventfd()
            try #require(passed >= 0)
            var byte: UInt8 = 1
            let sent = withUnsafeMutableBytes(of: &byte) { raw in
                [passed].withUnsafeBufferPointer { fds in
                    vq_send_with_fds(pair.peerNotifyEnd, raw.baseAddress, 1, fds.baseAddress, 1)
                }
            }
            let refused = sent < 0 ? errno : 0
            close(passed)
            if sent < 0 {
                #expect(refused == EPERM)
                #expect(pair.peerNotifies())
            }
            let before = openDescriptors()
            try withinBound("a wait on a message carrying a descriptor") { try pair.notifier.wait() }
            // Nothing new is open (threads of earlier tests may still be closing theirs).
            let after = openDescriptors()
            #expect(Set(after.keys).subtracting(before.keys).map { "\($0) → \(after[$0] ?? "")" } == [])
        }
    }
}
