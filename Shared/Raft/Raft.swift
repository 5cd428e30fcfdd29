/// Deterministic Raft core: `step(input, now) -> [Action]`, driven by an I/O layer elsewhere.
public enum Raft {}
