import Testing
import VirtqueueConformance

/// The helper's command line: what the suite writes, the helper reads back; what is malformed,
/// it refuses by name.
@Suite("Conformance: the helper's command line")
struct HelperInvocationTests {
    @Test func severalMappingsAndAnyKickMessageRoundTrip() throws {
        let invocation = HelperInvocation(
            role: .driver,
            parent: 4242,
            bufferSize: 64,
            mappings: [
                PortableMapping(descriptor: 4, byteCount: 8192),
                PortableMapping(descriptor: 5, offset: 4096, busAddress: 0x1_0000_2000, byteCount: 4096),
            ],
            notifier: PortableNotifier(notifyDescriptor: 6, waitDescriptor: 7, kickMessage: [0x00, 0xff, 0x10])
        )
        #expect(try HelperInvocation(parsing: invocation.arguments) == invocation)
    }

    @Test(arguments: [
        (["observer"], "the role"),
        (["device", "--parent"], "has no value"),
        (
            ["device", "--parent", "1", "--buffer-size", "64", "--notify", "4", "--wait", "4", "--kick", "01"],
            "no --map"
        ),
        (["device", "--parent", "1", "--buffer-size", "64", "--map", "4:0:0", "--notify", "4"], "--map 4:0:0"),
        (
            ["device", "--parent", "1", "--buffer-size", "64", "--map", "4:0:0:4096", "--notify", "5", "--wait", "5"],
            "--kick is missing"
        ),
        (["device", "--parent", "1", "--colour", "blue"], "unknown option --colour"),
    ])
    func malformedCommandLinesAreRefusedByName(_ arguments: [String], _ named: String) {
        #expect {
            try HelperInvocation(parsing: arguments)
        } throws: { error in
            (error as? HelperError)?.message.contains(named) == true
        }
    }
}
