import Foundation
import Glibc
import Testing

extension VhostUserTests {
    /// The guest harness proven against QEMU's own vhost-user-blk back-end, qemu-storage-daemon:
    /// a real Linux guest reads what the host wrote and writes what the host then reads. Any
    /// other back-end is tested the same way (GuestHarness.swift).
    @Suite(
        "Linux guest against qemu-storage-daemon (control)",
        .serialized,
        .enabled(if: GuestPeers.shouldRun, GuestPeers.skipComment),
        .timeLimit(.minutes(10))
    )
    struct ControlGuestTests {
        /// Boots the guest with `check` against qemu-storage-daemon on a fresh 64 MiB image and
        /// checks every value that crossed.
        func checkAgainstControl(_ configure: (String) -> GuestDisk) throws -> GuestResult {
            _ = try GuestPeers.require()
            let scratch = try GuestScratch(prefix: "vqtest-control")
            defer { scratch.remove() }
            let image = try GuestImage.create(at: scratch.path("disk.img"), mebibytes: 64)
            let before = try image.md5()
            let daemon = try GuestBackEnd.storageDaemon(imagePath: image.path, socketPath: scratch.path("blk.sock"))
            defer { daemon.stop() }

            let result = try GuestRun(workload: .check, disk: configure(daemon.socketPath)).run()
            daemon.stop()

            // Host → guest: the marker in sector 0 and the whole disk.
            #expect(result["marker"] == image.marker)
            #expect(result["disk_md5"] == before)
            #expect(result["sectors"] == "\(image.sectors)")
            #expect(result["logical_block_size"] == "512")
            // GET_ID: the serial comes from the back-end.
            let serial = try #require(result["serial"])
            #expect(!serial.isEmpty)
            // Guest → host: the pattern, as the guest meant it, read back by the guest, and on disk.
            let expected = try GuestPattern.md5(length: GuestImage.checkPatternLength)
            #expect(result["pattern_offset"] == "\(GuestImage.checkPatternOffset)")
            #expect(result["pattern_md5"] == expected)
            #expect(result["write_ok"] == "1")
            #expect(result["readback_md5"] == expected)
            let onDisk = try image.md5(offset: GuestImage.checkPatternOffset, length: GuestImage.checkPatternLength)
            #expect(onDisk == expected)
            #expect(result["io_errors"] == "0")
            return result
        }

        @Test("check: marker, whole-disk md5, serial, size and a written pattern cross both ways")
        func check() throws {
            let result = try checkAgainstControl { GuestDisk(socketPath: $0) }
            // QEMU's defaults: one queue of 128, indirect descriptors and event index negotiated.
            #expect(result["queues"] == "1")
            let features = Array(try #require(result["features"]))
            #expect(features.count > 32)
            if features.count > 32 {
                #expect(features[28] == "1", "INDIRECT_DESC")
                #expect(features[29] == "1", "EVENT_IDX")
                #expect(features[32] == "1", "VERSION_1")
            }
            print("guest check against qemu-storage-daemon: \(result.elapsed) (boot, workload, power-off)")
        }

        @Test("check with the device options changed: queue-size 256, no event index, no indirect, reconnect")
        func checkWithOptions() throws {
            let result = try checkAgainstControl {
                GuestDisk(
                    socketPath: $0,
                    queueSize: 256,
                    eventIndex: false,
                    indirectDescriptors: false,
                    queueCount: 1,
                    reconnect: true
                )
            }
            let features = Array(try #require(result["features"]))
            #expect(features.count > 32)
            if features.count > 32 {
                #expect(features[28] == "0", "INDIRECT_DESC off")
                #expect(features[29] == "0", "EVENT_IDX off")
            }
            // Linux's virtio_blk halves the ring's size for its queue depth without indirect
            // descriptors (each request then takes two or more ring slots): 256 / 2.
            #expect(result["queue_depth"] == "128")
        }

        @Test("long-write: 48 MiB streamed, phases seen as they happen, what the guest wrote is on disk")
        func longWrite() throws {
            _ = try GuestPeers.require()
            let scratch = try GuestScratch(prefix: "vqtest-control")
            defer { scratch.remove() }
            let image = try GuestImage.create(at: scratch.path("disk.img"), mebibytes: 64)
            let daemon = try GuestBackEnd.storageDaemon(imagePath: image.path, socketPath: scratch.path("blk.sock"))
            defer { daemon.stop() }

            var phases: [String] = []
            let result = try GuestRun(workload: .longWrite, disk: GuestDisk(socketPath: daemon.socketPath)).run {
                line in
                if line.key == "phase" { phases.append(line.value) }
            }
            daemon.stop()

            #expect(phases == ["writing", "written", "flushed"])
            let expected = try GuestPattern.md5(length: GuestImage.longWritePatternLength)
            #expect(result["write_ok"] == "1")
            #expect(result["pattern_md5"] == expected)
            #expect(result["readback_md5"] == expected)
            let onDisk = try image.md5(
                offset: GuestImage.longWritePatternOffset,
                length: GuestImage.longWritePatternLength
            )
            #expect(onDisk == expected)
            #expect(result["io_errors"] == "0")
        }

        @Test("long-write survives the back-end killed mid-write and restarted: QEMU reconnects, no I/O error")
        func longWriteSurvivesBackEndRestart() throws {
            _ = try GuestPeers.require()
            let scratch = try GuestScratch(prefix: "vqtest-control")
            defer { scratch.remove() }
            let image = try GuestImage.create(at: scratch.path("disk.img"), mebibytes: 64)
            let socket = scratch.path("blk.sock")
            var daemon = try GuestBackEnd.storageDaemon(imagePath: image.path, socketPath: socket)
            defer { daemon.stop() }

            var killedWhileWriting = false
            let disk = GuestDisk(socketPath: socket, reconnect: true)
            let result = try GuestRun(workload: .longWrite, disk: disk).run { line in
                guard line == GuestLine(key: "phase", value: "writing") else { return }
                usleep(1_000_000)  // let some requests through first
                daemon.process.kill(SIGKILL)
                daemon.process.wait()
                killedWhileWriting = true
                daemon = try GuestBackEnd.storageDaemon(imagePath: image.path, socketPath: socket)
            }
            daemon.stop()

            #expect(killedWhileWriting)
            // The kill came a second after the guest started writing; the stream takes longer
            // than that, so it was under way (and waited out the restart).
            let writeSeconds = try #require(result["write_seconds"].flatMap(Double.init))
            #expect(writeSeconds > 1.0)
            let expected = try GuestPattern.md5(length: GuestImage.longWritePatternLength)
            #expect(result["write_ok"] == "1")
            #expect(result["readback_md5"] == expected)
            let onDisk = try image.md5(
                offset: GuestImage.longWritePatternOffset,
                length: GuestImage.longWritePatternLength
            )
            #expect(onDisk == expected)
            #expect(result["io_errors"] == "0")
        }

        @Test("a back-end that never serves its socket fails with its output")
        func backEndThatNeverServes() throws {
            let scratch = try GuestScratch(prefix: "vqtest-control")
            defer { scratch.remove() }
            #expect(throws: GuestHarnessError.self) {
                _ = try GuestBackEnd(
                    ["/bin/sh", "-c", "echo refusing; exit 3"],
                    socketPath: scratch.path("never.sock"),
                    readyTimeout: .seconds(10)
                )
            }
        }
    }
}
