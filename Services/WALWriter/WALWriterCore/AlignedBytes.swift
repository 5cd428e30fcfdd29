/// Heap bytes aligned for O_DIRECT, grown on demand (used only from the volume's I/O calls).
final class AlignedBytes {
    let alignment: Int
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int

    init(alignment: Int) {
        self.alignment = alignment
        capacity = alignment
        base = UnsafeMutableRawPointer.allocate(byteCount: alignment, alignment: alignment)
    }

    deinit { base.deallocate() }

    /// Makes room for `count` bytes, keeping the first `keeping`.
    func reserve(_ count: Int, keeping: Int) {
        guard count > capacity else { return }
        var grown = capacity
        while grown < count { grown *= 2 }
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: alignment)
        fresh.copyMemory(from: base, byteCount: keeping)
        base.deallocate()
        base = fresh
        capacity = grown
    }
}
