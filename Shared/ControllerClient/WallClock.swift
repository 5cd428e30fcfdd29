import ClusterMetadata

#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock milliseconds since the Unix epoch: the time services stamp into metadata commands
/// (deadlines, commit and destruction times), which the pure metadata state never reads itself.
public func wallClockMillis() -> Millis {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
}
