import Virtqueue

extension VhostUserSession {
    /// The ring starts-disabled rule: with VHOST_USER_F_PROTOCOL_FEATURES acked, a ring waits for
    /// SET_VRING_ENABLE 1; without it, a ring is enabled from the start.
    func isEnabled(_ index: Int) -> Bool {
        rings[index].enabled ?? ((features ?? 0) & VhostUserProtocolFeatures.virtioFeatureBit == 0)
    }

    /// Starts ring `index` if it has all it needs and is not running: builds its placement
    /// (the addresses translated to guest-physical, the cursor from SET_VRING_BASE and the
    /// ring's `used.idx`), its ``Virtqueue/DeviceQueue`` on the shared memory, and its thread.
    ///
    /// - Throws: ``VhostUserError`` naming why the ring cannot start; the request that asked
    ///   for it is then refused.
    mutating func startIfReady(_ index: Int) throws(VhostUserError) {
        let ring = rings[index]
        guard ring.runner == nil, let size = ring.size, let address = ring.address, let base = ring.base,
            isEnabled(index)
        else { return }
        let kick: VhostUserFileDescriptor?
        switch ring.kick {
        case .unset: return
        case .polling: kick = nil
        case .eventfd(let descriptor): kick = descriptor
        }
        guard let memory else {
            throw VhostUserError(.invalidState, "queue \(index) cannot start: there is no memory table")
        }
        let sizes = SplitRingFields.areaByteCounts(size: size)
        let descriptorArea = try memory.guestPhysicalAddress(
            ofUserAddress: address.descriptor,
            count: sizes.descriptor,
            what: "queue \(index) descriptor table"
        )
        let driverArea = try memory.guestPhysicalAddress(
            ofUserAddress: address.available,
            count: sizes.driver,
            what: "queue \(index) available ring"
        )
        let deviceArea = try memory.guestPhysicalAddress(
            ofUserAddress: address.used,
            count: sizes.device,
            what: "queue \(index) used ring"
        )
        let queue: VhostUserDeviceQueue
        let placement: QueuePlacement
        var journal: InflightQueue?
        var resubmit: [UInt16] = []
        do {
            // used.idx is the front-end's (the guest's) memory: read once, then checked with the
            // placement (at most N entries between the cursor's indices).
            let usedIndex = try memory.withBytes(
                at: deviceArea &+ UInt64(SplitRingFields.usedIndex),
                count: 2
            ) { bytes in UInt16(littleEndian: bytes.loadUnaligned(as: UInt16.self)) }
            var cursor = QueueCursor(nextAvailable: base, nextUsed: usedIndex)
            if let inflight {
                // The inflight record knows better than SET_VRING_BASE what a previous back-end
                // took: resume from it.
                var record = try inflight.queue(index, size: size)
                let resumption = try record.resume(usedIndex: usedIndex, queue: index)
                cursor = resumption.cursor
                resubmit = resumption.heads
                journal = record
                if !resubmit.isEmpty {
                    log(
                        .notice,
                        "resuming \(resubmit.count) requests a previous back-end left in flight "
                            + "(heads \(resubmit.map(String.init).joined(separator: ", ")))",
                        queue: index
                    )
                }
            }
            placement = QueuePlacement(
                format: .split,
                size: size,
                descriptorArea: descriptorArea,
                driverArea: driverArea,
                deviceArea: deviceArea,
                cursor: cursor,
                bufferArea: nil
            )
            try placement.validate()
            let ringFeatures = Features(rawValue: (features ?? 0) & ~VhostUserProtocolFeatures.virtioFeatureBit)
            queue = try DeviceQueue(
                memory: memory,
                placement: placement,
                notifier: try notifier(kick: kick, call: ring.call),
                features: ringFeatures,
                supportedFeatures: Device.supportedFeatures,
                queueIndex: index
            )
        } catch let error as VirtqueueError {
            throw VhostUserError(.invalidRing, "queue \(index) cannot start: \(error)")
        } catch let error as VhostUserError {
            throw error
        } catch {
            throw VhostUserError(.invalidRing, "queue \(index) cannot start: \(error)")
        }
        let device: Device
        if let kept = ring.device {
            device = kept
        } else {
            do {
                let state = try shared ?? Device.makeSharedState(configuration: backend.configuration)
                shared = state
                device = try Device(configuration: backend.configuration, queue: index, shared: state)
            } catch {
                throw VhostUserError(.deviceFailed, "queue \(index): \(Device.name) could not be created: \(error)")
            }
        }
        rings[index].device = nil
        let runner = try RingRunner<Device>.start(
            index: index,
            startCursor: placement.cursor,
            queue: queue,
            device: device,
            error: ring.error,
            journal: journal,
            resubmit: resubmit,
            spins: backend.options.spins,
            log: backend.log
        )
        rings[index].runner = runner
        log(
            .info,
            "started: size \(size), cursor \(placement.cursor), descriptor table \(hex(descriptorArea)), "
                + "available ring \(hex(driverArea)), used ring \(hex(deviceArea)), "
                + "kick \(kick.map { "\($0)" } ?? "polled")",
            queue: index
        )
    }

    func notifier(kick: VhostUserFileDescriptor?, call: VhostUserFileDescriptor?) throws -> VhostUserEventNotifier {
        try VhostUserEventNotifier(waitingOn: kick, notifying: call)
    }

    /// Stops ring `index` if it runs: asks its thread to stop, waits for it, and keeps the
    /// cursor's available index as the ring's base and the device for the next start.
    ///
    /// - Returns: The available index the ring stopped at, or `nil` if it was not running.
    /// - Throws: ``VhostUserError/Code-swift.struct/ringDidNotStop`` if the thread did not end
    ///   within the stop timeout (the session then closes the connection).
    mutating func stopRing(_ index: Int, reason: String) throws(VhostUserError) -> UInt16? {
        guard let runner = rings[index].runner else { return nil }
        guard let outcome = runner.stop(timeout: backend.options.stopTimeout) else {
            rings[index].runner = nil
            throw VhostUserError(
                .ringDidNotStop,
                "queue \(index): its thread did not stop within \(backend.options.stopTimeout) (\(reason)); "
                    + "it is abandoned"
            )
        }
        settle(index, outcome, startCursor: runner.startCursor, reason: reason)
        return outcome.cursor.nextAvailable
    }

    /// Records how ring `index`'s thread ended.
    ///
    /// The log line counts the requests the ring completed in this run (the used index's advance
    /// since it started) and in the whole connection: how a test learns that every queue carried
    /// requests.
    mutating func settle(_ index: Int, _ outcome: RingRunner<Device>.Outcome, startCursor: QueueCursor, reason: String)
    {
        rings[index].runner = nil
        rings[index].base = outcome.cursor.nextAvailable
        rings[index].device = outcome.device
        let served = Int(outcome.cursor.nextUsed &- startCursor.nextUsed)
        rings[index].served += served
        let count = "served \(served) requests in this run, \(rings[index].served) in this connection"
        if let failure = outcome.failure {
            log(.error, "stopped at cursor \(outcome.cursor) after a failure (\(count)): \(failure)", queue: index)
        } else {
            log(.info, "stopped at cursor \(outcome.cursor) (\(reason)); \(count)", queue: index)
        }
    }

    /// Collects the rings whose thread ended by itself (a ring violation, a device error), so
    /// they count as stopped.
    mutating func reapEndedRings() {
        for index in rings.indices {
            guard let runner = rings[index].runner, runner.hasEnded else { continue }
            if let outcome = runner.stop(timeout: .zero) {
                settle(index, outcome, startCursor: runner.startCursor, reason: "it ended")
            } else {
                rings[index].runner = nil
            }
        }
    }

    /// Stops every ring (at the end of the connection).
    mutating func stopAllRings() {
        for index in rings.indices {
            do {
                _ = try stopRing(index, reason: "the connection ended")
            } catch {
                log(.error, "could not stop the ring", error: error, queue: index)
            }
        }
        memory = nil
    }
}
