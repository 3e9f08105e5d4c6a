import CVirtqueueSystem
import Foundation
import Glibc
import SystemPackage
import Testing
import Virtqueue
import VirtqueueVhostUser

extension VhostUserTests {
    /// `VhostUserEventNotifier` against a front-end that misuses the eventfds it passed.
    @Suite struct EventNotifier {
        @Test func notifyDoesNotBlockOnAFullCounterWithONonblockCleared() throws {
            let call = try makeEventfd()
            let peer = try call.duplicate()
            defer { try? peer.close() }
            // The front-end clears O_NONBLOCK on the shared file description and fills the counter.
            let flags = fcntl(peer.rawValue, F_GETFL)
            #expect(fcntl(peer.rawValue, F_SETFL, flags & ~O_NONBLOCK) == 0)
            var full: UInt64 = 0xFFFF_FFFF_FFFF_FFFE
            #expect(write(peer.rawValue, &full, 8) == 8)
            let notifier = try VhostUserEventNotifier(waitingOn: nil, notifying: VhostUserFileDescriptor(owning: call))
            let start = ContinuousClock.now
            for _ in 0..<100 { try notifier.notify() }
            #expect(ContinuousClock.now - start < .seconds(1))
            // The counter is still full: the front-end sees "signalled" when it reads.
            var value: UInt64 = 0
            #expect(read(peer.rawValue, &value, 8) == 8 && value == full)
        }

        @Test func waitEndsWithPeerDiedWhenClosedEvenWithONonblockCleared() throws {
            let kick = try makeEventfd()
            let peer = try kick.duplicate()
            defer { try? peer.close() }
            let flags = fcntl(peer.rawValue, F_GETFL)
            #expect(fcntl(peer.rawValue, F_SETFL, flags & ~O_NONBLOCK) == 0)
            let notifier = try VhostUserEventNotifier(waitingOn: VhostUserFileDescriptor(owning: kick), notifying: nil)
            // A kick wakes one wait, and is consumed by it.
            #expect(vq_eventfd_signal(peer.rawValue) == 0)
            try notifier.wait()
            let finished = DispatchSemaphore(value: 0)
            let outcome = Outcome()
            let thread = Thread {
                do throws(VirtqueueError) { try notifier.wait() } catch { outcome.code = error.code }
                finished.signal()
            }
            thread.start()
            usleep(50_000)
            #expect(!notifier.isClosed)
            notifier.close()
            #expect(finished.wait(timeout: .now() + 5) == .success)
            #expect(outcome.code == .peerDied)
            #expect(notifier.isClosed)
            #expect(throws: VirtqueueError.self) { try notifier.wait() }
        }

        @Test func withoutAWaitEventfdAWaitReturnsAfterThePollInterval() throws {
            let notifier = try VhostUserEventNotifier(waitingOn: nil, notifying: nil)
            try notifier.notify()
            let start = ContinuousClock.now
            try notifier.wait()
            #expect(ContinuousClock.now - start < .seconds(1))
        }

        final class Outcome: @unchecked Sendable {
            var code: VirtqueueError.Code?
        }
    }

    /// A ring the front-end runs without eventfds, and a ring it breaks.
    @Suite struct RingFailures {
        @Test func aRingWithoutAKickEventfdIsPolled() throws {
            let backend = try VhostUserBackend<Shout>()
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.startRing(0)
            #expect(try frontEnd.stopRing(0) == 0)
            try frontEnd.expectSuccess(.setVringKick(VhostUserVringFile(index: 0, fileDescriptor: nil)))
            var driver = try frontEnd.makeDriver(0)
            #expect(try exchange(&driver, ["polled", "ring"]) == ["POLLED", "RING"])
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
        }

        @Test func aDescriptorIntoTheGapBetweenRegionsBreaksTheRingAndSignalsTheErrorEventfd() throws {
            let log = LogCollector()
            let backend = try VhostUserBackend<Shout>(log: log.sink)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            let errorFD = try makeEventfd()
            defer { try? errorFD.close() }
            try frontEnd.expectSuccess(
                .setVringError(VhostUserVringFile(index: 0, fileDescriptor: .init(borrowing: errorFD)))
            )
            try frontEnd.startRing(0)
            // A hostile driver: descriptor 0 points at guest-physical 0x50000, between the regions.
            let ring = SplitRingAddresses(frontEnd.placement(0))
            try frontEnd.memory.withBytes(at: ring.descriptor(0), count: 16) { bytes in
                bytes.storeBytes(of: UInt64(0x5_0000).littleEndian, as: UInt64.self)
                bytes.storeBytes(of: UInt32(64).littleEndian, toByteOffset: 8, as: UInt32.self)
                bytes.storeBytes(of: SplitRingFields.writeFlag.littleEndian, toByteOffset: 12, as: UInt16.self)
            }
            try frontEnd.memory.withBytes(at: ring.availableEntry(slot: 0), count: 2) { bytes in
                bytes.storeBytes(of: UInt16(0), as: UInt16.self)
            }
            try frontEnd.memory.withBytes(at: ring.availableIndex, count: 2) { bytes in
                bytes.storeBytes(of: UInt16(1).littleEndian, as: UInt16.self)
            }
            #expect(vq_eventfd_signal(frontEnd.kicks[0].rawValue) == 0)
            var entry = pollfd(fd: errorFD.rawValue, events: Int16(POLLIN), revents: 0)
            #expect(poll(&entry, 1, 5000) == 1, "the error eventfd was not signalled")
            let record = try #require(log.first(.invalidRing))
            #expect(record.queue == 0 && record.error?.message.contains("bufferOutOfRange") == true, "\(record)")
            // The broken ring reports where it stands; the chain it refused was not taken.
            #expect(try frontEnd.stopRing(0) == 0)
            frontEnd.hangUp()
            #expect(thread.join().flatMap { $0 } == nil)
            try expectHonestSessionWorks(backend)
        }
    }
}

extension VhostUserTests.RingFailures {
    @Test func sessionsLeaveNoDescriptorOrMappingBehind() throws {
        let backend = try VhostUserBackend<Shout>()
        try expectHonestSessionWorks(backend)  // warm-up: the runtime's own lazily opened descriptors
        usleep(50_000)
        let descriptors = openDescriptorCount()
        let mappings = mappingCount()
        for _ in 0..<3 {
            try expectHonestSessionWorks(backend)
            let (frontEnd, thread) = try connect(backend)
            try frontEnd.negotiate()
            try frontEnd.startRing(0)
            #expect(try frontEnd.ack(.setMemoryTable(frontEnd.memory.table)) != 0)
            try sendRaw(frontEnd.socket, raw(VhostUserRequest.getFeatures, flags: 2))
            #expect(thread.join() != nil)
        }
        usleep(50_000)
        #expect(openDescriptorCount() == descriptors)
        #expect(mappingCount() == mappings)
    }
}

/// The number of lines of /proc/self/maps.
func mappingCount() -> Int {
    guard let file = fopen("/proc/self/maps", "r") else { return -1 }
    defer { fclose(file) }
    var count = 0
    while true {
        let character = getc(file)
        if character == EOF { return count }
        if character == 10 { count += 1 }
    }
}
