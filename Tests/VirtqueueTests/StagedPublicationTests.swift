import Testing
import Virtqueue
import VirtqueueConformance

/// Staged publication: `submit(_:publish: false)` and `complete(_:written:publish: false)` write
/// their ring entries and leave the index to one later store — `publish()`, a notification
/// decision, a wait or `stop()` — so a batch moves the index's cache line once.
@Suite("Staged publication")
struct StagedPublicationTests {
    static let modes: [Features] = [[.eventIndex, .indirectDescriptors], [.indirectDescriptors]]

    typealias Pair = NotificationTests.Pair
    /// The notification tests' pair (queue size 16) and their way of submitting a chain.
    let notification = NotificationTests()

    func makePair(features: Features) throws -> Pair {
        try notification.makePair(features: features, queueSize: 16)
    }

    /// Submits `count` chains, each publishing `avail.idx`: one readable byte, 8 writable.
    func submit(_ count: Int, on driver: inout DriverQueue<GuardedRegion, CountingNotifier>) throws {
        for byte in 0..<count { try notification.submitOne(&driver, byte: UInt8(byte)) }
    }

    func stageOne(_ driver: inout DriverQueue<GuardedRegion, CountingNotifier>, byte: UInt8) throws {
        var chain = driver.makeChain()
        try driver.appendReadable(to: &chain, copying: [byte])
        try driver.appendWritable(to: &chain, capacity: 8)
        try driver.submit(chain, publish: false)
    }

    @Test(arguments: modes)
    func stagedChainsAreInvisibleUntilPublished(features: Features) throws {
        var pair = try makePair(features: features)
        for byte in 0..<3 { try stageOne(&pair.driver, byte: UInt8(byte)) }
        #expect(pair.ring.availableIndex == 0, "nothing is published while chains are staged")
        #expect(try pair.device.nextRequest() == nil)
        #expect(pair.driver.cursor.nextAvailable == 3, "the driver's own cursor counts staged chains")
        pair.driver.publish()
        #expect(pair.ring.availableIndex == 3, "one publication for the three")
        for byte in 0..<3 {
            let request = try pair.device.requireRequest()
            var seen: [UInt8] = []
            try pair.device.forEachReadable(in: request) { seen += $0 }
            #expect(seen == [UInt8(byte)])
            try pair.device.complete(request, written: 0)
        }
        pair.driver.publish()
        #expect(pair.ring.availableIndex == 3, "publishing with nothing staged stores nothing new")
    }

    @Test(arguments: modes)
    func notifyIfNeededPublishesBeforeItDecides(features: Features) throws {
        var pair = try makePair(features: features)
        try stageOne(&pair.driver, byte: 7)
        // The device starts awake and asking for kicks; the decision must see the staged chain.
        #expect(try pair.driver.notifyIfNeeded(), "a staged chain is published and announced")
        #expect(pair.ring.availableIndex == 1)
        try pair.device.waitForRequests(spins: 0)
        let request = try pair.device.requireRequest()
        try pair.device.complete(request, written: 1)
    }

    @Test(arguments: modes)
    func waitForUsedPublishesFirst(features: Features) throws {
        var pair = try makePair(features: features)
        try stageOne(&pair.driver, byte: 1)
        // The single-threaded notifier reports a wait that would block: the driver published
        // before it went to sleep, or the device could never answer.
        #expect(throws: VirtqueueError.self) { try pair.driver.waitForUsed(spins: 4) }
        #expect(pair.ring.availableIndex == 1)
    }

    @Test(arguments: modes)
    func stagedCompletionsAreInvisibleUntilPublished(features: Features) throws {
        var pair = try makePair(features: features)
        try submit(4, on: &pair.driver)
        for _ in 0..<4 {
            let request = try pair.device.requireRequest()
            try pair.device.complete(request, written: 2, publish: false)
        }
        #expect(pair.ring.usedIndex == 0)
        #expect(try pair.driver.takeUsed() == nil, "the driver sees no staged completion")
        #expect(try pair.device.notifyIfNeeded(), "the decision publishes first, and the driver asked")
        #expect(pair.ring.usedIndex == 4)
        var taken = 0
        while let used = try pair.driver.takeUsed() {
            #expect(used.writtenByteCount == 2)
            try pair.driver.free(used)
            taken += 1
        }
        #expect(taken == 4)
    }

    @Test(arguments: modes)
    func aWrongLengthStillPublishesWhatWasStaged(features: Features) throws {
        var pair = try makePair(features: features)
        try submit(2, on: &pair.driver)
        let first = try pair.device.requireRequest()
        try pair.device.complete(first, written: 8, publish: false)
        let second = try pair.device.requireRequest()
        do {
            try pair.device.complete(second, written: 9, publish: false)
            Issue.record("a written length above the writable bytes was accepted")
        } catch {
            #expect(error.code == .writtenLengthTooLarge)
        }
        #expect(pair.ring.usedIndex == 2, "the caller's mistake returns the chain and publishes both")
    }

    @Test(arguments: modes)
    func stopPublishesStagedCompletions(features: Features) throws {
        var pair = try makePair(features: features)
        try submit(1, on: &pair.driver)
        let request = try pair.device.requireRequest()
        try pair.device.complete(request, written: 3, publish: false)
        let cursor = try pair.device.stop()
        #expect(cursor.nextUsed == 1)
        #expect(pair.ring.usedIndex == 1, "the resumed queue must not own a completion nobody published")
    }

    /// What a ``CheckingJournal`` heard: per completion, the `used.idx` it was told and the one
    /// the ring held at that moment.
    final class Log {
        var heard: [(reported: UInt16, published: UInt16)] = []
    }

    /// A journal that checks, at each completion it hears of, what the ring's `used.idx` holds.
    struct CheckingJournal<Journal: RequestJournal>: RequestJournal {
        var inner: Journal
        let publishedIndex: () -> UInt16
        let log: Log

        static var needsEachCompletionPublished: Bool { Journal.needsEachCompletionPublished }
        mutating func taken(head: UInt16) { inner.taken(head: head) }
        mutating func completing(head: UInt16) { inner.completing(head: head) }
        mutating func completed(head: UInt16, usedIndex: UInt16) {
            inner.completed(head: head, usedIndex: usedIndex)
            log.heard.append((usedIndex, publishedIndex()))
        }
    }

    /// A journal that records, as vhost-user's inflight region does: it needs each completion
    /// published when it hears of it (the protocol's default).
    struct RecordingJournal: RequestJournal {
        mutating func taken(head: UInt16) {}
        mutating func completing(head: UInt16) {}
        mutating func completed(head: UInt16, usedIndex: UInt16) {}
    }

    @Test(arguments: modes)
    func serveStagesWithoutAJournalAndPublishesEachWithOne(features: Features) throws {
        #expect(!NoRequestJournal.needsEachCompletionPublished)
        #expect(RecordingJournal.needsEachCompletionPublished)
        for recording in [false, true] {
            var pair = try makePair(features: features)
            try submit(5, on: &pair.driver)
            let ring = pair.ring
            var device = OneByteDevice()
            let log = Log()
            if recording {
                var journal = CheckingJournal(inner: RecordingJournal(), publishedIndex: { ring.usedIndex }, log: log)
                try pair.device.serve(&device, journal: &journal, until: { log.heard.count >= 5 })
            } else {
                var journal = CheckingJournal(inner: NoRequestJournal(), publishedIndex: { ring.usedIndex }, log: log)
                try pair.device.serve(&device, journal: &journal, until: { log.heard.count >= 5 })
            }
            let heard = log.heard
            #expect(heard.map(\.reported) == [1, 2, 3, 4, 5])
            if recording {
                #expect(
                    heard.map(\.published) == [1, 2, 3, 4, 5],
                    "a recording journal hears of published completions"
                )
            } else {
                #expect(heard.map(\.published) == [0, 0, 0, 0, 0], "without one the run is published once")
            }
            #expect(ring.usedIndex == 5, "serve publishes the run before it returns")
        }
    }
}
