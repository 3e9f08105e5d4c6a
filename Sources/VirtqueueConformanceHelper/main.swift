// The helper process of the conformance suite's `peerProcessDeath` check: it maps the queue end
// it inherited, plays the driver or the device, and is killed with SIGKILL by the suite.
// Everything it does is in `VirtqueueConformance` (`ConformanceHelper`).
import Glibc
import VirtqueueConformance

exit(ConformanceHelper.main(CommandLine.arguments))
