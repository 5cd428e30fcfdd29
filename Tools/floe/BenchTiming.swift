/// Runs `body` once to warm up, then repeatedly for `seconds` (at least 3 runs, at most 10 million);
/// returns how many timed runs there were and how long they took in seconds.
func repeatTimed(seconds: Double, _ body: () throws -> Void) rethrows -> (runs: Int, elapsed: Double) {
    try body()
    let clock = ContinuousClock()
    let budget = Duration.milliseconds(Int64(seconds * 1000))
    let start = clock.now
    var runs = 0
    while runs < 3 || (clock.now - start < budget && runs < 10_000_000) {
        try body()
        runs += 1
    }
    let elapsed = clock.now - start
    return (runs, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

/// The value at fraction `p` of an ascending list (zero when empty).
func percentile(_ sorted: [Duration], _ p: Double) -> Duration {
    guard !sorted.isEmpty else { return .zero }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// A duration in seconds.
func inSeconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
