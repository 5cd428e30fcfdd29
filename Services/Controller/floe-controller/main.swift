// Placeholder until the service runner lands.
print("floe-controller")
