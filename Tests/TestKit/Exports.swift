// Tests reach the seeded generator through TestKit, as they always did.
@_exported import Simulation
