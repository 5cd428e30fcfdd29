print("floe-protocol-gen: not yet")
